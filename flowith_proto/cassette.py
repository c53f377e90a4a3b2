"""Cassettes: a recorded client session, replayable offline and deterministically.

A cassette is a UTF-8 text file of JSON lines (``.jsonl``). The first line is
a header; every other line is one record, in the order the client saw it::

    {"cassette": "flowith", "version": 2}
    {"kind": "clock", "op": <op>, "value": 1234.5}    the monotonic clock, read by an operation
    {"kind": "wallclock", "op": <op>, "value": 1779127457.2}  the time of day, read by one
    {"kind": "id", "op": <op>, "value": "<uuid4>"}    a fresh id an operation drew
    {"kind": "jitter", "op": <op>, "value": 0.41}     a random retry spread an operation drew
    {"kind": "request", "n": 3, "op": <op>, "method": "POST", "url": "...",
     "headers": [["Accept", "..."], ...], "body": <body>}
    {"kind": "response", "n": 3, "status": 201, "headers": [...], "body": <body>}
    {"kind": "error", "n": 3, "type": "ConnectionFailedError" | "TimeoutError",
     "message": "...", "request_sent": true}   (a "ResponseDecodeError" adds its "status",
                                                a timeout its caller's deadline cut adds
                                                "deadline_passed": true)
    {"kind": "stream", "n": 4, "status": 200, "headers": [...]}   request 4 is a stream
    {"kind": "chunk", "n": 4, "t": 0.125, "after": 5, "data": <body>}
    {"kind": "read_timeout", "n": 4, "after": 5}  a read of stream 4 ran out of time
    {"kind": "end", "n": 4, "reason": "eof" | "broken" | "closed"}
                                  a "broken" end adds its "error" (the message), or the
                                  "fault" of a body found undecodable

A ``chunk`` or ``end`` may carry ``"look": true``: a read whose deadline had
already passed took it (the client looks at what an idle stream holds before
counting on it); such a read that found nothing is not recorded.

``<op>`` names the operation that drew the value or sent the request
(``"generate:1f0c9a2e#1"``, see :mod:`flowith_proto.operation_names`; ``""`` for
the shared streams), so that operations running at once replay in any order; a
cassette without ``op`` fields replays its values in the recorded order. Version 1
named operations differently (by their generator, so that ``get_flow_nodes()`` was
``rows:...``); it is still read, and replayed with its own names.
``n`` numbers requests in the order they were sent; a chunk's ``t`` is its
arrival in seconds after the stream opened and ``after`` the number of
requests sent by then (a replay releases it once all of those were sent
again). A ``<body>`` is
``null``, ``{"text": "..."}`` for UTF-8 or ``{"base64": "..."}`` otherwise,
and a multipart upload is described by its fields and file names, never its
bytes.

Secrets never reach a cassette: headers named like a credential
(``authorization``, ``apikey``, cookies, ``*token*``, ``*secret*``,
``*api-key*``, ...) are replaced by ``[REDACTED]``, every credential the client
held is replaced wherever it appears, JWTs anywhere are cut down to their
``sub``, ``exp`` and ``iat`` claims, unsigned, and JSON string fields named like a
credential (``"password": "..."``, ``*token*``, ``*secret*``, ``cookie``,
``authorization``, ...) are masked wherever such a field appears in a body or
other text, JSON escaped inside a string included (``password=...`` outside
JSON is not), as are credential-named URL parameters (``?access_token=``, an
OAuth ``code=``), a URL's password and the word after ``Bearer``. A stream's
unfinished line is recorded with the chunk that ends it, so a credential cut
between two chunks is still seen whole. A replay applies the same scrubbing
to the live request before comparing, so a cassette matches whoever replays it.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import attrs

from flowith_proto.auth import read_claims
from flowith_proto.errors import (
    BEARER,
    CREDENTIAL_FIELD,
    CREDENTIAL_HEADER,
    CREDENTIAL_KEY,
    ESCAPED_CREDENTIAL_FIELD,
    JWT,
    MIN_SECRET_LENGTH,
    FlowithError,
    mask_secrets,
    mask_url,
    mask_url_credentials,
)
from flowith_proto.request import MultipartForm, Request, json_text

__all__ = [
    "CASSETTE_VERSION",
    "READABLE_VERSIONS",
    "CassetteError",
    "CassetteMismatch",
    "Scrubber",
    "decode_body",
    "encode_body",
    "read_cassette",
    "redact_jwt",
    "request_record",
]

CASSETTE_VERSION = 2
#: The versions read: version 1 differs only in how operations are named (see
#: :mod:`flowith_proto.operation_names`).
READABLE_VERSIONS = (1, 2)
REDACTED = "[REDACTED]"

#: A JWT already cut down by :func:`redact_jwt` (no signature): re-derived, not masked,
#: where a credential-named field holds it, so a replay still reads its ``exp``.
_UNSIGNED_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.")
#: The run of token characters ending a chunk, where a JWT still arriving may start:
#: held back for the next chunk (up to this many bytes: longer tokens are the
#: client's own, which it knows anyway). Tried at run starts only, so read once.
_LAST_RUN = re.compile(rb"(?<![\w.-])[\w.-]*\Z")
_JWT_HOLD = 4096
#: The longest unfinished line held back whole (see :meth:`Scrubber.held_back`).
_LINE_HOLD = 64 * 1024
#: The most secrets a :class:`Scrubber` holds: a client holds about 100 at most (its
#: tokens, key and cookies, and the last 32 it let go of: see ``ClientState``).
MAX_SECRETS = 256
#: The most credentials of URLs requested a :class:`Scrubber` holds besides.
MAX_PASSING = 64
#: Headers whose value is a URL, maybe a relative one, which text does not tell.
_URL_HEADERS = frozenset({"location", "content-location"})


def _cut_start(secret: bytes, data: bytes, longer_than: int) -> int:
    """The length of the longest proper start of ``secret`` that ends ``data``
    and is longer than ``longer_than``, else 0.

    Only the places in the tail where ``secret``'s first byte occurs can start
    one, and the first that does is the longest: a few comparisons, rather than
    one per possible length (a stream chunk is checked against every secret).
    """
    tail = data[-(len(secret) - 1) :] if len(secret) > 1 else b""
    first = secret[:1]
    position = tail.find(first)
    while 0 <= position < len(tail) - longer_than:
        if secret.startswith(tail[position:]):
            return len(tail) - position
        position = tail.find(first, position + 1)
    return 0


def _character_start(data: bytes, cut: int) -> int:
    """``cut``, or the start of the UTF-8 character that straddles it (one cut
    short at the end of ``data`` included)."""
    start = cut
    while start > 0 and cut - start < 3 and data[start - 1] & 0xC0 == 0x80:
        start -= 1  # a continuation byte: its character starts before it
    if start == 0:
        return cut
    lead = data[start - 1]
    length = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 1
    return start - 1 if start - 1 + length > cut else cut


class CassetteError(FlowithError):
    """A cassette that cannot be read: wrong format, version or content."""


class CassetteMismatch(AssertionError):
    """The replayed code asked for something the recording does not hold.

    A failed expectation of the test, as respx's unmatched request is: an
    :class:`AssertionError`, and not a :class:`FlowithError`, so that code under
    test that handles the library's errors (``except FlowithError: fallback``)
    cannot swallow it and let a drifted test pass.
    """


@attrs.define
class Scrubber:
    """Removes credentials from anything written to a cassette."""

    # The secrets held, least recently learned first (see learn()).
    _held: dict[str, None] = attrs.field(init=False, factory=dict, repr=False)
    # The credentials of URLs requested (see learn(passing=True)), likewise.
    _passing: dict[str, None] = attrs.field(init=False, factory=dict, repr=False)
    # The same, longest first (one inside another is masked whole); () once stale.
    _longest_first: tuple[str, ...] = attrs.field(init=False, factory=tuple, repr=False)

    @property
    def secrets(self) -> frozenset[str]:
        """The credentials this scrubber masks wherever they appear."""
        return frozenset(self._held).union(self._passing)

    def learn(self, values: Iterable[str], *, passing: bool = False) -> None:
        """Remember more credentials (a refresh brings new ones).

        The :data:`MAX_SECRETS` learned last are kept: a client learns its current
        ones again at each refresh, and every stream chunk is checked against each
        secret held, so a long recording would otherwise slow down with every
        token it spent. ``passing`` ones, the credentials of a URL requested (a
        download's signature, which its error answer may quote), are kept apart,
        the :data:`MAX_PASSING` learned last: a session of many downloads cannot
        push the client's own out.
        """
        held = self._passing if passing else self._held
        for value in values:
            if len(value) >= MIN_SECRET_LENGTH:
                if value not in held:
                    self._longest_first = ()
                held.pop(value, None)  # learned again: the newest
                held[value] = None
        while len(held) > (MAX_PASSING if passing else MAX_SECRETS):
            del held[next(iter(held))]
            self._longest_first = ()

    def _ordered(self) -> tuple[str, ...]:
        """The secrets, longest first; sorted again only when they changed, not for
        every string of every answer."""
        if not self._longest_first and (self._held or self._passing):
            self._longest_first = tuple(sorted(self.secrets, key=len, reverse=True))
        return self._longest_first

    def text(self, value: str) -> str:
        value = JWT.sub(lambda match: match["before"] + redact_jwt(match["token"]), value)
        value = CREDENTIAL_FIELD.sub(_masked_field, value)
        value = ESCAPED_CREDENTIAL_FIELD.sub(_masked_escaped_field, value)
        value = BEARER.sub(rf"\1{REDACTED}", value)
        value = mask_url_credentials(value, REDACTED)
        return self._held_masked(value)

    def raw(self, data: bytes) -> bytes:
        """:meth:`text` for bytes that are not UTF-8 text (stored as base64): the
        text in them is masked as any text is (credential-named fields, ``Bearer``,
        URL credentials, secrets held, escaped or not), the other bytes kept."""
        text = data.decode("utf-8", "surrogateescape")
        return self.text(text).encode("utf-8", "surrogateescape")

    def held_back(self, data: bytes) -> int:
        """How many bytes at the end of a stream chunk may begin a secret that the
        next chunk completes: they are stored with the next chunk instead, so a
        secret cut in two is still found. (Never a line break: no event is held.)

        That is the line still arriving, whole (up to :data:`_LINE_HOLD` bytes): a
        credential-named field cut anywhere, in its name or its value, is then
        seen whole; past that, the longest start of a known secret or a JWT.
        """
        # A CR ends a line too (the decoder dispatches on "\r\r"): with CR line
        # breaks, LF alone held each event back until the stream ended.
        line_start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if 0 < len(data) - line_start <= _LINE_HOLD:
            return len(data) - line_start
        longest = 0
        if len(data) - line_start > _LINE_HOLD:
            # Too long to hold whole: hold from the key of the field still being
            # written (its value cut short), or from a key still being written.
            window = data[-_LINE_HOLD:]
            colon = window.rfind(b'":')
            key = window.rfind(b'"', 0, colon) if colon > 0 else -1
            start = key if key >= 0 else window.rfind(b'"')
            if start >= 0:
                longest = len(window) - start
        for secret in (*self._held, *self._passing):
            longest = max(longest, _cut_start(secret.encode(), data, longest))
        tail = data[-_JWT_HOLD:]
        run = _LAST_RUN.search(tail)  # it always matches, if only the empty end
        jwt = tail.find(b"eyJ", run.start()) if run is not None else -1  # one cut short
        if jwt >= 0:
            longest = max(longest, len(tail) - jwt)
        # Never inside a character: a chunk cut there is no UTF-8 text, and is stored
        # as bytes, where credential-named fields are not read.
        return len(data) - _character_start(data, len(data) - longest)

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[list[str]]:
        return [[name, self._header(name, value)] for name, value in headers]

    def _header(self, name: str, value: str) -> str:
        if CREDENTIAL_HEADER.search(name):
            return REDACTED
        if name.lower() in _URL_HEADERS:  # a URL whatever its form: "/callback?code=..."
            value = mask_url(value, REDACTED)
        return self.text(value)

    def chunk(self, data: bytes) -> Any:
        """A stream chunk as stored: its text scrubbed (a chunk is not a whole
        JSON document), or its scrubbed bytes in base64 when it is not UTF-8 on
        its own (a character cut between two chunks)."""
        try:
            return {"text": self.text(data.decode("utf-8"))}
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(self.raw(data)).decode("ascii")}

    def body(self, body: bytes | None, *, opaque_unless_json: bool = False) -> Any:
        """A request's or an answer's body as stored, credentials masked. With
        ``opaque_unless_json`` (a token grant's answer), one that is no JSON, whose
        credential fields cannot be told, is stored as ``[REDACTED]`` whole: what a
        replay needs of it is that it is no JSON."""
        if body is None:
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if opaque_unless_json:
                return {"text": REDACTED}
            return {"base64": base64.b64encode(self.raw(body)).decode("ascii")}
        try:
            parsed = json.loads(text)
            found: list[str] = []
            masked = _mask_tokens(parsed, found)
            # The tokens a sign-in or refresh answer brings are the client's from now
            # on: hidden in the rest of that answer too (another field, its headers,
            # scrubbed after the body: see Recorder), as the client will learn them.
            self.learn(found)
            # Held ones are found decoded too: escaped (\u005f), the text hides them.
            if ("\\" in text and self._mask_held(parsed)) or masked:
                text = json_text(parsed)  # an escaped lone surrogate stays escaped
        except (ValueError, RecursionError):  # not JSON, or nested too deeply
            if opaque_unless_json:
                return {"text": REDACTED}
            # Credential-named fields are masked in the text too.
        return {"text": self.text(text)}

    def _mask_held(self, value: Any) -> bool:
        """Mask the held secrets in the strings of decoded JSON, in place; ``True``
        if any was found."""
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = list(value.items())
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            return False
        changed = False
        for key, item in items:
            if isinstance(item, str):
                masked = self._held_masked(item)
                if masked != item:
                    value[key] = masked
                    changed = True
            else:
                changed = self._mask_held(item) or changed
        return changed

    def _held_masked(self, value: str) -> str:
        return mask_secrets(value, self._ordered(), REDACTED)


def redact_jwt(token: str) -> str:
    """A JWT with its signature and every claim but ``sub``, ``exp`` and ``iat``
    removed: useless as a credential, yet a replayed client still knows who it
    is and when its token was issued and expires, so it makes the same decisions."""
    claims = read_claims(token)
    kept: dict[str, Any] = {}
    if claims.sub:
        kept["sub"] = claims.sub
    if claims.exp is not None:
        kept["exp"] = claims.exp
    if claims.iat is not None:
        kept["iat"] = claims.iat
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = (
        base64.urlsafe_b64encode(json.dumps(kept, separators=(",", ":")).encode())
        .rstrip(b"=")
        .decode()
    )
    return f"{header}.{payload}."


def _masked(value: str) -> str:
    """What a credential-named field keeps: a cut-down JWT's claims, else nothing."""
    return redact_jwt(value) if _UNSIGNED_JWT.fullmatch(value) else REDACTED


def _masked_field(match: re.Match[str]) -> str:
    return f"{match.group(1)}{_masked(match.group(2))}{match.group(3)}"


def _masked_escaped_field(match: re.Match[str]) -> str:
    return f'{match.group(1)}{_masked(match.group(2))}\\"'


#: The fields of GoTrue's token answer (a sign-in, a refresh) that hold the tokens.
_TOKEN_FIELDS = frozenset(
    ("access_token", "refresh_token", "provider_token", "provider_refresh_token")
)


def _mask_tokens(value: Any, found: list[str]) -> bool:
    """Mask ``*token*``-like string fields in place, adding the values of the token
    answer's fields to ``found``; ``True`` if any was masked. (Only those: what other
    credential-named fields hold, a ``token_label``, may be sent again as it is, and a
    replay, which learns nothing from the answers it plays, must see it unchanged.)"""
    changed = False
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and item and CREDENTIAL_KEY.search(str(key)):
                if key in _TOKEN_FIELDS:
                    found.append(item)
                whole = JWT.fullmatch(item)
                value[key] = redact_jwt(item) if whole and not whole["before"] else REDACTED
                changed = True
            else:
                changed = _mask_tokens(item, found) or changed
    elif isinstance(value, list):
        for item in value:
            changed = _mask_tokens(item, found) or changed
    return changed


def encode_body(body: bytes | None) -> Any:
    """A body as it is stored (no scrubbing): for stream chunks."""
    if body is None:
        return None
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}


def decode_body(stored: Any) -> bytes | None:
    """The bytes of a stored body."""
    if stored is None:
        return None
    if isinstance(stored, Mapping):
        if "text" in stored:
            return str(stored["text"]).encode("utf-8")
        if "base64" in stored:
            return base64.b64decode(str(stored["base64"]), validate=True)
    raise CassetteError(
        f"a body must be null, {{'text': ...}} or {{'base64': ...}}, got {stored!r}"
    )


def request_record(request: Request, scrubber: Scrubber) -> dict[str, Any]:
    """The comparable, secret-free description of a request."""
    body: Any
    if isinstance(request.body, MultipartForm):
        form = request.body
        body = {
            "multipart": {
                "fields": [list(field) for field in form.fields],
                "files": [[f.name, f.filename, f.content_type, f.size] for f in form.files],
            }
        }
    else:
        body = scrubber.body(request.body)
    return {
        "method": request.method,
        "url": scrubber.text(request.url),
        "headers": scrubber.headers(request.headers),
        "body": body,
    }


class CassetteWriter:
    """Appends records to an open text file, one JSON line each."""

    def __init__(self, handle: IO[str], **header: Any) -> None:
        self._handle = handle
        self._write({"cassette": "flowith", "version": CASSETTE_VERSION, **header})

    def _write(self, record: Mapping[str, Any]) -> None:
        self._handle.write(json_text(record) + "\n")

    def record(self, kind: str, **fields: Any) -> None:
        self._write({"kind": kind, **fields})
        if kind in ("response", "end", "error"):
            self._handle.flush()

    def close(self) -> None:
        self._handle.flush()
        self._handle.close()


def read_cassette(
    lines: Iterable[str] | Iterable[bytes],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the records of a cassette, from its lines as text or bytes."""
    iterator = _numbered(lines)
    try:
        _, first = next(iterator)
    except StopIteration:
        raise CassetteError("the cassette is empty") from None
    try:
        header = json.loads(first)
    except (ValueError, RecursionError) as exc:
        raise CassetteError(f"the cassette header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("cassette") != "flowith":
        raise CassetteError("not a flowith cassette (the first line must be its header)")
    if header.get("version") not in READABLE_VERSIONS:
        raise CassetteError(
            f"cassette version {header.get('version')!r} is not supported "
            f"(this library reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
            "re-record it"
        )
    records: list[dict[str, Any]] = []
    for number, line in iterator:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise CassetteError(f"line {number} of the cassette is not JSON: {exc}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            raise CassetteError(f"line {number} of the cassette is not a record")
        problem = _record_problem(record)
        if problem is not None:
            raise CassetteError(f"line {number} of the cassette: {problem}")
        records.append(record)
    return header, records


def _numbered(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str]]:
    """The lines with their numbers, lines of bytes decoded one at a time, so that
    bytes that are not UTF-8 are a :class:`CassetteError` naming their line (a text
    file decodes blocks of lines at once: its error names none)."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, str):
            yield number, line
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CassetteError(
                f"line {number} of the cassette is not UTF-8 text (byte {exc.start + 1}: "
                f"{exc.reason}); a cassette is written as UTF-8"
            ) from exc
        yield number, text


_NUMBER = (int, float)
#: The fields each kind of record must have, and their JSON types.
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "clock": {"value": _NUMBER},
    "wallclock": {"value": _NUMBER},
    "jitter": {"value": _NUMBER},
    "id": {"value": (str,)},
    "request": {"n": (int,), "method": (str,), "url": (str,), "headers": (list,)},
    "response": {"n": (int,), "status": (int,), "headers": (list,)},
    "error": {"n": (int,), "type": (str,), "message": (str,)},
    "stream": {"n": (int,), "status": (int,), "headers": (list,)},
    "chunk": {"n": (int,), "t": _NUMBER, "after": (int,)},
    "read_timeout": {"n": (int,), "after": (int,)},
    "end": {"n": (int,), "reason": (str,)},
}
#: Where a record keeps a stored body.
_BODIES = {"response": "body", "chunk": "data"}


def _record_problem(record: Mapping[str, Any]) -> str | None:
    """What is wrong with a record read from a cassette (a hand edit, a cut), or ``None``."""
    kind = record["kind"]
    fields = _FIELDS.get(kind)
    if fields is None:
        return f"unknown record kind {kind!r}"
    for name, types in {**fields, "op": (str,)}.items():
        if name not in record:
            if name == "op":
                continue
            return f"a {kind!r} record needs {name!r}"
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            return f"{name!r} of a {kind!r} record must be {wanted}, not {value!r}"
    headers = record.get("headers", [])
    if not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        for pair in headers
    ):
        return f"the headers of a {kind!r} record must be [name, value] pairs of strings"
    if kind == "end" and record["reason"] not in ("eof", "broken", "closed"):
        return f"an 'end' record's reason must be eof, broken or closed, not {record['reason']!r}"
    for name in ("error", "fault"):
        if kind == "end" and not isinstance(record.get(name, ""), str):
            return f"{name!r} of an 'end' record must be str, not {record[name]!r}"
    for name, types in fields.items():
        value = record[name]
        if types is _NUMBER and isinstance(value, float) and not math.isfinite(value):
            return f"{name!r} of a {kind!r} record must be a finite number, not {value!r}"
    field = _BODIES.get(kind)
    if field is not None:
        try:
            decode_body(record.get(field))
        except (CassetteError, ValueError) as exc:  # binascii.Error is a ValueError
            return f"{field!r} of a {kind!r} record: {exc}"
    return None


def describe_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    """A readable account of how a live request differs from the recorded one:
    for each differing part, both versions around the first difference."""
    lines = []
    for key in ("method", "url", "body", "headers"):
        recorded, replayed = expected.get(key), actual.get(key)
        if recorded != replayed:
            left, right = _around_difference(_as_text(recorded), _as_text(replayed))
            lines.append(f"  {key}:\n    recorded: {left}\n    replayed: {right}")
    return "\n".join(lines) or "  (no difference in method, url, body or headers)"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _around_difference(left: str, right: str, width: int = 70) -> tuple[str, str]:
    """Both strings cut to a window around where they first differ."""
    pairs = enumerate(zip(left, right, strict=False))
    start = next((i for i, (a, b) in pairs if a != b), min(len(left), len(right)))
    begin = max(start - width // 2, 0)

    def cut(text: str) -> str:
        piece = text[begin : begin + width]
        return ("..." if begin else "") + piece + ("..." if begin + width < len(text) else "")

    return cut(left), cut(right)
