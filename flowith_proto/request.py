"""The request and response values that pass between the core and a transport.

The core builds a :class:`Request` completely (encoded URL, ordered headers,
serialized body) so that a transport sends it unchanged and two transports send
the same target, headers and body; each adds only the headers of its own
connection handling (``Host``, ``Accept-Encoding``, ``Connection``,
``Content-Length``), in an order of its own. Credentials live inside headers and
bodies; :class:`Request`'s repr hides them.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

from flowith_proto.errors import (
    APIError,
    ResponseDecodeError,
    ValidationError,
    excerpt,
    masked_headers,
    redact,
)

__all__ = [
    "FilePart",
    "MultipartForm",
    "Request",
    "Response",
    "WireHeaders",
    "dump_json",
    "encode_query",
    "escape_surrogates",
    "header_pairs",
    "header_text",
    "json_text",
    "literal",
    "percent_encode",
    "quote_value",
    "require_uuid",
]

Headers = tuple[tuple[str, str], ...]


# Structural query parts written by this library (keys, operators, column
# lists). They keep PostgREST's punctuation readable; '"' and '>' are encoded
# as supabase-js and yarl do.
_LITERAL_SAFE = "*,()-._~!$':"
# Caller-supplied values: only unreserved characters survive, so no value can
# add a parameter ('&', '='), a filter list (',' '(') or a fragment ('#').
_VALUE_SAFE = "-._~"


#: The longest URL sent: httpx refuses longer ones, so aiohttp is held to it too.
MAX_URL_LENGTH = 65_536
#: A UTF-16 surrogate, which Python text may hold alone (``json.loads('"\\ud800"')``,
#: a file name the file system could not decode) and UTF-8 cannot carry.
_SURROGATE = re.compile("[\ud800-\udfff]")


def percent_encode(text: str, safe: str) -> str:
    """``quote(text, safe=safe)``, or a :class:`ValidationError` for text holding a
    lone surrogate, which no URL can carry (a browser's ``encodeURIComponent``
    throws too)."""
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        raise ValidationError(
            f"{excerpt(text)} holds a lone surrogate ({_first_surrogate(text)}), which no "
            "URL can carry",
            status_code=None,
        ) from None


def _first_surrogate(text: str) -> str:
    found = _SURROGATE.search(text)
    return f"U+{ord(found.group()):04X}" if found else "none"


def literal(text: str) -> str:
    """Encode a query part this library wrote itself (a key, an operator, a column list)."""
    return percent_encode(text, _LITERAL_SAFE)


def quote_value(value: str) -> str:
    """Encode a caller-supplied value for a query: unreserved characters only."""
    return percent_encode(value, _VALUE_SAFE)


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """``k=v&...`` from pairs whose parts are already encoded, order kept."""
    return "&".join(f"{key}={value}" for key, value in params)


def require_uuid(value: object, name: str) -> str:
    """``value`` as a canonical lower-case UUID string, or a :class:`ValidationError`.

    Ids go into PostgREST filters; accepting only UUIDs means no id can ever
    smuggle in another filter (defect D13 of the old client).
    """
    if not isinstance(value, str):
        raise ValidationError(
            f"{name} must be a UUID string, got {type(value).__name__}",
            status_code=None,
            details=[{"field": name, "reason": "not a string"}],
        )
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 36:
        raise ValidationError(
            f"{name} must be a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx', got {value!r}",
            status_code=None,
            details=[{"field": name, "reason": "not a UUID"}],
        )
    return str(parsed)


def json_text(value: Any) -> str:
    """Compact JSON text that UTF-8 can carry: a lone surrogate in a string is
    written as its ``\\u`` escape, as ``JSON.stringify`` writes it."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if _SURROGATE.search(text) is None else escape_surrogates(text)


def escape_surrogates(text: str) -> str:
    """``text`` (JSON) with each lone surrogate written as its ``\\u`` escape."""
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def dump_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as browsers send it (see :func:`json_text`). NaN and
    infinity have no JSON form: a :class:`ValidationError` rather than a body no
    server can parse."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        if "JSON compliant" in str(exc):
            said = "NaN or infinity: JSON has no such numbers"
        else:  # a circular reference
            said = f"what JSON cannot write ({exc})"
        raise ValidationError(f"a request body cannot hold {said}", status_code=None) from None
    except TypeError as exc:  # "Object of type date is not JSON serializable"
        raise ValidationError(f"a request body cannot hold it: {exc}", status_code=None) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # rare: no search on the way of every request
        return escape_surrogates(text).encode("utf-8")


