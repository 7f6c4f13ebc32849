"""Hostile input: forged ID tokens at the code exchange, open redirects, oversized and
forged cookies and credentials. Each is refused, nothing reaches the upstream, and the VM
keeps serving. (Bearer tokens, state/nonce/PKCE/code replay, tampered and other-secret
sessions, forged identity headers and CR/LF claims are in test_api_tokens, test_login and
test_sessions.)"""
import time
from urllib.parse import urlsplit

import pytest

import harness
from test_idp_faults import assert_alive


def id_token(standin, pki, nonce, *, claims=None, drop=(), alg="RS256", kid="idp-sig-1", header=None, secret=None):
    now = int(time.time())
    base = {"iss": standin.issuer, "sub": "john", "aud": "client-tls-auth", "iat": now, "exp": now + 300,
            "nonce": nonce}
    base.update(claims or {})
    for name in drop:
        base.pop(name, None)
    h = {"kid": kid, **(header or {})}
    if alg == "none":
        return harness.make_jwt(h, base, alg="none")
    if secret is not None:
        return harness.make_jwt(h, base, alg=alg, secret=secret)
    return harness.make_jwt(h, base, pki.path("idp.key"), alg)


CASES = {
    "valid": {},
    "alg none": {"alg": "none"},
    "HS256 signed with the IdP's public key": {"alg": "HS256", "secret": "PUBLIC"},
    "unknown kid": {"kid": "nobody"},
    "wrong iss": {"claims": {"iss": "https://evil.example"}},
    "wrong aud": {"claims": {"aud": "another-client"}},
    "several aud without azp": {"claims": {"aud": ["client-tls-auth", "another-client"]}},
    "azp of another client": {"claims": {"azp": "another-client"}},
    "expired": {"claims": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}},
    "not yet valid": {"claims": {"nbf": int(time.time()) + 3600}},
    "nonce of another login": {"claims": {"nonce": "someone-elses-nonce"}},
    "no nonce": {"drop": ["nonce"]},
    "no exp": {"drop": ["exp"]},
    "no sub": {"drop": ["sub"]},
    "empty sub": {"claims": {"sub": ""}},
    "no iat": {"drop": ["iat"]},
    "signed by another key": {"key": "other"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_forged_id_tokens_at_the_code_exchange(browser_envoy, standin, pki, upstream, case):
    proxy = browser_envoy(idp=standin)
    flow = harness.start_login(proxy, standin, "/private")
    params = flow.authorize_params
    spec = dict(CASES[case])
    if spec.pop("key", None) == "other":
        token = harness.make_jwt({"kid": "idp-sig-1"}, {
            "iss": standin.issuer, "sub": "john", "aud": "client-tls-auth", "iat": int(time.time()),
            "exp": int(time.time()) + 300, "nonce": params["nonce"]}, pki.path("other.key"), "RS256")
    else:
        if spec.get("secret") == "PUBLIC":
            spec["secret"] = harness.public_key(pki.path("idp.key"))["pem"]
        token = id_token(standin, pki, params["nonce"], **spec)
    standin.routes["/token"] = (200, {"access_token": "at-from-stand-in", "token_type": "Bearer", "expires_in": 300,
                                      "id_token": token}, "application/json")
    seen_before = upstream.log()
    r = flow.callback(proxy.url(f"/callback?code=c0de&state={params['state']}"))
    if case == "valid":
        assert r.status_code == 302, r.text
        assert r.headers["location"] == "/private"
        assert harness.upstream_seen(flow.follow())["headers"]["authorization"] == "Bearer at-from-stand-in"
        return
    assert r.status_code == 401, (case, r.status_code, r.text)
    assert r.json()["error"] == "login_failed"
    assert not any(harness.is_session_cookie(c.name) and not c.expired for c in harness.set_cookies(r))
    assert upstream.log() == seen_before
    assert proxy.get("/private", headers=harness.API_HEADERS, cookies=flow.http.cookies).status_code == 401
    assert_alive(proxy)


@pytest.mark.parametrize("path", ["//evil.example/x", "//evil.example", "/\\evil.example/x", "/%5Cevil.example"])
def test_no_open_redirect_after_login(browser_envoy, idp, path):
    proxy = browser_envoy()
    flow = harness.start_login(proxy, idp, path)
    flow.authenticate()
    r = flow.callback()
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location, location
    assert urlsplit(location).netloc == ""


def test_oversized_and_junk_cookies_are_no_session(browser_envoy, idp, upstream):
    proxy = browser_envoy()
    seen_before = upstream.log()
    junk = {
        "session": "A" * 30000,
        "session_1": "B" * 3000, "session_2": "C" * 3000,
        "authorization": "not-sealed",
    }
    for name, value in junk.items():
        r = proxy.get("/", headers={**harness.API_HEADERS, "cookie": f"{name}={value}"})
        assert r.status_code == 401, (name, r.status_code)
    many = "; ".join(f"session_{i}=x" for i in range(1, 400))
    assert proxy.get("/", headers={**harness.API_HEADERS, "cookie": many}).status_code == 401
    # beyond Envoy's header limit: Envoy answers itself
    r = proxy.get("/", headers={**harness.API_HEADERS, "cookie": "session=" + "A" * 100_000})
    assert r.status_code in (401, 431), r.status_code
    assert upstream.log() == seen_before
    assert_alive(proxy)


def test_a_session_cookie_replayed_after_logout_of_another_envoy_secret(browser_envoy, idp, upstream):
    """A copied session cookie is only as good as its secret and its timeouts: under
    another secret it is no session, and after the absolute timeout it is refused even
    with the right secret."""
    proxy = browser_envoy(session_absolute_timeout=2)
    flow = harness.login(proxy, idp, "/")
    stolen = flow.session_cookies()
    other = browser_envoy(session_secret="another-secret-0123456789abcdef-xyz")
    assert other.get("/", headers=harness.API_HEADERS, cookies=stolen).status_code == 401
    time.sleep(3)
    assert proxy.get("/", headers=harness.API_HEADERS, cookies=stolen).status_code == 401


MALFORMED = [
    "Bearer", "Bearer ", "Bearer  two  spaces", "Bearer a.b", "Bearer a.b.c.d", "Bearer ....", "Bearer %00",
    "Bearer " + "x" * 50_000, "Basic", "Basic !!!", "Basic " + "QQ==" * 10_000, "Negotiate abc", "bearer",
    "Bearer eyJhbGciOiJub25lIn0.e30.", "Basic am9objpkb2U=extra",
]


def test_malformed_and_oversized_credentials(envoy, jwt_idp, upstream):
    cfg = harness.mtls_plugin_config(jwt_idp, ["bearer", "password"])
    proxy = envoy(cfg, idp=jwt_idp)
    seen_before = upstream.log()
    for value in MALFORMED:
        r = proxy.get("/", headers={"authorization": value})
        assert r.status_code in (400, 401, 431), (value[:30], r.status_code)
    assert upstream.log() == seen_before
    assert_alive(proxy)


def test_mix_up_an_answer_from_another_idp_is_refused(browser_envoy, idp, upstream):
    """RFC 9207: an authorization response whose `iss` is not our IdP is refused, even with
    a valid state and code."""
    from urllib.parse import parse_qsl, urlencode, urlsplit
    proxy = browser_envoy(display_errors=True)
    flow = harness.start_login(proxy, idp, "/")
    flow.authenticate()
    parts = urlsplit(flow.callback_url)
    query = dict(parse_qsl(parts.query))
    assert query.get("iss", idp.issuer) == idp.issuer
    query["iss"] = "https://evil.example"
    r = flow.callback(proxy.url(parts.path + "?" + urlencode(query)))
    assert r.status_code == 401, r.text
    assert "another identity provider" in r.json()["error_description"]
