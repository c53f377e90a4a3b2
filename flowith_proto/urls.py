"""URLs written the one way every transport sends them: in ASCII.

A URL may come with a host or a path that is not ASCII (a CDN's answer, a base URL
the caller chose). httpx encodes one itself and aiohttp sends what it is given,
and the proxy rule (:mod:`flowith_proto.proxies`) compares hosts by their ASCII
names, so the core writes every URL it sends in ASCII first: the host in IDNA
2008 with UTS 46 mapping, as httpx and yarl write it (``faß.de`` is
``xn--fa-hia.de``; the standard library's IDNA 2003 makes it ``fass.de``,
another domain), and the rest percent-encoded.
"""

from __future__ import annotations

import re
import types
from urllib.parse import quote, urlsplit, urlunsplit

_idna: types.ModuleType | None
try:  # what httpx and yarl encode hosts with: either transport brings it
    import idna as _idna
except ImportError:  # the core alone, without a transport
    _idna = None

__all__ = ["ascii_host", "ascii_url"]

#: What stays as it is: the reserved and unreserved characters and the ``%`` of an
#: escape (quote() keeps letters, digits and ``_.-`` too).
_URL_SAFE = ":/?#[]@!$&'()*+,;=~%"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def ascii_host(name: str) -> str:
    """The ASCII name of the host ``name``; a ``ValueError`` saying why if it is no
    valid domain name."""
    if name.isascii():
        return name
    if _idna is None:
        try:
            return name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(str(exc)) from None
    try:
        encoded: bytes = _idna.encode(name, uts46=True)
    except _idna.IDNAError as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    return encoded.decode("ascii")


def ascii_url(url: str) -> str:
    """``url`` as a request may carry it: a non-ASCII host by its ASCII name, and
    non-ASCII text and characters no URL may hold raw (``"<>\\^`{|}``, a ``%``
    starting no escape) percent-encoded, escapes kept. A ``ValueError`` says why a
    URL cannot be written so (its host is no domain name; it holds a lone
    surrogate)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, _ = netloc.rpartition("@")
        try:
            host = ascii_host(parts.hostname or "")
        except ValueError as exc:
            raise ValueError(f"its host is no valid domain name ({exc})") from None
        if ":" in host:  # an IPv6 address (its user name was not ASCII)
            host = f"[{host}]"
        port = "" if parts.port is None else f":{parts.port}"
        netloc = _encoded(userinfo) + at + host + port
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return f"{parts.scheme}://{netloc}" + _encoded(_STRAY_PERCENT.sub("%25", rest))


def _encoded(part: str) -> str:
    try:
        return quote(part, safe=_URL_SAFE)
    except UnicodeEncodeError:
        raise ValueError("it holds a lone surrogate, which no URL can carry") from None
