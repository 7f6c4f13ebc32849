#!/usr/bin/env python3
"""`make bench`: the filter's hot paths against no filter and Envoy's native jwt_authn.

One run, one machine, one Envoy binary, the same flags for every front Envoy:

    wrk (Lua: fixed request count, every status checked)
      -> front Envoy (fresh per scenario; --concurrency N; no filter | jwt_authn | oidc.wasm)
      -> upstream Envoy (direct_response 200, envoy/bench-upstream.yaml)

plus the test IdP (tests/idp/idp.js, JWT access tokens) for discovery, JWKS, logins,
introspection and the password grant.  Then "what one login costs": the filter's own time
for an authorization-code callback, and TLS connections to the IdP per 100 token requests.

Last, the Wasm instructions each cached path costs, counted exactly in wasmtime
(bench/instructions.py): the one measure here that does not move with the machine's noise.

Prints three markdown tables and writes them to bench/results.md.  A benchmark, not a test:
the only failures are a broken setup (no wasm, no wrk, an Envoy that does not start).
See bench/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import base64
import concurrent.futures
import datetime
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import requests  # noqa: E402
import yaml  # noqa: E402

import harness  # noqa: E402

BENCH_DIR = REPO / "bench"
LUA = BENCH_DIR / "count.lua"
UPSTREAM_CONFIG = REPO / "envoy" / "bench-upstream.yaml"
# bench/floor: a proxy-wasm filter that does nothing, or only reads Authorization (make bench builds it)
FLOOR_WASM = Path(os.environ.get("BENCH_FLOOR_WASM",
                                 REPO / "target" / "bench-floor" / "wasm32-wasip1" / "release" / "bench_floor.wasm"))
WORK = REPO / ".run" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SESSION_SECRET = "bench-session-secret-0123456789abcdef"
# bench/floor-native: the same as an Envoy dynamic module, libfloor.so (make bench builds it)
FLOOR_NATIVE = REPO / "target" / "bench-floor-native" / "release" / "libfloor.so"


def native_floor(mode: str) -> Callable[[dict], None]:
    """Points the native filter at bench/floor-native's libfloor.so in `mode` (noop, read)."""
    def mutate(cfg: dict) -> None:
        f = next(f for f in harness._find_hcm(cfg)["http_filters"] if f["name"] == harness.WASM_FILTER)
        f["typed_config"] = harness.native_typed_config(mode)
        f["typed_config"]["dynamic_module_config"]["name"] = "floor"
    return mutate


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes: RSS, CPU time, CPU pinning
# ---------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of a running process (Envoy's workers exist once it is ready)."""
    if not cpus:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------
@dataclass
class WrkResult:
    requests: int
    seconds: float
    non200: int
    first_bad_status: int
    socket_errors: int
    reused_tokens: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    raw: str
    cpu_seconds: float = 0.0   # wrk's own CPU time (user + system)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors


def run_wrk(args: argparse.Namespace, url: str, total: int, *, headers: dict[str, str] | None = None,
            tokens: Path | None = None, token_offset: int = 0, connections: int | None = None,
            cpus: set[int] | None = None, max_seconds: int | None = None) -> WrkResult:
    conns = max(connections or args.connections, args.threads)
    env = dict(os.environ, BENCH_TOTAL=str(total), BENCH_THREADS=str(args.threads),
               BENCH_TOKENS=str(tokens) if tokens else "", BENCH_TOKEN_OFFSET=str(token_offset))
    argv = ["wrk", "-t", str(args.threads), "-c", str(conns), "-d", f"{max_seconds or args.max_seconds}s", "--timeout", "10s",
            "-s", str(LUA)]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=preexec)
    # wrk sleeps for its whole -d even when every thread has stopped: SIGINT ends the sleep
    done, stderr = 0, []
    try:
        while True:
            line = p.stderr.readline()
            if not line:
                break
            if line.startswith("BENCH_THREAD_DONE"):
                done += 1
                if done == args.threads:
                    p.send_signal(signal.SIGINT)
            else:
                stderr.append(line)
        stdout, rest = p.communicate(timeout=args.max_seconds + 60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    stderr.append(rest or "")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    m = re.search(r"^BENCH (.*)$", stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}):\n{stdout}\n{''.join(stderr)}")
    kv = {k: float(v) for k, v in (item.split("=") for item in m.group(1).split())}
    finished = int(kv["finished_threads"]) == args.threads
    return WrkResult(
        requests=min(int(kv["counted"]), total) if finished else int(kv["requests"]), seconds=kv["duration_us"] / 1e6, non200=int(kv["non200"]),
        first_bad_status=int(kv["first_bad_status"]),
        socket_errors=int(kv["connect_errors"] + kv["read_errors"] + kv["write_errors"] + kv["timeouts"]),
        reused_tokens=int(kv["reused_tokens"]),
        p50_ms=kv["p50_us"] / 1000, p90_ms=kv["p90_us"] / 1000, p99_ms=kv["p99_us"] / 1000, raw=stdout,
        cpu_seconds=wrk_cpu)


