"""Undoing an answer's ``Content-Encoding``, piece by piece, the same on every transport.

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

A :class:`ContentDecoder` is fed the body's bytes as they come and hands the
decoded body back in pieces of at most :data:`PIECE_SIZE` bytes: a few kilobytes
of gzip can inflate to gigabytes, and a transport that reads the pieces as its
reader asks for them holds one at a time. A body that is not what its codings
say, or ends inside one of them, is a :class:`ContentDecodingError`, raised once
every byte decoded before the fault has been read: the events of a stream that
came before it are not lost. An answer read whole is gathered by a
:class:`WholeAnswer`, which stops at :data:`MAX_ANSWER_SIZE`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from flowith_proto.errors import ConnectionFailedError, ResponseDecodeError, undecodable_body

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_ANSWER_SIZE",
    "MAX_CODINGS",
    "PIECE_SIZE",
    "ContentDecoder",
    "ContentDecodingError",
    "WholeAnswer",
    "broken_stream",
    "content_decoder",
]

#: The ``Accept-Encoding`` every transport sends: what :class:`ContentDecoder` undoes.
ACCEPT_ENCODING = "gzip, deflate"
#: The most :meth:`ContentDecoder.read` hands back at once.
PIECE_SIZE = 64 * 1024
#: The most codings one body may stack: each is a layer of decoding (and of calls),
#: and a header of a thousand ``gzip`` fits in a line. As curl, which refuses more
#: than five since CVE-2022-32206.
MAX_CODINGS = 5
#: The most an answer read whole (see :class:`WholeAnswer`) may hold, as it came
#: and decoded: far above any JSON answer of the API (the client pages its
#: listings), far below exhausting memory. Streams and downloads are read a piece
#: at a time and have no such bound.
MAX_ANSWER_SIZE = 64 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
#: Codings with a registered meaning that this module cannot undo: a body in one of
#: them is refused rather than handed on still encoded.
_REFUSED = frozenset(
    {"br", "zstd", "compress", "x-compress", "dcb", "dcz", "aes128gcm", "exi", "pack200-gzip"}
)
#: What this module undoes.
_UNDONE = frozenset({"gzip", "x-gzip", "deflate"})


class ContentDecodingError(ValueError):
    """A body is not what its ``Content-Encoding`` says, ends inside it, or is in a
    coding this client does not undo. Its message speaks of the body as "it": a
    transport says which body ("stream broke: the body could not be decoded: ...")."""


def broken_stream(fault: ContentDecodingError) -> ConnectionFailedError:
    """The error a transport's stream raises where its body turns out undecodable
    once it flows, as a dropped connection would break it; ``fault`` is its cause,
    which tells the two apart (the core reads an error answer's body whole, and
    such a body is a :class:`~flowith_proto.errors.ResponseDecodeError`)."""
    failure = ConnectionFailedError(f"stream broke: the body could not be decoded: {fault}")
    failure.__cause__ = fault
    return failure


class WholeAnswer:
    """An answer read whole (a JSON answer: not a stream, not a download), gathered
    as its bytes come and decoded as they do, up to :data:`MAX_ANSWER_SIZE`.

    The bound is why it is fed rather than handed the body: a few kilobytes of
    gzip can inflate to gigabytes, and a server can send gigabytes plainly, so the
    reading stops as soon as either would pass it. ``status`` and ``endpoint``
    name the answer in its errors, each a
    :class:`~flowith_proto.errors.ResponseDecodeError`: the server would send the
    same again.
    """

    __slots__ = ("_came", "_decoder", "_endpoint", "_limit", "_pieces", "_size", "_status")

    def __init__(
        self,
        decoder: ContentDecoder | None,
        status: int,
        endpoint: str,
        *,
        limit: int | None = None,
    ) -> None:
        self._decoder = decoder
        self._status = status
        self._endpoint = endpoint
        self._limit = MAX_ANSWER_SIZE if limit is None else limit
        self._pieces: list[bytes] = []
        self._size = 0  # bytes of the body decoded
        self._came = 0  # bytes of the body as it came

    def feed(self, data: bytes) -> None:
        """More of the body, as it came; raises once it is past the bound."""
        self._came += len(data)
        if self._came > self._limit:
            raise self._too_large()
        if self._decoder is None:  # as it came: bounded above
            self._pieces.append(data)
            return
        try:
            self._decoder.feed(data)
            self._drain(self._decoder)
        except ContentDecodingError as exc:
            raise undecodable_body(exc, self._status, self._endpoint) from None

    def content(self) -> bytes:
        """The body has ended: all of it, decoded."""
        if self._decoder is not None:
            try:
                self._decoder.end()
                self._drain(self._decoder)
            except ContentDecodingError as exc:
                raise undecodable_body(exc, self._status, self._endpoint) from None
        return b"".join(self._pieces)

    def _drain(self, decoder: ContentDecoder) -> None:
        for piece in iter(decoder.read, b""):
            self._hold(piece)

    def _hold(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._limit:
            raise self._too_large()
        self._pieces.append(piece)

    def _too_large(self) -> ResponseDecodeError:
        return undecodable_body(
            f"it is larger than the {self._limit:,} bytes this client reads of an answer",
            self._status,
            self._endpoint,
        )


def content_decoder(header_lines: Sequence[str]) -> ContentDecoder | None:
    """The decoder of a body whose ``Content-Encoding`` header is ``header_lines``
    (each line's value, in order: several lines make one list), or ``None`` when
    there is nothing to undo."""
    named = [coding.strip().lower() for line in header_lines for coding in line.split(",")]
    codings = [coding for coding in named if coding in _REFUSED or coding in _UNDONE]
    return ContentDecoder(codings) if codings else None


class ContentDecoder:
    """Undoes ``codings`` (in the order they were applied, as ``Content-Encoding``
    lists them), as a sans-I/O pipe: :meth:`feed` it the body's bytes as they come,
    :meth:`read` what they decode to until it gives ``b""``, and say :meth:`end`
    when the body has ended, then :meth:`read` the rest.

    ``feed`` refuses a body in a coding it does not undo, or in more than
    :data:`MAX_CODINGS`; ``read`` raises where the body is at fault, after the
    pieces decoded before the fault."""

    __slots__ = ("_layers", "_refused")

    def __init__(self, codings: Sequence[str]) -> None:
        refused = [coding for coding in codings if coding not in _UNDONE]
        if refused:
            self._refused = (
                f"it is in {', '.join(refused)}, which this client does not decode "
                f"(it asks for {ACCEPT_ENCODING} only)"
            )
        elif len(codings) > MAX_CODINGS:
            self._refused = (
                f"it names {len(codings)} codings, more than the {MAX_CODINGS} this "
                "client undoes on one body"
            )
        else:
            self._refused = ""
        # The last applied is undone first: its layer is fed the body.
        self._layers = (
            [] if self._refused else [_Inflate(coding) for coding in reversed(codings)]
        )

    def feed(self, data: bytes) -> None:
        """More of the body, as it came."""
        if data and self._refused:
            raise ContentDecodingError(self._refused)
        if self._layers:
            self._layers[0].feed(data)

    def end(self) -> None:
        """The body has ended: :meth:`read` now gives the rest, then says whether the
        body ended inside a coding."""
        if self._layers:
            self._layers[0].end()

    def read(self) -> bytes:
        """The next piece of the decoded body (at most :data:`PIECE_SIZE` bytes), or
        ``b""`` once what was fed is all decoded."""
        return self._read(len(self._layers) - 1) if self._layers else b""

    def _read(self, index: int) -> bytes:
        layer = self._layers[index]
        while True:
            piece = layer.read()
            if piece or index == 0:
                return piece
            fed = self._read(index - 1)  # what the layer before it decodes
            if fed:
                layer.feed(fed)
            elif self._layers[index - 1].ended and not layer.ended:
                layer.end()  # and read again: it may be cut short
            else:
                return b""


class _Inflate:
    """One gzip or deflate layer.

    gzip: its members one after another. After a member, the next bytes are held
    until there are two (a member starts with the magic ``1f 8b``); anything else
    ends the layer's data, and its bytes are passed over. deflate: zlib-wrapped or
    raw, as its first two bytes tell (a zlib header or not); what follows the end of
    its data is passed over."""

    __slots__ = ("_failure", "_gzip", "_inflate", "_input", "_more", "_over", "ended", "name")

    def __init__(self, coding: str) -> None:
        self._gzip = coding != "deflate"
        self.name = "gzip" if self._gzip else "deflate"
        # Made once a member starts (gzip), or once the head tells which (deflate).
        self._inflate: zlib._Decompress | None = None
        self._input = b""  # fed, not inflated yet
        self._more = False  # the last inflate filled a piece: it may hold more output
        self._over = False  # past the data: the rest is passed over
        self._failure: ContentDecodingError | None = None
        self.ended = False

    def feed(self, data: bytes) -> None:
        if not self._over:
            self._input = self._input + data if self._input else data

    def end(self) -> None:
        self.ended = True

    def read(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        while True:
            inflate = self._inflate
            if inflate is None or inflate.eof:
                if not self._start(inflate):
                    return b""
                continue
            if not self._input and not self._more:
                if self.ended:
                    raise _cut_short(self.name)  # a stream started and never ended
                return b""
            data = self._input
            before = inflate.copy()  # about a microsecond: to keep what precedes a fault
            try:
                piece = inflate.decompress(data, PIECE_SIZE)
            except zlib.error as exc:
                self._failure = ContentDecodingError(
                    f"it is not {self.name} data, as its Content-Encoding says ({exc})"
                )
                self._over, self._input = True, b""
                kept = _up_to_the_fault(before, data)
                if kept:
                    return kept
                raise self._failure from None
            self._more = len(piece) == PIECE_SIZE
            self._input = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
            if piece:
                return piece

    def _start(self, finished: zlib._Decompress | None) -> bool:
        """Start a stream on the input held (after ``finished``, a complete one), or
        pass the input over; ``False`` when that must wait for more input, or there
        is none and the body has ended."""
        data = self._input
        if self._over or (finished is not None and not self._gzip):
            self._over, self._input = True, b""
            return False
        if len(data) < 2:  # too few bytes to tell
            if self.ended and data:
                if finished is not None:  # one byte after a member: passed over
                    self._over, self._input = True, b""
                    return False
                raise _cut_short(self.name)
            return False
        if self._gzip:
            if finished is not None and not data.startswith(_GZIP_MAGIC):
                self._over, self._input = True, b""
                return False
            wbits = zlib.MAX_WBITS | 16
        else:
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)
        return True


def _up_to_the_fault(inflate: zlib._Decompress, data: bytes) -> bytes:
    """What ``inflate`` makes of ``data`` before the fault it raised on (zlib drops the
    output of a call that fails): that of the longest start of ``data`` it takes
    without a fault, found by halving (a longer start faults if a shorter one does).
    Less than a piece: the call that failed would have stopped at a piece."""
    good, bad = 0, len(data)
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            inflate.copy().decompress(data[:middle])
        except zlib.error:
            bad = middle
        else:
            good = middle
    return inflate.decompress(data[:good])


def _cut_short(name: str) -> ContentDecodingError:
    return ContentDecodingError(f"it ended inside its {name} data: it was cut short")
