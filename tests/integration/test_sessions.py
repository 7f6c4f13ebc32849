"""Sessions after a browser login: AES-256-GCM cookies (session_secret) valid on every worker and
every Envoy with the same secret, rejected when tampered, truncated, mixed or expired; token
refresh inside the session; logout with revocation (RFC 7009, over mTLS) and RP-initiated logout.
"""
from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

import harness
from harness import API_HEADERS, BROWSER_HEADERS, bearer_of, cookie_header, login, set_cookie_map, upstream_seen

TLS_SUBJECT = 'subject="CN=client-tls-auth,O=Example,C=US"'


def describe(r: requests.Response) -> str:
    return (f"{r.status_code} location={r.headers.get('location')!r} "
            f"set-cookie={r.headers.get('set-cookie')!r} body={r.text[:400]!r}")


def send(proxy, cookies: dict, path: str = "/", *, api: bool = False, method: str = "GET") -> requests.Response:
    """A request with exactly these cookies (no jar), as a browser or as an API client."""
    headers = {**(API_HEADERS if api else BROWSER_HEADERS), "Cookie": cookie_header(cookies)}
    return proxy.request(method, path, headers=headers)


def assert_no_session(proxy, idp, cookies: dict, why: str = "") -> None:
    """The cookies are not a session: a browser is sent to log in, an API client gets 401."""
    r = send(proxy, cookies)
    assert r.status_code == 302, f"{why}: {describe(r)}"
    assert r.headers["location"].startswith(idp.discovery()["authorization_endpoint"] + "?"), f"{why}: {describe(r)}"
    r = send(proxy, cookies, api=True)
    assert r.status_code == 401, f"{why}: {describe(r)}"
    assert "location" not in r.headers and "error" in r.json(), f"{why}: {describe(r)}"


def assert_session(proxy, cookies: dict, token: str | None = None, why: str = "") -> str:
    r = send(proxy, cookies)
    assert r.status_code == 200, f"{why}: {describe(r)}"
    got = bearer_of(r)
    if token is not None:
        assert got == token, why
    return got


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(value: str, at: int | None = None) -> str:
    """value with one character (default: the middle one) changed to another base64url character
    whose top bit differs (so even the last character of unpadded base64 decodes differently)."""
    i = len(value) // 2 if at is None else at
    c = value[i]
    new = B64URL[(B64URL.index(c) + 32) % 64] if c in B64URL else "A"
    return value[:i] + new + value[i + 1:]


log_since = harness.idp_log_since


# ---------------------------------------------------------------------------
# where a session is valid
# ---------------------------------------------------------------------------
def test_session_is_valid_on_every_worker(browser_envoy, idp):
    proxy = browser_envoy(concurrency=2)
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    cookies = flow.session_cookies()
    for i in range(24):
        r = proxy.get(f"/w{i}", headers={**BROWSER_HEADERS, "Cookie": cookie_header(cookies),
                                         "Connection": "close"})
        assert r.status_code == 200, f"request {i}: {describe(r)}"
        assert bearer_of(r) == token


def test_session_moves_to_another_envoy_with_the_same_secret_only(browser_envoy, idp):
    first = browser_envoy()
    second = browser_envoy(concurrency=2)
    stranger = browser_envoy(session_secret="a-completely-different-session-secret-0123456789")
    flow = login(first, idp, "/")
    token = bearer_of(flow.final)
    cookies = flow.session_cookies()
    assert_session(second, cookies, token, "same secret")
    assert_no_session(stranger, idp, cookies, "another secret")
    # the jar (cookies are per host, not per port) works on the second one too
    assert bearer_of(flow.http.get(second.url("/"), headers=BROWSER_HEADERS, allow_redirects=False,
                                   timeout=15)) == token


def test_each_user_has_their_own_session(browser_envoy, idp):
    proxy = browser_envoy()
    john = login(proxy, idp, "/", "john")
    jane = login(proxy, idp, "/", "jane")
    john_token, jane_token = bearer_of(john.final), bearer_of(jane.final)
    assert john_token != jane_token
    assert idp.introspect(john_token)["sub"] == "john"
    assert idp.introspect(jane_token)["sub"] == "jane"
    assert assert_session(proxy, john.session_cookies()) == john_token
    assert assert_session(proxy, jane.session_cookies()) == jane_token


