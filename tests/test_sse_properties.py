"""Property tests of the SSE decoder: chunking, a spec-literal reference, httpx-sse.

The reference decoder below is the spec read aloud: strip one BOM, decode the
whole body as UTF-8 (errors replaced), split it into lines, process the lines.
The decoder under test finds lines on bytes and decodes only complete ones; the
two agree because ``\\r`` and ``\\n`` are ASCII, so an invalid or truncated UTF-8
sequence ends at a line break whether the line is decoded alone or within the
body. These tests check exactly that, over arbitrary bytes.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from unittest import mock

import attrs
from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder as HttpxLineDecoder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowith_proto import sse
from flowith_proto.sse import ServerSentEvent, SSEDecoder

BOM = b"\xef\xbb\xbf"
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

EventTuple = tuple[str, str, str, int | None]


@attrs.frozen
class Outcome:
    events: list[EventTuple]
    last_event_id: str
    retry: int | None
    dropped: int


# The reference: the WHATWG rules, literally.


class SpecState:
    """The buffers of "event stream interpretation", one line at a time."""

    def __init__(self) -> None:
        self.data = ""
        self.event_type = ""
        self.last_event_id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None
        self.events: list[EventTuple] = []

    def process(self, line: str) -> None:
        if line == "":
            self.dispatch()
        elif line.startswith(":"):
            pass
        elif ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            self.process_field(field, value)
        else:
            self.process_field(line, "")

    def process_field(self, field: str, value: str) -> None:
        if field == "event":
            self.event_type = value
        elif field == "data":
            self.data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                self.last_event_id_buffer = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            # Past Python's int digit limit, ignored as documented.
            with contextlib.suppress(ValueError):
                self.retry = int(value.lstrip("0") or "0")

    def dispatch(self) -> None:
        self.last_event_id = self.last_event_id_buffer
        if self.data == "":
            self.event_type = ""
            return
        data = self.data[:-1] if self.data.endswith("\n") else self.data
        self.events.append((self.event_type or "message", data, self.last_event_id, self.retry))
        self.data = ""
        self.event_type = ""


def reference_decode(body: bytes, max_event_size: int | None = None) -> Outcome:
    """Decode a whole stream by the spec; with ``max_event_size``, drop the events
    whose lines (each counted with one line break) exceed it, and the unterminated
    last event if its bytes so far do."""
    if body.startswith(BOM):
        body = body[len(BOM) :]
    text_lines = re.split("\r\n|\r|\n", body.decode("utf-8", "replace"))
    byte_lines = re.split(b"\r\n|\r|\n", body)
    assert len(text_lines) == len(byte_lines)  # decoding never moves a line break
    state = SpecState()
    *lines, (_, unterminated) = zip(text_lines, byte_lines, strict=True)
    dropped = 0
    event: list[tuple[str, bytes]] = []  # the lines of the event in progress
    for text_line, byte_line in lines:
        if text_line:
            event.append((text_line, byte_line))
            continue
        if max_event_size is not None and sum(len(b) + 1 for _, b in event) > max_event_size:
            dropped += 1
        else:
            for line, _ in event:
                state.process(line)
        state.process("")
        event = []
    # End of stream: the unterminated event's complete lines were processed as they
    # came (only a retry outlives it), and then it is discarded.
    tail_size = sum(len(b) + 1 for _, b in event) + len(unterminated)
    if max_event_size is not None and tail_size > max_event_size:
        dropped += 1
    else:
        for line, _ in event:
            state.process(line)
    return Outcome(state.events, state.last_event_id, state.retry, dropped)


# The decoder under test.


def as_tuple(event: ServerSentEvent) -> EventTuple:
    return (event.event, event.data, event.id, event.retry)


def chunked(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(body)) for cut in cuts})
    edges = [0, *points, len(body)]
    return [body[start:end] for start, end in itertools.pairwise(edges)]


def decode(chunks: Sequence[bytes], max_event_size: int = sse.DEFAULT_MAX_EVENT_SIZE) -> Outcome:
    decoder = SSEDecoder(max_event_size=max_event_size)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered_bytes <= max(max_event_size + 1, len(BOM))
    events += decoder.close()
    return Outcome(
        [as_tuple(e) for e in events], decoder.last_event_id, decoder.retry, len(decoder.dropped)
    )


@contextmanager
def long_event_paths(size: int) -> Iterator[None]:
    """Make every event "long", so that small inputs take the paths of huge ones."""
    with (
        mock.patch.object(sse, "_BIG_EVENT", size),
        mock.patch.object(sse, "_GROW_IN_PLACE", 2),
        mock.patch.object(sse, "_DECODE_STEP", 3),  # characters split between steps
    ):
        yield


# Streams.

LINE_BREAKS = [b"\n", b"\r", b"\r\n"]
text_values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12).map(
    str.encode
)
raw_values = st.binary(max_size=8).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
values = text_values | raw_values | st.sampled_from([b"", b" ", b"  x", b":", b"\x00", b"\xff"])
names = st.sampled_from([b"data", b"event", b"id", b"retry", b"Data", b"dat", b"x", b""])
digits = st.from_regex(rb"\A[0-9]{1,6}\Z")
fields = st.one_of(
    st.tuples(names, st.sampled_from([b":", b": ", b""]), values).map(b"".join),
    st.tuples(st.just(b"retry: "), digits).map(b"".join),
    st.tuples(st.just(b"data: "), text_values).map(b"".join),
    st.just(b":comment"),
    st.just(b""),  # a blank line
)
sse_like_streams = st.tuples(
    st.sampled_from([b"", BOM, BOM[:2]]),
    st.lists(st.tuples(fields, st.sampled_from(LINE_BREAKS)).map(b"".join), max_size=30),
    st.sampled_from([b"", b"data: tail", b"\r", b"\n"]),
).map(lambda parts: parts[0] + b"".join(parts[1]) + parts[2])
token_soup = st.lists(
    st.sampled_from(
        [
            *[b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"data:", b"id:", b"retry:1", b":"],
            *[b" ", b"x", b"\xc3", b"\xbc", b"\xe2\x82", b"\xf0\x9f\x98\x80", b"\xff", b"\0", BOM],
        ]
    ),
    max_size=60,
).map(b"".join)
streams = sse_like_streams | token_soup | st.binary(max_size=200)
cut_lists = st.lists(st.integers(min_value=0, max_value=400), max_size=20)


@PROPERTY_SETTINGS
@given(streams, cut_lists)
def test_every_chunking_matches_the_reference(body: bytes, cuts: list[int]) -> None:
    expected = reference_decode(body)
    assert decode([body]) == expected
    assert decode(chunked(body, cuts)) == expected


@PROPERTY_SETTINGS
@given(sse_like_streams | token_soup)
def test_byte_at_a_time_matches_the_reference(body: bytes) -> None:
    assert decode([body[i : i + 1] for i in range(len(body))]) == reference_decode(body)


@PROPERTY_SETTINGS
@given(streams, cut_lists, st.integers(min_value=1, max_value=40))
def test_size_limit_matches_the_reference(body: bytes, cuts: list[int], limit: int) -> None:
    expected = reference_decode(body, limit)
    assert decode([body], limit) == expected
    assert decode(chunked(body, cuts), limit) == expected


@PROPERTY_SETTINGS
@given(streams, cut_lists, st.integers(min_value=1, max_value=40))
def test_long_event_paths_match_the_reference(body: bytes, cuts: list[int], size: int) -> None:
    expected = reference_decode(body)
    with long_event_paths(size):
        assert decode([body]) == expected
        assert decode(chunked(body, cuts)) == expected
        assert decode(chunked(body, cuts), max_event_size=30) == reference_decode(body, 30)


@PROPERTY_SETTINGS
@given(
    streams,
    cut_lists,
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([1, 3, 8, 15, 30, sse.DEFAULT_MAX_EVENT_SIZE]),
    st.integers(min_value=1, max_value=5),
)
# The event's bytes had all gone to blocks when a chunk starting with LF ended it.
@example(b"id: 1\n\r", [3, 6], 2, 2, sse.DEFAULT_MAX_EVENT_SIZE, 5)
# A check threshold raised for one event was left in place for the next one.
@example(b"\rid: 1\n\ndata: x\x00x", [5, 8], 12, 2, 8, 5)
def test_long_event_paths_under_any_limit(
    body: bytes, cuts: list[int], block: int, grow: int, limit: int, step: int
) -> None:
    expected = reference_decode(body, limit)
    with (
        mock.patch.object(sse, "_BIG_EVENT", block),
        mock.patch.object(sse, "_GROW_IN_PLACE", grow),
        mock.patch.object(sse, "_DECODE_STEP", step),
    ):
        assert decode([body], limit) == expected
        assert decode(chunked(body, cuts), limit) == expected


data_only_runs = st.lists(
    st.tuples(st.sampled_from([b"data: ", b"data:", b"data:  "]), values, st.just(b"\n\n")).map(
        b"".join
    ),
    max_size=20,
).map(b"".join)


@PROPERTY_SETTINGS
@given(
    streams | data_only_runs,
    cut_lists,
    st.sampled_from([(10**9, 0), (0, 0), (0, 10**9)]),
)
def test_every_way_to_a_run_of_data_events_matches_the_reference(
    body: bytes, cuts: list[int], way: tuple[int, int]
) -> None:
    # Runs of one-line data events are split as bytes (short runs), searched (long
    # non-ASCII text) or split as text (the rest): force each way on every input
    # that can take it.
    short_run, search_from = way
    expected = reference_decode(body)
    with (
        mock.patch.object(sse, "_SHORT_RUN", short_run),
        mock.patch.object(sse, "_SEARCH_FROM", search_from),
    ):
        assert decode([body]) == expected
        assert decode(chunked(body, cuts)) == expected


@PROPERTY_SETTINGS
@given(st.binary(max_size=300), cut_lists, st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_never_raise(body: bytes, cuts: list[int], limit: int) -> None:
    decoder = SSEDecoder(max_event_size=limit)
    for chunk in chunked(body, cuts):
        for event in decoder.feed(chunk):
            assert isinstance(event.data, str)
    assert decoder.close() == []
    decoder.feed(body)
    decoder.close()


# httpx-sse, where it follows the spec.
#
# Deviations of httpx-sse 0.4.3 found (see the unit tests of each rule), which the
# streams below avoid or the comparison leaves out:
# - it keeps a leading BOM (the first field name then starts with U+FEFF):
#   no stream starts with one;
# - its retry is int(value): it takes " 5", "+5", "-5", "1_0" and non-ASCII digits,
#   forgets the value after each event, and a retry alone makes an event:
#   retry is left out of the comparison, and every event has a data line;
# - it dispatches an event with empty data when the event type, retry or (ever after
#   one is seen) the last event id is set: every event has a data line and no
#   blank line stands alone.
# Its line splitting, CR held across chunks, UTF-8 handling, comments, fields
# without a colon, the single space, id with NULL and end-of-stream behaviour
# agree with the spec.

spec_common_lines = st.one_of(
    st.tuples(st.sampled_from([b"event", b"id", b"retry", b"Data", b"x"]), values).map(
        lambda parts: parts[0] + b":" + parts[1]
    ),
    st.tuples(st.sampled_from([b"data:", b"data: ", b"data:  "]), values).map(b"".join),
    st.just(b"data"),
    st.just(b": comment"),
)
spec_common_events = st.tuples(
    st.lists(spec_common_lines, max_size=4),
    st.tuples(st.sampled_from([b"data:", b"data: "]), values).map(b"".join),
    st.lists(spec_common_lines, max_size=3),
).map(lambda parts: [*parts[0], parts[1], *parts[2]])


@st.composite
def spec_common_streams(draw: st.DrawFn) -> bytes:
    body = b""
    for lines in draw(st.lists(spec_common_events, max_size=8)):
        for line in [*lines, b""]:
            body += line + draw(st.sampled_from(LINE_BREAKS))
    return body + draw(st.sampled_from([b"", b"data: unterminated", b"data: x\n"]))


def httpx_sse_decode(chunks: Sequence[bytes]) -> list[tuple[str, str, str]]:
    """The pipeline of httpx_sse.EventSource.iter_sse, fed bytes."""
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    line_decoder = HttpxLineDecoder()
    decoder = HttpxSSEDecoder()
    events: list[tuple[str, str, str]] = []
    texts = [text_decoder.decode(chunk) for chunk in chunks]
    texts.append(text_decoder.decode(b"", final=True))
    lines = [line for text in texts if text for line in line_decoder.decode(text)]
    for line in [*lines, *line_decoder.flush()]:
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            events.append((event.event, event.data, event.id))
    return events


@PROPERTY_SETTINGS
@given(spec_common_streams(), cut_lists)
def test_agrees_with_httpx_sse_where_it_follows_the_spec(body: bytes, cuts: list[int]) -> None:
    chunks = chunked(body, cuts)
    ours = [event[:3] for event in decode(chunks).events]
    assert ours == httpx_sse_decode(chunks)
    assert ours == [event[:3] for event in reference_decode(body).events]
