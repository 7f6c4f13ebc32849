"""Checks of the test topology itself (no Wasm filter needed).

These prove that the test IdP really enforces RFC 8705 client authentication
and that the Envoy clusters of envoy/demo.yaml reach it with (idp-mtls) and
without (idp) the filter's client certificate.
"""
from __future__ import annotations

import pytest


def _route_to(prefix: str, cluster: str):
    """mutate hook: route `prefix`* to `cluster`, stripping the prefix."""
    def mutate(cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        routes.insert(0, {
            "match": {"prefix": prefix},
            "route": {"cluster": cluster, "prefix_rewrite": "/", "host_rewrite_literal": "localhost"},
        })
    return mutate


def _both(*mutates):
    def mutate(cfg):
        for m in mutates:
            m(cfg)
    return mutate


PASSWORD_FORM = {"grant_type": "password", "client_id": "client-tls-auth", "username": "john", "password": "doe",
                 "scope": "openid"}


# --- the IdP ------------------------------------------------------------------

def test_idp_discovery_advertises_mtls(idp):
    d = idp.discovery()
    assert d["issuer"] == idp.issuer
    assert "tls_client_auth" in d["token_endpoint_auth_methods_supported"]
    assert "self_signed_tls_client_auth" in d["token_endpoint_auth_methods_supported"]
    assert d["tls_client_certificate_bound_access_tokens"] is True
    assert "password" in d["grant_types_supported"]
    assert d["mtls_endpoint_aliases"]["token_endpoint"].endswith("/token")
    assert d["introspection_endpoint"] and d["revocation_endpoint"]


@pytest.mark.parametrize("cert", [None, "other", "selfsigned"])
def test_idp_rejects_tls_client_auth_without_the_registered_cert(idp, cert):
    r = idp.password_grant("client-tls-auth", cert=cert, check=False)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"


def test_idp_accepts_tls_client_auth_with_client_cert(idp):
    tokens = idp.password_grant("client-tls-auth", cert="client", scope="openid profile")
    assert tokens["token_type"] == "Bearer"
    assert tokens["id_token"] and tokens["refresh_token"]
    info = idp.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["client_id"] == "client-tls-auth"
    assert info["sub"] == "john"
    assert "cnf" not in info  # client-tls-auth does not get certificate-bound tokens


def test_idp_certificate_bound_token(idp, pki):
    tokens = idp.password_grant("client-tls-bound", cert="client")
    info = idp.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["cnf"] == {"x5t#S256": pki.thumbprint("client")}
    # the IdP's own resource (userinfo) enforces the binding
    assert idp.userinfo(tokens["access_token"], cert="client").status_code == 200
    assert idp.userinfo(tokens["access_token"]).status_code == 401


def test_idp_self_signed_tls_client_auth(idp):
    assert idp.client_credentials("client-self-signed", cert="selfsigned")["access_token"]
    r = idp.client_credentials("client-self-signed", cert="client", check=False)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_idp_password_grant_rejects_bad_password(idp):
    r = idp.password_grant("client-secret-basic", password="wrong", check=False)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"


def test_idp_client_secret_post_refresh_and_revoke(idp):
    tokens = idp.password_grant("client-secret-post", username="jane")
    refreshed = idp.refresh("client-secret-post", tokens["refresh_token"])
    assert refreshed["access_token"] != tokens["access_token"]
    assert idp.introspect(refreshed["access_token"])["sub"] == "jane"
    assert idp.revoke(refreshed["access_token"]).status_code == 200
    assert idp.introspect(refreshed["access_token"]) == {"active": False}


def test_idp_client_credentials(idp):
    tokens = idp.client_credentials("client-secret-basic", scope="api:read")
    assert tokens["scope"] == "api:read"
    assert idp.introspect(tokens["access_token"])["active"] is True


def test_idp_log_never_contains_secrets(idp):
    tokens = idp.password_grant("client-secret-basic")
    idp.introspect(tokens["access_token"])
    log = idp.log()
    assert "POST /token" in log
    for secret in (tokens["access_token"], tokens["refresh_token"], "secret-basic-1", "rs-secret", "password=doe"):
        assert secret not in log


# --- Envoy with the demo clusters ---------------------------------------------

def test_envoy_without_filter_reaches_upstream(envoy):
    proxy = envoy(with_filter=False)
    r = proxy.get("/hello?x=1", headers={"x-test": "yes"})
    assert r.status_code == 200
    body = r.json()
    assert body["path"] == "/hello?x=1"
    assert body["headers"]["x-test"] == "yes"


def test_envoy_idp_cluster_verifies_the_idp(envoy, idp):
    proxy = envoy(with_filter=False, mutate=_route_to("/__idp/", "idp"))
    r = proxy.get("/__idp/.well-known/openid-configuration")
    assert r.status_code == 200, r.text
    assert r.json()["issuer"] == idp.issuer
    # the plain cluster presents no client certificate
    r = proxy.post("/__idp/token", data=PASSWORD_FORM)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


@pytest.mark.parametrize("mtls_cert,status", [("client", 200), ("other", 401), (None, 401)])
def test_envoy_mtls_cluster_presents_client_cert(envoy, mtls_cert, status):
    proxy = envoy(with_filter=False, mtls_cert=mtls_cert, mutate=_route_to("/__mtls/", "idp-mtls"))
    r = proxy.post("/__mtls/token", data=PASSWORD_FORM)
    assert r.status_code == status, r.text


def test_two_envoys_at_once(envoy):
    a = envoy(with_filter=False, base_id=11)
    b = envoy(with_filter=False, base_id=12, concurrency=2)
    assert a.port != b.port
    assert a.get("/a").json()["path"] == "/a"
    assert b.get("/b").json()["path"] == "/b"


def test_envoy_expect_start_false_returns_failure_log(envoy):
    def break_ca(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "idp":
                c["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"] = {
                    "filename": "/nonexistent/ca.crt"}
    proxy = envoy(with_filter=False, mutate=break_ca, expect_start=False)
    assert proxy.returncode not in (None, 0)
    assert "/nonexistent/ca.crt" in proxy.log()
