"""IdP faults: each gives its documented status, a log line an operator can act on, and
Envoy goes on serving. The real IdP where it can produce the fault (down, back, refusing
our certificate); a misbehaving stand-in (faults.StandIn) for answers it never gives."""

import time

import pytest
import requests

import harness
from faults import wrong_idp_ca
from test_config_and_faults import point_cluster
from test_password import mtls_config


def wasm_lines(proxy, needle, wait=3.0):
    """The filter's log lines containing `needle`, waiting up to `wait` s for the first
    (Envoy may write its log after the response has left)."""
    deadline = time.monotonic() + wait
    while True:
        lines = [l for l in proxy.filter_log() if needle in l]
        if lines or time.monotonic() >= deadline:
            return lines
        time.sleep(0.05)


def assert_alive(proxy):
    assert proxy.returncode is None
    assert "panicked" not in proxy.log()
    assert requests.get(proxy.admin_url("/ready"), timeout=5).status_code == 200


def test_idp_down_mid_flight_and_back(envoy, idp_factory, upstream):
    fresh = idp_factory()
    proxy = envoy(mtls_config(fresh), idp=fresh)
    assert proxy.get("/", auth=("john", "doe")).status_code == 200
    fresh.stop()
    r = proxy.get("/", auth=("jane", "secret2"))
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "idp_unavailable"
    line = wasm_lines(proxy, "Token call")
    assert line and "cannot connect" in line[-1] and "idp-mtls" in line[-1], proxy.log()[-3000:]
    # the cached token still serves john meanwhile
    assert proxy.get("/", auth=("john", "doe")).status_code == 200
    fresh.restart()
    assert proxy.get("/", auth=("jane", "secret2")).status_code == 200
    assert_alive(proxy)


@pytest.mark.parametrize("answer, status, error, logged", [
    ((500, b"<h1>Internal Server Error</h1>", "text/html"), 502, "idp_unavailable", "answered HTTP 500"),
    ((503, b"maintenance", "text/plain"), 502, "idp_unavailable", "answered HTTP 503"),
    ((200, b"<html>login</html>", "text/html"), 502, "idp_unavailable", "not JSON"),
    ((200, {"token_type": "Bearer", "expires_in": 60}, "application/json"), 502, "idp_unavailable",
     "no access_token"),
    ((400, {"error": "unsupported_grant_type"}, "application/json"), 502, "idp_refused", "unsupported_grant_type"),
    ((400, {"error": "invalid_grant"}, "application/json"), 401, "invalid_grant", "rejected the credentials"),
    # IdPs that refuse a password or a client certificate with a bare 4xx: the caller's
    # fault (401, with the IdP's status in the log), not a broken IdP (502)
    ((403, b"", "text/plain"), 401, "access_denied", "refused the request with HTTP 403"),
    ((401, b"<html>Unauthorized</html>", "text/html"), 401, "access_denied", "refused the request with HTTP 401"),
    # ... but a wrong endpoint is the gateway's configuration
    ((404, b"not found", "text/plain"), 502, "idp_unavailable", "error without an OAuth error code"),
])
def test_token_endpoint_answers(envoy, standin, upstream, answer, status, error, logged):
    standin.routes["/token"] = answer
    proxy = envoy(mtls_config(standin), idp=standin)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert "www-authenticate" not in r.headers or status == 401
    assert wasm_lines(proxy, logged), proxy.log()[-3000:]
    assert upstream.log().count("GET /") == 0 or "opaque-from-stand-in" not in upstream.log()
    # the IdP recovers: the same Envoy serves again
    standin.routes["/token"] = (200, {"access_token": "opaque-from-stand-in", "token_type": "Bearer",
                                      "expires_in": 300}, "application/json")
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    assert harness.upstream_seen(r)["headers"]["authorization"] == "Bearer opaque-from-stand-in"
    assert_alive(proxy)


@pytest.mark.parametrize("answer, logged", [
    ((500, b"oops", "text/plain"), "answered HTTP 500"),
    ((200, b"{not json", "application/json"), "not valid JSON"),
    ((200, {"token_endpoint": "https://x/token"}, "application/json"), "no `issuer`"),
    ("wrong-issuer", "discovery `issuer` is"),
    ("bad-url", "discovery `token_endpoint`"),
])
def test_bad_discovery_is_503_retried_and_served_once_fixed(envoy, standin, upstream, answer, logged):
    good = standin.routes["/.well-known/openid-configuration"]
    if answer == "wrong-issuer":
        answer = (200, standin.discovery(issuer="https://evil.example"), "application/json")
    elif answer == "bad-url":
        answer = (200, standin.discovery(token_endpoint="not a url"), "application/json")
    standin.routes["/.well-known/openid-configuration"] = answer
    proxy = envoy(mtls_config(standin, timeout=1000), idp=standin)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "discovery_unavailable"
    assert wasm_lines(proxy, logged), proxy.log()[-3000:]
    assert standin.hits.get("/token", 0) == 0
    standin.routes["/.well-known/openid-configuration"] = good
    r = harness.until_ok(lambda: proxy.get("/", auth=("john", "doe")), timeout=10)
    assert r.status_code == 200, r.text
    assert_alive(proxy)


