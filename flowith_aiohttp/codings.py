"""Content codings aiohttp leaves undone.

aiohttp decodes a body only when ``Content-Encoding`` names one coding it knows
(``gzip``); a list (``gzip, identity``, ``deflate, gzip``) it hands over as the
bytes came, and a download would land still compressed. httpx undoes such a
list, so this transport does too, for gzip and deflate (zlib). As httpx does, a
coding nobody knows (``utf-8``, ``none``: servers send them) is passed over; one
only aiohttp decodes (``br``, ``zstd``) in a list is refused once a body comes,
rather than passed on encoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

__all__ = ["Decoding", "codings_left"]

#: What aiohttp decodes itself: a ``Content-Encoding`` of exactly one of these.
_AIOHTTP_DECODES = frozenset({"gzip", "deflate", "br", "zstd"})
#: What this module undoes.
_UNDONE_HERE = frozenset({"gzip", "x-gzip", "deflate"})


def codings_left(
    header: str | Sequence[str] | None, *, parser_reads_last: bool = True
) -> list[str]:
    """The codings of ``Content-Encoding`` (its value, or each of its lines in order)
    that aiohttp did not undo, in the order they were applied (``identity`` and
    codings nobody knows left out); empty when aiohttp decoded the body, or it was
    not encoded.

    aiohttp undoes one coding it knows when the line its parser reads names only
    that one: the last line (its C parser: ``gzip`` then ``identity`` on two lines
    is then left to us whole) or the first (its Python parser)."""
    lines = [header] if isinstance(header, str) else list(header or ())
    if not lines:
        return []
    named = [coding.strip().lower() for line in lines for coding in line.split(",")]
    # Only what either library decodes: httpx passes over the rest.
    named = [coding for coding in named if coding in _UNDONE_HERE or coding in _AIOHTTP_DECODES]
    read = (lines[-1] if parser_reads_last else lines[0]).strip()
    if read.isascii() and read.lower() in _AIOHTTP_DECODES:
        return named[:-1] if parser_reads_last else named[1:]
    return named


class Decoding:
    """Undoes ``codings`` (as :func:`codings_left` gives them) chunk by chunk.

    :class:`ValueError` for a body that is not what its codings say, or in a
    coding it cannot undo (as it arrives: an answer without a body, a 204, is
    fine)."""

    __slots__ = ("_refused", "_steps")

    def __init__(self, codings: list[str]) -> None:
        others = [coding for coding in codings if coding not in _UNDONE_HERE]
        self._refused = (
            f"Content-Encoding {', '.join(codings)!r} stacks {', '.join(others)}, which "
            "this transport decodes only alone"
            if others
            else ""
        )
        # The last applied is undone first.
        self._steps = [_Inflate(coding) for coding in reversed(codings) if not others]

    def decode(self, data: bytes) -> bytes:
        if data and self._refused:
            raise ValueError(self._refused)
        for step in self._steps:
            data = step.decode(data)
        return data

    def flush(self) -> bytes:
        """What the decoders still hold, once the body has ended."""
        data = b""
        for step in self._steps:
            data = step.decode(data) + step.flush()
        return data


class _Inflate:
    """One gzip or deflate layer. A deflate body may be zlib-wrapped (as RFC 9110
    says) or raw (as some servers send it): its first two bytes tell, a zlib
    header or not."""

    __slots__ = ("_decompress", "_head")

    def __init__(self, coding: str) -> None:
        gzip = coding != "deflate"
        self._decompress = zlib.decompressobj(zlib.MAX_WBITS | 16) if gzip else None
        self._head = b""  # a deflate body's first bytes, until there are two

    def decode(self, data: bytes) -> bytes:
        if self._decompress is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._decompress = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if not data:
            return b""
        try:
            return self._decompress.decompress(data)
        except zlib.error as exc:
            raise ValueError(f"the body is not what its Content-Encoding says ({exc})") from None

    def flush(self) -> bytes:
        if self._decompress is None:  # a deflate body of fewer than two bytes
            head, self._head = self._head, b""
            self._decompress = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(head) + self.flush()
        try:
            return self._decompress.flush()
        except zlib.error as exc:
            raise ValueError(f"the body is not what its Content-Encoding says ({exc})") from None
