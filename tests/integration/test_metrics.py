"""Metrics: the filter's counters and histograms on Envoy's /stats/prometheus, exact after
a known sequence of requests."""
import re
import time

import requests

import harness


def prometheus(proxy) -> dict[str, float]:
    """The filter's metrics by name. Envoy strips the Wasm namespace from Prometheus names
    (`oidc_...`) but not the dynamic modules' (`envoy_dynamicmodulescustom_oidc_...`)."""
    text = requests.get(proxy.admin_url("/stats/prometheus"), timeout=5).text
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(?:envoy_dynamicmodulescustom_)?(oidc_[a-z0-9_]+)(\{[^}]*\})? ([0-9.e+]+)$", line)
        if m:
            labels = m.group(2) if m.group(2) not in (None, "{}") else ""
            out[m.group(1) + labels] = float(m.group(3))
    return out


def until_warm(proxy, timeout: float = 6.0) -> dict[str, float]:
    """The metrics once the warm-up's discovery and JWKS latencies have been flushed."""
    deadline = time.monotonic() + timeout
    while True:
        got = prometheus(proxy)
        warm = all(got.get(f"oidc_idp_{e}_latency_ms_count", 0) >= 1 for e in ("discovery", "jwks"))
        if warm or time.monotonic() > deadline:
            time.sleep(0.6)  # and anything published on the same tick
            return prometheus(proxy) if warm else got
        time.sleep(0.2)


def flush_every_second(cfg):
    cfg["stats_flush_interval"] = "1s"


def test_counts_after_a_known_sequence(envoy, jwt_idp, upstream):
    cfg = harness.mtls_plugin_config(jwt_idp, ["bearer", "password"])
    proxy = envoy(cfg, idp=jwt_idp, mutate=flush_every_second)
    token = harness.idp_jwt(jwt_idp)
    forged = harness.idp_jwt(jwt_idp, key="other.key")
    unknown = harness.idp_jwt(jwt_idp, kid="nobody")
    # warm up (discovery and JWKS loaded, the token cached), then count from here
    assert proxy.get("/", headers={"authorization": f"Bearer {token}"}).status_code == 200
    # the warm-up's own samples must be in `before`: published on the filter's timer (0.5 s),
    # histograms then on Envoy's flush (1 s)
    before = until_warm(proxy)

    assert proxy.get("/").status_code == 401
    for _ in range(3):
        assert proxy.get("/", auth=("john", "doe")).status_code == 200
    assert proxy.get("/", auth=("john", "wrong")).status_code == 401
    for _ in range(2):
        assert proxy.get("/", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert proxy.get("/", headers={"authorization": f"Bearer {forged}"}).status_code == 401
    time.sleep(2.1)  # an unknown kid may re-fetch the JWKS once per 2 s
    assert proxy.get("/", headers={"authorization": f"Bearer {unknown}"}).status_code == 401
    time.sleep(2.5)  # published on the filter's timer, histograms on Envoy's flush

    got = prometheus(proxy)
    delta = {k: v - before.get(k, 0) for k, v in got.items()}
    nonzero = {k: v for k, v in delta.items() if v and "_bucket" not in k and not k.endswith("_sum")}
    assert nonzero == {
        "oidc_requests_none_unauthorized": 1,
        "oidc_requests_password_allowed": 3,
        "oidc_requests_password_unauthorized": 1,
        "oidc_requests_bearer_allowed": 2,
        "oidc_requests_bearer_unauthorized": 2,
        "oidc_idp_jwks_2xx": 1,
        "oidc_idp_token_2xx": 1,
        "oidc_idp_token_4xx": 1,
        "oidc_jwks_refreshes": 1,
        # one lookup per bearer request (the forged and the unknown-kid token miss)
        "oidc_cache_jwts_hit": 2, "oidc_cache_jwts_miss": 2,
        "oidc_cache_grants_hit": 2, "oidc_cache_grants_miss": 2,
        "oidc_idp_jwks_latency_ms_count": 1,
        "oidc_idp_token_latency_ms_count": 2,
    }, sorted(nonzero.items())
    assert got["oidc_idp_discovery_2xx"] == 1 and got["oidc_requests_bearer_allowed"] == 3
    # every metric is there from the start, under the one prefix
    for name in ("oidc_requests_session_redirected", "oidc_idp_revocation_tls_failure",
                 "oidc_cache_sessions_miss", "oidc_idp_userinfo_timeout"):
        assert got.get(name) == 0, name


def test_idp_failures_are_counted_by_kind(envoy, idp, upstream):
    from faults import closed_port
    from test_config_and_faults import point_cluster
    cfg = harness.mtls_plugin_config(idp, ["password"])
    proxy = envoy(cfg, mutate=point_cluster("idp-mtls", closed_port()))
    assert proxy.get("/", auth=("john", "doe")).status_code == 502
    assert proxy.get("/", auth=("jane", "secret2")).status_code == 502
    time.sleep(1.2)
    got = prometheus(proxy)
    assert got["oidc_idp_token_connect_failure"] == 2
    assert got["oidc_requests_password_failed"] == 2
