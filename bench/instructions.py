"""Wasm instructions per request on the filter's cached hot paths, counted exactly (wasmtime's
fuel), for one or more builds of `dist/oidc.wasm`.

Timings on a shared 2-core VM move by ±20 % from run to run; an instruction count does not
move at all. This runs the module in wasmtime behind a small proxy-wasm host written here (the
calls the filter makes, answered as Envoy does), loads discovery and a key set from its first
tick, then sends requests and counts the instructions each one costs, from context creation
to deletion, and the host calls it makes (each costs the host microseconds in V8; their count
is shown, not their cost). What the filter forwards is checked, so a build that refuses the
request cannot look cheap. Then, with Node present, the same requests are timed in V8
(bench/v8.mjs): instructions are not all alike, and V8 is Envoy's engine.

    .venv/bin/python bench/instructions.py dist/oidc.wasm [other.wasm ...]

It is how the cached-bearer regression of the core restructure was found (issue 12: 113k
instructions against 64k before; the char-by-char control check of the token).
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import struct
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import wasmtime
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISS = "https://idp.example:8443"
NOW = int(time.time())
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

# proxy-wasm map and buffer types, statuses
REQUEST_HEADERS, RESPONSE_HEADERS, CALL_RESPONSE_HEADERS = 0, 2, 6
CALL_RESPONSE_BODY, PLUGIN_CONFIGURATION = 4, 7
OK, NOT_FOUND, CAS_MISMATCH = 0, 1, 8
CONTINUE = 0


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims: dict) -> str:
    head = b64u(json.dumps({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}).encode())
    body = b64u(json.dumps(claims).encode())
    sig = KEY.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64u(sig)}"


def access_token(jti: str) -> str:
    """Shaped like oidc-provider's JWT access tokens in the tests (about 700 bytes)."""
    return jwt({"iss": ISS, "sub": "john", "aud": "client-tls-auth", "exp": NOW + 36000, "iat": NOW, "jti": jti,
                "scope": "openid profile email api:read", "client_id": "client-tls-auth",
                "cnf": {"note": "x" * 200}})


