"""The echo upstream (tests/upstream/echo.py): Upstream, start_upstream, and
the checks on what it saw of a request that went through Envoy
(upstream_seen, bearer_of).
"""
from __future__ import annotations

import sys
from pathlib import Path

import requests

from http_util import _describe
from processes import REPO_ROOT, ManagedProcess, free_port

ECHO_SCRIPT = REPO_ROOT / "tests" / "upstream" / "echo.py"


class Upstream:
    def __init__(self, process: ManagedProcess, port: int):
        self.process = process
        self.port = port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop()


def start_upstream(log_path: Path, *, port: int | None = None, timeout: float = 10.0) -> Upstream:
    port = port or free_port()
    proc = ManagedProcess("upstream", [sys.executable, "-u", str(ECHO_SCRIPT), str(port)], log_path)
    try:
        proc.wait_for_output(r"^UPSTREAM READY", timeout)
    except Exception:
        proc.stop()
        raise
    return Upstream(proc, port)


def upstream_seen(r: requests.Response) -> dict:
    """The echo upstream's view of a request (method, path, headers) — asserts a 200 from it."""
    assert r.status_code == 200, _describe(r)
    body = r.json()
    assert "headers" in body, f"not an upstream answer: {body}"
    return body


def bearer_of(r: requests.Response, header: str = "authorization") -> str:
    """The access token the upstream received as `Authorization: Bearer …`."""
    value = upstream_seen(r)["headers"].get(header, "")
    assert value.startswith("Bearer "), f"upstream {header}: {value!r}"
    return value[len("Bearer "):]
