"""The SSE decoding contenders, each written as a consumer of a list of chunks.

* ``flowith``: :class:`flowith_proto.sse.SSEDecoder`, bytes in, events out.
* ``httpx-sse``: httpx-sse 0.4.3's decoder as ``EventSource.iter_sse`` drives
  it: an incremental UTF-8 decoder (``errors="replace"``, as httpx's
  ``TextDecoder``), then ``SSELineDecoder`` cuts lines and ``SSEDecoder``
  turns them into events.
* ``str buffer``: the old client's approach, written here from its
  description: a ``str`` buffer grown by each chunk, CRLF and CR turned into
  LF over the whole buffer, one ``split("\\n\\n", 1)`` per event, the last
  ``data:`` line of a block kept. (The old client decoded each chunk on its
  own, which garbles a character split across chunks; this one decodes
  incrementally so that every contender yields the same events.)

And two references that are not decoders:

* ``unchecked``: the fewest steps from bytes to one ``str`` and one event
  object per event, for this stream only: each run of whole events is cut
  into one value per event with the same primitives as ``flowith`` (a short
  run split as bytes and each value decoded; a longer one decoded at once,
  then a regular-expression search on wide text, ``str.split`` otherwise),
  with none of the spec's checks or state (it assumes one-line
  ``data:`` events, LF line breaks, no BOM, ids or size bound). Its speed is
  about the most any decoder that returns such events can reach here, so
  ``flowith`` ÷ ``unchecked`` is what spec-exactness costs on top.
* ``decode only``: for one huge event, its chunks' UTF-8 decoding and the one
  join of the text, which every decoder returning the event must do.

Each consumer handles the events of a chunk as they come (no list of all the
events is built) and returns how many it saw; ``parse`` adds a
``json.loads`` of every event's data. The ``*_datas`` generators yield the
data fields, for checking that the contenders agree (never timed).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from typing import Any

from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder

# The same search flowith runs, and the same event class.
from flowith_proto.sse import (
    _SEARCH_FROM,
    _SHORT_RUN,
    ServerSentEvent,
    SSEDecoder,
    _DecodedEvent,
    _find_data_events,
)

__all__ = ["BIG_EVENT_REFERENCES", "CONSUMERS", "DATAS", "REFERENCES", "Consumer"]

Consumer = Callable[[list[bytes], bool], int]


def _utf8() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _count_fed(feed: Callable[[bytes], list[Any]], chunks: list[bytes], parse: bool) -> int:
    """Handle the events ``feed`` returns for each chunk; return how many there were."""
    loads = json.loads
    count = 0
    for chunk in chunks:
        for event in feed(chunk):
            data = event.data
            count += 1
            if parse:
                loads(data)
    return count


def _datas_fed(feed: Callable[[bytes], list[Any]], chunks: list[bytes]) -> Iterator[str]:
    for chunk in chunks:
        for event in feed(chunk):
            yield event.data


def flowith_consume(chunks: list[bytes], parse: bool) -> int:
    decoder = SSEDecoder()
    count = _count_fed(decoder.feed, chunks, parse)
    decoder.close()
    return count


def httpx_sse_consume(chunks: list[bytes], parse: bool) -> int:
    text_decoder = _utf8()
    lines = SSELineDecoder()
    decoder = HttpxSSEDecoder()
    loads = json.loads
    count = 0
    for chunk in chunks:
        text = text_decoder.decode(chunk)
        if not text:  # httpx yields no empty text
            continue
        for line in lines.decode(text):
            event = decoder.decode(line.rstrip("\n"))
            if event is not None:
                data = event.data
                count += 1
                if parse:
                    loads(data)
    for line in lines.flush():
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            count += 1
    return count


def _last_data(block: str) -> str | None:
    """The value of the last ``data:`` line of an event block, if any."""
    data: str | None = None
    for line in block.split("\n"):
        if line.startswith("data:"):
            data = line[5:]
            if data.startswith(" "):
                data = data[1:]
    return data


def buffer_consume(chunks: list[bytes], parse: bool) -> int:
    text_decoder = _utf8()
    loads = json.loads
    buffer = ""
    count = 0
    for chunk in chunks:
        buffer += text_decoder.decode(chunk)
        buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            data = _last_data(block)
            if data is None:
                continue
            count += 1
            if parse:
                loads(data)
    return count


def flowith_datas(chunks: list[bytes]) -> Iterator[str]:
    decoder = SSEDecoder()
    yield from _datas_fed(decoder.feed, chunks)
    decoder.close()


def httpx_sse_datas(chunks: list[bytes]) -> Iterator[str]:
    text_decoder = _utf8()
    lines = SSELineDecoder()
    decoder = HttpxSSEDecoder()
    for chunk in chunks:
        text = text_decoder.decode(chunk)
        if not text:
            continue
        for line in lines.decode(text):
            event = decoder.decode(line.rstrip("\n"))
            if event is not None:
                yield event.data


def buffer_datas(chunks: list[bytes]) -> Iterator[str]:
    text_decoder = _utf8()
    buffer = ""
    for chunk in chunks:
        buffer += text_decoder.decode(chunk)
        buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            data = _last_data(block)
            if data is not None:
                yield data


#: A run of whole events is decoded this many bytes at a time at most (as flowith does).
_WINDOW = 64 * 1024


class _Unchecked:
    """``unchecked`` (see above), fed like :class:`~flowith_proto.sse.SSEDecoder`."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n\n") + 2
        if cut < 2:
            self._pending = data
            return []
        self._pending = data[cut:]
        events: list[ServerSentEvent] = []
        append = events.append
        start = 0
        while start < cut:  # a window at a time, as flowith
            end = cut if cut - start <= _WINDOW else data.rfind(b"\n\n", start, start + _WINDOW) + 2
            if end - start < _SHORT_RUN:
                values = [raw.decode() for raw in data[start + 6 : end - 2].split(b"\n\ndata: ")]
            else:
                text = data[start:end].decode("utf-8", "replace")
                if len(text) >= _SEARCH_FROM and not text.isascii():
                    values = _find_data_events(text)
                else:
                    values = text[6:-2].split("\n\ndata: ")
            for value in values:
                event = _DecodedEvent()
                event.data = value
                event.event = "message"
                event.id = ""
                event.retry = None
                append(event)
            start = end
        return events