# ---------------------------------------------------------------------------
# Envoy configurations
# ---------------------------------------------------------------------------
def api_config(idp: harness.IdP, methods: list[str], **extra: Any) -> dict:
    """The filter as an API gateway, its own client authenticated by mTLS (as in the tests)."""
    return {"issuer": idp.issuer, "idp_cluster": "idp", "tls_client_auth_cluster": "idp-mtls",
            "client_id": "client-tls-auth", "client_auth": "tls_client_auth", "auth_methods": methods, **extra}


POLICIES = 20


def policies_config(idp: harness.IdP) -> dict:
    """The bearer configuration with 20 named policies besides the default (each with its own
    scope rule), for the cost of choosing one per request."""
    cfg = api_config(idp, ["bearer"])
    cfg["policies"] = {f"p{i:02d}": {"scopes_required": ["api:read", f"extra:{i}"]} for i in range(POLICIES)}
    cfg["policies"][f"p{POLICIES - 1:02d}"] = {"scopes_required": ["api:read"]}
    return cfg


def route_to_last_policy(cfg: dict) -> None:
    """The front Envoy's one route names the last policy in its metadata."""
    route = harness._find_hcm(cfg)["route_config"]["virtual_hosts"][0]["routes"][0]
    route["metadata"] = {"filter_metadata": {"envoy-oidc": {"policy": f"p{POLICIES - 1:02d}"}}}


def jwt_authn_mutator(idp: harness.IdP, jwks: dict, *, cache: bool = False) -> Callable[[dict], None]:
    provider: dict[str, Any] = {
        "issuer": idp.issuer,
        "forward": True,
        "local_jwks": {"inline_string": json.dumps(jwks)},
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    filt = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"idp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        },
    }

    def mutate(cfg: dict) -> None:
        hcm = harness._find_hcm(cfg)
        hcm["http_filters"].insert(0, filt)
    return mutate


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------
@dataclass
class Scenario:
    key: str
    label: str
    kind: str                      # "none" | "jwt_authn" | "floor" | "oidc"
    cold: bool = False             # a different token on every request
    baseline: str | None = None    # key of the jwt_authn row to compare with
    plugin: Callable[[], dict] | None = None
    jwt_cache: bool = False
    headers: Callable[[], dict[str, str]] | None = None
    prepare: Callable[[harness.Envoy], dict[str, str]] | None = None  # e.g. a login -> headers
    requests: int | None = None    # measured requests, when not the defaults
    wasm: Path | None = None       # another build of the filter (--compare-wasm)
    build: str = "wasm"            # "native": the same core as an Envoy dynamic module (dist/liboidc.so)
    mutate: Callable[[dict], None] | None = None  # a change to the front Envoy's config


