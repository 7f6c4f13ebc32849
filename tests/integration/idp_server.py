"""The test IdP (node tests/idp/idp.js, panva/oidc-provider).

Owns what idp.js registers (USERS, CLIENT_SECRETS, CLIENT_AUTH, USER_GROUPS,
USER_ROLES, JWT_AUDIENCE), ensure_idp_deps (npm ci), the IdP handle with the
IdP-side calls a test makes by itself (discovery, token requests with each
client's authentication, password / client_credentials / refresh grants,
introspection, revocation, userinfo, JWKS, restart), start_idp, and
idp_log_since.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import requests

from pki import PKI
from processes import REPO_ROOT, ManagedProcess, free_port

IDP_DIR = REPO_ROOT / "tests" / "idp"


# Users and clients registered in tests/idp/idp.js
USERS = {"john": "doe", "jane": "secret2"}
CLIENT_SECRETS = {
    "client-secret-basic": "secret-basic-1",
    "client-secret-post": "secret-post-1",
    "client-secret-jwt": "a-very-long-shared-secret-for-hs256-0123456789",
    "resource-server": "rs-secret",
}
# client_id -> how harness helpers authenticate it at the token endpoint
CLIENT_AUTH = {
    "client-tls-auth": "tls_client_auth",
    "client-tls-bound": "tls_client_auth",
    "client-self-signed": "self_signed_tls_client_auth",
    "client-secret-basic": "client_secret_basic",
    "client-secret-post": "client_secret_post",
    "client-secret-jwt": "client_secret_jwt",
    "client-private-key-jwt": "private_key_jwt",
    "client-none": "none",
    "resource-server": "client_secret_basic",
}
# Claims the IdP puts in access tokens (JWT payload / introspection answer)
USER_GROUPS = {"john": ["admins", "users"], "jane": ["users"]}
USER_ROLES = {"john": ["reader", "writer"], "jane": ["reader"]}
# Default audience of JWT access tokens (IdP env JWT_AUDIENCE)
JWT_AUDIENCE = "https://api.example.com"


def ensure_idp_deps() -> None:
    if (IDP_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("npm not found; install Node.js and run: npm ci --prefix tests/idp")
    subprocess.run([npm, "ci", "--prefix", str(IDP_DIR), "--no-audit", "--no-fund"], check=True, timeout=600)


class IdP:
    """The running test IdP (tests/idp/idp.js)."""

    def __init__(self, process: ManagedProcess, port: int, issuer: str, pki: PKI, mtls_port: int | None = None,
                 env: Mapping[str, str] | None = None):
        self.process = process
        self.port = port
        self.mtls_port = mtls_port
        self.issuer = issuer
        self.pki = pki
        self.env = dict(env or {})
        self.base_url = f"https://localhost:{port}"
        self.restarts = 0

    # -- process ------------------------------------------------------------
    def log(self, settle: float = 0.1, timeout: float = 2.0) -> str:
        """Log of the current process (after restart(): of the new one only), once it has
        stopped growing for `settle` seconds: the IdP writes a request's line when the
        response has left it, which can be just after Envoy has already answered the client."""
        deadline = time.monotonic() + timeout
        last = self.process.log()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.process.log()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                break
        return last

    def stop(self) -> None:
        self.process.stop()

    def restart(self, env: Mapping[str, str] | None = None, *, timeout: float = 20.0) -> "IdP":
        """Stop and start the IdP again on the same port(s), same issuer.

        env: variables merged over the original ones, e.g. key rotation:
        idp.restart(env={"SIGNING_KEY": "idp2.key", "SIGNING_KID": "idp-sig-2"}).
        In-memory state (opaque tokens, grants) is lost.  The new log goes to
        `<log>.restart-N` and log() reads that one.
        """
        self.process.stop()
        self.restarts += 1
        merged = {**self.env, **(env or {})}
        log_path = self.process.log_path.with_name(f"{self.process.log_path.name}.restart-{self.restarts}")
        fresh = start_idp(self.pki, log_path, port=self.port, env=merged, mtls_port=self.mtls_port, timeout=timeout)
        assert fresh.issuer == self.issuer, (fresh.issuer, self.issuer)
        self.process = fresh.process
        self.env = merged
        return self

    def jwks(self) -> dict:
        r = self.request("GET", "/jwks")
        r.raise_for_status()
        return r.json()

    # -- http ---------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def request(self, method: str, path: str, *, cert: str | tuple[str, str] | None = None,
                **kw: Any) -> requests.Response:
        """HTTP request to the IdP, verifying it against the test CA.

        cert: a PKI name ('client', 'other', 'selfsigned', ...) or a (crt, key) tuple.
        """
        if isinstance(cert, str):
            cert = self.pki.cert(cert)
        kw.setdefault("timeout", 10)
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.url(path), verify=str(self.pki.ca_crt), cert=cert, **kw)

    def discovery(self) -> dict:
        r = self.request("GET", "/.well-known/openid-configuration")
        r.raise_for_status()
        return r.json()

    def _client_auth(self, client_id: str, data: dict, cert: Any) -> tuple[dict, Any, Any]:
        method = CLIENT_AUTH.get(client_id)
        auth = None
        if method == "client_secret_basic":
            auth = (client_id, CLIENT_SECRETS[client_id])
        elif method == "client_secret_post":
            data = {**data, "client_id": client_id, "client_secret": CLIENT_SECRETS[client_id]}
        elif method in ("tls_client_auth", "self_signed_tls_client_auth", "none"):
            data = {**data, "client_id": client_id}
            if cert == "default":
                cert = {"tls_client_auth": "client", "self_signed_tls_client_auth": "selfsigned"}.get(method)
        elif method in ("client_secret_jwt", "private_key_jwt"):
            raise NotImplementedError(f"{method}: build the client_assertion yourself and use token_request()")
        else:
            data = {**data, "client_id": client_id}
        if cert == "default":
            cert = None
        return data, auth, cert

    def token_request(self, client_id: str, data: Mapping[str, str], *, cert: Any = "default",
                      auth: Any = None) -> requests.Response:
        """POST /token authenticating `client_id` the way it is registered.

        cert="default" presents client.crt for tls_client_auth clients and
        selfsigned.crt for self_signed_tls_client_auth; None presents none;
        a PKI name or (crt, key) tuple presents that one.
        """
        data, basic, cert = self._client_auth(client_id, dict(data), cert)
        return self.request("POST", "/token", data=data, auth=auth or basic, cert=cert)

    def password_grant(self, client_id: str = "client-secret-basic", username: str = "john",
                       password: str | None = None, scope: str = "openid profile email", *,
                       cert: Any = "default", check: bool = True, token_format: str | None = None,
                       audience: str | Iterable[str] | None = None) -> dict | requests.Response:
        """Resource-owner password grant. Returns the token JSON (check=True) or the Response.

        token_format: "jwt" | "opaque" (IdP default: jwt when started with
        JWT_ACCESS_TOKENS=1, else opaque).  audience: the JWT's aud (a string,
        or several values; implies jwt; default JWT_AUDIENCE).
        """
        data = {
            "grant_type": "password", "username": username,
            "password": USERS.get(username, "") if password is None else password, "scope": scope,
        }
        if token_format:
            data["token_format"] = token_format
        if audience is not None:
            data["audience"] = audience if isinstance(audience, str) else " ".join(audience)
        r = self.token_request(client_id, data, cert=cert)
        if not check:
            return r
        assert r.status_code == 200, f"password grant failed: {r.status_code} {r.text}"
        return r.json()

    def client_credentials(self, client_id: str = "client-secret-basic", scope: str | None = None, *,
                           cert: Any = "default", check: bool = True) -> dict | requests.Response:
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        r = self.token_request(client_id, data, cert=cert)
        if not check:
            return r
        assert r.status_code == 200, f"client_credentials failed: {r.status_code} {r.text}"
        return r.json()

    def refresh(self, client_id: str, refresh_token: str, *, cert: Any = "default",
                check: bool = True) -> dict | requests.Response:
        r = self.token_request(client_id, {"grant_type": "refresh_token", "refresh_token": refresh_token}, cert=cert)
        if not check:
            return r
        assert r.status_code == 200, f"refresh failed: {r.status_code} {r.text}"
        return r.json()

    def introspect(self, token: str, token_type_hint: str | None = None) -> dict:
        """RFC 7662 introspection as the `resource-server` client (may introspect any token)."""
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        r = self.request("POST", "/token/introspection", data=data,
                         auth=("resource-server", CLIENT_SECRETS["resource-server"]))
        r.raise_for_status()
        return r.json()

    def revoke(self, token: str, token_type_hint: str | None = None) -> requests.Response:
        """RFC 7009 revocation as `resource-server` (allowed to revoke any token)."""
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        return self.request("POST", "/token/revocation", data=data,
                            auth=("resource-server", CLIENT_SECRETS["resource-server"]))

    def userinfo(self, access_token: str, *, cert: Any = None) -> requests.Response:
        return self.request("GET", "/me", headers={"authorization": f"Bearer {access_token}"}, cert=cert)


def start_idp(pki: PKI, log_path: Path, *, port: int | None = None, env: Mapping[str, str] | None = None,
              mtls_port: int | None = None, timeout: float = 20.0) -> IdP:
    """Start tests/idp/idp.js.  env: extra variables (ACCESS_TOKEN_TTL, JWT_ACCESS_TOKENS, ...)."""
    ensure_idp_deps()
    port = port or free_port()
    e = {"IDP_PORT": str(port), "PKI_DIR": str(pki.dir), "NODE_NO_WARNINGS": "1"}
    if mtls_port:
        e["IDP_MTLS_PORT"] = str(mtls_port)
    e.update(env or {})
    node = shutil.which("node") or "node"
    proc = ManagedProcess("idp", [node, str(IDP_DIR / "idp.js")], log_path, env=e)
    try:
        m = proc.wait_for_output(r"^IDP READY (\S+)$", timeout)
    except Exception:
        proc.stop()
        raise
    return IdP(proc, port, m.group(1), pki, mtls_port, env=dict(env or {}))


def idp_log_since(idp, mark: int) -> list[str]:
    """Lines the IdP logged after offset `mark` (see IdP.log for the settling)."""
    return idp.log()[mark:].splitlines()