def _redacted_headers(headers: Headers) -> str:
    return "{" + ", ".join(f"{name}: {value}" for name, value in masked_headers(headers)) + "}"


class WireHeaders(tuple[tuple[str, str], ...]):
    """The headers a transport sends, as a tuple whose repr masks the credentials:
    the transport's frames hold them while the exchange runs, and a traceback shown
    with its frames' variables (``pytest -l``, an error reporter) prints their reprs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"WireHeaders({_redacted_headers(self)})"


@attrs.frozen
class FilePart:
    """One file of a multipart form: from ``path`` (streamed, never read whole)
    or from ``data`` in memory. ``size`` is known up front so the form's
    length can be announced."""

    name: str
    filename: str
    content_type: str
    size: int
    path: str | None = None
    data: bytes | None = attrs.field(default=None, repr=False)


def _quoted(value: str) -> str:
    # RFC 7578 4.2: escape quotes and line breaks in disposition parameters.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@attrs.frozen
class MultipartForm:
    """A ``multipart/form-data`` body described, not materialized.

    The transport writes :meth:`segments` in order: byte strings as they are,
    and each :class:`FilePart` by streaming its content, so a large upload
    never sits in memory.
    """

    boundary: str
    fields: tuple[tuple[str, str], ...] = ()
    files: tuple[FilePart, ...] = ()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def segments(self) -> list[bytes | FilePart]:
        out: list[bytes | FilePart] = []
        dash = f"--{self.boundary}\r\n".encode()
        for name, value in self.fields:
            out.append(
                dash
                + f'Content-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
                + value.encode("utf-8")
                + b"\r\n"
            )
        for part in self.files:
            out.append(
                dash
                + (
                    f'Content-Disposition: form-data; name="{_quoted(part.name)}"; '
                    f'filename="{_quoted(part.filename)}"\r\n'
                    f"Content-Type: {part.content_type}\r\n\r\n"
                ).encode()
            )
            out.append(part)
            out.append(b"\r\n")
        out.append(f"--{self.boundary}--\r\n".encode())
        return out

    @property
    def length(self) -> int:
        """The exact size of the encoded body in bytes."""
        return sum(s.size if isinstance(s, FilePart) else len(s) for s in self.segments())


@attrs.frozen(repr=False)
class Request:
    """One HTTP request, ready for the wire.

    ``idempotent`` says whether sending it twice is harmless, and
    ``conflict_means_done`` that a repeat answered "409 duplicate key" proves
    the first attempt landed (an insert with a client-chosen id); the retry
    policy reads both. ``stream`` marks a server-sent-events request whose
    body the transport hands over chunk by chunk instead of buffering it.
    ``follow_redirects`` is for requests that carry no credentials (a file on
    the CDN): an API request carries tokens, so a redirect is an error for it.
    ``grants_tokens`` marks a request whose answer brings new tokens (a refresh):
    a recording keeps nothing of such an answer that is not JSON.
    """

    method: str
    url: str
    headers: Headers = ()
    body: bytes | MultipartForm | None = None
    idempotent: bool = False
    stream: bool = False
    conflict_means_done: bool = False
    follow_redirects: bool = False
    grants_tokens: bool = False

    def __attrs_post_init__(self) -> None:
        # Refused here, on every transport alike: httpx would raise its own error
        # while aiohttp sent it, for a server to refuse (or not).
        if len(self.url) > MAX_URL_LENGTH:
            raise ValidationError(
                f"the URL of {self.endpoint} is {len(self.url):,} characters long: at "
                f"most {MAX_URL_LENGTH:,} can be sent",
                status_code=None,
            )

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        return first_header(self.headers, name)

    @property
    def endpoint(self) -> str:
        """The method and path, as ``"POST /rest/v1/flow_node"``: what an error names
        (no host, and no query, which holds ids and filters)."""
        return f"{self.method} {urlsplit(self.url).path}"

    @property
    def content(self) -> bytes:
        """The body as bytes (``b""`` when there is none); a multipart form is
        streamed by the transport and has no bytes here: ``TypeError``."""
        if isinstance(self.body, MultipartForm):
            raise TypeError("a multipart body is streamed, not held as bytes")
        return b"" if self.body is None else self.body

    def json(self) -> Any:
        """The body decoded as JSON (tests and the fake Flowith use this)."""
        return None if self.body is None else json.loads(self.content)

    def __repr__(self) -> str:
        if isinstance(self.body, MultipartForm):
            body = f"<multipart, {self.body.length} bytes>"
        else:
            body = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (
            f"Request({self.method!r}, {redact(self.url, ())!r}, "
            f"headers={_redacted_headers(self.headers)}, "
            f"body={body})"
        )


def _int_within_limit(digits: str) -> int | float:
    """A JSON integer as Python reads it, or as a float when it has too many digits
    for ``int()`` (``sys.get_int_max_str_digits()``)."""
    try:
        return int(digits)
    except ValueError:
        return float(digits)


@attrs.frozen(repr=False)
class Response:
    """A complete (non-streaming) HTTP answer as the transport received it."""

    status: int
    headers: Headers = ()
    body: bytes = b""
    #: The credentials of the request: redacted from what :meth:`json` quotes.
    secrets: tuple[str, ...] = attrs.field(default=(), eq=False)
    #: The request answered (see :attr:`Request.endpoint`), for :meth:`json` to name.
    endpoint: str = attrs.field(default="", eq=False)

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    def json(self) -> Any:
        """The body as JSON; an empty body is ``None``; anything else that is
        not JSON raises :class:`ResponseDecodeError`."""
        if not self.body.strip():
            return None
        try:
            try:
                return json.loads(self.body)
            except ValueError as exc:
                if "integer string conversion" not in str(exc):
                    raise
                # JSON, with a number past Python's int-from-text limit: read as a float
                # (inf), which a record's field takes as no number, rather than refuse
                # the whole answer as "not JSON".
                return json.loads(self.body, parse_int=_int_within_limit)
        except ValueError:
            reason = ""
        except RecursionError:  # JSON, nested deeper than Python recurses
            reason = " (nested too deeply to read)"
        # Raised out here, with no cause or context: json's error holds the whole body
        # (.doc), tokens and all, where an error reporter would pick it up.
        # Redacted whole, then cut: a secret cut by the excerpt would escape.
        text = redact(self.body.decode("utf-8", errors="replace"), self.secrets)
        excerpt = text[:200]
        error = ResponseDecodeError(
            f"expected JSON from {self.endpoint or 'the server'}, got {excerpt!r}{reason}",
            status_code=self.status,
            body=excerpt,
        )
        if self.endpoint:
            error.endpoint = self.endpoint
        raise error

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Read this answer's body within it: an :class:`APIError` raised there that
        names no answer (a row of the wrong shape, or no row where one was asked for,
        found by the code that reads it) gets this answer's ``status`` as its
        ``status_code`` and its :attr:`endpoint`, as the error of a body that is not
        JSON at all has them (a ``status_code`` of ``None`` would say that no HTTP
        status was involved)."""
        try:
            yield
        except APIError as error:
            if error.status_code is None:
                error.status_code = self.status
            if error.endpoint is None and self.endpoint:
                error.endpoint = self.endpoint
            raise

    def __repr__(self) -> str:
        return f"Response({self.status}, <{len(self.body)} bytes>)"


def headers_of(pairs: Iterable[Sequence[str]]) -> Headers:
    """Freeze header pairs (tuples, or the two-item lists of a cassette),
    keeping their order."""
    return tuple((str(k), str(v)) for k, v in pairs)


def first_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name``, compared case-insensitively as HTTP does."""
    lowered = name.lower()
    return next((v for k, v in headers if k.lower() == lowered), None)


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """An answer's headers as the transport received them, as text: names
    lower-cased, each value UTF-8 where it is valid (what servers send), else
    Latin-1 (RFC 9110's octets), each on its own. httpx reads every value of a head
    as Latin-1 once one is not UTF-8, and aiohttp keeps undecodable bytes as lone
    surrogates, which no UTF-8 log or terminal can write."""
    return tuple((name.decode("latin-1").lower(), header_text(value)) for name, value in raw)


def header_text(value: bytes) -> str:
    """One header value as text (see :func:`header_pairs`)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")
