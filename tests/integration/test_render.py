"""oidc-envoy-config: a bootstrap rendered from one plugin configuration (ours, or Kong's
openid-connect plugin as its Admin API shows it) runs in real Envoy against the real test
IdP, and the password grant goes through over mutual TLS; a decK file with several
openid-connect plugins on its services and routes renders one filter with a policy per
plugin and Kong's routes, each naming its policy, against two IdPs.

The command is built by `make integration` (cargo build --locked -p oidc-envoy-config);
OIDC_ENVOY_CONFIG points at another build.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

import harness

TOOL = Path(os.environ.get("OIDC_ENVOY_CONFIG", harness.REPO_ROOT / "target" / "debug" / "oidc-envoy-config"))
MTLS_SUBJECT = 'subject="CN=client-tls-auth,O=Example,C=US"'


def render(tmp_path: Path, plugin: Path, *args: str, out_name: str = "envoy.yaml") -> tuple[Path, str]:
    """Runs the command; returns (the bootstrap's path, its stderr)."""
    if not TOOL.exists():
        pytest.fail(f"{TOOL} not found: cargo build --locked -p oidc-envoy-config (make integration does)",
                    pytrace=False)
    out = tmp_path / out_name
    r = subprocess.run([str(TOOL), str(plugin), *args, "--out", str(out)], capture_output=True, text=True,
                       timeout=60, cwd=harness.REPO_ROOT)
    assert r.returncode == 0, f"oidc-envoy-config failed ({r.returncode}):\n{r.stderr}"
    return out, r.stderr


def topology_args(pki, upstream, port: int, admin_port: int) -> list[str]:
    return ["--client-cert", str(pki.client_crt), "--client-key", str(pki.client_key), "--idp-ca", str(pki.ca_crt),
            "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream.port}",
            "--admin", str(admin_port), "--wasm", str(harness.WASM_PATH.resolve())]


@pytest.fixture
def rendered_envoy(tmp_path, request):
    """Starts Envoy on a rendered bootstrap file as it is: start(path, port, admin_port)."""
    started: list[harness.Envoy] = []

    def start(config_path: Path, port: int, admin_port: int, timeout: float = 30.0) -> harness.Envoy:
        if not harness.WASM_PATH.exists():
            pytest.fail(f"{harness.WASM_PATH} not found: build the filter first (make build)", pytrace=False)
        name = f"envoy-{len(started)}"
        argv = [harness.envoy_binary(), "-c", str(config_path), "--disable-hot-restart", "--concurrency", "1",
                "--log-level", "info"]
        proc = harness.ManagedProcess(name, argv, tmp_path / f"{name}.log")
        proxy = harness.Envoy(proc, port=port, admin_port=admin_port, config=yaml.safe_load(config_path.read_text()),
                              config_path=config_path)
        started.append(proxy)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.alive(), f"envoy exited with {proc.returncode}:\n{proc.log()}"
            try:
                if requests.get(proxy.admin_url("/ready"), timeout=1).status_code == 200:
                    harness.wait_for_port(port, timeout=max(1.0, deadline - time.monotonic()))
                    return proxy
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{proc.log()}")

    yield start
    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    for proxy in started:
        if failed:
            print(f"---- envoy log ({proxy.process.log_path}) ----\n{proxy.log()[-20000:]}")
        proxy.stop()


def assert_password_grant_over_mtls(proxy: harness.Envoy, idp: harness.IdP) -> None:
    mark = len(idp.log())
    r = proxy.get("/hello", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    seen = harness.upstream_seen(r)
    assert seen["path"] == "/hello"
    token = harness.bearer_of(r)
    info = idp.introspect(token)
    assert info["active"] is True and info["client_id"] == "client-tls-auth" and info["sub"] == "john", info
    token_lines = [line for line in harness.idp_log_since(idp, mark) if line.startswith("IDP POST /token ")]
    assert token_lines and all(MTLS_SUBJECT in line for line in token_lines), token_lines
    assert proxy.get("/", auth=("john", "wrong")).status_code == 401


def test_plugin_yaml_renders_a_bootstrap_that_does_the_password_grant_over_mtls(
        pki, idp, upstream, tmp_path, rendered_envoy):
    # No cluster names: the command names them (idp, idp-mtls) and renders them.
    plugin = tmp_path / "plugin.yaml"
    plugin.write_text(
        f"# the filter as its own client, authenticated with its certificate\n"
        f"issuer: {idp.issuer}\n"
        f"client_id: client-tls-auth\n"
        f"client_auth: tls_client_auth\n"
        f"auth_methods: [password]\n")
    port, admin_port = harness.free_port(), harness.free_port()
    path, stderr = render(tmp_path, plugin, *topology_args(pki, upstream, port, admin_port))
    text = path.read_text()
    assert text.startswith("# Envoy bootstrap for the envoy-oidc filter"), text[:200]
    cfg = yaml.safe_load(text)
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert set(clusters) == {"idp", "idp-mtls", "upstream"}
    mtls_tls = clusters["idp-mtls"]["transport_socket"]["typed_config"]
    assert mtls_tls["sni"] == "localhost"
    assert mtls_tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] == str(pki.client_crt)
    assert "tls_certificates" not in clusters["idp"]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "idp_cluster: not set" in stderr, stderr

    proxy = rendered_envoy(path, port, admin_port)
    assert_password_grant_over_mtls(proxy, idp)


# What Kong's Admin API answers for GET /plugins/{id}: the fields set at creation and every
# other one, null or at Kong's default.
def kong_admin_api_plugin(issuer: str) -> dict:
    return {
        "id": "5c1c2a0e-7a4b-4b8e-9a55-0d6f4c1e2b3a",
        "name": "openid-connect",
        "instance_name": None,
        "enabled": True,
        "route": None, "service": None, "consumer": None,
        "protocols": ["grpc", "grpcs", "http", "https"],
        "config": {
            "issuer": f"{issuer}/.well-known/openid-configuration",
            "client_id": ["client-tls-auth"],
            "client_secret": None,
            "client_auth": ["tls_client_auth"],
            "auth_methods": ["password"],
            "tls_client_auth_cert_id": "8f9e1d2c-0000-4000-8000-000000000001",
            "tls_client_auth_ssl_verify": True,
            "ssl_verify": False,
            "scopes": ["openid"],
            "scopes_claim": ["scope"],
            "timeout": 10000,
            "leeway": 0,
            "cache_tokens": True,
            "cache_tokens_salt": "Vq3f9sK2pL0xR7wT",
            "upstream_access_token_header": "authorization:bearer",
            "bearer_token_param_type": ["header", "query", "body"],
            "password_param_type": ["header", "query", "body"],
            "consumer_claim": ["preferred_username"],
            "consumer_by": ["username", "custom_id"],
            "session_storage": "cookie",
            "logout_methods": ["POST", "DELETE"],
            "verify_signature": True,
            "http_version": 1.1,
            "redis": {"host": "127.0.0.1", "port": 6379, "password": None},
            "token_endpoint": None,
        },
    }


def test_kong_admin_api_json_renders_a_working_bootstrap_with_sds(pki, idp, upstream, tmp_path, rendered_envoy):
    plugin = tmp_path / "kong-plugin.json"
    plugin.write_text(json.dumps(kong_admin_api_plugin(idp.issuer), indent=2))
    port, admin_port = harness.free_port(), harness.free_port()
    path, stderr = render(tmp_path, plugin, *topology_args(pki, upstream, port, admin_port), "--sds")

    # the report: what was translated differently, what is not supported
    assert "translated Kong's openid-connect plugin 5c1c2a0e" in stderr, stderr
    assert "consumer_claim" in stderr and "Kong consumers" in stderr, stderr
    assert "tls_client_auth_cert_id: Kong certificate 8f9e1d2c" in stderr, stderr
    for quiet in ("cache_tokens_salt", "consumer_by", "session_storage", "redis", "http_version", "timeout"):
        assert quiet not in stderr, f"{quiet} reported:\n{stderr}"

    cfg = yaml.safe_load(path.read_text())
    wasm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]
    embedded = yaml.safe_load(wasm["configuration"]["value"])
    assert embedded["issuer"] == idp.issuer
    assert embedded["client_id"] == "client-tls-auth" and embedded["client_auth"] == "tls_client_auth"
    assert "consumer_claim" not in embedded and "timeout" not in embedded
    # the client certificate through file-based SDS
    mtls = {c["name"]: c for c in cfg["static_resources"]["clusters"]}["idp-mtls"]
    sds = mtls["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"][0]
    sds_path = Path(sds["sds_config"]["path_config_source"]["path"])
    assert sds_path == tmp_path / "envoy-client-cert-sds.yaml" and sds_path.exists()

    proxy = rendered_envoy(path, port, admin_port)
    assert_password_grant_over_mtls(proxy, idp)