# ---------------------------------------------------------------------------
# forged sessions
# ---------------------------------------------------------------------------
def test_tampered_and_truncated_sessions_are_no_session(browser_envoy, idp):
    proxy = browser_envoy()
    flow = login(proxy, idp, "/")
    cookies = flow.session_cookies()
    assert list(cookies) == ["session"], f"expected one cookie for a small session: {list(cookies)}"
    value = cookies["session"]
    assert len(value) > 40
    forged = {
        "flipped in the middle": flip(value),
        "flipped first char": flip(value, 0),
        "flipped last char": flip(value, len(value) - 1),
        "truncated by 10": value[:-10],
        "half": value[: len(value) // 2],
        "one char": value[:1],
        "empty": "",
        "appended": value + "AAAA",
        "not base64": "%%%" + value[3:],
    }
    for why, v in forged.items():
        assert_no_session(proxy, idp, {"session": v}, why)
    # the genuine one still works afterwards
    assert_session(proxy, cookies, bearer_of(flow.final))


@pytest.fixture
def padded_idp(idp_factory):
    """An IdP issuing ~7 KB JWT access tokens: sessions need several cookie chunks."""
    return idp_factory(env={"JWT_ACCESS_TOKENS": "1", "ACCESS_TOKEN_PADDING": "5000"})


def test_big_sessions_are_chunked_and_chunks_cannot_be_mixed(browser_envoy, padded_idp):
    idp = padded_idp
    proxy = browser_envoy(idp=idp)
    john = login(proxy, idp, "/", "john")
    r = john.callback_response
    # every chunk fits in a browser cookie
    raw = [c for c in harness.set_cookies(r) if harness.is_session_cookie(c.name)]
    assert len(raw) >= 2, [c.name for c in harness.set_cookies(r)]
    assert all(len(c.raw) < 4096 for c in raw), [len(c.raw) for c in raw]
    names = [n for n, _ in harness.session_chunks({c.name: c.value for c in raw})]
    assert names == ["session"] + [f"session_{i}" for i in range(2, len(names) + 1)], names
    token = bearer_of(john.final)
    assert len(token) > 6000 and harness.decode_jwt(token)[1]["sub"] == "john"
    john_cookies = john.session_cookies()
    assert assert_session(proxy, john_cookies) == token

    jane = login(proxy, idp, "/", "jane")
    jane_cookies = jane.session_cookies()
    assert harness.decode_jwt(assert_session(proxy, jane_cookies))[1]["sub"] == "jane"

    assert_no_session(proxy, idp, {k: v for k, v in john_cookies.items() if k != "session_2"}, "missing chunk")
    assert_no_session(proxy, idp, {"session": john_cookies["session"]}, "first chunk only")
    swapped = {**john_cookies, "session": john_cookies["session_2"], "session_2": john_cookies["session"]}
    assert_no_session(proxy, idp, swapped, "first two chunks swapped")
    mixed = {**john_cookies, "session_2": jane_cookies["session_2"]}
    assert_no_session(proxy, idp, mixed, "john's chunks with jane's second chunk")
    mixed = {**jane_cookies, "session": john_cookies["session"]}
    assert_no_session(proxy, idp, mixed, "jane's chunks with john's first chunk")
    tampered = {**john_cookies, "session_2": flip(john_cookies["session_2"])}
    assert_no_session(proxy, idp, tampered, "tampered second chunk")


# ---------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------
def test_idle_session_expires(browser_envoy, idp):
    proxy = browser_envoy(session_idling_timeout=2)
    flow = login(proxy, idp, "/")
    cookies = flow.session_cookies()
    assert_session(proxy, cookies)
    time.sleep(3.5)
    assert_no_session(proxy, idp, cookies, "idle for longer than session_idling_timeout")


def test_active_session_outlives_the_idling_timeout(browser_envoy, idp):
    """Each use of the session counts as activity (the filter rewrites the cookie as needed)."""
    proxy = browser_envoy(session_idling_timeout=4)
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    start = time.monotonic()
    while time.monotonic() - start < 7:
        time.sleep(1)
        r = flow.get("/")  # the jar takes every Set-Cookie the filter sends
        assert r.status_code == 200, describe(r)
        assert bearer_of(r) == token


def test_absolute_timeout_ends_even_an_active_session(browser_envoy, idp):
    proxy = browser_envoy(session_absolute_timeout=3)
    flow = login(proxy, idp, "/")
    time.sleep(1)
    assert flow.get("/").status_code == 200
    time.sleep(3.5)
    assert_no_session(proxy, idp, flow.session_cookies(), "past session_absolute_timeout")


# ---------------------------------------------------------------------------
# refresh inside the session
# ---------------------------------------------------------------------------
def test_expired_access_token_is_refreshed_over_mtls_and_the_session_rewritten(browser_envoy, idp_factory):
    idp = idp_factory(env={"ACCESS_TOKEN_TTL": "2"})
    proxy = browser_envoy(idp=idp)
    flow = login(proxy, idp, "/")
    first = bearer_of(flow.final)
    time.sleep(3.5)
    assert idp.introspect(first)["active"] is False
    mark = len(idp.log())
    r = flow.get("/after")
    assert r.status_code == 200, describe(r)
    fresh = bearer_of(r)
    assert fresh != first
    info = idp.introspect(fresh)
    assert info["active"] is True and info["sub"] == "john" and info["client_id"] == "client-tls-auth", info
    rewritten = set_cookie_map(r)
    assert "session" in rewritten and not rewritten["session"].expired, r.headers.get("set-cookie")
    token_calls = [l for l in log_since(idp, mark) if l.startswith("IDP POST /token ")]
    assert token_calls and all("cert=yes" in l and TLS_SUBJECT in l and "status=200" in l for l in token_calls), \
        token_calls
    # the rewritten session carries the new token (or, if the 2 s token expired again
    # meanwhile, a newer one: never the first)
    carried = assert_session(proxy, flow.session_cookies())
    assert carried != first
    assert carried == fresh or idp.introspect(carried)["active"] is True


def test_failed_refresh_ends_the_session(browser_envoy, idp_factory):
    idp = idp_factory(env={"ACCESS_TOKEN_TTL": "2"})
    proxy = browser_envoy(idp=idp)
    flow = login(proxy, idp, "/")
    cookies = flow.session_cookies()
    idp.restart()  # in-memory grants are gone: the refresh token is unknown now
    time.sleep(3.5)
    r = send(proxy, cookies)
    assert r.status_code == 302, describe(r)
    assert r.headers["location"].startswith(idp.discovery()["authorization_endpoint"] + "?")
    r = send(proxy, cookies, api=True)
    assert r.status_code == 401, describe(r)
    assert "location" not in r.headers and "error" in r.json()


def test_refresh_can_be_turned_off(browser_envoy, idp_factory):
    idp = idp_factory(env={"ACCESS_TOKEN_TTL": "2"})
    proxy = browser_envoy(idp=idp, refresh_tokens=False)
    flow = login(proxy, idp, "/")
    time.sleep(3.5)
    mark = len(idp.log())
    assert_no_session(proxy, idp, flow.session_cookies(), "expired access token, refresh_tokens: false")
    assert not [l for l in log_since(idp, mark) if l.startswith("IDP POST /token ")]


# ---------------------------------------------------------------------------
# logout
# ---------------------------------------------------------------------------
def logout_config(**extra):
    cfg = {"logout_uri_suffix": "/logout", "logout_revoke": True, "logout_redirect_uri": "{envoy}/logged-out"}
    cfg.update(extra)
    return {k: v for k, v in cfg.items() if v is not None}


def assert_cookies_expired(r: requests.Response, names=("session",)) -> None:
    cookies = set_cookie_map(r)
    for name in names:
        assert name in cookies and cookies[name].expired, f"{name} not expired: {r.headers.get('set-cookie')!r}"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_logout_revokes_expires_the_cookies_and_goes_to_end_session(browser_envoy, idp, method):
    proxy = browser_envoy(**logout_config())
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    mark = len(idp.log())
    r = flow.request(method, "/app/logout")
    assert r.status_code == 302, describe(r)
    location = r.headers["location"]
    end_session = idp.discovery()["end_session_endpoint"]
    assert location.split("?", 1)[0] == end_session, location
    q = dict(parse_qsl(urlsplit(location).query))
    assert q["post_logout_redirect_uri"] == harness.loopback_uri(proxy, "/logged-out")
    _, claims = harness.decode_jwt(q["id_token_hint"])
    assert claims["sub"] == "john" and claims["aud"] == "client-tls-auth" and claims["iss"] == idp.issuer
    assert_cookies_expired(r)
    # both tokens were revoked at the IdP, authenticated with the client certificate
    assert idp.introspect(token)["active"] is False
    revocations = [l for l in log_since(idp, mark) if l.startswith("IDP POST /token/revocation ")]
    assert len(revocations) >= 1, log_since(idp, mark)
    assert all("cert=yes" in l and TLS_SUBJECT in l and "status=200" in l for l in revocations), revocations
    # the jar has dropped the session: the next navigation is a new login
    assert not flow.session_cookies()
    after = flow.get("/")
    assert after.status_code == 302 and after.headers["location"].startswith(idp.discovery()["authorization_endpoint"])
    # the IdP accepts the end-session request as built (id_token_hint, registered post-logout URI)
    end = flow.http.get(location, verify=str(idp.pki.ca_crt), allow_redirects=False, timeout=15)
    assert end.status_code in (200, 302, 303), f"{end.status_code} {end.text[:300]}"


def test_logout_by_query_argument(browser_envoy, idp):
    proxy = browser_envoy(**logout_config(logout_uri_suffix=None, logout_query_arg="logout"))
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    r = flow.request("POST", "/anything?logout=true")
    assert r.status_code == 302, describe(r)
    assert r.headers["location"].startswith(idp.discovery()["end_session_endpoint"] + "?")
    assert_cookies_expired(r)
    assert idp.introspect(token)["active"] is False


def test_get_logout_is_not_a_logout_by_default(browser_envoy, idp):
    proxy = browser_envoy(**logout_config())
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    r = flow.get("/app/logout")
    assert upstream_seen(r)["path"] == "/app/logout"
    assert bearer_of(r) == token
    assert idp.introspect(token)["active"] is True
    assert flow.get("/").status_code == 200


def test_logout_without_revocation_keeps_the_tokens_active(browser_envoy, idp):
    proxy = browser_envoy(**logout_config(logout_revoke=False))
    flow = login(proxy, idp, "/")
    token = bearer_of(flow.final)
    mark = len(idp.log())
    r = flow.request("POST", "/logout")
    assert r.status_code == 302, describe(r)
    assert_cookies_expired(r)
    assert idp.introspect(token)["active"] is True
    assert not [l for l in log_since(idp, mark) if l.startswith("IDP POST /token/revocation ")]


def test_logout_without_end_session_endpoint(browser_envoy, idp_factory):
    """The IdP publishes no end_session_endpoint: 302 to logout_redirect_uri, or 200 without one."""
    idp = idp_factory(env={"RP_INITIATED_LOGOUT": "0"})
    assert "end_session_endpoint" not in idp.discovery()
    proxy = browser_envoy(idp=idp, **logout_config())
    flow = login(proxy, idp, "/")
    r = flow.request("POST", "/logout")
    assert r.status_code == 302, describe(r)
    assert r.headers["location"] == harness.loopback_uri(proxy, "/logged-out")
    assert_cookies_expired(r)

    proxy = browser_envoy(idp=idp, logout_uri_suffix="/logout")
    flow = login(proxy, idp, "/")
    r = flow.request("POST", "/logout")
    assert r.status_code == 200, describe(r)
    assert '"headers"' not in r.text  # answered by the filter, not the echo upstream
    assert_cookies_expired(r)


@pytest.mark.parametrize("cert", [None, "other"])
def test_revocation_rejected_by_the_idp_is_401_invalid_client(browser_envoy, idp, cert):
    """The session is made on an Envoy with the right certificate; the logout reaches another
    Envoy (same session secret) whose idp-mtls cluster presents no or the wrong certificate."""
    good = browser_envoy(**logout_config())
    bad = browser_envoy(mtls_cert=cert, **logout_config())
    flow = login(good, idp, "/")
    token = bearer_of(flow.final)
    cookies = flow.session_cookies()
    assert_session(bad, cookies, token, "the session itself is fine on the other Envoy")
    r = send(bad, cookies, "/logout", method="POST")
    assert r.status_code == 401, describe(r)
    assert "location" not in r.headers
    body = r.json()
    assert body["error"] == "invalid_client" and body.get("message") == "Unauthorized", body
    assert_cookies_expired(r)
    assert idp.introspect(token)["active"] is True  # nothing was revoked
