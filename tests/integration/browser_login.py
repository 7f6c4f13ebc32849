"""Browser logins (authorization code flow) driven by hand with requests:
BROWSER_HEADERS / API_HEADERS, LoginFlow (each step and response
inspectable), start_login, login, authorize_redirect_params, and
idp_login_flow (a login at the IdP without Envoy, the test as the client).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import requests

from cookies import session_chunks
from envoy_process import Envoy
from http_util import _describe, _location
from idp_server import USERS, IdP
from tokens import pkce_pair


# What a browser sends on a navigation: the filter starts a login for it
# (Accept contains text/html and there is no X-Requested-With header).
BROWSER_HEADERS = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# What an API client / XHR sends: the filter answers 401 instead of redirecting.
API_HEADERS = {"Accept": "application/json"}


def _form_action(html: str) -> str:
    m = re.search(r'<form[^>]*action="([^"]*/login)"', html)
    if not m:
        raise AssertionError(f"no login form in the IdP page:\n{html[:2000]}")
    import html as htmlmod
    return htmlmod.unescape(m.group(1))


@dataclass
class LoginFlow:
    """One browser login, step by step; every response stays inspectable.

    flow = start_login(proxy, idp, "/hello?x=1")   # GET via Envoy -> 302 to the IdP
    flow.authorize_params["state"] ...             # what the filter sent to the IdP
    url = flow.authenticate()                      # login at the IdP -> Envoy's callback URL (not called)
    flow.callback(url)                             # GET the callback via Envoy -> 302 to /hello?x=1
    flow.follow()                                  # GET /hello?x=1 via Envoy with the session cookie
    """
    proxy: "Envoy"
    idp: "IdP"
    http: requests.Session          # the cookie jar (Envoy's cookies at 127.0.0.1, the IdP's at localhost)
    path: str
    start: requests.Response        # Envoy's 302 to the IdP
    headers: dict
    authorize_url: str = ""
    authorize_params: dict | None = None
    idp_responses: list | None = None     # every response of the IdP, in order
    callback_url: str | None = None       # where the IdP sent the browser back (Envoy's redirect_uri)
    callback_response: requests.Response | None = None
    final: requests.Response | None = None

    # -- Envoy ----------------------------------------------------------------
    def get(self, path: str = "/", *, headers: Mapping[str, str] | None = None, **kw: Any) -> requests.Response:
        """GET via Envoy with this flow's cookie jar, as a browser (BROWSER_HEADERS unless overridden)."""
        return self.request("GET", path, headers=headers, **kw)

    def request(self, method: str, path: str = "/", *, headers: Mapping[str, str] | None = None,
                **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 15)
        kw.setdefault("allow_redirects", False)
        h = dict(BROWSER_HEADERS if headers is None else headers)
        return self.http.request(method, self.proxy.url(path), headers=h, **kw)

    def cookies(self) -> dict[str, str]:
        """The cookies the jar holds for Envoy (127.0.0.1), name -> value."""
        return {c.name: c.value for c in self.http.cookies if c.domain in ("127.0.0.1", "127.0.0.1.local")}

    def session_cookies(self, base: str = "session") -> dict[str, str]:
        return dict(session_chunks(self.cookies(), base))

    # -- IdP ------------------------------------------------------------------
    def _idp_get(self, url: str) -> requests.Response:
        r = self.http.get(url, verify=str(self.idp.pki.ca_crt), allow_redirects=False, timeout=15)
        self.idp_responses.append(r)
        return r

    def _is_idp(self, url: str) -> bool:
        from urllib.parse import urlsplit
        return urlsplit(url).netloc == urlsplit(self.idp.base_url).netloc

    def login_page(self) -> requests.Response:
        """Follow the authorize URL at the IdP up to its login page (200 HTML)."""
        url = self.authorize_url
        for _ in range(10):
            r = self._idp_get(url)
            if r.status_code == 200:
                return r
            if r.status_code not in (302, 303):
                raise AssertionError(f"IdP answered the authorization request with {_describe(r)}")
            url = _location(r)
            if not self._is_idp(url):
                # no login page: the IdP redirected straight back (an error, or SSO)
                self.callback_url = url
                return r
        raise AssertionError("too many redirects at the IdP")

    def authenticate(self, user: str = "john", password: str | None = None, *, abort: bool = False) -> str:
        """Log in at the IdP (or press Cancel with abort=True); returns Envoy's callback URL
        (the IdP's last redirect), which is NOT called."""
        page = self.login_page()
        if self.callback_url is not None and page.status_code != 200:
            return self.callback_url
        action = _form_action(page.text)
        from urllib.parse import urljoin
        if abort:
            url = urljoin(page.url, action[: -len("/login")] + "/abort")
            data = {}
        else:
            url = urljoin(page.url, action)
            data = {"login": user, "password": USERS.get(user, "") if password is None else password}
        r = self.http.post(url, data=data, verify=str(self.idp.pki.ca_crt), allow_redirects=False, timeout=15)
        self.idp_responses.append(r)
        for _ in range(10):
            if r.status_code not in (302, 303):
                raise AssertionError(f"IdP login did not redirect: {_describe(r)}")
            url = _location(r)
            if not self._is_idp(url):
                self.callback_url = url
                return url
            r = self._idp_get(url)
        raise AssertionError("too many redirects at the IdP")

    def callback_params(self) -> dict[str, str]:
        from urllib.parse import parse_qsl, urlsplit
        return dict(parse_qsl(urlsplit(self.callback_url or "").query))

    def callback(self, url: str | None = None, *, headers: Mapping[str, str] | None = None,
                 **kw: Any) -> requests.Response:
        """GET the callback URL (default: the one the IdP gave) via Envoy with the jar."""
        url = url or self.callback_url
        assert url, "authenticate() first"
        kw.setdefault("timeout", 15)
        r = self.http.get(url, headers=dict(BROWSER_HEADERS if headers is None else headers),
                          allow_redirects=False, **kw)
        self.callback_response = r
        return r

    def follow(self, r: requests.Response | None = None) -> requests.Response:
        """GET (via Envoy, with the jar) where Envoy's redirect `r` (default: the callback's) points."""
        r = r if r is not None else self.callback_response
        assert r is not None and r.status_code == 302, _describe(r) if r is not None else "no response"
        resp = self.http.get(_location(r), headers=dict(BROWSER_HEADERS), allow_redirects=False, timeout=15)
        self.final = resp
        return resp


