"""Plugin configurations of the filter for the tests: browser_config
(browser logins with a given client), mtls_plugin_config (its client
authenticated over mTLS), demo_plugin_config (envoy/demo.yaml's) and
loopback_uri (an Envoy's redirect_uri on 127.0.0.1).
"""
from __future__ import annotations

from typing import Any, Iterable

import yaml

from envoy_config import _wasm_filter, load_demo_config
from envoy_process import Envoy
from idp_server import CLIENT_AUTH, CLIENT_SECRETS, IdP


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


def demo_plugin_config(issuer: str | None = None) -> dict:
    """The plugin configuration of envoy/demo.yaml as a dict (issuer optionally replaced)."""
    f = _wasm_filter(load_demo_config())
    conf = yaml.safe_load(f["typed_config"]["config"]["configuration"]["value"])
    if issuer:
        conf["issuer"] = issuer
    return conf
