"""The filter's client certificate comes through file-based SDS: renewed files moved into
place are presented at the next IdP handshake, without restarting Envoy. And the cluster's
server-certificate verification (`tls_client_auth_ssl_verify`) on and off."""
import os
import shutil

import harness
from faults import wrong_idp_ca
from test_password import mtls_config

NEW_SUBJECT = "CN=someone-else,O=Example,C=US"


def sds_at(path):
    def mutate(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "idp-mtls":
                tls = c["transport_socket"]["typed_config"]["common_tls_context"]
                tls["tls_certificate_sds_secret_configs"] = [harness.sds_secret_config(path)]
                # demo: 300 s; here short, so that the pooled connection ends during the test
                opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                opts["common_http_protocol_options"]["max_connection_duration"] = "2s"
    return mutate


def password_data(user):
    return {"grant_type": "password", "username": user, "password": harness.USERS[user], "scope": "openid"}


def test_renewed_client_certificate_without_restarting_envoy(envoy, idp_factory, upstream, pki, tmp_path):
    fresh = idp_factory()
    live_crt, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki.path("client.crt"), live_crt)
    shutil.copy(pki.path("client.key"), live_key)
    sds = harness.write_sds(tmp_path / "sds.yaml", live_crt, live_key)
    proxy = envoy(mtls_config(fresh), idp=fresh, mutate=sds_at(sds))
    assert proxy.get("/", auth=("john", "doe")).status_code == 200

    # The IdP registers the renewed certificate's subject; the old one is de-registered.
    fresh.restart(env={"CLIENT_TLS_SUBJECT_DN": NEW_SUBJECT})
    r = proxy.get("/", auth=("jane", "secret2"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    assert fresh.token_request("client-tls-auth", password_data("jane"), cert=pki.cert("client")).status_code == 401
    assert fresh.token_request("client-tls-auth", password_data("jane"), cert=pki.cert("other")).status_code == 200

    # Renewal: the new certificate and key are written next to the old ones and the SDS
    # file naming them is moved into place (the way cert-manager or a kubelet swaps files).
    shutil.copy(pki.path("other.crt"), tmp_path / "renewed.crt")
    shutil.copy(pki.path("other.key"), tmp_path / "renewed.key")
    harness.write_sds(sds, tmp_path / "renewed.crt", tmp_path / "renewed.key")
    r = harness.until_ok(lambda: proxy.get("/", auth=("jane", "secret2")))
    assert proxy.stats("sds.filter-client-cert.update_success")["sds.filter-client-cert.update_success"] == 2
    assert r.status_code == 200, r.text
    assert proxy.returncode is None
    info = fresh.introspect(harness.bearer_of(r))
    assert info["active"] and info["client_id"] == "client-tls-auth" and info["sub"] == "jane"


def without_verification(cfg):
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == "idp-mtls":
            c["transport_socket"]["typed_config"]["common_tls_context"].pop("validation_context")


def test_server_certificate_verification_on_and_off(envoy, idp, upstream, pki):
    # on, right CA (the demo): works; on, wrong CA: the handshake fails
    assert envoy(mtls_config(idp)).get("/", auth=("john", "doe")).status_code == 200
    proxy = envoy(mtls_config(idp), mutate=wrong_idp_ca(pki))
    assert proxy.get("/", auth=("john", "doe")).status_code == 502
    assert proxy.stats("cluster.idp-mtls.ssl.fail_verify_error")["cluster.idp-mtls.ssl.fail_verify_error"] >= 1
    # off (tls_client_auth_ssl_verify: false): no validation_context, any server certificate
    proxy = envoy(mtls_config(idp), mutate=without_verification)
    assert proxy.get("/", auth=("john", "doe")).status_code == 200
