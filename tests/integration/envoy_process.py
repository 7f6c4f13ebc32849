"""A running Envoy: start_envoy (writes the config, starts .venv/bin/envoy,
waits for admin /ready or for the expected exit) and the Envoy handle
(requests through the listener, plain or TLS with client certificates, its
log and Wasm log lines, admin stats).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from pki import PKI
from envoy_config import NATIVE_PATH, NATIVE_TYPE
from processes import ManagedProcess, envoy_binary, wait_for_port


FILTER_LOG_MARK = "[dynamic_modules]"


class Envoy:
    def __init__(self, process: ManagedProcess, *, port: int, admin_port: int, config: dict, config_path: Path,
                 pki: PKI | None = None, tls: bool = False, build: str = "wasm"):
        self.process = process
        self.build = build
        self.port = port
        self.admin_port = admin_port
        self.config = config
        self.config_path = config_path
        self.pki = pki
        self.tls = tls

    # -- process ------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def log(self) -> str:
        """Full stdout+stderr of Envoy (includes the filter's lines, see filter_log)."""
        return self.process.log()

    def filter_log(self) -> list[str]:
        """Only the lines the filter logged (`wasm log ...` from the Wasm build,
        `[dynamic_modules]` from the native one)."""
        return [line for line in self.log().splitlines() if FILTER_LOG_MARK in line or "wasm log" in line]

    wasm_log = filter_log

    @property
    def log_component(self) -> str:
        """The --component-log-level name of the filter's own lines."""
        return "dynamic_modules" if self.build == "native" else "wasm"

    @property
    def metric_prefix(self) -> str:
        """What Envoy puts before the filter's metric names in /stats."""
        return "dynamicmodulescustom." if self.build == "native" else "wasmcustom."

    def stop(self) -> None:
        self.process.stop()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        return self.process.wait_for_output(pattern, timeout)

    # -- http ---------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        """http://127.0.0.1:PORT/... or, with downstream TLS, https://127.0.0.1:PORT/..."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def request(self, method: str, path: str = "/", *, cert: str | tuple[str, str] | None = None,
                **kw: Any) -> requests.Response:
        """Request through the listener; redirects are NOT followed by default.

        With downstream TLS: cert is a PKI name ('client', 'downstream',
        'downstream2', ...), a (crt, key) tuple or None (no client
        certificate); the listener is verified against the test CA unless
        `verify=` says otherwise.
        """
        kw.setdefault("timeout", 15)
        kw.setdefault("allow_redirects", False)
        if isinstance(cert, str):
            if self.pki is None:
                raise ValueError("cert by name needs the PKI")
            cert = self.pki.cert(cert)
        if cert is not None:
            kw["cert"] = cert
        if self.tls and self.pki is not None:
            kw.setdefault("verify", str(self.pki.ca_crt))
        return requests.request(method, self.url(path), **kw)

    def get(self, path: str = "/", **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str = "/", **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges from the admin /stats endpoint."""
        params = {"format": "json"}
        if filter_regex:
            params["filter"] = filter_regex
        r = requests.get(self.admin_url("/stats"), params=params, timeout=5)
        r.raise_for_status()
        return {s["name"]: s["value"] for s in r.json().get("stats", []) if "value" in s}


def start_envoy(config: dict, workdir: Path, *, port: int, admin_port: int, concurrency: int = 1,
                base_id: int | None = None, log_level: str = "info", component_log_level: str | None = None,
                expect_start: bool = True, timeout: float = 30.0, name: str = "envoy",
                pki: PKI | None = None, native_path: Path | None = None) -> Envoy:
    """Write `config` to workdir and start Envoy from the repo root.

    expect_start=True: wait for admin /ready == 200 (raises with the log if it
    exits or times out).  expect_start=False: wait for the process to exit
    (raises TimeoutError if it's still running after `timeout`).
    """
    build = "native" if NATIVE_TYPE in json.dumps(config) else "wasm"
    if build == "native" and component_log_level:
        # The filter's own lines: Envoy's `dynamic_modules` logger, not `wasm`.
        component_log_level = component_log_level.replace("wasm:", "dynamic_modules:")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [envoy_binary(), "-c", str(config_path), "--disable-hot-restart",
            "--concurrency", str(concurrency), "--log-level", log_level]
    if component_log_level:
        argv += ["--component-log-level", component_log_level]
    if base_id is not None:
        argv += ["--base-id", str(base_id)]
    proc = ManagedProcess(name, argv, workdir / f"{name}.log",
                          env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str((native_path or NATIVE_PATH).resolve().parent)})
    tls = any("transport_socket" in chain for chain in config["static_resources"]["listeners"][0]["filter_chains"])
    envoy = Envoy(proc, port=port, admin_port=admin_port, config=config, config_path=config_path, pki=pki, tls=tls,
                  build=build)

    deadline = time.monotonic() + timeout
    if not expect_start:
        try:
            proc.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            proc.stop()
            raise TimeoutError(f"envoy was expected to fail to start but is still running:\n{proc.log()}")
        return envoy

    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"envoy exited with {proc.returncode} during startup:\n{proc.log()}")
        try:
            r = requests.get(envoy.admin_url("/ready"), timeout=1)
            if r.status_code == 200:
                wait_for_port(port, timeout=max(1.0, deadline - time.monotonic()))
                return envoy
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.stop()
    raise TimeoutError(f"envoy not ready after {timeout}s:\n{proc.log()}")
