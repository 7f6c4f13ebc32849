"""What the filter adds to its IdP calls (Kong's `*_args_names`/`*_args_values`,
`*_headers_names`/`*_headers_values`, `audience`, `introspection_hint` and the token
parameter names), as the IdP receives them through Envoy: a stand-in records each request."""

from urllib.parse import parse_qs

import harness
from test_idp_faults import assert_alive


def form(seen: dict) -> dict:
    return {k: v[0] for k, v in parse_qs(seen["body"].decode()).items()}


def test_token_and_introspection_calls_carry_the_configured_arguments_and_headers(envoy, standin, upstream):
    standin.routes["/token/introspection"] = (200, {"active": True, "sub": "svc", "exp": 4102444800}, "application/json")
    cfg = harness.mtls_plugin_config(
        standin, ["password", "introspection"],
        audience=["https://api.example"],
        token_post_args_names=["resource"], token_post_args_values=["https://api.example/v1"],
        token_headers_names=["X-Api-Key"], token_headers_values=["k-123"],
        introspection_hint="urn:ietf:params:oauth:token-type:access_token",
        introspection_token_param_name="access_token",
        introspection_post_args_names=["tenant"], introspection_post_args_values=["acme"],
        introspection_headers_names=["x-tenant"], introspection_headers_values=["acme"],
        discovery_headers_names=["x-discovery"], discovery_headers_values=["enabled"])
    proxy = envoy(cfg, idp=standin)

    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    token = standin.seen["/token"][-1]
    body = form(token)
    assert (body["grant_type"], body["username"]) == ("password", "john")
    assert body["audience"] == "https://api.example"
    assert body["resource"] == "https://api.example/v1"
    assert token["headers"]["x-api-key"] == "k-123"
    assert "x-api-key" not in harness.upstream_seen(r)["headers"]

    r = proxy.get("/", headers={"Authorization": "Bearer opaque-0123456789abcdef"})
    assert r.status_code == 200, r.text
    intro = standin.seen["/token/introspection"][-1]
    body = form(intro)
    assert body["access_token"] == "opaque-0123456789abcdef" and "token" not in body
    assert body["token_type_hint"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["tenant"] == "acme"
    assert intro["headers"]["x-tenant"] == "acme"

    assert standin.seen["/.well-known/openid-configuration"][0]["headers"]["x-discovery"] == "enabled"
    assert_alive(proxy)


def test_userinfo_calls_carry_the_configured_query_arguments_and_headers(envoy, standin, upstream):
    standin.routes["/me"] = (200, {"sub": "john"}, "application/json")
    cfg = harness.mtls_plugin_config(
        standin, ["userinfo"],
        userinfo_query_args_names=["schema"], userinfo_query_args_values=["openid"],
        userinfo_headers_names=["x-tenant"], userinfo_headers_values=["acme"])
    proxy = envoy(cfg, idp=standin)
    r = proxy.get("/", headers={"Authorization": "Bearer opaque-0123456789abcdef"})
    assert r.status_code == 200, r.text
    me = standin.seen["/me"][-1]
    assert parse_qs(me["query"]) == {"schema": ["openid"]}
    assert me["headers"]["x-tenant"] == "acme"
    assert me["headers"]["authorization"] == "Bearer opaque-0123456789abcdef"


def test_an_extra_argument_that_would_replace_the_protocols_is_refused_at_load(envoy, standin):
    cfg = harness.mtls_plugin_config(standin, ["password"], token_post_args_names=["client_id"],
                                     token_post_args_values=["someone-else"])
    proxy = envoy(cfg, idp=standin, expect_start=False)
    assert proxy.returncode != 0
    assert "`token_post_args_names`: `client_id` is set by the filter itself" in proxy.log(), proxy.log()[-3000:]
