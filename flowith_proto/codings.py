"""Undoing an answer's ``Content-Encoding``, chunk by chunk, the same on every transport.

Each HTTP library decodes bodies its own way, and each got some wrong: httpx keeps
the first member of a multi-member gzip body and knows no ``x-gzip``; aiohttp
decodes only a single coding, on one of several header lines, refuses a few bytes
after a gzip stream; both accept a gzip stream cut short inside a body whose
framing was complete, handing on part of a body as if it were all. So the
transports ask for the codings this module undoes (:data:`ACCEPT_ENCODING`),
read the body as it came, and decode it here:

* ``gzip`` (and ``x-gzip``, its other name in RFC 9110): every member, one after
  another, as ``gzip -d`` does; bytes after the last member that start no other
  (zero padding, say) are passed over, as browsers and httpx pass them over.
* ``deflate``: zlib-wrapped, as RFC 9110 says, or raw, as some servers send it.
* ``identity``, and codings nobody knows (``utf-8``, ``none``: servers send them):
  passed over, as httpx does.
* a known coding this module does not undo (``br``, ``zstd``, ...): refused once
  a body comes; an answer without one (a 204) needs no decoding.

A body that is not what its codings say, or ends inside one of them, is a
:class:`ContentDecodingError`, never part of a body.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

__all__ = ["ACCEPT_ENCODING", "ContentDecoder", "ContentDecodingError", "content_decoder"]

#: The ``Accept-Encoding`` every transport sends: what :class:`ContentDecoder` undoes.
ACCEPT_ENCODING = "gzip, deflate"

_GZIP_MAGIC = b"\x1f\x8b"
#: Codings with a registered meaning that this module cannot undo: a body in one of
#: them is refused rather than handed on still encoded.
_REFUSED = frozenset(
    {"br", "zstd", "compress", "x-compress", "dcb", "dcz", "aes128gcm", "exi", "pack200-gzip"}
)


class ContentDecodingError(ValueError):
    """A body is not what its ``Content-Encoding`` says, ends inside it, or is in a
    coding this client does not undo. Its message speaks of the body as "it": a
    transport says which body ("stream broke: the body could not be decoded: ...")."""


def content_decoder(header_lines: Sequence[str]) -> ContentDecoder | None:
    """The decoder of a body whose ``Content-Encoding`` header is ``header_lines``
    (each line's value, in order: several lines make one list), or ``None`` when
    there is nothing to undo."""
    named = [coding.strip().lower() for line in header_lines for coding in line.split(",")]
    codings = [coding for coding in named if coding in _REFUSED or coding in _UNDONE]
    return ContentDecoder(codings) if codings else None


class ContentDecoder:
    """Undoes ``codings`` (in the order they were applied, as ``Content-Encoding``
    lists them) chunk by chunk: :meth:`decode` each chunk, then :meth:`flush` once
    the body has ended. Both raise :class:`ContentDecodingError`."""

    __slots__ = ("_refused", "_steps")

    def __init__(self, codings: Sequence[str]) -> None:
        refused = [coding for coding in codings if coding not in _UNDONE]
        self._refused = (
            f"it is in {', '.join(refused)}, which this client does not decode "
            f"(it asks for {ACCEPT_ENCODING} only)"
            if refused
            else ""
        )
        # The last applied is undone first.
        self._steps = [] if refused else [_UNDONE[coding]() for coding in reversed(codings)]

    def decode(self, data: bytes) -> bytes:
        if data and self._refused:
            raise ContentDecodingError(self._refused)
        for step in self._steps:
            data = step.decode(data)
        return data

    def flush(self) -> bytes:
        """What the decoders still hold, once the body has ended; an error if it
        ended inside a coding."""
        data = b""
        for step in self._steps:
            data = step.decode(data) + step.flush()
        return data


class _Gzip:
    """One gzip layer: its members one after another, then nothing.

    Between members, the first bytes of what follows are held until there are two
    (a member starts with the magic ``1f 8b``); anything else ends the body's gzip
    data, and its bytes are passed over."""

    __slots__ = ("_between", "_inflate", "_over", "_started")

    name = "gzip"

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._started = False  # the member being inflated has had a byte
        self._between = b""  # after a member: the bytes that may start another
        self._over = False  # after the last member: what follows is passed over

    def decode(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data and not self._over:
            if self._inflate.eof:  # a member has ended: does another start?
                data = self._between + data
                if len(data) < len(_GZIP_MAGIC):
                    self._between = data
                    break
                self._between = b""
                if not data.startswith(_GZIP_MAGIC):
                    self._over = True
                    break
                self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
            self._started = True
            out.append(_inflated(self._inflate, data, self.name))
            data = self._inflate.unused_data if self._inflate.eof else b""
        return b"".join(out)

    def flush(self) -> bytes:
        if self._inflate.eof or not self._started:
            return b""  # complete, or no body at all (a HEAD, a 204)
        return _finished(self._inflate, self.name)


class _Deflate:
    """One deflate layer, zlib-wrapped or raw: its first two bytes tell, a zlib
    header or not. What follows the end of its data is passed over."""

    __slots__ = ("_head", "_inflate")

    name = "deflate"

    def __init__(self) -> None:
        self._inflate: zlib._Decompress | None = None  # made once the head tells which
        self._head = b""  # the body's first bytes, until there are two

    def decode(self, data: bytes) -> bytes:
        if self._inflate is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if not data or self._inflate.eof:
            return b""
        return _inflated(self._inflate, data, self.name)

    def flush(self) -> bytes:
        if self._inflate is None:
            if not self._head:
                return b""  # no body at all
            raise _cut_short(self.name)
        return b"" if self._inflate.eof else _finished(self._inflate, self.name)


#: What this module undoes, by the coding's name.
_UNDONE: dict[str, type[_Gzip | _Deflate]] = {"gzip": _Gzip, "x-gzip": _Gzip, "deflate": _Deflate}


def _inflated(inflate: zlib._Decompress, data: bytes, name: str) -> bytes:
    try:
        return inflate.decompress(data)
    except zlib.error as exc:
        raise ContentDecodingError(
            f"it is not {name} data, as its Content-Encoding says ({exc})"
        ) from None


def _finished(inflate: zlib._Decompress, name: str) -> bytes:
    """What ``inflate`` still holds, once the body has ended: its data must end too."""
    try:
        tail = inflate.flush()
    except zlib.error as exc:
        raise ContentDecodingError(
            f"it is not {name} data, as its Content-Encoding says ({exc})"
        ) from None
    if not inflate.eof:
        raise _cut_short(name)
    return tail


def _cut_short(name: str) -> ContentDecodingError:
    return ContentDecodingError(f"it ended inside its {name} data: it was cut short")