# Kong fields of the IdP-request, error and answer families (issue "Kong parity"), as a Kong
# user sets them; each must arrive in the embedded configuration unchanged.
KONG_SHAPING = {
    "audience": ["https://api.example"],
    "authorization_query_args_names": ["prompt"], "authorization_query_args_values": ["login"],
    "token_post_args_names": ["x_trace"], "token_post_args_values": ["t-1"],
    "token_headers_names": ["x-api-key"], "token_headers_values": ["k-123"],
    "introspection_post_args_names": ["x_tenant"], "introspection_post_args_values": ["acme"],
    "introspection_headers_names": ["x-tenant"], "introspection_headers_values": ["acme"],
    "introspection_hint": "access_token", "introspection_token_param_name": "token",
    "revocation_token_param_name": "token",
    "userinfo_query_args_names": ["schema"], "userinfo_query_args_values": ["openid"],
    "userinfo_headers_names": ["x-tenant"], "userinfo_headers_values": ["acme"],
    "discovery_headers_names": ["x-discovery"], "discovery_headers_values": ["enabled"],
    "display_errors": True, "unauthorized_error_message": "Sign in first", "forbidden_error_message": "Not yours",
}


def test_kong_fields_of_idp_requests_and_answers_translate_load_and_serve(pki, idp, upstream, tmp_path, rendered_envoy):
    plugin = kong_admin_api_plugin(idp.issuer)
    plugin["config"].update(KONG_SHAPING)
    path_in = tmp_path / "kong-plugin.json"
    path_in.write_text(json.dumps(plugin, indent=2))
    port, admin_port = harness.free_port(), harness.free_port()
    path, stderr = render(tmp_path, path_in, *topology_args(pki, upstream, port, admin_port))
    for field in KONG_SHAPING:
        assert f"  {field}" not in stderr, f"{field} reported as unsupported:\n{stderr}"
    cfg = yaml.safe_load(path.read_text())
    wasm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]
    embedded = yaml.safe_load(wasm["configuration"]["value"])
    defaults = ("introspection_hint", "introspection_token_param_name", "revocation_token_param_name")
    for field, value in KONG_SHAPING.items():
        if field not in defaults:  # Kong's defaults are dropped: the filter has the same
            assert embedded.get(field) == value, (field, embedded.get(field))
    proxy = rendered_envoy(path, port, admin_port)
    # `audience` reached the IdP: like Auth0, it issues a JWT access token for that API
    r = proxy.get("/hello", auth=("john", "doe"))
    assert r.status_code == 200, r.text
    _, claims = harness.decode_jwt(harness.bearer_of(r))
    assert "https://api.example" in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]), claims
    assert claims["client_id"] == "client-tls-auth" and claims["sub"] == "john", claims
    r = proxy.get("/", auth=("john", "wrong"))
    assert r.status_code == 401 and r.json()["message"] == "Sign in first" and r.json()["error_description"], r.text


