"""Certificate-bound access tokens (RFC 8705 section 3) at the gateway:
`proof_of_possession_mtls: off | strict | optional`.

The downstream listener is TLS with client certificates of the test CA
(`envoy(..., downstream_mtls=True | "optional")`).  Tokens bound to client.crt come from
the IdP's password grant for `client-tls-bound` (cnf.x5t#S256 = pki.thumbprint("client")).
The caller presents 'client' (the bound certificate), 'downstream' (CN=alice) or
'downstream2' (CN=mallory), all verified by Envoy.
"""
from __future__ import annotations

import pytest
import requests

import harness
from harness import idp_jwt
from test_api_tokens import (api_config, assert_forwarded, assert_invalid_token, bearer, count, describe,
                             INTROSPECTION)


def bound_jwt(idp) -> str:
    token = idp.password_grant("client-tls-bound", cert="client")["access_token"]
    assert harness.decode_jwt(token)[1]["cnf"] == {"x5t#S256": idp.pki.thumbprint("client")}
    return token


def unbound_jwt(idp) -> str:
    token = idp.password_grant("client-secret-basic")["access_token"]
    assert "cnf" not in harness.decode_jwt(token)[1]
    return token


def bound_opaque(idp) -> str:
    token = idp.password_grant("client-tls-bound", cert="client", token_format="opaque")["access_token"]
    assert idp.introspect(token)["cnf"] == {"x5t#S256": idp.pki.thumbprint("client")}
    return token


# ---------------------------------------------------------------------------
# the downstream TLS listener itself (no filter involved)
# ---------------------------------------------------------------------------
def test_downstream_mtls_listener(envoy, pki, upstream):
    required = envoy(with_filter=False, downstream_mtls=True)
    assert required.url().startswith("https://")
    assert required.get("/x", cert="downstream").json()["path"] == "/x"
    with pytest.raises(requests.exceptions.SSLError):
        required.get("/x", cert=None)
    with pytest.raises(requests.exceptions.SSLError):
        required.get("/x", cert="selfsigned")  # not issued by the test CA
    optional = envoy(with_filter=False, downstream_mtls="optional")
    assert optional.get("/x").status_code == 200
    assert optional.get("/x", cert="client").status_code == 200
    plain = envoy(with_filter=False)
    assert plain.url().startswith("http://")


# ---------------------------------------------------------------------------
# strict
# ---------------------------------------------------------------------------
def test_strict_bound_jwt_needs_the_bound_certificate(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, proof_of_possession_mtls="strict"), idp=jwt_idp, downstream_mtls="optional")
    token = bound_jwt(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(token), cert="client"), token)
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert="downstream"), "another certificate")
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert="downstream2"), "another certificate")
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert=None), "no certificate")
    # a result is never cached across certificates
    assert_forwarded(proxy.get("/", headers=bearer(token), cert="client"), token)
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert="downstream"), "after a success")


def test_strict_refuses_unbound_tokens(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, proof_of_possession_mtls="strict"), idp=jwt_idp, downstream_mtls=True)
    token = unbound_jwt(jwt_idp)
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert="client"), "no cnf in strict mode")


def test_strict_with_a_forged_cnf(envoy, jwt_idp, upstream, pki):
    """cnf naming the caller's certificate, but not signed by the IdP: refused; signed by the
    IdP (crafted with its key) and matching: accepted."""
    proxy = envoy(api_config(jwt_idp, proof_of_possession_mtls="strict"), idp=jwt_idp, downstream_mtls=True)
    cnf = {"cnf": {"x5t#S256": pki.thumbprint("downstream")}}
    forged = idp_jwt(jwt_idp, cnf, key="other.key")
    assert_invalid_token(proxy.get("/", headers=bearer(forged), cert="downstream"), "forged signature")
    genuine = idp_jwt(jwt_idp, cnf)
    assert_forwarded(proxy.get("/", headers=bearer(genuine), cert="downstream"), genuine)
    assert_invalid_token(proxy.get("/", headers=bearer(genuine), cert="client"), "alice's token, client's cert")


def test_strict_on_a_plain_http_listener_refuses_everything(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, proof_of_possession_mtls="strict"), idp=jwt_idp)
    for token in (bound_jwt(jwt_idp), unbound_jwt(jwt_idp)):
        assert_invalid_token(proxy.get("/", headers=bearer(token)), "no TLS at all")


def test_strict_with_introspection(envoy, jwt_idp, upstream):
    """cnf from the introspection answer; the cached answer is checked again per request."""
    proxy = envoy(api_config(jwt_idp, ["introspection"], proof_of_possession_mtls="strict"), idp=jwt_idp,
                  downstream_mtls="optional")
    token = bound_opaque(jwt_idp)
    before = count(jwt_idp, INTROSPECTION)
    assert_forwarded(proxy.get("/", headers=bearer(token), cert="client"), token)
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert="downstream"), "introspected, wrong cert")
    assert_invalid_token(proxy.get("/", headers=bearer(token), cert=None), "introspected, no cert")
    assert_forwarded(proxy.get("/", headers=bearer(token), cert="client"), token)
    assert count(jwt_idp, INTROSPECTION) - before >= 1
    unbound = jwt_idp.password_grant("client-secret-basic", token_format="opaque")["access_token"]
    assert_invalid_token(proxy.get("/", headers=bearer(unbound), cert="client"), "introspected, no cnf")


# ---------------------------------------------------------------------------
# optional / off
# ---------------------------------------------------------------------------
def test_optional_checks_only_bound_tokens(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, proof_of_possession_mtls="optional"), idp=jwt_idp,
                  downstream_mtls="optional")
    unbound = unbound_jwt(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(unbound)), unbound)
    assert_forwarded(proxy.get("/", headers=bearer(unbound), cert="downstream"), unbound)
    bound = bound_jwt(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(bound), cert="client"), bound)
    assert_invalid_token(proxy.get("/", headers=bearer(bound), cert="downstream"), "bound, wrong cert")
    assert_invalid_token(proxy.get("/", headers=bearer(bound)), "bound, no cert")


def test_optional_with_introspection(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"], proof_of_possession_mtls="optional"), idp=jwt_idp,
                  downstream_mtls="optional")
    bound = bound_opaque(jwt_idp)
    unbound = jwt_idp.password_grant("client-secret-basic", token_format="opaque")["access_token"]
    assert_forwarded(proxy.get("/", headers=bearer(unbound)), unbound)
    assert_forwarded(proxy.get("/", headers=bearer(bound), cert="client"), bound)
    assert_invalid_token(proxy.get("/", headers=bearer(bound), cert="downstream2"), "bound, wrong cert")


def test_off_is_the_default(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp, downstream_mtls="optional")
    bound = bound_jwt(jwt_idp)
    r = proxy.get("/", headers=bearer(bound), cert="downstream")
    assert r.status_code == 200, describe(r)
    assert_forwarded(proxy.get("/", headers=bearer(bound)), bound)
