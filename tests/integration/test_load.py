"""Load: mixed traffic (browser logins, sessions, bearer JWTs, introspected opaque tokens,
password grants and a share of bad credentials) through an Envoy with two workers.
Zero 5xx, every answer the one its credential deserves, no VM crash, bounded memory.

A fixed count (LOAD_REQUESTS, default 6000; `make load` runs 100000) over loopback."""
import concurrent.futures
import os
import threading
import time
from pathlib import Path

import requests

import harness

REQUESTS = int(os.environ.get("LOAD_REQUESTS", "6000"))
THREADS = 8


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_mixed_traffic_two_workers(browser_envoy, jwt_idp, upstream):
    proxy = browser_envoy(idp=jwt_idp, concurrency=2,
                          methods=["session", "authorization_code", "bearer", "introspection", "password"])
    sessions = [harness.login(proxy, jwt_idp, "/", user=u).session_cookies()
                for u in ("john", "jane", "john", "jane")]
    jwts = [jwt_idp.password_grant(username=u)["access_token"] for u in ("john", "jane") for _ in range(3)]
    opaque = [jwt_idp.password_grant(username="john", token_format="opaque")["access_token"] for _ in range(3)]
    expired = harness.idp_jwt(jwt_idp, {"exp": int(time.time()) - 600, "iat": int(time.time()) - 900})
    forged = harness.idp_jwt(jwt_idp, key="other.key")

    # (name, request kwargs, expected status)
    kinds = [
        *[("session", {"cookies": c, "headers": harness.API_HEADERS}, 200) for c in sessions],
        *[("bearer", {"headers": {"authorization": f"Bearer {t}"}}, 200) for t in jwts[:6]],
        *[("introspection", {"headers": {"authorization": f"Bearer {t}"}}, 200) for t in opaque[:3]],
        ("password", {"auth": ("john", "doe")}, 200),
        ("password", {"auth": ("jane", "secret2")}, 200),
        ("bad password", {"auth": ("john", "nope")}, 401),
        ("expired jwt", {"headers": {"authorization": f"Bearer {expired}"}}, 401),
        ("forged jwt", {"headers": {"authorization": f"Bearer {forged}"}}, 401),
        ("unknown opaque", {"headers": {"authorization": "Bearer not-a-token-the-idp-knows"}}, 401),
        ("garbage", {"headers": {"authorization": "Bearer a.b.c"}}, 401),
        ("no credentials", {"headers": harness.API_HEADERS}, 401),
        ("browser without session", {"headers": harness.BROWSER_HEADERS}, 302),
    ]
    # warm up (discovery, JWKS, caches), then measure memory from here
    for _, kw, _ in kinds:
        proxy.get("/", allow_redirects=False, **kw)
    time.sleep(0.5)
    rss_before = rss_kib(proxy.process.pid)

    stop = threading.Event()
    lock = threading.Lock()
    unexpected: list[tuple[str, int, str]] = []
    statuses: dict[int, int] = {}
    local = threading.local()

    def one(i: int) -> None:
        http = getattr(local, "http", None) or requests.Session()
        local.http = http
        name, kw, want = kinds[i % len(kinds)]
        r = http.get(proxy.url(f"/load/{i}"), allow_redirects=False, timeout=20, **kw)
        with lock:
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code != want:
                unexpected.append((name, r.status_code, r.text[:200]))

    logins = {"done": 0, "failed": []}

    def keep_logging_in() -> None:
        while not stop.is_set():
            try:
                harness.login(proxy, jwt_idp, "/during-load", user="jane")
                logins["done"] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                logins["failed"].append(repr(e)[:300])
            time.sleep(0.2)

    started = time.monotonic()
    login_thread = threading.Thread(target=keep_logging_in, daemon=True)
    login_thread.start()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(REQUESTS)))
    took = time.monotonic() - started
    stop.set()
    login_thread.join(30)
    time.sleep(0.5)
    rss_after = rss_kib(proxy.process.pid)

    print(f"\nload: {REQUESTS} requests in {took:.1f} s ({REQUESTS / took:.0f}/s), statuses {statuses}, "
          f"{logins['done']} logins meanwhile, Envoy RSS {rss_before} -> {rss_after} KiB")
    assert not unexpected, unexpected[:10]
    assert not any(s >= 500 for s in statuses), statuses
    assert logins["done"] >= 1 and not logins["failed"], logins
    assert proxy.returncode is None
    log = proxy.log()
    assert "panicked" not in log and "Function: proxy_on" not in log and "wasm trap" not in log.lower()
    # every cache is bounded: mixed traffic may fill them, never beyond their bounds
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
