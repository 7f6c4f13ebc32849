"""Envoy configuration for the test topology: envoy/demo.yaml loaded and
rewritten (build_envoy_config: ports, PKI paths, the filter's Wasm file and
plugin configuration, extra clusters), the idp-mtls client certificate through
file-based SDS (write_sds, sds_secret_config), the downstream TLS listener
socket, WASM_PATH (dist/oidc.wasm or $OIDC_WASM) and NATIVE_PATH
(dist/liboidc.so or $OIDC_NATIVE).

A configuration is written for one of two builds of the filter: "wasm" (the
proxy-wasm module) or "native" (the same core as an Envoy dynamic module). A
native configuration is the Wasm one with each Wasm filter's typed_config
replaced by a DynamicModuleFilter carrying the same plugin configuration and
keeping the filter's name (so per-route filter configs still find it).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from pki import PKI
from processes import REPO_ROOT

DEMO_CONFIG = REPO_ROOT / "envoy" / "demo.yaml"
WASM_PATH = Path(os.environ.get("OIDC_WASM", REPO_ROOT / "dist" / "oidc.wasm"))

NATIVE_PATH = Path(os.environ.get("OIDC_NATIVE", REPO_ROOT / "dist" / "liboidc.so"))
BUILDS = ("wasm", "native")

WASM_FILTER = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
NATIVE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def native_typed_config(plugin_text: str) -> dict:
    """A DynamicModuleFilter loading liboidc.so (found on ENVOY_DYNAMIC_MODULES_SEARCH_PATH)."""
    return {"@type": NATIVE_TYPE, "dynamic_module_config": {"name": "oidc"}, "filter_name": "oidc",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_text}}


def to_native(cfg: dict) -> None:
    """Swaps every Wasm filter of every listener for the native module, in place."""
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] != "envoy.filters.network.http_connection_manager":
                    continue
                for hf in f["typed_config"].get("http_filters", []):
                    tc = hf.get("typed_config", {})
                    if tc.get("@type") == WASM_TYPE:
                        hf["typed_config"] = native_typed_config(tc["config"]["configuration"]["value"])


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
                       mutate: Callable[[dict], None] | None = None, build: str = "wasm") -> dict:
    """envoy/demo.yaml rewritten for the test topology.

    plugin_config: dict (dumped as YAML), str (verbatim) or None (demo's, with
    `issuer` replaced).  mtls_cert: PKI name presented by the `idp-mtls`
    cluster, or None for no client certificate.  idp_mtls_port: port of the
    idp-mtls cluster (defaults to idp_port).  downstream_mtls: False (plain
    HTTP listener), True (TLS listener requiring a client certificate signed
    by the test CA) or "optional" (TLS, client certificate requested and
    verified when presented).  mutate: last-minute hook receiving the config
    dict.  build: "wasm" or "native" (the Wasm filters become the native
    module after `mutate`).
    """
    if build not in BUILDS:
        raise ValueError(f"build: one of {BUILDS}, not {build!r}")
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
    if build == "native" and with_filter:
        to_native(cfg)
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


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
