"""URLs written the one way every transport sends them: in ASCII.

A URL may come with a host or a path that is not ASCII (a CDN's answer, a base URL
the caller chose). httpx encodes one itself and aiohttp sends what it is given,
and the proxy rule (:mod:`flowith_proto.proxies`) compares hosts by their ASCII
names, so the core writes every URL it sends in ASCII first: the host in IDNA
2008 with UTS 46 mapping, as httpx and yarl write it (``faß.de`` is
``xn--fa-hia.de``; the standard library's IDNA 2003 makes it ``fass.de``,
another domain; a name IDNA 2008 refuses, such as ``cdn_1.bücher.example``, in
IDNA 2003, as yarl falls back to it), and the rest percent-encoded.
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
    valid domain name.

    IDNA 2008 first; a name it refuses (an ``_``, a symbol such as ``☃``, a label
    starting with ``-``) in IDNA 2003, as yarl falls back to it, and as the client
    encoded such names before."""
    if name.isascii():
        return name
    refusal = ""
    if _idna is not None:
        try:
            encoded: bytes = _idna.encode(name, uts46=True)
        except _idna.IDNAError as exc:
            refusal = str(exc) or type(exc).__name__
        else:
            return encoded.decode("ascii")
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(refusal or str(exc)) from None


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
