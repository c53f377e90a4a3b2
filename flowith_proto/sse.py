"""An incremental, spec-exact decoder for ``text/event-stream`` bodies.

It follows the WHATWG HTML "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
and works on bytes, so a transport can hand it whatever chunks the network gives.

Why bytes: line breaks are found on bytes (``\\r`` and ``\\n`` never occur inside a
multi-byte UTF-8 sequence), so a character split across two chunks simply stays
with the rest of its line and only complete lines are decoded. Decoding lines on
their own gives the same text as decoding the whole body at once, because an
ASCII line break ends an invalid or truncated sequence in both cases.

Why events rather than lines: after CR and CRLF are turned into LF, every blank
line is a ``\\n\\n`` (or a ``\\n`` where an event would start, which changes
nothing), so the decoder cuts the body into whole events with one search and
keeps only the bytes of the event still arriving. The lines of an event are
read when it ends. A generation streams tens of thousands of ``data: {json}``
events; a run of those is decoded with one ``bytes.decode`` and one regular
expression search (or ``str.split``), and each chunk is searched once, so the
cost is linear in the body whatever the chunking.

Memory is bounded by ``max_event_size``: an event that grows past it is dropped
while it streams (never buffered whole) and reported in
:attr:`SSEDecoder.dropped`; the events around it are still returned.
"""

from __future__ import annotations

import codecs
import contextlib
import re

from flowith_proto.errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEDecoder", "ServerSentEvent"]

#: The default bound on one event: far above any real event, far below exhausting memory.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
#: An event that arrives across chunks and grows longer than this is read in blocks of
#: about this size as they fill (see :class:`_LongEvent`), so a huge event is held once,
#: as text. Blocks, because growing one buffer to megabytes can cost a copy of it at
#: many of its reallocations, and a block is decoded while it is in the CPU's cache.
_BIG_EVENT = 64 * 1024
#: The bytes of an event still arriving are kept as ``bytes`` up to this size, then
#: in a ``bytearray`` (see :meth:`SSEDecoder._pending_grew`).
_GROW_IN_PLACE = 4 * 1024
#: A long non-ASCII value is decoded this many bytes at a time (see
#: :meth:`_LongEvent._read_value`): a step briefly holds two drafts of its own text, a
#: sliver of the value. Measured in a fresh process, steps of an eighth of a 5 MiB value
#: (640 KiB) took 40 % longer in all than steps of 16 to 256 KiB: each step's bytes and
#: drafts then outgrow the CPU's cache and malloc's reuse of freed blocks.
_DECODE_STEP = 64 * 1024

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


#: One event made of one ``data: `` line: the stream's usual shape. Anchored to the
#: start of a line, so a failed attempt costs its own line only: unanchored, every
#: "data: " inside a long line that no blank line follows would rescan the line.
_find_data_events = re.compile(r"(?m)^data: ([^\n]*)\n\n").findall
#: Below this many characters (or in ASCII text), _decode_events() splits rather than
#: searches.
_SEARCH_FROM = 1024
#: A run of events shorter than this many bytes is split as bytes, and each value
#: decoded on its own (see _decode_events()).
_SHORT_RUN = 1024


