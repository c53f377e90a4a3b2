"""``multipart/form-data`` as a server reads it (RFC 7578 on RFC 2046's framing).

The parser works on the whole body with ``bytes.find`` from a moving offset,
so its cost is linear in the body's size: a 50 MB upload is scanned once and
each part's content is copied once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

import attrs

from flowith_proto.fake.wire import header

__all__ = ["MultipartError", "Part", "boundary_of", "field", "media_type", "parse_multipart"]

#: RFC 2046 5.1.1: 1 to 70 characters from this set (a space only inside).
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")
_PARAMETER = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL
)


class MultipartError(ValueError):
    """The body does not follow the multipart syntax; the message says where."""


@attrs.frozen
class Part:
    """One part of a form: its field ``name``, the ``filename`` of a file
    part (``None`` for a plain field), its ``Content-Type`` and its bytes."""

    name: str
    filename: str | None
    content_type: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _parameters(value: str) -> tuple[str, dict[str, str]]:
    """``type; k=v; k2="v 2"``: the first token, lower-cased, and the parameters."""
    first, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    for key, raw in _PARAMETER.findall(";" + rest):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        parameters[key.lower()] = raw
    return first.strip().lower(), parameters


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """The media type (``"multipart/form-data"``) and parameters of a header value."""
    return _parameters(content_type or "")


def boundary_of(content_type: str | None) -> str:
    """The ``boundary`` parameter of a multipart ``Content-Type``."""
    _, parameters = media_type(content_type)
    boundary = parameters.get("boundary", "")
    if not _BOUNDARY.match(boundary):
        raise MultipartError("the Content-Type has no valid boundary parameter")
    return boundary


def _filename(parameters: dict[str, str]) -> str | None:
    extended = parameters.get("filename*")
    if extended is not None:  # RFC 5987: charset'language'percent-encoded
        charset, _, rest = extended.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            raise MultipartError("a filename* parameter is not decodable") from None
    return parameters.get("filename")


def _part(raw_headers: bytes, data: bytes) -> Part:
    headers: list[tuple[str, str]] = []
    for line in raw_headers.split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.decode("utf-8", errors="replace").partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise MultipartError(f"a part has a malformed header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    disposition, parameters = _parameters(header(headers, "content-disposition") or "")
    if disposition != "form-data" or "name" not in parameters:
        raise MultipartError("each part needs 'Content-Disposition: form-data; name=...'")
    filename = _filename(parameters)
    default = "application/octet-stream" if filename is not None else "text/plain"
    return Part(
        name=parameters["name"],
        filename=filename,
        content_type=header(headers, "content-type") or default,
        data=data,
        headers=tuple(headers),
    )


def _is_delimiter_end(body: bytes, position: int) -> bool:
    """Whether a boundary ending at ``position`` ends a line: ``--`` (the close
    delimiter) or optional spaces and tabs, then CRLF. Otherwise the bytes
    only look like a boundary and belong to the content."""
    if body.startswith(b"--", position):
        return True
    line_end = body.find(b"\r\n", position)
    return line_end >= 0 and not body[position:line_end].strip(b" \t")


def _find_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    found = body.find(delimiter, start)
    while found >= 0 and not _is_delimiter_end(body, found + len(delimiter)):
        found = body.find(delimiter, found + 1)
    return found


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of ``body``, in order. Raises :class:`MultipartError`."""
    dash = b"--" + boundary.encode("latin-1")
    delimiter = b"\r\n" + dash
    if body.startswith(dash) and _is_delimiter_end(body, len(dash)):
        position = len(dash)
    else:  # a preamble, which servers ignore
        found = _find_delimiter(body, delimiter, 0)
        if found < 0:
            raise MultipartError("the body does not contain the boundary")
        position = found + len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter; an epilogue after it is ignored
        headers_start = body.find(b"\r\n", position) + 2
        if body.startswith(b"\r\n", headers_start):
            headers_end = headers_start
        else:
            headers_end = body.find(b"\r\n\r\n", headers_start)
            if headers_end < 0:
                raise MultipartError("a part's headers are not ended by a blank line")
        content_start = headers_end + (2 if headers_end == headers_start else 4)
        content_end = _find_delimiter(body, delimiter, content_start)
        if content_end < 0:
            raise MultipartError("the body ends without the closing boundary")
        parts.append(_part(body[headers_start:headers_end], body[content_start:content_end]))
        position = content_end + len(delimiter)


def field(parts: Sequence[Part], name: str) -> Part | None:
    """The first part named ``name``."""
    return next((part for part in parts if part.name == name), None)