def test_client_certificate_cluster_follows_the_discovered_mtls_aliases(
        pki, idp_factory, upstream, tmp_path, rendered_envoy):
    aliased = idp_factory(mtls_port=harness.free_port())
    discovery = tmp_path / "discovery.json"
    discovery.write_text(json.dumps(aliased.discovery()))
    plugin = tmp_path / "plugin.yaml"
    plugin.write_text(f"issuer: {aliased.issuer}\nclient_id: client-tls-auth\nclient_auth: tls_client_auth\n"
                      f"auth_methods: [password]\n")
    port, admin_port = harness.free_port(), harness.free_port()
    path, _ = render(tmp_path, plugin, *topology_args(pki, upstream, port, admin_port), "--discovery", str(discovery))
    clusters = {c["name"]: c for c in yaml.safe_load(path.read_text())["static_resources"]["clusters"]}
    address = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]  # noqa: E731
    assert address(clusters["idp"])["port_value"] == aliased.port
    assert address(clusters["idp-mtls"])["port_value"] == aliased.mtls_port

    proxy = rendered_envoy(path, port, admin_port)
    assert_password_grant_over_mtls(proxy, aliased)
    token_lines = [line for line in aliased.log().splitlines() if line.startswith("IDP POST /token ")]
    assert all(f"port={aliased.mtls_port}" in line for line in token_lines), token_lines