def decode_only_consume(chunks: list[bytes], parse: bool) -> int:
    """``decode only``: the one step any decoder of one huge event must take, alone.

    Every chunk through an incremental UTF-8 decoder and the pieces joined into one
    ``str``: no line or field is looked for. Not a decoder: a floor for a single
    event that spans every chunk (the huge-event table), where a decoder's time is
    this and whatever it does besides. Counts the one event it stands for.
    """
    decode = _utf8().decode
    text = "".join([decode(chunk) for chunk in chunks])
    if parse:
        json.loads(text)
    return 1


def unchecked_consume(chunks: list[bytes], parse: bool) -> int:
    return _count_fed(_Unchecked().feed, chunks, parse)


def unchecked_datas(chunks: list[bytes]) -> Iterator[str]:
    return _datas_fed(_Unchecked().feed, chunks)


#: The contenders by name; the first is the library.
CONSUMERS: dict[str, Consumer] = {
    "flowith": flowith_consume,
    "httpx-sse": httpx_sse_consume,
    "str buffer": buffer_consume,
}
DATAS: dict[str, Callable[[list[bytes]], Iterator[str]]] = {
    "flowith": flowith_datas,
    "httpx-sse": httpx_sse_datas,
    "str buffer": buffer_datas,
    "unchecked": unchecked_datas,
}
#: References shown beside the contenders in the stream tables (see ``unchecked`` above).
REFERENCES: dict[str, Consumer] = {"unchecked": unchecked_consume}
#: The reference shown beside the contenders for the one huge event.
BIG_EVENT_REFERENCES: dict[str, Consumer] = {"decode only": decode_only_consume}