def authorize_redirect_params(r: requests.Response) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit
    return dict(parse_qsl(urlsplit(r.headers.get("location", "")).query))


def start_login(proxy: "Envoy", idp: "IdP", path: str = "/", *, http: requests.Session | None = None,
                headers: Mapping[str, str] | None = None) -> LoginFlow:
    """GET `path` via Envoy as a browser without a session; asserts the 302 to the
    IdP's authorization_endpoint and returns the flow (nothing else is called)."""
    http = http or requests.Session()
    h = dict(BROWSER_HEADERS if headers is None else headers)
    r = http.get(proxy.url(path), headers=h, allow_redirects=False, timeout=15)
    flow = LoginFlow(proxy=proxy, idp=idp, http=http, path=path, start=r, headers=h, idp_responses=[])
    assert r.status_code == 302, f"expected a redirect to the IdP: {_describe(r)}"
    from urllib.parse import urlsplit
    loc = _location(r)
    authz = idp.discovery()["authorization_endpoint"]
    assert loc.split("?", 1)[0] == authz, f"redirect is not to {authz}: {loc}"
    flow.authorize_url = loc
    flow.authorize_params = authorize_redirect_params(r)
    assert urlsplit(loc).netloc == urlsplit(idp.base_url).netloc
    return flow


def login(proxy: "Envoy", idp: "IdP", path: str = "/", user: str = "john", password: str | None = None, *,
          http: requests.Session | None = None, headers: Mapping[str, str] | None = None,
          follow: bool = True) -> LoginFlow:
    """The whole browser login through Envoy: start → IdP login → callback (→ 302 to `path`)
    → (follow=True) GET `path` with the session, which must reach the upstream (200).

    Returns the LoginFlow: flow.http is the cookie jar (a requests.Session),
    flow.final the upstream's answer (the echo JSON)."""
    flow = start_login(proxy, idp, path, http=http, headers=headers)
    flow.authenticate(user, password)
    r = flow.callback()
    assert r.status_code == 302, f"callback failed: {_describe(r)}"
    from urllib.parse import urlsplit
    back = urlsplit(_location(r))
    want = urlsplit(path)
    assert (back.path, back.query) == (want.path or "/", want.query), f"callback redirect {back} is not to {path}"
    if follow:
        final = flow.follow()
        assert final.status_code == 200, f"request with the new session failed: {_describe(final)}"
    return flow


def idp_login_flow(idp: "IdP", client_id: str, redirect_uri: str, *, scope: str = "openid profile email",
                   http: requests.Session | None = None, **params: str) -> tuple[LoginFlow, dict]:
    """A login at the IdP WITHOUT Envoy (the test plays the relying party):
    returns (flow, sent) where sent holds state, nonce, code_verifier; then
    flow.authenticate() gives the redirect back with ?code=&state=&iss=.
    Used to check the IdP side by itself, and to get codes for forged callbacks."""
    from urllib.parse import urlencode
    verifier, challenge = pkce_pair()
    sent = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
            "state": os.urandom(12).hex(), "nonce": os.urandom(12).hex(), "code_challenge": challenge,
            "code_challenge_method": "S256", **params}
    url = idp.discovery()["authorization_endpoint"] + "?" + urlencode(sent)
    flow = LoginFlow(proxy=None, idp=idp, http=http or requests.Session(), path="", start=None,  # type: ignore[arg-type]
                     headers=dict(BROWSER_HEADERS), authorize_url=url, authorize_params=sent, idp_responses=[])
    return flow, {**sent, "code_verifier": verifier}
