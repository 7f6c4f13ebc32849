"""Several policies and two IdPs in one filter, chosen per route (Kong's per-route and
per-service plugins), in real Envoy with 2 workers against two real IdPs (oidc-provider
twice: other issuer, other signing key).

Routes (the listener's route table, rewritten by `routes()`):
  /api/...      metadata policy `api`: bearer JWTs of IdP A with the scope api:read
  /auth/...     metadata policy `app`: browser logins at IdP A
  /partner/...  metadata policy `partner`: the password grant at IdP B over mTLS
  /multi/...    metadata policy `multi`: bearer JWTs of IdP A and of IdP B (issuers_allowed)
  /other/...    metadata policy `other`: sessions only, under the same cookie name as `app`
  /open/...     the filter disabled (FilterConfig {disabled: true})
  /unknown/...  metadata names a policy the filter does not have
  /admin/...    the default policy, then Envoy's RBAC: only the subject john
  /             the default policy (bearer JWTs of IdP A, no scope rule)
"""
from __future__ import annotations

import copy
import time

import pytest
import requests

import harness

SECRET = "0123456789abcdef0123456789abcdef-policies"
WASM = "envoy.filters.http.wasm"


def meta(policy: str) -> dict:
    return {"filter_metadata": {"envoy-oidc": {"policy": policy}}}


def route(prefix: str, *, policy: str | None = None, name: str | None = None, per_filter: dict | None = None) -> dict:
    r: dict = {"match": {"prefix": prefix}, "route": {"cluster": "upstream"}}
    if policy:
        r["metadata"] = meta(policy)
    if name:
        r["name"] = name
    if per_filter:
        r["typed_per_filter_config"] = per_filter
    return r


RBAC_JOHN_ONLY = {
    "envoy.filters.http.rbac": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
        "rbac": {"rules": {"action": "ALLOW", "policies": {"john-only": {
            "permissions": [{"any": True}],
            "principals": [{"header": {"name": "x-user", "string_match": {"exact": "john"}}}],
        }}}},
    }
}


def topology(access_log: str, idp_b_port: int):
    """A config mutation: IdP B's clusters, the route table above, Envoy's RBAC filter after
    the OIDC filter, and an access log that prints the subject the filter established."""
    def mutate(cfg: dict) -> None:
        add_idp_b_clusters(cfg, idp_b_port)
        routes(cfg, access_log)
    return mutate


def routes(cfg: dict, access_log: str) -> None:
    hcm = harness._find_hcm(cfg)
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": access_log,
        "log_format": {"text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE% user=%REQ(X-USER)%\n"}}}}]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        route("/api/", policy="api"),
        route("/auth/", policy="app"),
        route("/partner/", policy="partner"),
        route("/multi/", policy="multi"),
        route("/other/", policy="other"),
        route("/open/", per_filter={WASM: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                                           "disabled": True}}),
        route("/unknown/", policy="nope"),
        route("/admin/", name="admin-route", per_filter=RBAC_JOHN_ONLY),
        route("/", name="default-route"),
    ]
    filters = hcm["http_filters"]
    at = next(i for i, f in enumerate(filters) if f["name"] == WASM)
    filters.insert(at + 1, {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}})


def add_idp_b_clusters(cfg: dict, port: int) -> None:
    """Clusters for IdP B: `idp-b` (server authentication) and `idp-b-mtls` (the client
    certificate), copies of the test's `idp` and `idp-mtls` with B's port."""
    clusters = cfg["static_resources"]["clusters"]
    by_name = {c["name"]: c for c in clusters}
    for src, name in (("idp", "idp-b"), ("idp-mtls", "idp-b-mtls")):
        c = copy.deepcopy(by_name[src])
        c["name"] = name
        c["load_assignment"]["cluster_name"] = name
        harness._set_cluster_port(c, port)
        clusters.append(c)


