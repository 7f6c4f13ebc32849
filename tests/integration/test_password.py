"""Foundation: password grant over mutual TLS (RFC 8705), through real Envoy to a real IdP."""
import base64

import pytest

import harness


def mtls_config(idp, **extra):
    return harness.mtls_plugin_config(idp, ["password"], **extra)


def test_password_grant_over_mtls_forwards_bearer(envoy, idp, upstream):
    proxy = envoy(mtls_config(idp))
    r = proxy.get("/hello", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["path"] == "/hello"
    auth = seen["headers"]["authorization"]
    assert auth.startswith("Bearer "), auth
    token = auth[len("Bearer "):]
    info = idp.introspect(token)
    assert info["active"] is True
    assert info["client_id"] == "client-tls-auth"
    assert info["sub"] == "john"


def test_wrong_password_and_no_credentials_are_401(envoy, idp, upstream):
    proxy = envoy(mtls_config(idp))
    r = proxy.get("/", auth=("john", "wrong"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert r.json()["error"] == "invalid_grant"
    r = proxy.get("/")
    assert r.status_code == 401
    assert "www-authenticate" in r.headers



def test_basic_credentials_are_not_forwarded_and_token_is_cached(envoy, idp, upstream):
    proxy = envoy(mtls_config(idp))
    before = idp.log().count("IDP POST /token ")
    first = proxy.get("/", auth=("john", "doe"))
    second = proxy.get("/", auth=("john", "doe"))
    assert first.status_code == second.status_code == 200
    basic = "Basic " + base64.b64encode(b"john:doe").decode()
    for r in (first, second):
        headers = r.json()["headers"]
        assert basic not in headers.values()
        assert headers["authorization"].startswith("Bearer ")
    # the second request was served from the token cache: one token request in all
    assert first.json()["headers"]["authorization"] == second.json()["headers"]["authorization"]
    assert idp.log().count("IDP POST /token ") - before == 1
    # a wrong password never gets the cached token
    assert proxy.get("/", auth=("john", "doe-wrong")).status_code == 401


@pytest.mark.parametrize("cert", [None, "other"])
def test_idp_rejecting_the_client_certificate_is_401(envoy, idp, upstream, cert):
    """Proves mTLS is what authenticates the filter: no cert or the wrong subject fails."""
    proxy = envoy(mtls_config(idp, display_errors=True), mtls_cert=cert)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["error"] == "invalid_client"
    assert "tls_client_auth" in body["error_description"]


def test_mtls_endpoint_aliases_are_used_for_tls_calls(envoy, idp_factory, upstream, pki):
    """RFC 8705 section 5: token calls go to the discovered alias (another port here)."""
    aliased = idp_factory(mtls_port=harness.free_port())
    proxy = envoy(mtls_config(aliased), idp=aliased)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    token_lines = [l for l in aliased.log().splitlines() if l.startswith("IDP POST /token ")]
    assert token_lines and all(f"port={aliased.mtls_port}" in l for l in token_lines), token_lines
    assert all('subject="CN=client-tls-auth,O=Example,C=US"' in l for l in token_lines)


def test_self_signed_tls_client_auth(envoy, idp, upstream):
    proxy = envoy(mtls_config(idp, client_id="client-self-signed", client_auth="self_signed_tls_client_auth"),
                  mtls_cert="selfsigned")
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    assert idp.introspect(r.json()["headers"]["authorization"][7:])["client_id"] == "client-self-signed"


SECRET_CLIENTS = {
    "client_secret_basic": {"client_id": "client-secret-basic", "client_secret": "secret-basic-1"},
    "client_secret_post": {"client_id": "client-secret-post", "client_secret": "secret-post-1"},
    "client_secret_jwt": {"client_id": "client-secret-jwt",
                          "client_secret": "a-very-long-shared-secret-for-hs256-0123456789"},
    "none": {"client_id": "client-none"},
}


@pytest.mark.parametrize("method", sorted(SECRET_CLIENTS) + ["private_key_jwt"])
def test_other_client_auth_methods(envoy, idp, upstream, pki, method):
    cfg = {"issuer": idp.issuer, "idp_cluster": "idp", "auth_methods": ["password"], "client_auth": method}
    if method == "private_key_jwt":
        cfg.update(client_id="client-private-key-jwt", client_private_key=pki.path("pkjwt.key").read_text(),
                   client_private_key_id="pkjwt-1")
    else:
        cfg.update(SECRET_CLIENTS[method])
    proxy = envoy(cfg)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    token = r.json()["headers"]["authorization"][7:]
    assert idp.introspect(token)["client_id"] == cfg["client_id"]
    # the secret-based calls never used the mTLS cluster
    assert proxy.stats("cluster.idp-mtls.upstream_rq_total").get("cluster.idp-mtls.upstream_rq_total", 0) == 0


def test_wrong_client_secret_is_401(envoy, idp, upstream):
    cfg = {"issuer": idp.issuer, "idp_cluster": "idp", "auth_methods": ["password"],
           "client_id": "client-secret-basic", "client_secret": "not-the-secret"}
    r = envoy(cfg).get("/", auth=("john", "doe"))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_client_credentials_with_the_callers_credentials(envoy, idp, upstream):
    cfg = {"issuer": idp.issuer, "idp_cluster": "idp", "auth_methods": ["client_credentials"], "scopes": []}
    proxy = envoy(cfg)
    r = proxy.get("/", auth=("client-secret-basic", "secret-basic-1"))
    assert r.status_code == 200, r.text
    info = idp.introspect(r.json()["headers"]["authorization"][7:])
    assert info["active"] is True and info["client_id"] == "client-secret-basic"
    assert proxy.get("/", auth=("client-secret-basic", "wrong")).status_code == 401


def test_custom_upstream_token_header(envoy, idp, upstream):
    proxy = envoy(mtls_config(idp, upstream_access_token_header="x-access-token"))
    headers = proxy.get("/", auth=("john", "doe")).json()["headers"]
    assert "authorization" not in headers
    assert idp.introspect(headers["x-access-token"])["active"] is True


def test_no_secret_reaches_the_log(envoy, idp, upstream, pki):
    cfg = {"issuer": idp.issuer, "idp_cluster": "idp", "auth_methods": ["password"],
           "client_id": "client-secret-post", "client_secret": "secret-post-1"}
    proxy = envoy(cfg, component_log_level="wasm:trace")
    good = proxy.get("/", auth=("john", "doe"))
    proxy.get("/", auth=("john", "hunter2-wrong"))
    token = good.json()["headers"]["authorization"][7:]
    log = proxy.log()
    assert proxy.filter_log(), "the filter logged nothing"
    for secret in ("secret-post-1", "hunter2-wrong", token, base64.b64encode(b"john:doe").decode()):
        assert secret not in log
    assert token not in idp.log()


def test_downstream_headers_hand_the_token_and_claims_to_the_client(envoy, idp, upstream):
    """Kong's downstream_*: the client's response carries the access token and a claim; the
    upstream gets the token as usual and none of the downstream headers."""
    proxy = envoy(mtls_config(idp, downstream_access_token_header="x-access-token",
                              downstream_headers_claims=["sub"], downstream_headers_names=["x-user"]))
    r = proxy.get("/hello", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    token = harness.bearer_of(r)
    assert r.headers["x-access-token"] == token
    assert r.headers["x-user"] == "john"
    seen = harness.upstream_seen(r)["headers"]
    assert "x-access-token" not in seen and "x-user" not in seen
