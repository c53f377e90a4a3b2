"""Where a downloaded file may be written, decided without touching the disk.

A result URL comes from the server and a file name may come from anywhere, so
neither may choose a path: the old client wrote ``Path(folder) / name`` with
the URL's last segment, which let ``..``, absolute names and (on Windows)
backslashes escape the folder (defect D17). Here a name is reduced to one
plain path component, always inside the target folder.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath
from urllib.parse import unquote, urlsplit

from flowith_proto.arguments import require_option
from flowith_proto.config import FlowithConfig
from flowith_proto.errors import ValidationError, mask_url
from flowith_proto.request import Request
from flowith_proto.urls import ascii_url

__all__ = ["download_request", "numbered_name", "safe_filename", "target_inside"]

#: The longest name kept, in UTF-8 bytes: file systems allow 255, and the download's
#: temporary name (``.{name}.{12 hex}.part``) and a number (``-2``) add to it.
_MAX_NAME_BYTES = 200
# Anything that could separate, hide or disturb a path component on some OS.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
#: Unicode's controls, line and paragraph separators and lone surrogates...
_HIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
#: ...and the formatting characters that reorder or hide what a name shows: the
#: direction marks, embeddings, overrides and isolates (a right-to-left override
#: shows "invoice\u202egnp.exe" as "invoiceexe.png"), the zero-width space and the
#: byte order mark. Not the joiners (Persian spelling needs ZWNJ, emoji sequences
#: ZWJ) nor the soft hyphen: they change no reading of the name.
_HIDDEN_FORMATS = frozenset(
    "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\ufeff"
)
#: The device names Windows reserves, whatever follows a dot: COM and LPT take the
#: superscript digits too, and the console has two more (Microsoft's naming rules).
_WINDOWS_RESERVED = re.compile(
    r"^(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]|conin\$|conout\$)(\..*)?$",
    re.IGNORECASE,
)


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    # Keep only the last component whichever separator the name uses.
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    if not name.isascii():
        name = "".join(
            "_"
            if char in _HIDDEN_FORMATS or unicodedata.category(char) in _HIDDEN_CATEGORIES
            else char
            for char in name
        )
    name = name.strip().strip(".")
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    if len(name.encode()) > _MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if dot and 0 < len(suffix) <= 16:
            name = _cut(stem, _MAX_NAME_BYTES - len(suffix.encode()) - 1) + "." + suffix
        else:
            name = _cut(name, _MAX_NAME_BYTES)
    return name


def _cut(text: str, size: int) -> str:
    """The longest start of ``text`` of at most ``size`` bytes in UTF-8, whole
    characters only."""
    return text.encode()[:size].decode("utf-8", "ignore")


def safe_filename(url: str, filename: str | None, default: str) -> str:
    """One safe path component for a download.

    ``filename`` wins when given; otherwise the URL path's last segment,
    percent-decoded (so ``%2F`` cannot smuggle a separator past this check);
    ``default`` when nothing usable remains. Query and fragment never count.
    """
    if filename is not None:
        candidate = _clean(require_option(filename, "filename"))
        if not candidate:
            raise ValidationError(
                f"filename {filename!r} has no usable name in it", status_code=None
            )
        return candidate
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    candidate = _clean(unquote(segment))
    return candidate or _clean(default)


def numbered_name(name: str, number: int) -> str:
    """``name`` with ``-number`` before its last suffix (``image-2.png``): the free
    name a download takes when the name it drew from its URL is taken."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return f"{name}-{number}"
    return f"{stem}-{number}.{suffix}"


def target_inside(folder: PurePath, name: str) -> PurePath:
    """``folder / name``, refusing any name that is not one plain component."""
    if name in ("", ".", "..") or PurePath(name).name != name or "\\" in name:
        raise ValidationError(f"unsafe file name {name!r}", status_code=None)
    return folder / name


def url_problem(url: object) -> str | None:
    """Why ``url`` is no http(s) URL a client can fetch, or ``None`` if it is one."""
    if not isinstance(url, str):
        return f"it is not a str but {type(url).__name__}"
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        return "it holds spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "it is not http(s)"
    if not parts.hostname:
        return "it names no host"
    return None


def download_request(config: FlowithConfig, url: str) -> Request:
    """A GET of a generated file. It goes to a CDN, so it carries the browser
    headers but never a token."""
    problem = url_problem(url)
    if problem is not None:
        shown = mask_url(url) if isinstance(url, str) else url
        raise ValidationError(f"cannot download {shown!r}: {problem}", status_code=None)
    headers = (
        ("Accept", "*/*"),
        ("User-Agent", config.user_agent),
        ("Origin", config.origin),
        ("Referer", config.referer),
    )
    return Request(
        "GET", _ascii_url(url), headers, idempotent=True, stream=True, follow_redirects=True
    )


def _ascii_url(url: str) -> str:
    """``url`` in ASCII (see :mod:`flowith_proto.urls`): a CDN URL comes as it was
    written, by the server or the caller. The error names the whole URL, which is
    masked as a URL (its password, a signed ``token=``), where a part alone is not."""
    try:
        return ascii_url(url)
    except ValueError as exc:
        raise ValidationError(
            f"cannot download {mask_url(url)!r}: {exc}", status_code=None
        ) from None