def test_demo_plugin_configuration_is_the_one_in_demo_yaml_and_renders_valid(pki, tmp_path):
    """`make run` renders from envoy/demo-plugin.yaml; the tests build on envoy/demo.yaml."""
    demo_plugin = harness.REPO_ROOT / "envoy" / "demo-plugin.yaml"
    assert yaml.safe_load(demo_plugin.read_text()) == harness.demo_plugin_config()
    path, _ = render(tmp_path, demo_plugin, "--client-cert", str(pki.client_crt), "--client-key",
                     str(pki.client_key), "--idp-ca", str(pki.ca_crt), "--listen", "127.0.0.1:8000",
                     "--wasm", str(harness.WASM_PATH.resolve()))
    r = subprocess.run([harness.envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                       capture_output=True, text=True, timeout=120, cwd=harness.REPO_ROOT)
    assert r.returncode == 0 and "OK" in r.stdout + r.stderr, r.stdout + r.stderr


def kong_deck(a: harness.IdP, b: harness.IdP) -> dict:
    """A decK file: service `api` with a plugin (bearer JWTs of IdP A with the scope
    api:read), its route `login` with its own (the password grant at IdP A over mTLS),
    service `reports` with a plugin for IdP B (bearer JWTs, no scope rule), and service
    `static` without any. No global plugin: `api`'s, the first found, is the default policy."""
    def oidc(**config) -> dict:
        return {"name": "openid-connect", "config": config}

    discovery = f"{a.issuer}/.well-known/openid-configuration"
    identity = {"upstream_headers_claims": ["sub"], "upstream_headers_names": ["x-user"]}
    return {
        "_format_version": "3.0",
        "services": [
            {"name": "api", "url": "http://api.internal:8080",
             "plugins": [oidc(issuer=discovery, client_id=["client-tls-auth"], client_auth=["tls_client_auth"],
                              auth_methods=["bearer"], scopes_required=["api:read"],
                              bearer_token_param_type=["header", "query", "body"], **identity)],
             "routes": [
                 {"name": "api", "paths": ["/api"]},
                 {"name": "login", "paths": ["/api/login"], "strip_path": False,
                  "plugins": [oidc(issuer=discovery, client_id=["client-tls-auth"], client_auth=["tls_client_auth"],
                                   auth_methods=["password"], password_param_type=["header"], **identity)]},
             ]},
            {"name": "reports", "url": "http://reports.internal:8080/v2",
             "plugins": [oidc(issuer=b.issuer, client_id=["client-secret-basic"],
                              client_secret=[harness.CLIENT_SECRETS["client-secret-basic"]], auth_methods=["bearer"],
                              **identity)],
             "routes": [{"name": "reports", "paths": ["/reports"], "methods": ["GET"]}]},
            {"name": "static", "url": "http://static.internal",
             "routes": [{"name": "static", "paths": ["/static"]}]},
        ],
    }


def raw_get(proxy: harness.Envoy, path: str, headers: dict | None = None) -> tuple[int, str]:
    """GET with the path sent exactly as given (requests would normalize it first)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_kong_deck_with_plugins_on_services_and_routes_renders_policies_and_routes_that_work(
        pki, jwt_idp, idp_factory, upstream, tmp_path, rendered_envoy):
    a = jwt_idp
    b = idp_factory(env={"JWT_ACCESS_TOKENS": "1", "SIGNING_KEY": "idp2.key", "SIGNING_KID": "idp-b-1"})
    deck = tmp_path / "kong.yaml"
    deck.write_text(yaml.safe_dump(kong_deck(a, b), sort_keys=False))
    port, admin_port = harness.free_port(), harness.free_port()
    path, stderr = render(tmp_path, deck, *topology_args(pki, upstream, port, admin_port))

    # the report: a policy per plugin, the routes and what they take; no "every request"
    assert "(decK, service api) as the default policy" in stderr, stderr
    assert "(decK, service api / route login) as policy `login`" in stderr, stderr
    assert "(decK, service reports) as policy `reports`" in stderr, stderr
    assert "route static of service static, /static: no openid-connect plugin applies" in stderr, stderr
    assert "bearer_token_param_type: `body` dropped" in stderr, stderr
    assert "every request" not in stderr, stderr

    cfg = yaml.safe_load(path.read_text())
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert set(clusters) == {"idp", "idp-mtls", "idp-reports", "upstream"}, set(clusters)
    port_of = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"]  # noqa: E731
    assert (port_of(clusters["idp"]), port_of(clusters["idp-mtls"]), port_of(clusters["idp-reports"])) == (a.port, a.port, b.port)
    hcm = harness._find_hcm(cfg)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    table = [(r["name"], r.get("metadata", {}).get("filter_metadata", {}).get("envoy-oidc", {}).get("policy"),
              "typed_per_filter_config" in r) for r in routes]
    assert table == [("reports", "reports", False),   # paths and methods: first
                     ("login", "login", False),       # the longest prefix next
                     ("static", None, True),          # no plugin: the filter off
                     ("api", None, False),            # the default policy: no metadata
                     ("no-route-matched", None, True)], table
    wasm = hcm["http_filters"][0]["typed_config"]["config"]
    embedded = yaml.safe_load(wasm["configuration"]["value"])
    assert embedded["issuer"] == a.issuer and embedded["scopes_required"] == ["api:read"]
    # layered: only what differs from the default policy, null where the default sets a key
    # the plugin leaves at the filter's default
    assert embedded["policies"]["login"] == {"auth_methods": ["password"], "scopes_required": None,
                                             "bearer_token_param_type": None}, embedded
    reports = embedded["policies"]["reports"]
    assert reports["issuer"] == b.issuer and reports["idp_cluster"] == "idp-reports", reports
    assert reports["scopes_required"] is None and reports["client_auth"] is None, reports

    proxy = rendered_envoy(path, port, admin_port)
    for issuer in (a.issuer, b.issuer):
        proxy.wait_for_log(re.escape(f"fetched Jwks from {issuer}"), timeout=15)
    of_a = harness.idp_jwt(a)
    of_a_without_scope = harness.idp_jwt(a, {"scope": "openid profile"})
    of_b = harness.idp_jwt(b, {"scope": "openid profile"}, key="idp2.key", kid="idp-b-1")
    bearer = lambda t: {"authorization": f"Bearer {t}"}  # noqa: E731

    # /api: the service's plugin (the default policy): IdP A's JWTs with api:read
    r = proxy.get("/api/orders", headers=bearer(of_a))
    seen = harness.upstream_seen(r)
    assert seen["path"] == "/orders", seen          # Kong's strip_path
    assert seen["headers"]["x-user"] == "john"
    r = proxy.get("/api/orders", headers=bearer(of_a_without_scope))
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"], r.text
    assert proxy.get("/api/orders").status_code == 401
    assert proxy.get("/api/orders", headers=bearer(of_b)).status_code == 401

    # /api/login: the route's plugin: the password grant at IdP A over mTLS, no scope rule
    mark = len(a.log())
    r = proxy.get("/api/login/hello", auth=("john", "doe"))
    seen = harness.upstream_seen(r)
    assert seen["path"] == "/api/login/hello" and seen["headers"]["x-user"] == "john", seen  # strip_path: false
    token_lines = [line for line in harness.idp_log_since(a, mark) if line.startswith("IDP POST /token ")]
    assert token_lines and all(MTLS_SUBJECT in line for line in token_lines), token_lines
    assert proxy.get("/api/login/hello", auth=("john", "wrong")).status_code == 401
    assert proxy.get("/api/login/hello", headers=bearer(of_a)).status_code == 401   # no bearer method here

    # /reports: IdP B's policy, through its own cluster; no scope rule
    r = proxy.get("/reports/q1", headers=bearer(of_b))
    seen = harness.upstream_seen(r)
    assert seen["path"] == "/v2/q1" and seen["headers"]["x-user"] == "john", seen  # the service's path
    assert proxy.get("/reports/q1", headers=bearer(of_a)).status_code == 401
    # methods: [GET]: a POST matches no route
    r = proxy.post("/reports/q1", headers=bearer(of_b))
    assert r.status_code == 404, r.text

    # /static: a service without the plugin: no authentication
    r = proxy.get("/static/app.js")
    seen = harness.upstream_seen(r)
    assert seen["path"] == "/app.js" and "authorization" not in seen["headers"], seen

    # no route: Kong's 404, without the filter
    r = proxy.get("/elsewhere", headers=bearer(of_a))
    assert r.status_code == 404 and r.json() == {"message": "no Route matched with those values"}, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    # the path is normalized before a route is chosen: no way around /api through /static
    status, body = raw_get(proxy, "/static/../api/orders")
    assert status == 401, (status, body)
    status, body = raw_get(proxy, "/static/../api/orders", bearer(of_a))
    assert status == 200 and json.loads(body)["path"] == "/orders", (status, body)