def n_of(i: int) -> str:
    return b64u(i.to_bytes((i.bit_length() + 7) // 8, "big"))


PUB = KEY.public_key().public_numbers()
JWKS = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": n_of(PUB.n), "e": n_of(PUB.e)}]}
DISCOVERY = {"issuer": ISS, "jwks_uri": ISS + "/jwks", "token_endpoint": ISS + "/token",
             "authorization_endpoint": ISS + "/auth", "introspection_endpoint": ISS + "/token/introspection",
             "userinfo_endpoint": ISS + "/me", "revocation_endpoint": ISS + "/token/revocation",
             "id_token_signing_alg_values_supported": ["RS256"]}
OPAQUE = "opaque-" + "Q" * 43
INTROSPECTION = {"active": True, "sub": "john", "client_id": "client-tls-auth", "scope": "api:read",
                 "exp": NOW + 36000, "iss": ISS, "token_type": "Bearer"}


TOKEN = {"access_token": access_token("password-grant-jti"), "token_type": "Bearer", "expires_in": 36000,
         "scope": "openid profile email api:read"}


def config(methods: list[str]) -> bytes:
    # As bench.py's api_config: the filter's own client authenticated by mTLS.
    return json.dumps({"issuer": ISS, "idp_cluster": "idp", "tls_client_auth_cluster": "idp-mtls",
                       "client_id": "client-tls-auth", "client_auth": "tls_client_auth",
                       "auth_methods": methods}).encode()


def pairs_encode(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v))
    for k, v in pairs:
        out += k + b"\0" + v + b"\0"
    return out


def pairs_decode(b: bytes) -> list[tuple[bytes, bytes]]:
    n = struct.unpack_from("<I", b, 0)[0]
    lens = [struct.unpack_from("<II", b, 4 + 8 * i) for i in range(n)]
    off, out = 4 + 8 * n, []
    for kl, vl in lens:
        out.append((b[off:off + kl], b[off + kl + 1:off + kl + 1 + vl]))
        off += kl + vl + 2
    return out


class Host:
    """One VM with one root context; the IdP's answers come from `answers` (by path)."""

    def __init__(self, path: str, plugin_config: bytes):
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        engine = wasmtime.Engine(cfg)
        self.store = wasmtime.Store(engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        self.store.set_fuel(10**15)
        module = wasmtime.Module.from_file(engine, path)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self.config = plugin_config
        self.host_calls: Counter[str] = Counter()
        self.shared: dict[bytes, tuple[bytes, int]] = {}
        self.maps: dict[int, list[tuple[bytes, bytes]]] = {REQUEST_HEADERS: [], RESPONSE_HEADERS: [], CALL_RESPONSE_HEADERS: []}
        self.call_body = b""
        self.pending: list[tuple[int, str]] = []
        self.next_token = 1
        self.local_reply: int | None = None
        self.logs: list[str] = []
        for imp in module.imports:
            if imp.module == "env":
                linker.define(self.store, "env", imp.name, self._func(imp.name, imp.type))
        self.exports = linker.instantiate(self.store, module).exports(self.store)
        self.memory = self.exports["memory"]

    def _func(self, name: str, ty: wasmtime.FuncType) -> wasmtime.Func:
        handler = getattr(self, name.removeprefix("proxy_"), None)

        def f(caller, *args):
            self.host_calls[name.removeprefix("proxy_")] += 1
            return OK if handler is None else handler(caller, *args)
        return wasmtime.Func(self.store, ty, f, access_caller=True)

    # ---- memory ----
    def _read(self, c, ptr: int, size: int) -> bytes:
        return bytes(self.memory.read(c, ptr, ptr + size))

    def _give(self, c, data: bytes, data_ptr: int, size_ptr: int) -> int:
        ptr = c.get("proxy_on_memory_allocate")(c, len(data)) if data else 0
        if data:
            self.memory.write(c, data, ptr)
        self.memory.write(c, struct.pack("<I", ptr), data_ptr)
        self.memory.write(c, struct.pack("<I", len(data)), size_ptr)
        return OK

    # ---- the host calls the filter makes ----
    def log(self, c, _level, ptr, size):
        self.logs.append(self._read(c, ptr, size).decode(errors="replace"))
        return OK

    def get_current_time_nanoseconds(self, c, ptr):
        self.memory.write(c, struct.pack("<Q", time.time_ns()), ptr)
        return OK

    def get_buffer_bytes(self, c, kind, start, size, data_ptr, size_ptr):
        size &= 0xFFFFFFFF
        data = {PLUGIN_CONFIGURATION: self.config, CALL_RESPONSE_BODY: self.call_body}.get(kind)
        return NOT_FOUND if data is None else self._give(c, data[start:start + size], data_ptr, size_ptr)

    def get_header_map_pairs(self, c, m, data_ptr, size_ptr):
        return self._give(c, pairs_encode(self.maps.get(m, [])), data_ptr, size_ptr)

    def get_header_map_value(self, c, m, kp, kn, data_ptr, size_ptr):
        key = self._read(c, kp, kn)
        value = next((v for k, v in self.maps.get(m, []) if k == key), None)
        return NOT_FOUND if value is None else self._give(c, value, data_ptr, size_ptr)

    def replace_header_map_value(self, c, m, kp, kn, vp, vn):
        key, value = self._read(c, kp, kn), self._read(c, vp, vn)
        self.maps[m] = [p for p in self.maps.get(m, []) if p[0] != key] + [(key, value)]
        return OK

    def add_header_map_value(self, c, m, kp, kn, vp, vn):
        self.maps.setdefault(m, []).append((self._read(c, kp, kn), self._read(c, vp, vn)))
        return OK

    def remove_header_map_value(self, c, m, kp, kn):
        key = self._read(c, kp, kn)
        self.maps[m] = [p for p in self.maps.get(m, []) if p[0] != key]
        return OK

    def send_local_response(self, c, status, *_):
        self.local_reply = status
        return OK

    def http_call(self, c, _up, _upn, hp, hn, _bp, _bn, _tp, _tn, _timeout, token_ptr):
        path = dict(pairs_decode(self._read(c, hp, hn)))[b":path"].decode()
        token, self.next_token = self.next_token, self.next_token + 1
        self.pending.append((token, path))
        self.memory.write(c, struct.pack("<I", token), token_ptr)
        return OK

    def get_shared_data(self, c, kp, kn, data_ptr, size_ptr, cas_ptr):
        found = self.shared.get(self._read(c, kp, kn))
        if found is None:
            return NOT_FOUND
        self._give(c, found[0], data_ptr, size_ptr)
        self.memory.write(c, struct.pack("<I", found[1]), cas_ptr)
        return OK

    def set_shared_data(self, c, kp, kn, vp, vn, cas):
        key, value = self._read(c, kp, kn), self._read(c, vp, vn)
        current = self.shared.get(key)
        if cas and current and current[1] != cas:
            return CAS_MISMATCH
        self.shared[key] = (value, current[1] + 1 if current else 1)
        return OK

    def get_property(self, *_):
        return NOT_FOUND

    def define_metric(self, c, _kind, _np, _nn, id_ptr):
        self.memory.write(c, struct.pack("<I", 1), id_ptr)
        return OK

    # ---- driving the module ----
    def call(self, name: str, *args):
        return self.exports[name](self.store, *args)

    def answer_calls(self, ctx: int) -> None:
        while self.pending:
            token, path = self.pending.pop(0)
            body = (DISCOVERY if "well-known" in path else JWKS if path.endswith("/jwks")
                    else INTROSPECTION if "introspection" in path else TOKEN if path.endswith("/token") else None)
            if body is None:
                raise SystemExit(f"the filter called {path}, which this host does not answer")
            self.call_body = json.dumps(body).encode()
            self.maps[CALL_RESPONSE_HEADERS] = [(b":status", b"200"), (b"content-type", b"application/json")]
            self.call("proxy_on_http_call_response", ctx, token, 2, len(self.call_body), 0)

    def start(self) -> None:
        if "_initialize" in self.exports:
            self.call("_initialize")
        self.call("proxy_on_context_create", 1, 0)
        self.call("proxy_on_vm_start", 1, 0)
        if self.call("proxy_on_configure", 1, len(self.config)) != 1:
            raise SystemExit(f"the filter refused its configuration: {self.logs[-3:]}")
        for _ in range(2):
            self.call("proxy_on_tick", 1)
            self.answer_calls(1)
        self.ctx = 2

    def request(self, headers: list[tuple[bytes, bytes]]) -> None:
        ctx, self.ctx = self.ctx, self.ctx + 1
        self.maps[REQUEST_HEADERS] = list(headers)
        self.maps[RESPONSE_HEADERS] = [(b":status", b"200")]
        self.local_reply = None
        self.call("proxy_on_context_create", ctx, 1)
        self.call("proxy_on_request_headers", ctx, len(headers), 1)
        self.answer_calls(ctx)
        if self.local_reply is not None:
            raise SystemExit(f"the filter answered {self.local_reply} instead of forwarding: {self.logs[-3:]}")
        self.call("proxy_on_response_headers", ctx, 1, 1)
        self.call("proxy_on_log", ctx)
        self.call("proxy_on_done", ctx)
        self.call("proxy_on_delete", ctx)

    def cost(self, requests: list[list[tuple[bytes, bytes]]]) -> tuple[float, Counter[str]]:
        """Instructions per request and host calls per request, over `requests`."""
        self.host_calls.clear()
        before = self.store.get_fuel()
        for headers in requests:
            self.request(headers)
        n = len(requests)
        return (before - self.store.get_fuel()) / n, Counter({k: v / n for k, v in self.host_calls.items()})


def headers(authorization: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":path", b"/api/things?x=1"), (b":authority", b"gw.example"),
            (b":scheme", b"https"), (b"user-agent", b"wrk"), (b"accept", b"*/*"),
            (b"authorization", authorization.encode()), (b"x-forwarded-proto", b"https"),
            (b"x-request-id", b"5d3c1c1e-1b1a-4a4e-9b1e-3c2b1a0f9e8d")]


SCENARIOS = {
    "bearer": ("oidc bearer JWT, same token", ["bearer"], False),
    "bearer-cold": ("oidc bearer JWT, new token every request", ["bearer"], True),
    "introspection": ("oidc introspection, same opaque token (cached)", ["introspection"], False),
    "password": ("oidc password grant, same user (cached)", ["password"], False),
}


def measure(path: str, key: str, repeat: int) -> tuple[float, Counter[str]]:
    _, methods, cold = SCENARIOS[key]
    host = Host(path, config(methods))
    host.start()
    if key == "introspection":
        same = headers(f"Bearer {OPAQUE}")
    elif key == "password":
        same = headers("Basic " + base64.b64encode(b"john:doe").decode())
    else:
        same = headers(f"Bearer {access_token('same-token-jti-0001')}")
    for _ in range(3):  # the first request verifies (or introspects) and caches
        host.request(same)
    if cold:
        batch = [headers(f"Bearer {access_token(f'jti-{i:012d}')}") for i in range(max(repeat // 10, 5))]
    else:
        batch = [same] * repeat
    return host.cost(batch)


def v8_times(paths: list[str], key: str, fixtures_file: Path) -> list[float] | None:
    """Median µs per request of each build in V8 (bench/v8.mjs), or None without Node."""
    if not shutil.which("node"):
        return None
    out = subprocess.run(["node", "--no-warnings", str(Path(__file__).with_name("v8.mjs")), str(fixtures_file), key, *paths],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bench/v8.mjs failed: {out.stderr[-2000:]}")
    return [json.loads(line)["median_us"] for line in out.stdout.splitlines() if line.startswith("{")]


def table(paths: list[str], requests: int = 200) -> list[str]:
    """A markdown table per path: instructions per request of each build (and the first
    against the second), then time per request in V8 when Node is there."""
    names = [f"`{p.rsplit('/', 1)[-1]}`" for p in paths]
    two = len(paths) > 1
    head = [f"{n} instructions" for n in names] + (["ratio"] if two else [])
    head += [f"{n} µs in V8" for n in names] + (["ratio"] if two else [])
    out = ["| path | " + " | ".join(head) + " | host calls / request |", "|---|" + "---:|" * len(head) + "---|"]
    with tempfile.TemporaryDirectory() as tmp:
        fixtures_file = Path(tmp) / "fixtures.json"
        fixtures_file.write_text(json.dumps(fixtures()))
        for key, (label, _, cold) in SCENARIOS.items():
            results = [measure(p, key, requests) for p in paths]
            cells = [f"{r[0]:,.0f}" for r in results] + ([f"{results[0][0] / results[1][0]:.2f}×"] if two else [])
            times = None if cold else v8_times(paths, key, fixtures_file)
            if times:
                cells += [f"{t:.2f}" for t in times] + ([f"{times[0] / times[1]:.2f}×"] if two else [])
            else:
                cells += ["—"] * (len(paths) + (1 if two else 0))
            calls = ", ".join(f"{k} {v:g}" for k, v in sorted(results[0][1].items()))
            out.append(f"| {label} | " + " | ".join(cells) + f" | {calls} |")
    return out


def fixtures() -> dict:
    """What bench/v8.mjs needs to run the same requests in V8."""
    return {"disc": DISCOVERY, "jwks": JWKS, "tokenresp": TOKEN, "introspection": INTROSPECTION,
            "configs": {k: config(v[1]).decode() for k, v in SCENARIOS.items() if not v[2]},
            "auth": {"bearer": f"Bearer {access_token('same-token-jti-0001')}", "introspection": f"Bearer {OPAQUE}",
                     "password": "Basic " + base64.b64encode(b"john:doe").decode()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wasm", nargs="+",
                    help="builds to compare; the ratio column is the first against the second (this build against a reference)")
    ap.add_argument("--requests", type=int, default=200, help="requests per same-token row (new-token rows: a tenth)")
    args = ap.parse_args()
    print("\n".join(table(args.wasm, args.requests)))


if __name__ == "__main__":
    main()