@dataclass
class Row:
    scenario: Scenario
    result: WrkResult | None = None
    rss_before: float = 0.0
    rss_after: float = 0.0
    cpu_front: float = 0.0
    cpu_upstream: float = 0.0
    cpu_wrk: float = 0.0
    error: str | None = None


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.procs: list[Any] = []     # everything with .stop()
        self.counter = 0
        ncpu = len(os.sched_getaffinity(0))
        self.pinned = args.pin and ncpu >= 2
        cpus = sorted(os.sched_getaffinity(0))
        # the front Envoy gets the last CPU to itself, everything else shares the others
        self.front_cpus = {cpus[-1]} if self.pinned else None
        self.other_cpus = set(cpus[:-1]) if self.pinned else None

    # -- processes -----------------------------------------------------------
    def start_front(self, *, plugin: dict | str | None = None, with_filter: bool = True,
                    mutate: Callable[[dict], None] | None = None, port: int | None = None,
                    tag: str = "", wasm: Path = harness.WASM_PATH, build: str = "wasm",
                    native_path: Path | None = None) -> harness.Envoy:
        self.counter += 1
        port = port or harness.free_port()
        admin = harness.free_port()
        cfg = harness.build_envoy_config(
            pki=self.pki, idp_port=self.idp.port, upstream_port=self.upstream.port, listen_port=port,
            admin_port=admin, plugin_config=plugin, issuer=self.idp.issuer, with_filter=with_filter,
            wasm_path=wasm, mutate=mutate, build=build)
        proxy = harness.start_envoy(cfg, WORK, port=port, admin_port=admin, concurrency=self.args.concurrency,
                                    log_level="warn", name=f"front-{self.counter:02d}{'-' + tag if tag else ''}", timeout=60,
                                    native_path=native_path)
        self.procs.append(proxy)
        pin(proxy.process.pid, self.front_cpus)
        return proxy

    def stop(self, proc: Any) -> None:
        try:
            proc.stop()
        finally:
            if proc in self.procs:
                self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {proc}: {e}")
        self.procs.clear()

    # -- setup ---------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        if WORK.exists():
            shutil.rmtree(WORK)
        WORK.mkdir(parents=True)
        log(f"bench: work directory {WORK.relative_to(REPO)} (logs, configs, tokens)")
        self.pki = harness.make_pki(WORK / "pki")
        self.idp = harness.start_idp(self.pki, WORK / "idp.log", env={"JWT_ACCESS_TOKENS": "1"})
        self.procs.append(self.idp)
        pin(self.idp.process.pid, self.other_cpus)

        up_port, up_admin = harness.free_port(), harness.free_port()
        cfg = yaml.safe_load(UPSTREAM_CONFIG.read_text())
        cfg["admin"]["address"]["socket_address"]["port_value"] = up_admin
        cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = up_port
        self.upstream = harness.start_envoy(cfg, WORK, port=up_port, admin_port=up_admin,
                                            concurrency=a.upstream_concurrency, log_level="warn", name="upstream")
        self.procs.append(self.upstream)
        pin(self.upstream.process.pid, self.other_cpus)
        r = requests.get(self.upstream.url("/"), timeout=5)
        assert r.status_code == 200, f"upstream Envoy answered {r.status_code}"

        self.jwks = self.idp.jwks()
        # tokens for the cold paths: one per request (warm-up and measured ranges are disjoint)
        self.cold_offset = a.warmup + a.connections + 16
        n = self.cold_offset + max(a.cold_requests, a.jwt_authn_cold_requests) + a.connections + 16
        n = max(n, a.memory_tokens if a.memory_requests else 0)
        self.tokens_file = WORK / "tokens.txt"
        t0 = time.monotonic()
        tokens = self.mint_tokens(n)
        self.tokens_file.write_text("\n".join(tokens) + "\n")
        log(f"bench: minted {len(tokens)} distinct JWT access tokens ({len(tokens[0])} bytes each) "
            f"in {time.monotonic() - t0:.1f}s")
        self.same_token = tokens[-1]
        self.opaque_token = self.idp.password_grant("client-secret-basic", token_format="opaque")["access_token"]

    def mint_tokens(self, n: int) -> list[str]:
        """Password grants at the JWT IdP on keep-alive sessions (a few in parallel)."""
        url = self.idp.url("/token")
        data = {"grant_type": "password", "username": "john", "password": harness.USERS["john"],
                "scope": "openid profile email api:read"}
        auth = ("client-secret-basic", harness.CLIENT_SECRETS["client-secret-basic"])
        workers = 4

        def mint(count: int) -> list[str]:
            out = []
            with requests.Session() as s:
                for _ in range(count):
                    r = s.post(url, data=data, auth=auth, timeout=10, verify=str(self.pki.ca_crt))
                    r.raise_for_status()
                    out.append(r.json()["access_token"])
            return out
        share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            tokens = [t for part in ex.map(mint, share) for t in part]
        assert len(set(tokens)) == len(tokens), "the IdP minted the same token twice"
        assert tokens[0].count(".") == 2, "the IdP should issue JWT access tokens (JWT_ACCESS_TOKENS=1)"
        return tokens

    def scenarios(self) -> list[Scenario]:
        idp = self.idp
        bearer = lambda: {"Authorization": f"Bearer {self.same_token}"}  # noqa: E731
        out = [
            Scenario("none", "no auth filter", "none"),
            Scenario("floor", "floor: a Wasm filter that does nothing", "floor", plugin=lambda: "noop",
                     headers=bearer),
            Scenario("floor-read", "floor: a Wasm filter that only reads Authorization", "floor",
                     plugin=lambda: "read", headers=bearer),
            Scenario("jwt_authn", "jwt_authn, same token", "jwt_authn", headers=bearer),
            Scenario("jwt_authn-cold", "jwt_authn, new token every request", "jwt_authn", cold=True),
            Scenario("jwt_authn-cache", "jwt_authn + jwt_cache_config, same token", "jwt_authn",
                     headers=bearer, jwt_cache=True),
            Scenario("bearer", "oidc bearer JWT, same token", "oidc", baseline="jwt_authn",
                     plugin=lambda: api_config(idp, ["bearer"]), headers=bearer),
            Scenario("bearer-policies", f"oidc bearer JWT, same token, the route's policy chosen among {POLICIES + 1}",
                     "oidc", baseline="jwt_authn", plugin=lambda: policies_config(idp), headers=bearer,
                     mutate=route_to_last_policy),
            Scenario("bearer-cold", "oidc bearer JWT, new token every request", "oidc", cold=True,
                     baseline="jwt_authn-cold", plugin=lambda: api_config(idp, ["bearer"])),
            Scenario("bearer-memory", f"oidc bearer JWT, {self.args.memory_requests:,} requests cycling over "
                     f"{self.args.memory_tokens:,} tokens (memory bound; caches hold 10,000 per worker)", "oidc",
                     cold=True, plugin=lambda: api_config(idp, ["bearer"]), requests=self.args.memory_requests),
            Scenario("session", "oidc session cookie", "oidc", baseline="jwt_authn",
                     plugin=None, prepare=self.login_for_session),
            Scenario("introspection", "oidc introspection (cached)", "oidc", baseline="jwt_authn",
                     plugin=lambda: api_config(idp, ["introspection"]),
                     headers=lambda: {"Authorization": f"Bearer {self.opaque_token}"}),
            Scenario("password", "oidc password grant (cached)", "oidc", baseline="jwt_authn",
                     plugin=lambda: api_config(idp, ["password"]),
                     headers=lambda: {"Authorization": "Basic " + base64.b64encode(b"john:doe").decode()}),
        ]
        if self.args.native:
            # the same core as an Envoy dynamic module, on the same paths
            bearer_cfg = lambda: api_config(idp, ["bearer"])  # noqa: E731
            out += [
                Scenario("native-floor", "native floor: a dynamic module that does nothing", "floor-native",
                         headers=bearer, mutate=native_floor("noop")),
                Scenario("native-floor-read", "native floor: a dynamic module that only reads Authorization",
                         "floor-native", headers=bearer, mutate=native_floor("read")),
                Scenario("native-bearer", "native: oidc bearer JWT, same token", "oidc", baseline="jwt_authn-cache",
                         plugin=bearer_cfg, headers=bearer, build="native"),
                Scenario("native-bearer-cold", "native: oidc bearer JWT, new token every request", "oidc", cold=True,
                         baseline="jwt_authn-cold", plugin=bearer_cfg, build="native"),
                Scenario("native-session", "native: oidc session cookie", "oidc", baseline="jwt_authn-cache",
                         prepare=self.login_for_session, build="native"),
                Scenario("native-introspection", "native: oidc introspection (cached)", "oidc",
                         baseline="jwt_authn-cache", plugin=lambda: api_config(idp, ["introspection"]),
                         headers=lambda: {"Authorization": f"Bearer {self.opaque_token}"}, build="native"),
                Scenario("native-password", "native: oidc password grant (cached)", "oidc", baseline="jwt_authn-cache",
                         plugin=lambda: api_config(idp, ["password"]),
                         headers=lambda: {"Authorization": "Basic " + base64.b64encode(b"john:doe").decode()},
                         build="native"),
            ]
        if not self.args.memory_requests:
            out = [s for s in out if s.key != "bearer-memory"]
        if self.args.compare_wasm:
            # Each filter row again with the other build, in the order this, other, other, this
            # (same run, same machine); the two runs of each build are merged into one row. Of
            # two identical builds run one after the other, the second measured 5-20 % less CPU
            # per request here, every time: a plain pair would credit that to the build.
            other = Path(self.args.compare_wasm).resolve()
            name = self.args.compare_name or other.name
            paired = []
            for s in out:
                paired.append(s)
                if s.kind == "oidc" and s.key != "bearer-memory" and s.build == "wasm":
                    b = dataclasses.replace(s, key=s.key + "@compare", label=f"{s.label} [{name}]", wasm=other)
                    paired += [b, dataclasses.replace(b, key=b.key + REPEAT), dataclasses.replace(s, key=s.key + REPEAT)]
            out = paired
        if self.args.only:
            keep = set(self.args.only.split(","))
            unknown = keep - {s.key for s in out}
            if unknown:
                raise SystemExit(f"--only: unknown scenario(s) {sorted(unknown)}; known: {[s.key for s in out]}")
            out = [s for s in out if s.key.split("@")[0].removesuffix(REPEAT) in keep]
        return out

    def login_for_session(self, proxy: harness.Envoy) -> dict[str, str]:
        flow = harness.login(proxy, self.idp, "/")
        cookies = flow.session_cookies()
        assert cookies, "the login set no session cookie"
        return {"Cookie": harness.cookie_header(harness.session_chunks(cookies)), "Accept": "application/json"}

    def browser_envoy(self, tag: str = "", wasm: Path = harness.WASM_PATH, build: str = "wasm",
                      **extra: Any) -> harness.Envoy:
        port = harness.free_port()
        plugin = harness.browser_config(self.idp, f"http://127.0.0.1:{port}/callback",
                                        session_secret=SESSION_SECRET, **extra)
        return self.start_front(plugin=plugin, port=port, tag=tag, wasm=wasm, build=build)

    # -- throughput ----------------------------------------------------------
    def run_scenario(self, s: Scenario) -> Row:
        a = self.args
        row = Row(s)
        try:
            proxy = self.start_for(s)
        except RuntimeError as e:  # a build that refuses the configuration (an older one)
            row.error = f"the front Envoy did not start: {str(e).splitlines()[1][:300] if len(str(e).splitlines()) > 1 else e}"
            log(f"  {s.key}: FAILED: {row.error}")
            return row
        return self.measure(s, row, proxy)

    def start_for(self, s: Scenario) -> harness.Envoy:
        if s.kind == "none":
            proxy = self.start_front(with_filter=False, tag=s.key)
        elif s.kind == "jwt_authn":
            proxy = self.start_front(with_filter=False, tag=s.key,
                                     mutate=jwt_authn_mutator(self.idp, self.jwks, cache=s.jwt_cache))
        elif s.kind == "floor":
            proxy = self.start_front(plugin=s.plugin(), wasm=FLOOR_WASM, tag=s.key)
        elif s.kind == "floor-native":
            proxy = self.start_front(plugin=api_config(self.idp, ["bearer"]), tag=s.key, build="native",
                                     mutate=s.mutate, native_path=FLOOR_NATIVE)
        elif s.prepare == self.login_for_session:
            proxy = self.browser_envoy(tag=s.key, wasm=s.wasm or harness.WASM_PATH, build=s.build)
        else:
            proxy = self.start_front(plugin=s.plugin(), tag=s.key, wasm=s.wasm or harness.WASM_PATH, mutate=s.mutate,
                                     build=s.build)
        return proxy

    def measure(self, s: Scenario, row: Row, proxy: harness.Envoy) -> Row:
        a = self.args
        try:
            headers = s.headers() if s.headers else {}
            if s.prepare:
                headers.update(s.prepare(proxy))
            url = proxy.url("/bench")
            pid = proxy.process.pid
            total = (a.jwt_authn_cold_requests if s.kind == "jwt_authn" else a.cold_requests) if s.cold else a.requests
            total = s.requests or total
            tokens = self.tokens_file if s.cold else None
            row.rss_before = rss_mib(pid)
            warm = run_wrk(a, url, a.warmup, headers=headers, tokens=tokens, token_offset=0, cpus=self.other_cpus)
            if warm.errors:
                log(f"  warm-up of {s.key}: {warm.non200} non-200 (first {warm.first_bad_status}), "
                    f"{warm.socket_errors} socket errors")
            c0, u0, t0 = cpu_seconds(pid), cpu_seconds(self.upstream.process.pid), time.monotonic()
            res = run_wrk(a, url, total, headers=headers, tokens=tokens, token_offset=self.cold_offset,
                          cpus=self.other_cpus, max_seconds=max(a.max_seconds, total // 1000))
            # CPU over wrk's measured interval (the process start-up around it is idle time)
            wall = res.seconds or (time.monotonic() - t0)
            row.cpu_front = 100 * (cpu_seconds(pid) - c0) / wall
            row.cpu_upstream = 100 * (cpu_seconds(self.upstream.process.pid) - u0) / wall
            row.cpu_wrk = 100 * res.cpu_seconds / wall
            row.rss_after = rss_mib(pid)
            row.result = res
            if proxy.returncode is not None:
                row.error = f"front Envoy exited with {proxy.returncode}"
            log(f"  {s.key:16} {res.rps:9.0f} req/s  p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
                f"non-200 {res.non200}  socket errors {res.socket_errors}  CPU front {row.cpu_front:.0f}% upstream {row.cpu_upstream:.0f}% wrk {row.cpu_wrk:.0f}%")
        except Exception as e:  # noqa: BLE001 -- one broken scenario must not hide the others
            row.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log(f"  {s.key}: FAILED: {e}\n{proxy.log()[-3000:]}")
        finally:
            self.stop(proxy)
        return row

    # -- what one login costs ------------------------------------------------
    def idp_token_ms(self, mark: int, wait: float = 1.0) -> list[int]:
        """ms= of the IdP's POST /token lines logged after `mark` (waits briefly for the line)."""
        deadline = time.monotonic() + wait
        while True:
            lines = [l for l in self.idp.log()[mark:].splitlines() if l.startswith("IDP POST /token ")]
            if lines or time.monotonic() > deadline:
                return [int(re.search(r" ms=(\d+)", l).group(1)) for l in lines]
            time.sleep(0.01)

    def login_cost(self) -> dict[str, Any]:
        proxy = self.browser_envoy(tag="login-cost")
        try:
            harness.login(proxy, self.idp, "/")     # warm-up: discovery, JWKS, the mTLS connection
            own, walls, idps, plain = [], [], [], []
            for i in range(self.args.logins):
                flow = harness.start_login(proxy, self.idp, f"/login-{i}")
                flow.authenticate()
                mark = len(self.idp.log())
                t0 = time.perf_counter()
                r = flow.callback()
                wall = (time.perf_counter() - t0) * 1000
                assert r.status_code == 302 and any(c.name == "session" for c in harness.set_cookies(r)), \
                    f"callback did not set a session: {r.status_code} {r.text[:200]}"
                token_ms = self.idp_token_ms(mark)
                assert token_ms, "no POST /token at the IdP during the callback"
                walls.append(wall)
                idps.append(sum(token_ms))
                own.append(wall - sum(token_ms))
                t0 = time.perf_counter()
                final = flow.follow()
                plain.append((time.perf_counter() - t0) * 1000)
                assert final.status_code == 200, f"request with the new session: {final.status_code}"
            return {"own": own, "wall": walls, "idp": idps, "plain": plain}
        finally:
            self.stop(proxy)

    def handshakes(self, name: str, plugin: dict, headers: dict[str, str], concurrent_clients: int) -> dict:
        """IdP connections opened (cluster idp-mtls) per 100 token requests with caching off."""
        proxy = self.start_front(plugin=plugin, tag=f"connections-{name.split()[0]}-{concurrent_clients}")
        try:
            keys = ("upstream_cx_total", "upstream_rq_total", "ssl.handshake")

            def stats() -> dict[str, int]:
                st = proxy.stats(r"^cluster\.idp-mtls\.")
                return {k: st.get(f"cluster.idp-mtls.{k}", 0) for k in keys}
            before = stats()
            n = self.args.token_requests
            non200 = 0
            if concurrent_clients <= 1:
                with requests.Session() as s:
                    for _ in range(n):
                        r = s.get(proxy.url("/bench"), headers=headers, timeout=15)
                        non200 += r.status_code != 200
            else:
                res = run_wrk(self.args, proxy.url("/bench"), n, headers=headers, connections=concurrent_clients,
                              cpus=self.other_cpus)
                non200 = res.errors
            time.sleep(0.2)
            after = stats()
            d = {k: after[k] - before[k] for k in keys}
            return {"name": name, "clients": concurrent_clients, "requests": n, "non200": non200, **d}
        finally:
            self.stop(proxy)


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def machine_info(args: argparse.Namespace, bench: Bench) -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    envoy_v = subprocess.run([harness.envoy_binary(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version: [0-9a-f]+/([^/\s]+)/", envoy_v)
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wm = re.search(r"wrk (\S+)", wrk_v.stdout + wrk_v.stderr)
    wasm = harness.WASM_PATH
    pinning = (f"front Envoy pinned to CPU {sorted(bench.front_cpus)}, wrk/upstream/IdP to CPU {sorted(bench.other_cpus)}"
               if bench.pinned else "no CPU pinning")
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores; Linux {os.uname().release}",
        f"- Envoy {m.group(1) if m else envoy_v.strip()} (`{Path(harness.envoy_binary()).relative_to(REPO) if str(harness.envoy_binary()).startswith(str(REPO)) else harness.envoy_binary()}`), "
        f"wrk {wm.group(1) if wm else '?'}",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- `dist/oidc.wasm`: {wasm.stat().st_size:,} bytes",
        f"- front Envoy `--concurrency {args.concurrency}`, upstream Envoy `--concurrency {args.upstream_concurrency}` "
        f"(direct_response 200); wrk {args.threads} thread(s), {args.connections} connections, "
        f"{args.requests} requests per scenario (new token every request: {args.cold_requests} for the filter, "
        f"{args.jwt_authn_cold_requests} for jwt_authn) "
        f"after {args.warmup} warm-up requests; {pinning}",
    ]


def ratio(x: float, base: float | None) -> str:
    if not base or not x:
        return "—"
    return f"{x / base:.2f}×"


def cpu_per_request(r: Row) -> str:
    """The front Envoy's CPU time per request: steadier than requests/s on a shared machine,
    and what a filter adds whether or not the front Envoy is the bottleneck."""
    rps = r.result.rps if r.result else 0
    return f"{r.cpu_front / 100 / rps * 1e6:.0f}" if rps else "—"


REPEAT = "#2"


def merge_repeats(rows: list[Row]) -> list[Row]:
    """The second run of a scenario (key ending in `#2`) merged into its first: requests,
    time and CPU added up, latency percentiles and memory the mean of the two."""
    out: list[Row] = []
    by_key: dict[str, Row] = {}
    for r in rows:
        first = by_key.get(r.scenario.key.removesuffix(REPEAT))
        if not r.scenario.key.endswith(REPEAT) or first is None:
            by_key[r.scenario.key] = r
            out.append(r)
            continue
        a, b = first.result, r.result
        if a is None or b is None:
            first.result, first.error = None, first.error or r.error
            continue
        wall = a.seconds + b.seconds
        for attr in ("cpu_front", "cpu_upstream", "cpu_wrk"):
            setattr(first, attr, (getattr(first, attr) * a.seconds + getattr(r, attr) * b.seconds) / wall)
        first.rss_before = (first.rss_before + r.rss_before) / 2
        first.rss_after = (first.rss_after + r.rss_after) / 2
        first.error = first.error or r.error
        first.result = dataclasses.replace(
            a, requests=a.requests + b.requests, seconds=wall, non200=a.non200 + b.non200,
            first_bad_status=a.first_bad_status or b.first_bad_status, socket_errors=a.socket_errors + b.socket_errors,
            reused_tokens=a.reused_tokens + b.reused_tokens, p50_ms=(a.p50_ms + b.p50_ms) / 2,
            p90_ms=(a.p90_ms + b.p90_ms) / 2, p99_ms=(a.p99_ms + b.p99_ms) / 2, raw=a.raw + b.raw,
            cpu_seconds=a.cpu_seconds + b.cpu_seconds)
    return out


def throughput_table(rows: list[Row]) -> list[str]:
    by_key = {r.scenario.key: r for r in rows}
    none = by_key.get("none")
    none_rps = none.result.rps if none and none.result else None
    out = ["| scenario | requests/s | p50 ms | p99 ms | vs no filter | vs jwt_authn | front Envoy CPU µs / request "
           "| Envoy RSS before → after (MiB) | non-200 / socket errors | CPU % front / upstream / wrk |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s, res = r.scenario, r.result
        if res is None:
            out.append(f"| {s.label} | FAILED | | | | | | | {r.error} | |")
            continue
        base_key = s.baseline
        base = by_key.get(base_key) if base_key else None
        base_rps = base.result.rps if base and base.result else None
        which = {"jwt_authn-cold": " (vs new-token jwt_authn)", "jwt_authn-cache": " (vs jwt_authn + cache)"}
        vs_jwt = (ratio(res.rps, base_rps) + which.get(base_key, "")) if base_key else "—"
        errs = f"{res.non200} / {res.socket_errors}"
        if res.non200:
            errs = f"**{res.non200}** (first {res.first_bad_status}) / {res.socket_errors}"
        elif res.socket_errors:
            errs = f"0 / **{res.socket_errors}**"
        if r.error:
            errs += f" {r.error}"
        if res.reused_tokens:
            errs += f" ({res.reused_tokens} tokens reused)"
        out.append(f"| {s.label} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} | "
                   f"{'—' if s.key == 'none' else ratio(res.rps, none_rps)} | {vs_jwt} | "
                   f"{cpu_per_request(r)} | {r.rss_before:.1f} → {r.rss_after:.1f} | {errs} | {r.cpu_front:.0f} / {r.cpu_upstream:.0f} / {r.cpu_wrk:.0f} |")
    return out


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def login_table(cost: dict | None, hs: list[dict]) -> list[str]:
    out = ["| measurement | result |", "|---|---|"]
    if cost:
        n = len(cost["own"])
        out.append(f"| filter's own time per login (callback wall time at the client − IdP's POST /token ms), "
                   f"{n} logins | median **{statistics.median(cost['own']):.1f} ms**, p90 {pct(cost['own'], 90):.1f} ms |")
        out.append(f"| callback wall time at the client | median {statistics.median(cost['wall']):.1f} ms, "
                   f"p90 {pct(cost['wall'], 90):.1f} ms |")
        out.append(f"| IdP's own time for that POST /token (its log's `ms=`, whole ms) | "
                   f"median {statistics.median(cost['idp']):.0f} ms, p90 {pct(cost['idp'], 90):.0f} ms |")
        out.append(f"| for scale: the next request, with the new session cookie, same client | "
                   f"median {statistics.median(cost['plain']):.1f} ms, p90 {pct(cost['plain'], 90):.1f} ms |")
    for h in hs:
        per100 = 100 * h["upstream_cx_total"] / h["upstream_rq_total"] if h["upstream_rq_total"] else float("nan")
        who = "sequential requests" if h["clients"] <= 1 else f"{h['clients']} concurrent clients"
        bad = f"; **{h['non200']} non-200**" if h["non200"] else ""
        out.append(f"| new TLS connections to the IdP per 100 token requests: {h['name']}, {who} | "
                   f"**{per100:.1f}** ({h['upstream_cx_total']} connections, {h['ssl.handshake']} TLS handshakes, "
                   f"{h['upstream_rq_total']} requests on `idp-mtls` for {h['requests']} client requests{bad}) |")
    return out


# ---------------------------------------------------------------------------
def instruction_table(args: argparse.Namespace) -> list[str]:
    """The filter's instructions per request on its cached paths, this build (and
    --compare-wasm): the same every run, where timings here move by a fifth."""
    try:
        import instructions  # bench/instructions.py: needs wasmtime and cryptography (make bench installs them)
    except ImportError as e:
        return [f"_not counted: {e}_"]
    paths = [str(harness.WASM_PATH)] + ([str(Path(args.compare_wasm).resolve())] if args.compare_wasm else [])
    return instructions.table(paths)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--concurrency", type=int, default=1, help="front Envoy worker threads (--concurrency)")
    p.add_argument("--upstream-concurrency", type=int, default=1, help="upstream Envoy worker threads")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--requests", type=int, default=20000, help="measured requests per same-token/cached scenario")
    p.add_argument("--cold-requests", type=int, default=10000,
                   help="measured requests per new-token-every-request scenario (as many tokens are minted)")
    p.add_argument("--jwt-authn-cold-requests", type=int, default=10000,
                   help="measured requests of jwt_authn with a new token every request (it is ~10x faster)")
    p.add_argument("--memory-requests", type=int, default=1_000_000,
                   help="requests of the memory scenario (bearer tokens cycling over --memory-tokens); 0 skips it")
    p.add_argument("--memory-tokens", type=int, default=30000,
                   help="distinct tokens of the memory scenario (more than the caches hold)")
    p.add_argument("--warmup", type=int, default=500, help="warm-up requests before each measurement")
    p.add_argument("--logins", type=int, default=30, help="authorization code logins timed")
    p.add_argument("--token-requests", type=int, default=100, help="token requests for the TLS connection count")
    p.add_argument("--only", help="comma-separated scenario keys (none, floor, floor-read, jwt_authn, jwt_authn-cold, "
                                  "jwt_authn-cache, bearer, bearer-policies, bearer-cold, bearer-memory, session, introspection, password, "
                                  "native-floor, native-floor-read, native-bearer, native-bearer-cold, native-session, native-introspection, native-password)")
    p.add_argument("--no-native", dest="native", action="store_false",
                   help="skip the native build's rows (dist/liboidc.so)")
    p.add_argument("--skip-login-cost", action="store_true", help="skip the second table")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="don't pin the front Envoy to its own CPU (default: pinned when there are ≥ 2 CPUs)")
    p.add_argument("--max-seconds", type=int, default=120, help="wrk -d: upper bound of one wrk run")
    p.add_argument("--out", default=str(BENCH_DIR / "results.md"), help="markdown output file")
    p.add_argument("--compare-wasm", help="another build of the filter: each filter row is run again with it (this, other, other, this; each build's two runs merged), "
                   "right after, in the same run (an A/B of two builds on one machine)")
    p.add_argument("--compare-name", help="the label of --compare-wasm's rows (default: its file name)")
    a = p.parse_args(argv)
    if a.threads < 1 or a.connections < a.threads or a.concurrency < 1:
        p.error("need threads ≥ 1, connections ≥ threads, concurrency ≥ 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wants_floor = not args.only or any(k.startswith("floor") for k in args.only.split(","))
    if wants_floor and not FLOOR_WASM.exists():
        log(f"bench: {FLOOR_WASM} is missing: build bench/floor first (make bench does)")
        return 2
    if args.native and not harness.NATIVE_PATH.exists():
        log(f"bench: {harness.NATIVE_PATH} is missing: make build-native (or --no-native)")
        return 2
    if not harness.WASM_PATH.exists():
        log(f"bench: {harness.WASM_PATH} is missing: build the filter first (make build, or make bench)")
        return 2
    if not shutil.which("wrk"):
        log("bench: wrk is not installed (apt-get install -y wrk, or run make bench)")
        return 2
    # make's Ctrl-C / kill: clean up like an exception
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    bench = Bench(args)
    rows: list[Row] = []
    cost, hs = None, []
    try:
        log("bench: starting PKI, IdP, upstream Envoy")
        bench.setup()
        log("bench: throughput (fresh front Envoy per scenario)")
        for s in bench.scenarios():
            rows.append(bench.run_scenario(s))
        rows = merge_repeats(rows)
        if not args.skip_login_cost:
            log("bench: what one login costs")
            cost = bench.login_cost()
            plugin_pw = api_config(bench.idp, ["password"], cache_tokens=False)
            plugin_in = api_config(bench.idp, ["introspection"], cache_introspection=False)
            basic = {"Authorization": "Basic " + base64.b64encode(b"john:doe").decode()}
            opaque = {"Authorization": f"Bearer {bench.opaque_token}"}
            for clients in (1, 8):
                hs.append(bench.handshakes("password grant", plugin_pw, basic, clients))
                hs.append(bench.handshakes("introspection", plugin_in, opaque, clients))
        info = machine_info(args, bench)
    finally:
        bench.cleanup()
    log("bench: Wasm instructions per request (wasmtime fuel)")
    counted = instruction_table(args)

    lines = ["# `make bench` results", "", *info, "",
             "## Throughput and latency of the hot paths", "", *throughput_table(rows), "",
             "## What one login costs", "", *login_table(cost, hs), "",
             "## The filter's own cost per request: Wasm instructions (exact) and time in V8 (bench/instructions.py)", "", *counted, "",
             f"_Total bench time {time.monotonic() - started:.0f} s; logs and configs in "
             f"`{WORK.relative_to(REPO)}/`._", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    log(f"bench: wrote {args.out}")
    return 1 if any(r.result is None for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
