"""Process harness for the integration tests: a facade over the modules below.

Starts the pieces of the test topology on dynamic loopback ports:

* a test PKI           (tests/pki/gen.sh)                          -> pki.py
* the test IdP         (node tests/idp/idp.js, panva/oidc-provider) -> idp_server.py
* an echo upstream     (tests/upstream/echo.py)                     -> upstream.py
* Envoy                (.venv/bin/envoy with envoy/demo.yaml rewritten)
                       -> envoy_config.py (the config), envoy_process.py (the process)

and helps drive them: processes.py (child processes, ports), tokens.py (JWTs,
PKCE), cookies.py (Set-Cookie parsing, session chunks), browser_login.py
(authorization code logins by hand), plugin_configs.py (the filter's
configurations), http_util.py (response helpers).

Everything here is plain Python; conftest.py wraps it in pytest fixtures.
Nothing binds anything but 127.0.0.1.  Tests and bench/bench.py use
`import harness; harness.X`; new code may import from the modules directly.
"""
from __future__ import annotations

from browser_login import (
    API_HEADERS,
    BROWSER_HEADERS,
    LoginFlow,
    authorize_redirect_params,
    idp_login_flow,
    login,
    start_login,
)
from cookies import SetCookie, cookie_header, is_session_cookie, session_chunks, set_cookie_map, set_cookies
from envoy_config import (
    BUILDS,
    DEMO_CONFIG,
    NATIVE_PATH,
    SDS_SECRET,
    WASM_FILTER,
    WASM_PATH,
    build_envoy_config,
    native_typed_config,
    downstream_tls_socket,
    dump_json,
    load_demo_config,
    plugin_config_text,
    sds_secret_config,
    write_sds,
)
from envoy_process import Envoy, start_envoy


def needs(build: str, wanted: str, why: str) -> None:
    """Skips the running test unless it runs with build `wanted`; `why` names what the
    other build lacks (pytest prints it)."""
    import pytest
    if build != wanted:
        pytest.skip(f"{build} build: {why}")
from http_util import until_ok
from idp_server import (
    CLIENT_AUTH,
    CLIENT_SECRETS,
    IDP_DIR,
    JWT_AUDIENCE,
    USER_GROUPS,
    USER_ROLES,
    USERS,
    IdP,
    ensure_idp_deps,
    idp_log_since,
    start_idp,
)
from pki import PKI, PKI_SCRIPT, make_pki
from plugin_configs import browser_config, demo_plugin_config, loopback_uri, mtls_plugin_config
from processes import REPO_ROOT, ManagedProcess, envoy_binary, free_port, wait_for_port
from tokens import SIGN_SCRIPT, decode_jwt, idp_jwt, make_jwt, pkce_pair, public_key
from upstream import ECHO_SCRIPT, Upstream, bearer_of, start_upstream, upstream_seen

# Private helpers that tests and bench/bench.py reach through the facade
# (harness._find_hcm, harness._set_cluster_port); the rest for completeness.
from browser_login import _form_action  # noqa: F401
from envoy_config import _find_hcm, _rewrite_paths, _set_cluster_port, _wasm_filter  # noqa: F401
from http_util import _describe, _location  # noqa: F401
from tokens import _node_json_io  # noqa: F401

__all__ = [
    # processes
    "REPO_ROOT", "ManagedProcess", "envoy_binary", "free_port", "wait_for_port",
    # pki
    "PKI", "PKI_SCRIPT", "make_pki",
    # idp_server
    "IDP_DIR", "USERS", "CLIENT_SECRETS", "CLIENT_AUTH", "USER_GROUPS", "USER_ROLES", "JWT_AUDIENCE",
    "IdP", "ensure_idp_deps", "start_idp", "idp_log_since",
    # tokens
    "SIGN_SCRIPT", "make_jwt", "public_key", "decode_jwt", "idp_jwt", "pkce_pair",
    # upstream
    "ECHO_SCRIPT", "Upstream", "start_upstream", "upstream_seen", "bearer_of",
    # envoy_config
    "BUILDS", "DEMO_CONFIG", "WASM_PATH", "NATIVE_PATH", "WASM_FILTER", "SDS_SECRET", "load_demo_config", "plugin_config_text",
    "write_sds", "sds_secret_config", "build_envoy_config", "native_typed_config", "downstream_tls_socket", "dump_json",
    # envoy_process
    "Envoy", "start_envoy", "needs",
    # cookies
    "SetCookie", "set_cookies", "set_cookie_map", "cookie_header", "is_session_cookie", "session_chunks",
    # browser_login
    "BROWSER_HEADERS", "API_HEADERS", "LoginFlow", "start_login", "login", "authorize_redirect_params",
    "idp_login_flow",
    # plugin_configs
    "browser_config", "mtls_plugin_config", "demo_plugin_config", "loopback_uri",
    # http_util
    "until_ok",
]
