"""Browser login: the authorization code flow with PKCE (Kong `openid-connect` names:
auth_methods [session, authorization_code], redirect_uri, session_secret), through real Envoy
to the real IdP, the code exchanged over mutual TLS (RFC 8705) or with a client secret.

The browser is played by hand with requests (harness.start_login / LoginFlow / login) so that
every step can be inspected or tampered with; test_browser.py does it with real Chromium.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

import harness
from harness import API_HEADERS, BROWSER_HEADERS, bearer_of, login, set_cookie_map, start_login, upstream_seen

TLS_SUBJECT = 'subject="CN=client-tls-auth,O=Example,C=US"'
TOKEN_CALL = "IDP POST /token "


def describe(r: requests.Response) -> str:
    return (f"{r.status_code} location={r.headers.get('location')!r} "
            f"set-cookie={r.headers.get('set-cookie')!r} body={r.text[:400]!r}")


def assert_login_failed(r: requests.Response, error: str = "login_failed") -> dict:
    """401 JSON {"error", "message"} from the filter, never a redirect (no login loop)."""
    assert r.status_code == 401, describe(r)
    assert "location" not in r.headers, describe(r)
    body = r.json()
    assert body["error"] == error, body
    assert body.get("message") == "Unauthorized" and "error_description" not in body, body
    assert "headers" not in body  # the echo upstream was not reached
    return body


def assert_api_401(r: requests.Response) -> None:
    assert r.status_code == 401, describe(r)
    assert "location" not in r.headers, describe(r)
    assert "error" in r.json()


def with_query(url: str, **changes: str | None) -> str:
    """url with query parameters replaced (None removes one)."""
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return urlunsplit(parts._replace(query=urlencode(q)))


log_since = harness.idp_log_since


# ---------------------------------------------------------------------------
# the happy paths
# ---------------------------------------------------------------------------
def test_login_over_mtls_forwards_the_access_token_and_returns_to_the_original_url(browser_envoy, idp):
    proxy = browser_envoy()
    original = "/hello/world?x=1&y=two%20words"
    flow = start_login(proxy, idp, original)

    # the authorization request the filter sends the browser to
    p = flow.authorize_params
    assert p["response_type"] == "code"
    assert p["client_id"] == "client-tls-auth"
    assert p["redirect_uri"] == harness.loopback_uri(proxy, "/callback")
    assert "openid" in p["scope"].split()
    assert p["code_challenge_method"] == "S256"
    assert len(p["code_challenge"]) == 43, p  # base64url(SHA-256)
    assert len(p["state"]) >= 16 and len(p["nonce"]) >= 16, p
    assert p["state"] != p["nonce"]
    # ... and the short-lived, encrypted authorization cookie
    authz = set_cookie_map(flow.start)["authorization"]
    assert authz.value and not authz.expired, authz.raw
    assert "httponly" in authz.attrs and "secure" not in authz.attrs, authz.raw  # plain http listener
    assert authz.attrs.get("path") == "/", authz.raw
    assert authz.attrs.get("samesite", "").lower() == "lax", authz.raw
    for secret in (p["state"], p["nonce"]):
        assert secret not in authz.value  # encrypted, not in clear
    # a second login start gets fresh values
    other = start_login(proxy, idp, original)
    assert other.authorize_params["state"] != p["state"]
    assert other.authorize_params["code_challenge"] != p["code_challenge"]

    callback_url = flow.authenticate("john")
    assert callback_url.startswith(harness.loopback_uri(proxy, "/callback") + "?")
    assert flow.callback_params()["state"] == p["state"]
    mark = len(idp.log())
    r = flow.callback()
    assert r.status_code == 302, describe(r)
    back = urlsplit(r.headers["location"])
    assert (back.path, back.query) == ("/hello/world", "x=1&y=two%20words"), r.headers["location"]
    assert back.netloc in ("", f"127.0.0.1:{proxy.port}"), r.headers["location"]
    cookies = set_cookie_map(r)
    assert "session" in cookies and not cookies["session"].expired, r.headers.get("set-cookie")
    assert "httponly" in cookies["session"].attrs and cookies["session"].attrs.get("path") == "/"
    assert cookies["authorization"].expired, cookies["authorization"].raw
    # the code went to the token endpoint over mTLS with the client certificate
    token_calls = [l for l in log_since(idp, mark) if l.startswith(TOKEN_CALL)]
    assert len(token_calls) == 1, token_calls
    assert "cert=yes" in token_calls[0] and TLS_SUBJECT in token_calls[0] and "status=200" in token_calls[0]

    final = flow.follow()
    seen = upstream_seen(final)
    assert seen["path"] == original
    token = bearer_of(final)
    info = idp.introspect(token)
    assert info["active"] is True and info["sub"] == "john" and info["client_id"] == "client-tls-auth", info
    # the session goes on without the IdP: same token, no further token call
    mark = len(idp.log())
    for _ in range(3):
        assert bearer_of(flow.get("/again")) == token
    assert not [l for l in log_since(idp, mark) if l.startswith(TOKEN_CALL)]


@pytest.mark.parametrize("client", ["client-secret-basic", "client-secret-post"])
def test_login_with_a_client_secret(browser_envoy, idp, client):
    proxy = browser_envoy(client=client)
    flow = login(proxy, idp, "/secret?a=b", user="jane")
    assert upstream_seen(flow.final)["path"] == "/secret?a=b"
    info = idp.introspect(bearer_of(flow.final))
    assert info["active"] is True and info["sub"] == "jane" and info["client_id"] == client, info
    # no call went through the mTLS cluster
    assert proxy.stats("cluster.idp-mtls.upstream_rq_total").get("cluster.idp-mtls.upstream_rq_total", 0) == 0


def test_redirect_uri_list_sends_the_first_and_accepts_every_path_as_callback(browser_envoy, idp):
    proxy = browser_envoy(callback=["/callback", "/auth/callback"])
    flow = start_login(proxy, idp, "/listed")
    assert flow.authorize_params["redirect_uri"] == harness.loopback_uri(proxy, "/callback")
    url = flow.authenticate()
    # the same code and state presented at the second configured path
    second = url.replace("/callback?", "/auth/callback?", 1)
    assert second != url
    r = flow.callback(second)
    assert r.status_code == 302, describe(r)
    assert urlsplit(r.headers["location"]).path == "/listed"
    final = flow.follow()
    assert idp.introspect(bearer_of(final))["active"] is True


def test_a_path_that_is_not_the_callback_with_code_and_state_is_not_a_callback(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    url = flow.authenticate()
    r = flow.callback(url.replace("/callback?", "/elsewhere?", 1))
    # an ordinary request without a session: a new login, not a code exchange
    assert r.status_code == 302, describe(r)
    assert r.headers["location"].startswith(idp.discovery()["authorization_endpoint"])


# ---------------------------------------------------------------------------
# who gets a login and who gets 401
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    API_HEADERS,
    {},  # requests' default Accept: */*
    {"Accept": "application/json, text/plain, */*"},
    {**BROWSER_HEADERS, "X-Requested-With": "XMLHttpRequest"},
], ids=["json", "any", "xhr-accept", "x-requested-with"])
def test_non_browser_requests_without_session_get_401(browser_envoy, idp, headers):
    proxy = browser_envoy()
    r = proxy.get("/api", headers=headers)
    assert_api_401(r)
    assert "authorization" not in set_cookie_map(r)


# ---------------------------------------------------------------------------
# callback errors: 401 login_failed, never a redirect loop
# ---------------------------------------------------------------------------
def test_callback_without_the_authorization_cookie(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    url = flow.authenticate()
    r = requests.get(url, headers=BROWSER_HEADERS, allow_redirects=False, timeout=15)  # fresh jar
    assert_login_failed(r)


def test_callback_with_a_wrong_state(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    url = flow.authenticate()
    assert_login_failed(flow.callback(with_query(url, state="x" + flow.callback_params()["state"][1:])))
    assert_login_failed(flow.callback(with_query(url, state=None)))


def test_callback_with_the_state_of_another_login(browser_envoy, idp):
    """Two logins in two browsers: A's code and state presented with B's authorization cookie."""
    proxy = browser_envoy()
    a = start_login(proxy, idp, "/a")
    b = start_login(proxy, idp, "/b")
    url_a = a.authenticate()
    assert_login_failed(b.callback(url_a))


def test_replayed_callback_after_success(browser_envoy, idp):
    proxy = browser_envoy()
    flow = login(proxy, idp, "/", follow=False)
    url = flow.callback_url
    old_authorization = set_cookie_map(flow.start)["authorization"].value
    # the authorization cookie was cleared: the same callback again, without a session
    assert_login_failed(requests.get(url, headers=BROWSER_HEADERS, allow_redirects=False, timeout=15))
    # even with the (stolen) old authorization cookie the code is not accepted twice
    r = requests.get(url, headers={**BROWSER_HEADERS, "Cookie": f"authorization={old_authorization}"},
                     allow_redirects=False, timeout=15)
    assert_login_failed(r)


def test_callback_with_a_bogus_code(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    url = flow.authenticate()
    assert_login_failed(flow.callback(with_query(url, code="not-a-code-" + "A" * 32)))


def test_callback_with_a_code_for_another_nonce(browser_envoy, idp):
    """A code issued for the filter's own state and PKCE challenge but another nonce: the
    exchange succeeds, the ID token's nonce does not match the authorization cookie's."""
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    p = flow.authorize_params
    forged, sent = harness.idp_login_flow(
        idp, p["client_id"], p["redirect_uri"], scope=p["scope"], state=p["state"],
        code_challenge=p["code_challenge"], code_challenge_method="S256", nonce="attacker-chosen-nonce-0123456789")
    url = forged.authenticate()
    assert forged.callback_params()["state"] == p["state"]
    mark = len(idp.log())
    assert_login_failed(flow.callback(url))
    # it really got that far: the code was exchanged
    assert [l for l in log_since(idp, mark) if l.startswith(TOKEN_CALL) and "status=200" in l]


def test_callback_with_a_code_for_another_pkce_challenge(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    p = flow.authorize_params
    forged, _ = harness.idp_login_flow(idp, p["client_id"], p["redirect_uri"], scope=p["scope"], state=p["state"],
                                       nonce=p["nonce"])
    assert_login_failed(flow.callback(forged.authenticate()))


def test_access_denied_at_the_idp(browser_envoy, idp):
    proxy = browser_envoy()
    flow = start_login(proxy, idp, "/")
    url = flow.authenticate(abort=True)  # the user pressed Cancel
    assert flow.callback_params()["error"] == "access_denied"
    mark = len(idp.log())
    assert_login_failed(flow.callback(url))
    assert not [l for l in log_since(idp, mark) if l.startswith(TOKEN_CALL)]


@pytest.mark.parametrize("cert", [None, "other"])
def test_idp_rejecting_the_client_certificate_at_the_code_exchange(browser_envoy, idp, cert):
    proxy = browser_envoy(mtls_cert=cert)
    flow = start_login(proxy, idp, "/")  # discovery and the redirect need no certificate
    url = flow.authenticate()
    mark = len(idp.log())
    assert_login_failed(flow.callback(url), error="invalid_client")
    token_calls = [l for l in log_since(idp, mark) if l.startswith(TOKEN_CALL)]
    assert token_calls and all("status=401" in l for l in token_calls), token_calls
    expected = "cert=no" if cert is None else 'subject="CN=someone-else'
    assert all(expected in l for l in token_calls), token_calls
    # and the browser has no session afterwards
    assert not flow.session_cookies()


# ---------------------------------------------------------------------------
# the filter's cookies stay between the browser and the filter
# ---------------------------------------------------------------------------
def test_filter_cookies_do_not_reach_the_upstream(browser_envoy, idp):
    proxy = browser_envoy()
    flow = login(proxy, idp, "/")
    assert not upstream_seen(flow.final)["headers"].get("cookie", "").strip()
    session = flow.session_cookies()
    assert session
    mine = {**session, "authorization": "stale-value", "theme": "dark", "sessionid": "app-own", "z": "1"}
    r = proxy.get("/", headers={**BROWSER_HEADERS, "Cookie": harness.cookie_header(mine)})
    seen = upstream_seen(r)
    cookie = seen["headers"].get("cookie", "")
    pairs = [c.strip() for c in cookie.split(";") if c.strip()]
    assert sorted(pairs) == ["sessionid=app-own", "theme=dark", "z=1"], cookie
    assert seen["headers"]["authorization"].startswith("Bearer ")
    # only the filter's cookies: no Cookie header upstream at all (or an empty one)
    r = proxy.get("/", headers={**BROWSER_HEADERS, "Cookie": harness.cookie_header(session)})
    assert not upstream_seen(r)["headers"].get("cookie", "").strip()


def test_custom_cookie_names(browser_envoy, idp):
    proxy = browser_envoy(session_cookie_name="oidc_sess", authorization_cookie_name="oidc_authz")
    flow = start_login(proxy, idp, "/named")
    assert "oidc_authz" in set_cookie_map(flow.start)
    flow.authenticate()
    r = flow.callback()
    assert r.status_code == 302, describe(r)
    cookies = set_cookie_map(r)
    assert "oidc_sess" in cookies and not cookies["oidc_sess"].expired
    assert "session" not in cookies
    assert cookies["oidc_authz"].expired
    final = flow.follow()
    assert idp.introspect(bearer_of(final))["active"] is True
    assert "oidc_sess" not in upstream_seen(final)["headers"].get("cookie", "")


# ---------------------------------------------------------------------------
# harness self-checks (IdP side only, no filter needed)
# ---------------------------------------------------------------------------
def test_idp_accepts_loopback_redirects_on_any_port_and_exchanges_over_mtls(idp):
    port = harness.free_port()
    flow, sent = harness.idp_login_flow(idp, "client-tls-auth", f"http://127.0.0.1:{port}/callback")
    url = flow.authenticate("john")
    assert url.startswith(f"http://127.0.0.1:{port}/callback?")
    q = flow.callback_params()
    assert q["state"] == sent["state"] and q["iss"] == idp.issuer
    data = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": sent["redirect_uri"],
            "code_verifier": sent["code_verifier"]}
    assert idp.token_request("client-tls-auth", data, cert="other").status_code == 401
    tokens = idp.token_request("client-tls-auth", data).json()
    _, claims = harness.decode_jwt(tokens["id_token"])
    assert claims["nonce"] == sent["nonce"] and claims["aud"] == "client-tls-auth" and claims["sub"] == "john"
    assert idp.introspect(tokens["access_token"])["active"] is True
    assert tokens["refresh_token"]
    # an unregistered path is refused whatever the port
    bad, _ = harness.idp_login_flow(idp, "client-tls-auth", f"http://127.0.0.1:{port}/not-registered")
    assert bad._idp_get(bad.authorize_url).status_code == 400