def test_discovery_without_an_endpoint_a_method_needs(envoy, standin, upstream):
    standin.routes["/.well-known/openid-configuration"] = (
        200, standin.discovery(token_endpoint=None), "application/json")
    proxy = envoy(mtls_config(standin, display_errors=True), idp=standin)
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "idp_misconfigured"
    assert "token_endpoint" in r.json()["error_description"]
    assert wasm_lines(proxy, "publishes no token_endpoint"), proxy.log()[-3000:]
    assert_alive(proxy)


def test_jwks_with_unsupported_and_malformed_keys_keeps_the_good_ones(envoy, standin, jwt_idp, upstream):
    good = jwt_idp.jwks()["keys"]
    standin.routes["/jwks"] = (200, {"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        "not an object",
        *good,
    ]}, "application/json")
    proxy = envoy(harness.mtls_plugin_config(standin, ["bearer"]), idp=standin)
    token = harness.idp_jwt(standin)
    r = proxy.get("/", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert wasm_lines(proxy, "skipped"), proxy.log()[-3000:]
    bad = harness.idp_jwt(standin, kid="broken")
    assert proxy.get("/", headers={"authorization": f"Bearer {bad}"}).status_code == 401
    assert_alive(proxy)


@pytest.mark.parametrize("answer, logged", [
    ((200, b"<html>", "text/html"), "JWKS is not a JSON key set"),
    ((500, b"oops", "text/plain"), "answered HTTP 500"),
])
def test_unusable_jwks_refuses_tokens_and_says_why(envoy, standin, upstream, answer, logged):
    standin.routes["/jwks"] = answer
    proxy = envoy(harness.mtls_plugin_config(standin, ["bearer"], timeout=1000), idp=standin)
    token = harness.idp_jwt(standin)
    r = proxy.get("/", headers={"authorization": f"Bearer {token}"})
    assert r.status_code in (401, 503), r.text
    assert wasm_lines(proxy, logged), proxy.log()[-3000:]
    assert_alive(proxy)


def test_idp_server_certificate_not_trusted(envoy, idp, upstream, pki):
    proxy = envoy(mtls_config(idp), mutate=wrong_idp_ca(pki))
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "idp_unavailable"
    line = wasm_lines(proxy, "Token call")
    # Envoy 1.36/1.37 say why the handshake failed in their answer to the callout (the line
    # then says so); 1.40 does not, and the line points at the counter that does
    assert line and "not trusted" in line[-1] and "idp-mtls" in line[-1], proxy.log()[-3000:]
    assert proxy.stats("cluster.idp-mtls.ssl.fail_verify_error")["cluster.idp-mtls.ssl.fail_verify_error"] >= 1
    assert_alive(proxy)


def test_connection_refused_names_the_cluster(envoy, idp, upstream):
    from faults import closed_port
    proxy = envoy(mtls_config(idp), mutate=point_cluster("idp-mtls", closed_port()))
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 502
    line = wasm_lines(proxy, "Token call")
    assert line and "cannot connect" in line[-1] and "`idp-mtls`" in line[-1], proxy.log()[-3000:]


@pytest.mark.parametrize("answer, status, error", [
    # introspection is the gateway's own call: a bare 401/403 refuses its client
    ((403, b"", "text/plain"), 401, "invalid_client"),
    ((400, b"", "text/plain"), 401, "access_denied"),
    ((400, {"error": "invalid_request"}, "application/json"), 502, "idp_refused"),
])
def test_introspection_refusals_without_an_oauth_error_are_401(envoy, standin, upstream, answer, status, error):
    standin.routes["/token/introspection"] = answer
    proxy = envoy(harness.mtls_plugin_config(standin, ["introspection"]), idp=standin)
    r = proxy.get("/", headers={"Authorization": "Bearer opaque-token-0123456789"})
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert upstream.log().count("opaque-token-0123456789") == 0
    if error == "access_denied":
        assert wasm_lines(proxy, "introspection_endpoint refused the request with HTTP 400"), proxy.log()[-3000:]
    assert_alive(proxy)
