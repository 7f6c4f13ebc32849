"""JWTs and PKCE for the tests: make_jwt (any header/claims/alg, signed by
tests/idp/sign.js or in pure Python for HS* with a secret and "none"),
public_key, decode_jwt (unverified), idp_jwt (an access token as the IdP
would issue it) and pkce_pair.  The venv has no crypto package, hence node.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from idp_server import IDP_DIR, JWT_AUDIENCE, USER_GROUPS, USER_ROLES, IdP

SIGN_SCRIPT = IDP_DIR / "sign.js"


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


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    import base64
    import hashlib
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge
