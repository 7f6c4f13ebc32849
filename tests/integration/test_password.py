"""Foundation: password grant over mutual TLS (RFC 8705), through real Envoy to a real IdP."""
import base64

import pytest


def mtls_config(idp, **extra):
    cfg = {
        "issuer": idp.issuer,
        "idp_cluster": "idp",
        "tls_client_auth_cluster": "idp-mtls",
        "client_id": "client-tls-auth",
        "client_auth": "tls_client_auth",
        "auth_methods": ["password"],
    }
    cfg.update(extra)
    return cfg


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