def plugin(idp_a, idp_b, port: int) -> dict:
    return {
        "issuer": idp_a.issuer,
        "idp_cluster": "idp",
        "tls_client_auth_cluster": "idp-mtls",
        "client_id": "client-tls-auth",
        "client_auth": "tls_client_auth",
        "auth_methods": ["bearer"],
        "upstream_headers_claims": ["sub"],
        "upstream_headers_names": ["x-user"],
        "policies": {
            "api": {"scopes_required": ["api:read"]},
            "app": {"auth_methods": ["authorization_code", "session"],
                    "redirect_uri": f"http://127.0.0.1:{port}/auth/callback", "session_secret": SECRET},
            "partner": {"issuer": idp_b.issuer, "idp_cluster": "idp-b", "tls_client_auth_cluster": "idp-b-mtls",
                        "auth_methods": ["password"]},
            "other": {"auth_methods": ["session"], "session_secret": SECRET, "session_cookie_name": "session-app"},
            # IdP B's documents through `idp-b`, the cluster of `partner`, the policy that has B
            "multi": {"issuers_allowed": [idp_b.issuer]},
        },
        "route_policies": {"not-used": "api"},
    }


@pytest.fixture
def two(envoy, jwt_idp, idp_factory, pki, tmp_path):
    """(proxy, IdP A, IdP B, A's log offset): Envoy with 2 workers and the route table
    above; the access log is at `proxy.access_log`."""
    idp_b = idp_factory(env={"JWT_ACCESS_TOKENS": "1", "SIGNING_KEY": "idp2.key", "SIGNING_KID": "idp-b-1"})
    port = harness.free_port()
    mark_a = len(jwt_idp.log())
    access_log = tmp_path / "access.log"
    proxy = envoy(plugin(jwt_idp, idp_b, port), idp=jwt_idp, port=port, concurrency=2,
                  mutate=topology(str(access_log), idp_b.port))
    proxy.access_log = access_log
    # the background fetches of both issuers' documents (one worker each, on the timer)
    for issuer in (jwt_idp.issuer, idp_b.issuer):
        proxy.wait_for_log(f"fetched Jwks from {issuer}", timeout=10)
    return proxy, jwt_idp, idp_b, mark_a


def token_of(idp, scope="openid profile email api:read", user="john") -> str:
    return idp.password_grant("client-secret-basic", username=user, scope=scope)["access_token"]


def bearer(t: str) -> dict:
    return {"authorization": f"Bearer {t}"}


def test_each_route_gets_its_policy_and_its_idp(two):
    proxy, a, b, mark_a = two
    with_scope, without = token_of(a), token_of(a, scope="openid profile")
    of_b = token_of(b)
    # /api: IdP A's bearer tokens with the scope
    r = proxy.get("/api/orders", headers=bearer(with_scope))
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-user"] == "john"
    r = proxy.get("/api/orders", headers=bearer(without))
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"], r.text
    r = proxy.get("/api/orders", headers=bearer(of_b))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
    # the default policy has no scope rule
    assert proxy.get("/", headers=bearer(without)).status_code == 200
    # /partner: the password grant at IdP B, over mTLS through B's cluster
    mark_b = len(b.log())
    r = proxy.get("/partner/x", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["authorization"].startswith("Bearer ")
    token_lines = [l for l in harness.idp_log_since(b, mark_b) if "IDP POST /token " in l]
    assert token_lines and 'cert=yes subject="CN=client-tls-auth' in token_lines[-1], token_lines
    # /open: no authentication at all
    r = proxy.get("/open/page")
    assert r.status_code == 200 and "authorization" not in r.json()["headers"]
    # one discovery fetch per issuer for the process (2 workers)
    discovery = "IDP GET /.well-known/openid-configuration"
    assert sum(discovery in l for l in harness.idp_log_since(a, mark_a)) == 1
    assert b.log().count(discovery) == 1


def test_a_route_naming_an_unknown_policy_fails_closed(two):
    proxy, a, _, _ = two
    r = proxy.get("/unknown/x", headers=bearer(token_of(a)))
    assert r.status_code == 500 and r.json()["error"] == "internal_error", r.text
    assert "headers" not in r.json()
    proxy.wait_for_log("names policy `nope`", timeout=5)
    time.sleep(1.2)
    stats = requests.get(proxy.admin_url("/stats"), params={"filter": "policy"}, timeout=5).text
    assert f"{proxy.metric_prefix}oidc.policy.unknown: 1" in stats, stats


def test_a_browser_login_at_idp_a_and_its_session_stays_with_its_policy(two):
    proxy, a, _, _ = two
    flow = harness.login(proxy, a, "/auth/home")
    cookies = flow.session_cookies("session-app")
    assert cookies, flow.cookies()
    assert flow.final.json()["headers"]["x-user"] == "john"
    # the same cookie on a route of another policy (which even reads the same cookie name):
    # sealed for `app`, it does not open for `other`
    r = flow.get("/other/page", headers={"accept": "application/json"})
    assert r.status_code == 401, r.text
    # and the default policy takes no session at all
    r = flow.get("/", headers={"accept": "application/json"})
    assert r.status_code == 401, r.text
    # while /auth still has it
    assert flow.get("/auth/again").status_code == 200


def test_rbac_after_the_filter_admits_only_the_subject_it_names(two):
    proxy, a, _, _ = two
    john, jane = token_of(a, user="john"), token_of(a, user="jane")
    r = proxy.get("/admin/panel", headers=bearer(john))
    assert r.status_code == 200, r.text
    r = proxy.get("/admin/panel", headers=bearer(jane))
    assert r.status_code == 403 and "RBAC" in r.text, r.text
    # a client that sends x-user itself cannot pass: the filter removes it first
    r = proxy.get("/admin/panel", headers={**bearer(jane), "x-user": "john"})
    assert r.status_code == 403, r.text
    # the access log prints the subject the filter established
    want = ["/admin/panel 200 user=john", "/admin/panel 403 user=jane"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(w in proxy.access_log.read_text() for w in want):
        time.sleep(0.2)
    lines = proxy.access_log.read_text().splitlines()
    assert "/admin/panel 200 user=john" in lines, lines
    assert "/admin/panel 403 user=jane" in lines, lines


def test_one_policy_accepts_bearer_tokens_of_both_idps_and_refuses_a_third_issuer(two, idp, pki):
    proxy, a, b, _ = two
    for who, t in (("A", token_of(a)), ("B", token_of(b))):
        r = proxy.get("/multi/orders", headers=bearer(t))
        assert r.status_code == 200, (who, r.text)
        assert r.json()["headers"]["x-user"] == "john"
    # a third IdP (another issuer) signs with IdP A's key, under A's kid: refused for its
    # issuer alone, before any key is looked at, and never asked for its documents
    mark_c = len(idp.log())
    third = idp.password_grant("client-secret-basic", scope="openid profile", token_format="jwt")["access_token"]
    header, claims = harness.decode_jwt(third)
    assert header["kid"] == harness.decode_jwt(token_of(a))[0]["kid"] and claims["iss"] == idp.issuer
    r = proxy.get("/multi/orders", headers=bearer(third))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"], r.headers  # the log says why:
    proxy.wait_for_log(f"the token's issuer `{idp.issuer}` is not allowed", timeout=5)
    assert not any(third in line for line in proxy.filter_log())
    assert not [l for l in harness.idp_log_since(idp, mark_c) if "IDP GET " in l]
    # a token that claims B, signed with A's key under A's kid, is checked with B's keys only
    forged = harness.make_jwt({"kid": header["kid"], "typ": "at+jwt"}, {**claims, "iss": b.issuer}, pki.path("idp.key"))
    r = proxy.get("/multi/orders", headers=bearer(forged))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
