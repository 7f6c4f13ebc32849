"""Cookies as the filter sets them: SetCookie / set_cookies / set_cookie_map
(Set-Cookie headers parsed with their attributes), cookie_header, and the
naming of a session's chunks (is_session_cookie, session_chunks).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

import requests


@dataclass
class SetCookie:
    """One parsed Set-Cookie header."""
    name: str
    value: str
    attrs: dict  # lower-cased attribute name -> value ("" for flags like HttpOnly)
    raw: str

    @property
    def expired(self) -> bool:
        """Max-Age <= 0, or an Expires in the past (a deletion)."""
        import email.utils
        if "max-age" in self.attrs:
            try:
                return int(self.attrs["max-age"]) <= 0
            except ValueError:
                return False
        if "expires" in self.attrs:
            try:
                when = email.utils.parsedate_to_datetime(self.attrs["expires"])
            except (TypeError, ValueError):
                return False
            return when.timestamp() <= time.time()
        return False


def set_cookies(r: requests.Response) -> list[SetCookie]:
    """Every Set-Cookie header of a response, parsed (in order)."""
    out = []
    for raw in r.raw.headers.getlist("Set-Cookie") if r.raw is not None else []:
        first, *rest = raw.split(";")
        name, _, value = first.strip().partition("=")
        attrs = {}
        for a in rest:
            k, _, v = a.strip().partition("=")
            if k:
                attrs[k.lower()] = v.strip()
        out.append(SetCookie(name.strip(), value.strip(), attrs, raw))
    return out


def set_cookie_map(r: requests.Response) -> dict[str, SetCookie]:
    """name -> last Set-Cookie of that name."""
    return {c.name: c for c in set_cookies(r)}


def cookie_header(cookies: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    items = cookies.items() if isinstance(cookies, Mapping) else cookies
    return "; ".join(f"{k}={v}" for k, v in items)


def is_session_cookie(name: str, base: str = "session") -> bool:
    """`session`, `session_2`, `session_3`, ... (the chunks of one session)."""
    return name == base or re.fullmatch(re.escape(base) + r"_[0-9]+", name) is not None


def session_chunks(cookies: Mapping[str, str], base: str = "session") -> list[tuple[str, str]]:
    """The session cookie chunks in order: [(session, v), (session_2, v), ...]."""
    def order(name: str) -> int:
        return 1 if name == base else int(name.rsplit("_", 1)[1])
    return sorted(((k, v) for k, v in cookies.items() if is_session_cookie(k, base)), key=lambda kv: order(kv[0]))
