"""The aiohttp transport's cookie jar: aiohttp's, minus one misreading.

(The client makes it with ``quote_cookie=False``: aiohttp otherwise sends back a
value holding ``/``, ``+``, ``=``, a quote or a non-ASCII character quoted and
escaped as Python's ``http.cookies`` writes it, ``a="abc/def+ghi=="``, which is not
the value the server set; httpx and browsers send it back as it came. A value the
server itself quoted, ``sid="abc"``, still goes back unquoted, ``sid=abc``: aiohttp
keeps cookies without their quotes.)

Servers delete a cookie by setting it again with an expiry in the past, most
often the Unix epoch itself (``Expires=Thu, 01 Jan 1970 00:00:00 GMT``: Express's
``clearCookie`` writes that). aiohttp reads an expiry of 0 as no expiry at all
(aio-libs/aiohttp#13692) and kept sending the deleted cookie, where httpx (and a
browser) stops. Such a cookie is given ``Max-Age=0`` here, which aiohttp reads
right, and which means the same (RFC 6265 5.3 lets Max-Age win over Expires).
"""

from __future__ import annotations

import http.cookiejar
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.cookies import Morsel
from typing import Any

import aiohttp
from yarl import URL

__all__ = ["CookieJar"]

#: The standard library's lenient reader of cookie dates (typeshed leaves it out).
http2time: Callable[[str], int | None] = http.cookiejar.http2time  # type: ignore[attr-defined]
_EXPIRES = re.compile(r";\s*expires\s*=\s*([^;]*)", re.IGNORECASE)
_MAX_AGE = re.compile(r";\s*max-age\s*=", re.IGNORECASE)


def _gone(expires: str) -> bool:
    """Whether an ``Expires`` date is at or before the Unix epoch (quoted or not:
    some servers quote it, and browsers and httpx read it all the same)."""
    moment = http2time(expires.strip().strip('"'))
    return moment is not None and moment <= 0


def _with_max_age(header: str) -> str:
    """A ``Set-Cookie`` header that deletes its cookie by an epoch expiry, saying so
    with ``Max-Age=0`` too; any other as it is."""
    found = _EXPIRES.search(header)
    if found is None or _MAX_AGE.search(header) or not _gone(found.group(1)):
        return header
    return header + "; Max-Age=0"


class CookieJar(aiohttp.CookieJar):
    """:class:`aiohttp.CookieJar` that deletes a cookie set to expire at the epoch."""

    def update_cookies(self, cookies: Any, response_url: URL = URL()) -> None:  # noqa: B008
        if not isinstance(cookies, Mapping):
            cookies = list(cookies)  # (name, value) pairs, looked at twice
        morsels: Iterable[Any] = (
            cookies.values() if isinstance(cookies, Mapping) else (v for _, v in cookies)
        )
        for morsel in morsels:
            if (
                isinstance(morsel, Morsel)
                and morsel["expires"]
                and not morsel["max-age"]
                and _gone(str(morsel["expires"]))
            ):
                morsel["max-age"] = "0"
        super().update_cookies(cookies, response_url)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: URL) -> None:
        # aiohttp 3.13 and later parse the raw headers here, not in update_cookies.
        fixed = [_with_max_age(header) for header in headers]
        super().update_cookies_from_headers(fixed, response_url)