class ServerSentEvent:
    """One dispatched event.

    ``id`` is the stream's last event ID when the event was dispatched (it persists
    across events, so an event without an ``id:`` line carries the previous one), and
    ``retry`` is the last valid ``retry:`` value seen so far on the stream, or ``None``.
    A plain ``__slots__`` class because one is created per event on the hot path.
    """

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self,
        data: str = "",
        event: str = "message",
        id: str = "",
        retry: int | None = None,
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (
            self.data == other.data
            and self.event == other.event
            and self.id == other.id
            and self.retry == other.retry
        )

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    def __reduce__(self) -> tuple[type[ServerSentEvent], tuple[str, str, str, int | None]]:
        # The decoder's events are of a private subclass (_DecodedEvent): a copy or
        # a pickle of one is a plain ServerSentEvent, and names only this class.
        return ServerSentEvent, (self.data, self.event, self.id, self.retry)

    def __repr__(self) -> str:
        return (
            f"ServerSentEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )


class _DecodedEvent(ServerSentEvent):
    """A :class:`ServerSentEvent` as the decoder makes one, thousands a second.

    The same slots, equality and repr; only its ``__init__`` is ``object``'s, so
    that ``_DecodedEvent()`` is made in C and the decoder sets the four fields
    itself. Calling the Python ``__init__`` instead would double the cost of an
    event; ``object.__new__(ServerSentEvent)`` saves less (measured: about 40 ns
    an event more, a tenth of the decoding of a typical event).
    """

    __slots__ = ()
    __init__ = object.__init__


def _parse_field(line: str) -> tuple[str, str] | None:
    """The field name and value of a non-empty line, or ``None`` for a comment."""
    name, colon, value = line.partition(":")
    if colon and not name:
        return None
    return name, value[1:] if value.startswith(" ") else value


def _retry_delay(value: str) -> int | None:
    """The reconnection time a ``retry`` field sets, or ``None`` if it sets none."""
    if not (value.isascii() and value.isdigit()):
        return None
    # Past Python's int-from-str digit limit (sys.get_int_max_str_digits) int() refuses:
    # a delay no server means, ignored like any unusable value.
    with contextlib.suppress(ValueError):
        return int(value.lstrip("0") or "0")
    return None


def _takes_effect(name: str, value: str) -> bool:
    """Whether a field other than data sets anything: the spec ignores unknown
    fields, an ``id`` holding NUL and a ``retry`` that is not a number."""
    if name == "id":
        return "\0" not in value
    if name == "retry":
        return _retry_delay(value) is not None
    return name == "event"


class _LongEvent:
    """An event too long to keep as bytes, read line by line as its blocks arrive.

    Each block is decoded while it is fresh in the CPU's cache and then let go, so a
    huge event is never joined as bytes: it is held once, as the text of its data lines,
    and its peak is the text and one copy of it (the pieces of a line and their join).
    Decoding the benchmark suite's 5 MiB event this way took about 15 % less time, in a
    process of its own, than gathering its bytes and decoding them at the end. Of its
    other fields only the last that takes effect of each name is kept, to be applied
    when it ends (a dropped event has no effect): a long run of them costs nothing.
    """

    __slots__ = ("_decoder", "_head", "_pieces", "data_lines", "ends_with_lf", "fields", "size")

    def __init__(self) -> None:
        self.size = 0  # the bytes read so far
        self.ends_with_lf = False  # the last byte read was LF
        self.data_lines: list[str] = []  # the values of its complete data lines
        self.fields: dict[str, str] = {}  # the last value of each field that takes effect
        # The start of the line being read while it is not known to be a data line
        # (too short to tell yet), or the whole of a line of another field.
        self._head = bytearray()
        # The text of the data line being read so far, when it is one, and its decoder.
        self._pieces: list[str] | None = None
        self._decoder = _utf8_decoder("replace")

    def read(self, block: bytes | bytearray, start: int = 0, end: int | None = None) -> None:
        """Read ``block[start:end]``, the next bytes of the event."""
        if end is None:
            end = len(block)
        if start >= end:
            return
        self.size += end - start
        self.ends_with_lf = block[end - 1] == _LF
        with memoryview(block) as view:
            pieces: list[str]
            while start < end:
                line_end = block.find(b"\n", start, end)
                stop = end if line_end < 0 else line_end
                ends_line = line_end >= 0
                if self._pieces is not None:
                    self._read_value(self._pieces, view, start, stop, ends_line)
                elif self._head or (not ends_line and stop - start < 6):
                    self._head += view[start:stop]
                    head = self._head
                    if len(head) >= 6 and head.startswith(b"data:"):
                        self._head = bytearray()
                        self._pieces = pieces = []
                        self._read_value(pieces, head, 5 + (head[5] == 0x20), len(head), ends_line)
                    elif ends_line:
                        self._line(head.decode("utf-8", "replace"))
                        self._head = bytearray()
                elif stop - start >= 6 and block.startswith(b"data:", start):
                    self._pieces = pieces = []
                    value_start = start + 5 + (block[start + 5] == 0x20)
                    self._read_value(pieces, view, value_start, stop, ends_line)
                elif ends_line:
                    self._line(str(view[start:stop], "utf-8", "replace"))
                else:  # the start of a line of another field
                    self._head += view[start:stop]
                start = stop + 1

    def _read_value(
        self,
        pieces: list[str],
        view: memoryview | bytearray,
        start: int,
        stop: int,
        ends_line: bool,
    ) -> None:
        """Decode ``view[start:stop]``, more of the data line being read, into ``pieces``.

        In steps of :data:`_DECODE_STEP`: decoding a long non-ASCII span in one go
        would hold its bytes, an ASCII draft of its text and a widened copy at once.
        """
        decode = self._decoder.decode
        for position in range(start, stop, _DECODE_STEP):
            pieces.append(decode(view[position : min(position + _DECODE_STEP, stop)]))
        if ends_line:
            pieces.append(decode(b"", True))
            self._pieces = None  # let the pieces go as soon as they are joined
            self.data_lines.append("".join(pieces))

    def _line(self, line: str) -> None:
        """Keep a complete line that was not streamed."""
        field = _parse_field(line) if line else None  # an empty one: a LF where it starts
        if field is None:
            return
        name, value = field
        if name == "data":
            self.data_lines.append(value)
        elif _takes_effect(name, value):
            self.fields[name] = value


class SSEDecoder:
    """Turn the bytes of an event stream into :class:`ServerSentEvent` objects.

    Call :meth:`feed` with each chunk as it arrives and :meth:`close` at the end of
    the stream. :meth:`feed` never raises, whatever the bytes.

    Oversized events: an event's size is the bytes of its lines, each line break
    counted as one byte (the blank line ending it is not counted). When an event
    grows past ``max_event_size`` the decoder drops it on the spot, skips its
    remaining bytes up to the blank line that ends it, and appends an
    :class:`~flowith_proto.errors.EventTooLargeError` to :attr:`dropped`. The events
    before and after it are returned as usual, even from the same chunk, which is
    why the problem is recorded rather than raised: check ``decoder.dropped`` (a
    cheap truthiness test) after :meth:`feed` and drain it with :meth:`take_errors`.
    A dropped event has no effect at all: its ``id`` and ``retry`` lines are
    ignored too.
    """

    def __init__(self, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size < 1:
            raise ValueError(f"max_event_size must be positive, not {max_event_size}")
        self.max_event_size = max_event_size
        #: Oversized events dropped so far and not yet taken by :meth:`take_errors`.
        self.dropped: list[EventTooLargeError] = []
        self._last_event_id = ""
        self._retry: int | None = None
        # Past this length, _pending_grew() checks the event arriving (see _start_stream).
        self._grow_in_place_at = min(_GROW_IN_PLACE, max_event_size)
        self._start_stream()

    def _start_stream(self) -> None:
        self._forget_pending()
        self._at_stream_start = True  # a BOM may still come (possibly split)
        self._bom_prefix = b""  # the first bytes of the stream while they may be a BOM's
        self._held_cr = False  # the last byte was CR: a LF starting the next chunk ends no line
        self._skipping = False  # the event arriving is too large: skip to its blank line
        # Set when any of the three flags above is, so feed() tests one attribute.
        self._needs_prepare = True
        self._data_lines: list[str] = []
        self._event_type = ""
        # Seeded with the last event ID, as browsers do on a reconnection: with the spec's
        # literal empty buffer, a first event without an id would forget where to resume.
        self._id_buffer = self._last_event_id

    def _forget_pending(self) -> None:
        """The event arriving has ended or was dropped: start afresh on the next one."""
        # The bytes of the event still arriving (maybe after one LF, a blank line where
        # an event starts), or while one is skipped, the LF its last byte may have been.
        self._pending: bytes | bytearray = b""
        # The event arriving once it grew past _BIG_EVENT: its earlier bytes, read (see
        # _LongEvent); _pending then holds the bytes after them.
        self._long: _LongEvent | None = None
        # Up to this many bytes (pending and chunk together), no event can be too large
        # and none is long enough for _LongEvent: feed() skips those checks. It is -1
        # while an event is long, so that whatever ends it goes to _feed_large().
        self._small_input = min(_BIG_EVENT, self.max_event_size)
        # feed() calls _pending_grew() when the event arriving is longer than this: past
        # _grow_in_place_at (to make it a bytearray), then when it fills a block or may
        # be too large.
        self._check_pending_at = self._grow_in_place_at

    @property
    def last_event_id(self) -> str:
        """The last event ID string: what to send as ``Last-Event-ID`` on a reconnection."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds the server asked for, or ``None``.

        A ``retry:`` line takes effect when its event ends, or at :meth:`close` if
        the stream ends first, as the spec's end state requires.
        """
        return self._retry

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the event still arriving received so far: at most
        ``max_event_size``, plus one for a LF that may precede it. (Those of a long
        event are held decoded, as the text of its lines.)"""
        return (self._long.size if self._long else 0) + len(self._pending)

    def take_errors(self) -> list[EventTooLargeError]:
        """Return the oversized events reported since the last call, and forget them."""
        errors, self.dropped = self.dropped, []
        return errors

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode one chunk of the body; return the events it completes (often none)."""
        if self._needs_prepare or _CR in data:
            data = self._prepare(data)
        pending = self._pending
        if _LF in data:
            # Where the bytes after the last blank line start: the events before are complete.
            cut = data.rfind(b"\n\n") + 2
            if cut > 1 or (data[0] == _LF and self._ended_with_lf()):
                events: list[ServerSentEvent] = []
                if len(pending) + len(data) <= self._small_input:
                    self._pending = data[cut:]
                    self._decode_events(pending + data[:cut] if pending else data[:cut], events)
                else:
                    del pending  # so that _LongEvent can let the event's bytes go early
                    self._feed_large(data, cut, events)
                return events
        pending += data  # no blank line ends in this chunk
        self._pending = pending
        if len(pending) > self._check_pending_at:
            self._pending_grew()
        return []

    def _feed_large(self, data: bytes, cut: int, events: list[ServerSentEvent]) -> None:
        """feed() for a chunk that ends a long event or may hold an oversized one."""
        long = self._long
        if long is not None:
            across = data[0] == _LF and self._ended_with_lf()  # a blank line
            first_cut = 1 if across else data.find(b"\n\n") + 2
            # Its lines and their line breaks: all but the blank line.
            size = long.size + len(self._pending) + first_cut - 1
            if size > self.max_event_size:
                self._report(size)
            else:
                long.read(self._pending)
                long.read(data, 0, first_cut - 1)
                self._end_long_event(long, events)
            self._forget_pending()
            events_bytes: bytes | bytearray = data
            start, end = first_cut, cut
        else:
            pending = self._pending
            # One copy of the chunk: the windows are cut from it as they are decoded.
            events_bytes = pending + data if pending else data
            start, end = 0, len(pending) + cut
            self._forget_pending()
        self._pending = rest = data[cut:]
        if start < end:
            self._windowed_events(events_bytes, start, end, events)
        if len(rest) > self._check_pending_at:
            self._pending_grew()

    def _ended_with_lf(self) -> bool:
        """Whether the last byte received of the event arriving was a LF."""
        if self._pending or self._long is None:
            return self._pending[-1:] == b"\n"
        return self._long.ends_with_lf

    def close(self) -> list[ServerSentEvent]:
        """End the stream: an event without its closing blank line is discarded.

        Per the spec nothing is dispatched at the end of the stream, so this returns
        ``[]``; only a ``retry:`` line of the discarded event keeps its effect. The
        decoder is then ready for the next connection of the same event source:
        :attr:`last_event_id` and :attr:`retry` are kept (they are what a
        reconnection needs), everything else starts afresh, a leading BOM included.
        Use a new decoder for an unrelated stream.
        """
        if self._bom_prefix:  # the stream ended before they could make a BOM
            self._pending = self._bom_prefix
            if len(self._pending) > self._check_pending_at:
                self._pending_grew()
        pending = self._pending
        long = self._long  # never one while an event is skipped
        if long is not None:
            long.read(pending, 0, pending.rfind(b"\n") + 1)  # completes its lines
            if "retry" in long.fields:
                self._apply("retry", long.fields["retry"])
        elif not self._skipping and b"retry" in pending:
            for line in pending[: pending.rfind(b"\n") + 1].split(b"\n"):
                if line.startswith(b"retry"):
                    self._field(line.decode("utf-8", "replace"))
        self._start_stream()
        return []

    def _prepare(self, data: bytes) -> bytes:
        """Handle the rare cases, so that the rest only ever sees LF line breaks.

        Strips a leading BOM (held back while only a prefix of it has arrived),
        turns CRLF and lone CR into LF (a CR ending a chunk means a LF starting the
        next one belongs to the same line break), and skips the rest of an event
        that was dropped for being too large.
        """
        if self._at_stream_start:
            data = self._bom_prefix + data
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._bom_prefix = data
                return b""
            self._bom_prefix = b""
            self._at_stream_start = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if self._held_cr and data:
            self._held_cr = False
            if data[0] == _LF:
                data = data[1:]
        if _CR in data:
            self._held_cr = data[-1] == _CR
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._skipping:
            data = bytes(self._pending) + data
            blank_line = data.find(b"\n\n")
            if blank_line < 0:
                self._pending = b"\n" if data.endswith(b"\n") else b""
                data = b""
            else:
                self._skipping = False
                self._pending = b""
                data = data[blank_line + 2 :]
        self._needs_prepare = self._at_stream_start or self._held_cr or self._skipping
        return data

    def _windowed_events(
        self,
        events_bytes: bytes | bytearray,
        position: int,
        end: int,
        events: list[ServerSentEvent],
    ) -> None:
        """Decode whole events (``events_bytes[position:end]`` starts an event and ends
        with a blank line) a window at a time, dropping those larger than
        ``max_event_size``.

        Windows keep the text decoded at once small, so a whole body fed at once
        decodes as fast as the same body in chunks.
        """
        limit = self.max_event_size
        window = min(limit, _BIG_EVENT)
        while position < end:
            if end - position <= window:
                self._decode_events(events_bytes[position:end], events)
                return
            # The longest run of whole events that fits (none of them too large, then).
            blank_line = events_bytes.rfind(b"\n\n", position, position + window)
            if blank_line >= 0:
                self._decode_events(events_bytes[position : blank_line + 2], events)
            else:  # the event starting here is longer than a window
                blank_line = events_bytes.find(b"\n\n", position)
                start = position + (events_bytes[position] == _LF)  # at most one LF before it
                size = blank_line + 1 - start  # its lines and their line breaks
                if size > limit:
                    self._report(size)  # its lines are ignored, so its blank line changes nothing
                else:
                    long = _LongEvent()
                    long.read(events_bytes, start, blank_line + 1)
                    self._end_long_event(long, events)
            position = blank_line + 2

    def _decode_events(
        self, events_bytes: bytes | bytearray, events: list[ServerSentEvent]
    ) -> None:
        """Decode whole events known to be within ``max_event_size``.

        A run of events that are each a single ``data: `` line (the stream's usual
        shape) is cut into values with one pass; anything else goes to
        :meth:`_decode_blocks`. Three ways, each the fastest measured for its input:

        * A short run (under :data:`_SHORT_RUN` bytes: what a chunk of a few hundred
          bytes completes) is split as bytes, and each value decoded on its own and
          checked for a line break as its event is made. Decoded whole, one emoji
          would make the run's text four bytes a character, and every value cut
          from it would be narrowed again: in 512 B chunks this way is about 8 %
          faster. (Values that each decode make the same text as the run decoded
          whole: an ASCII separator ends any sequence.) A run of one event needs no
          split: no line break before its blank line says it all.
        * Long non-ASCII text is searched: the matches tile ``text`` exactly when
          their lengths add up to it, since they never overlap.
        * Otherwise the text is split, and each value checked for a line break: on
          ASCII text and on short runs that costs less than the search (whose setup
          is a fixed fraction of a microsecond), but more on long wide text, where
          the split's copy without the first ``data: `` is wide too.
        """
        if len(events_bytes) < _SHORT_RUN and events_bytes.startswith(b"data: "):
            id_buffer = self._id_buffer
            retry = self._retry
            append = events.append
            made = len(events)
            try:
                run = events_bytes[6:-2]
                for raw in run.split(b"\n\ndata: ") if _LF in run else (run,):
                    if _LF in raw:
                        break
                    event = _DecodedEvent()
                    event.data = raw.decode()
                    event.event = "message"
                    event.id = id_buffer
                    event.retry = retry
                    append(event)
                else:
                    self._last_event_id = id_buffer
                    return
            except UnicodeDecodeError:  # decoded below, replacing the bad bytes
                pass
            del events[made:]  # not such a run after all
        try:
            # Strict first: with no error handler to look up, valid runs (nearly all)
            # make a stream in 512 B chunks about 2 % faster; an invalid run is decoded
            # again, replacing the bad bytes.
            text = events_bytes.decode()
        except UnicodeDecodeError:
            text = events_bytes.decode("utf-8", "replace")
        id_buffer = self._id_buffer
        retry = self._retry
        append = events.append
        if len(text) >= _SEARCH_FROM and not text.isascii():
            values: list[str] = _find_data_events(text)
            if len(text) != 8 * len(values) + sum(map(len, values)):
                self._decode_blocks(text, events)
                return
            checked = True
        elif text.startswith("data: "):
            value = text[6:-2]
            checked = "\n" not in value
            values = [value] if checked else value.split("\n\ndata: ")
        else:
            self._decode_blocks(text, events)
            return
        made = len(events)
        for value in values:
            if not checked and "\n" in value:  # not a run of one-line events after all
                del events[made:]
                self._decode_blocks(text, events)
                return
            event = _DecodedEvent()
            event.data = value
            event.event = "message"
            event.id = id_buffer
            event.retry = retry
            append(event)
        self._last_event_id = id_buffer

    def _decode_blocks(self, text: str, events: list[ServerSentEvent]) -> None:
        """Decode whole events, of any shape; ``text`` ends with a blank line."""
        blocks = text.split("\n\n")
        blocks.pop()  # what follows the final blank line: nothing, or a LF (no effect)
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                id_buffer = self._last_event_id = self._id_buffer
                events.append(ServerSentEvent(block[6:], "message", id_buffer, self._retry))
                continue
            for line in block.split("\n"):
                if line:  # an empty one is a blank line where an event starts: no effect
                    self._field(line)
            self._end_event(events)

    def _field(self, line: str) -> None:
        """Apply one non-empty line of an event."""
        field = _parse_field(line)
        if field is not None:  # not a comment
            self._apply(*field)

    def _apply(self, name: str, value: str) -> None:
        """Apply one field of an event."""
        if name == "data":
            self._data_lines.append(value)
        elif not _takes_effect(name, value):
            return
        elif name == "event":
            self._event_type = value
        elif name == "id":
            self._id_buffer = value
        else:
            self._retry = _retry_delay(value)

    def _end_long_event(self, long: _LongEvent, events: list[ServerSentEvent]) -> None:
        """The blank line ending a long event, whose lines were all read."""
        for name, value in long.fields.items():
            self._apply(name, value)
        self._data_lines += long.data_lines
        self._end_event(events)

    def _end_event(self, events: list[ServerSentEvent]) -> None:
        """The blank line ending an event: dispatch it if it has data."""
        id_buffer = self._last_event_id = self._id_buffer
        if self._data_lines:
            events.append(
                ServerSentEvent(
                    "\n".join(self._data_lines),
                    self._event_type or "message",
                    id_buffer,
                    self._retry,
                )
            )
            self._data_lines = []
        self._event_type = ""

    def _pending_grew(self) -> None:
        """Keep the bytes of the event arriving growable in place, read in blocks once
        it is long, and bounded."""
        pending = self._pending
        long = self._long
        # A leading LF (a blank line where an event starts) is no part of the event.
        leading_lf = long is None and pending.startswith(b"\n")
        room = self.max_event_size - (long.size if long else 0) + leading_lf
        if len(pending) > room:
            self._drop_pending()
            return
        if len(pending) > _BIG_EVENT:
            if long is None:
                long = self._long = _LongEvent()
            long.read(pending, leading_lf)
            room = self.max_event_size - long.size
            self._pending = bytearray()
            self._small_input = -1
        elif isinstance(pending, bytes):
            # Small, immutable bytes are the cheapest to keep; a long event growing by
            # many chunks needs a buffer that grows in place, or the time is quadratic.
            self._pending = bytearray(pending)
        if long is not None:
            # It can only end in _feed_large(), which resets this: until then, a chunk
            # needs checking once the pending bytes fill a block or may be too many.
            self._check_pending_at = min(_BIG_EVENT, room)

    def _drop_pending(self) -> None:
        """The event still arriving is too large: forget it and skip to its end."""
        leading_lf = self._long is None and self._pending.startswith(b"\n")
        self._report(self.buffered_bytes - leading_lf)
        ends_with_lf = self._ended_with_lf()
        self._forget_pending()
        self._pending = b"\n" if ends_with_lf else b""
        self._skipping = True
        self._needs_prepare = True

    def _report(self, size: int) -> None:
        self.dropped.append(
            EventTooLargeError(
                f"dropped a server-sent event of at least {size} bytes "
                f"(max_event_size is {self.max_event_size})",
                size=size,
                limit=self.max_event_size,
            )
        )
