"""Small helpers on requests.Response shared by the other modules:
_describe (one-line summary for assertion messages), _location (absolute
Location of a redirect) and until_ok (repeat a request until it answers 200).
"""
from __future__ import annotations

import time
from typing import Callable

import requests


def _location(r: requests.Response) -> str:
    from urllib.parse import urljoin
    loc = r.headers.get("location")
    if not loc:
        raise AssertionError(f"{r.status_code} without Location from {r.url}: {r.text[:500]}")
    return urljoin(r.url, loc)


def _describe(r: requests.Response) -> str:
    return (f"{r.request.method} {r.url} -> {r.status_code} location={r.headers.get('location')!r} "
            f"set-cookie={r.headers.get('set-cookie')!r} body={r.text[:500]!r}")


def until_ok(call: Callable[[], requests.Response], timeout: float = 15.0, every: float = 0.3) -> requests.Response:
    """Repeats `call` until it answers 200 or `timeout` passes; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if r.status_code == 200 or time.monotonic() >= deadline:
            return r
        time.sleep(every)
