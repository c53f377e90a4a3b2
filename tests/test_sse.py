"""The SSE decoder, one WHATWG "event stream interpretation" rule at a time.

Every stream is also fed one byte at a time (see :func:`decode`), because the
decoder keeps separate paths for whole chunks, split lines and long events.
"""

from __future__ import annotations

import copy
import pickle
import time
import tracemalloc
from collections.abc import Iterable, Sequence

import pytest

from flowith_proto.errors import EventTooLargeError, FlowithError
from flowith_proto.sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecoder

BOM = b"\xef\xbb\xbf"


def feed_all(decoder: SSEDecoder, chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def decode(
    chunks: bytes | Sequence[bytes], *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
) -> list[ServerSentEvent]:
    """Decode ``chunks`` as given, then byte by byte; both must agree."""
    if isinstance(chunks, bytes):
        chunks = [chunks]
    events = feed_all(SSEDecoder(max_event_size=max_event_size), chunks)
    body = b"".join(chunks)
    bytewise = feed_all(
        SSEDecoder(max_event_size=max_event_size), [body[i : i + 1] for i in range(len(body))]
    )
    assert bytewise == events
    return events


def datas(chunks: bytes | Sequence[bytes]) -> list[str]:
    return [event.data for event in decode(chunks)]


def msg(
    data: str, event: str = "message", id: str = "", retry: int | None = None
) -> ServerSentEvent:
    return ServerSentEvent(data, event, id, retry)


# The event object.


def test_event_defaults_equality_and_repr() -> None:
    event = ServerSentEvent()
    assert (event.data, event.event, event.id, event.retry) == ("", "message", "", None)
    assert ServerSentEvent("x", "e", "1", 5) == ServerSentEvent(
        data="x", event="e", id="1", retry=5
    )
    assert ServerSentEvent("x") != ServerSentEvent("x", retry=0)
    assert ServerSentEvent("x") != ("x", "message", "", None)
    assert repr(ServerSentEvent("a'b", retry=3)) == (
        "ServerSentEvent(event='message', data=\"a'b\", id='', retry=3)"
    )
    with pytest.raises(TypeError):
        hash(event)
    with pytest.raises(AttributeError):
        event.other = 1  # type: ignore[attr-defined]


def test_decoded_events_are_ordinary_event_objects() -> None:
    # Made without the Python __init__ (a subclass whose __init__ is object's), and
    # otherwise a ServerSentEvent like any other: fields, equality, repr, copies, pickles.
    short_run = decode(b"data: y\n\n")
    long_run = decode(b"data: y\n\n" + "data: \u00e9t\u00e9 \U0001f642\n\n".encode() * 200)
    event = long_run[0]
    assert short_run == [msg("y")]
    assert event == msg("y")
    assert msg("y") == event
    assert (event.data, event.event, event.id, event.retry) == ("y", "message", "", None)
    assert all(isinstance(e, ServerSentEvent) for e in short_run + long_run)
    assert repr(event) == "ServerSentEvent(event='message', data='y', id='', retry=None)"
    for again in (
        copy.copy(event),
        copy.deepcopy(event),
        *(pickle.loads(pickle.dumps(event, protocol)) for protocol in range(6)),
    ):
        assert type(again) is ServerSentEvent
        assert again == event
    assert b"_DecodedEvent" not in pickle.dumps(event)
    event.data = "z"
    assert event == msg("z")
    with pytest.raises(TypeError):
        hash(event)
    with pytest.raises(AttributeError):
        event.other = 1  # type: ignore[attr-defined]


# Line breaks.


def test_lf_line_breaks() -> None:
    assert decode(b"data: a\ndata: b\n\ndata: c\n\n") == [msg("a\nb"), msg("c")]


def test_cr_line_breaks() -> None:
    assert decode(b"data: a\rdata: b\r\rdata: c\r\r") == [msg("a\nb"), msg("c")]


def test_crlf_line_breaks() -> None:
    assert decode(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n") == [msg("a\nb"), msg("c")]


def test_mixed_line_breaks() -> None:
    assert decode(b"data: a\rdata: b\r\ndata: c\n\r\n") == [msg("a\nb\nc")]


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    # Were CR and LF two line breaks, a blank line would end the event after "a".
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [msg("a\nb")]


def test_cr_ending_a_chunk_then_another_byte() -> None:
    assert decode([b"data: a\r", b"data: b\r", b"\r"]) == [msg("a\nb")]
    assert decode([b"data: a\r", b"\r"]) == [msg("a")]


def test_cr_held_across_an_empty_chunk() -> None:
    assert decode([b"data: a\r", b"", b"\n", b"\n"]) == [msg("a")]


def test_final_cr_ends_the_blank_line() -> None:
    assert decode([b"data: a\n", b"\r"]) == [msg("a")]


# Byte order mark.


def test_leading_bom_is_stripped() -> None:
    assert decode(BOM + b"data: a\n\n") == [msg("a")]


def test_leading_bom_split_across_chunks() -> None:
    assert decode([BOM[:1], BOM[1:2], BOM[2:] + b"data: a\n\n"]) == [msg("a")]
    assert decode([BOM[:2], BOM[2:], b"data: a\n\n"]) == [msg("a")]


def test_only_one_bom_is_stripped() -> None:
    # The second one is part of the first field name, "\ufeffdata": an unknown field.
    assert decode(BOM + BOM + b"data: a\n\ndata: b\n\n") == [msg("b")]


def test_bom_later_in_the_stream_is_data() -> None:
    assert decode([b"data: a\n\n", BOM + b"data: b\n\n"]) == [msg("a")]
    assert decode(b"data: " + BOM + b"x\n\n") == [msg("\ufeffx")]


def test_a_bom_prefix_that_is_no_bom_is_kept() -> None:
    assert decode([BOM[:2], b"\n\ndata: a\n\n"]) == [msg("a")]
    assert decode([b"data: ", BOM[:2], b"\n\n"]) == [msg("\ufffd")]


# Decoding.


def test_invalid_utf8_is_replaced() -> None:
    assert datas(b"data: \xff\xfe!\n\n") == ["\ufffd\ufffd!"]
    assert datas(b"data: \xe2\x82\n\n") == ["\ufffd"]  # truncated before the line break
    assert datas(b"data: \xe2\x82x\n\n") == ["\ufffdx"]


def test_a_run_of_one_line_events_keeps_each_value_whole() -> None:
    # A short run is split as bytes and each value decoded on its own.
    assert datas("data: é😀\n\ndata: ü\n\ndata: \n\ndata: x\n\n".encode()) == [
        "é😀",
        "ü",
        "",
        "x",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # an invalid byte in its second event: the run is decoded again, replacing it
        (b"data: a\n\ndata: \xff\n\ndata: c\n\n", [msg("a"), msg("\ufffd"), msg("c")]),
        # an event of two lines after one of one
        (b"data: a\n\ndata: b\ndata: c\n\n", [msg("a"), msg("b\nc")]),
        # another field after the first event
        (b"data: a\n\nid: 7\ndata: b\n\n", [msg("a"), msg("b", id="7")]),
        (b"data: a\n\nevent: e\ndata: b\n\n", [msg("a"), msg("b", "e")]),
        # a single line of another field, then a blank line where an event starts
        (b"data: a\n\nretry: 5\n\n\ndata: b\n\n", [msg("a"), msg("b", retry=5)]),
    ],
)
def test_a_run_that_is_not_all_one_line_events_is_read_line_by_line(
    body: bytes, expected: list[ServerSentEvent]
) -> None:
    assert decode(body) == expected


@pytest.mark.parametrize("text", ["ü", "€", "😀", "a€😀ü"])
def test_multibyte_character_split_at_every_position(text: str) -> None:
    body = f"data: {text}\n\n".encode()
    for position in range(len(body) + 1):
        assert datas([body[:position], body[position:]]) == [text]


# Fields.


def test_multiple_data_lines_are_joined_with_lf() -> None:
    assert datas(b"data: a\ndata:\ndata: c\n\n") == ["a\n\nc"]


def test_exactly_one_space_is_removed_after_the_colon() -> None:
    assert datas(b"data:  x\n\n") == [" x"]
    assert datas(b"data: \n\n") == [""]
    assert datas(b"data:x\n\n") == ["x"]
    assert datas(b"data:\tx\n\n") == ["\tx"]


def test_only_the_first_colon_separates() -> None:
    assert datas(b"data: a: b:c\n\n") == ["a: b:c"]


def test_comment_lines_are_ignored() -> None:
    assert decode(b": hello\ndata: a\n:\n: data: b\ndata: c\n\n") == [msg("a\nc")]
    assert decode(b": only a comment\n\n") == []


def test_field_without_colon_has_an_empty_value() -> None:
    assert datas(b"data\n\n") == [""]
    assert datas(b"data\ndata\n\n") == ["\n"]
    assert decode(b"event: x\nevent\ndata: a\n\n") == [msg("a", "message")]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: a\nbaz\nDATA: c\n\n") == [msg("a")]


def test_field_names_are_case_sensitive() -> None:
    assert decode(b"Data: a\n\n") == []
    assert decode(b"Event: x\ndata: a\nID: 3\nRetry: 5\n\n") == [msg("a")]


def test_event_type() -> None:
    assert decode(b"event: update\ndata: a\n\n") == [msg("a", "update")]
    assert decode(b"event:\ndata: a\n\n") == [msg("a", "message")]


def test_event_type_is_reset_after_dispatch() -> None:
    assert decode(b"event: x\ndata: a\n\ndata: b\n\n") == [msg("a", "x"), msg("b")]
    # The same with a second event of more than one line (the decoder has a shortcut
    # for events made of one "data: " line).
    assert decode(b"event: x\ndata: a\n\n:c\ndata: b\n\n") == [msg("a", "x"), msg("b")]


def test_retry_accepts_ascii_digits_only() -> None:
    assert decode(b"retry: 3000\ndata: a\n\n") == [msg("a", retry=3000)]
    for value in [b"12a", b"", b" 12", b"+5", b"-5", b"1_0", b"1.5", "١٢".encode(), "²".encode()]:
        assert decode(b"retry: " + value + b"\ndata: a\n\n") == [msg("a")], value
    assert decode(b"retry: 007\ndata: a\n\n") == [msg("a", retry=7)]


def test_retry_persists_and_is_replaced_by_later_values() -> None:
    body = b"retry: 5\ndata: a\n\ndata: b\n\nretry: x\ndata: c\n\nretry: 9\ndata: d\n\n"
    assert decode(body) == [
        msg("a", retry=5),
        msg("b", retry=5),
        msg("c", retry=5),
        msg("d", retry=9),
    ]


def test_retry_without_data_sets_the_decoder_retry_only() -> None:
    decoder = SSEDecoder()
    retries = [decoder.retry]
    assert decoder.feed(b"retry: 1500\n\n") == []
    retries.append(decoder.retry)
    assert retries == [None, 1500]
    assert decoder.feed(b"data: a\n\n") == [msg("a", retry=1500)]


def test_retry_too_long_for_int_is_ignored() -> None:
    assert decode(b"retry: " + b"9" * 5000 + b"\ndata: a\n\n") == [msg("a")]
    assert decode(b"retry: " + b"0" * 5000 + b"7\ndata: a\n\n") == [msg("a", retry=7)]


def test_id_persists_to_later_events() -> None:
    body = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"
    assert decode(body) == [msg("a", id="1"), msg("b", id="1"), msg("c", id="2")]


def test_id_with_null_is_ignored() -> None:
    assert decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [
        msg("a", id="1"),
        msg("b", id="1"),
    ]


def test_empty_id_resets_the_last_event_id() -> None:
    body = b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\ndata: c\n\nid:\ndata: d\n\n"
    assert decode(body) == [msg("a", id="1"), msg("b"), msg("c", id="2"), msg("d")]


def test_last_event_id_is_set_by_every_blank_line_even_without_data() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 5\n\n") == []
    assert decoder.last_event_id == "5"
    assert decoder.feed(b"id: 6\n") == []
    assert decoder.last_event_id == "5"  # not until the blank line
    assert decoder.feed(b"data: x\n\n") == [msg("x", id="6")]
    assert decoder.last_event_id == "6"


def test_empty_data_buffer_dispatches_nothing() -> None:
    assert decode(b"event: x\n\n") == []
    assert decode(b"\n\n\n") == []
    assert decode(b"event: x\n\n:c\ndata: a\n\n") == [msg("a")]  # and the type was reset


def test_unterminated_event_is_not_dispatched() -> None:
    assert decode(b"data: a") == []
    assert decode(b"data: a\n") == []
    assert decode(b"data: a\r") == []
    assert decode(b"data: a\n\ndata: b\n") == [msg("a")]


def test_extra_blank_lines_change_nothing() -> None:
    body = b"\n\ndata: a\n\n\n\n\ndata: b\n\n\n"
    assert decode(body) == [msg("a"), msg("b")]
    assert decode([b"data: a\n\n", b"\n", b"\ndata: b\n", b"\n"]) == [msg("a"), msg("b")]


# feed() and close().


def test_feed_returns_only_the_events_each_chunk_completes() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b\n\ndata: c") == [msg("a"), msg("b")]
    assert decoder.feed(b"\n\n") == [msg("c")]
    assert decoder.feed(b"") == []


def test_feed_returns_a_new_list_each_time() -> None:
    decoder = SSEDecoder()
    first = decoder.feed(b"data: a")
    first.append(msg("junk"))
    assert decoder.feed(b"x") == []
    assert decoder.feed(b"\n\n") == [msg("ax")]


def test_close_discards_the_partial_event_and_keeps_id_and_retry() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 7\nretry: 100\ndata: a\n\nid: 8\nretry: 200\ndata: half")
    assert decoder.close() == []
    # The unterminated event's retry line took effect, its id did not (no blank line).
    assert (decoder.last_event_id, decoder.retry) == ("7", 200)
    # A new stream: a BOM is stripped again, nothing of the old event remains, and
    # the id carries over as browsers do after a reconnection.
    assert decoder.feed(BOM + b"data: b\n\n") == [msg("b", id="7", retry=200)]


def test_close_ignores_an_unterminated_retry_line() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 100")
    decoder.close()
    assert decoder.retry is None


def test_close_forgets_the_partial_event_for_the_next_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.close() == []
    # Had "data: a" survived, this blank line would dispatch it.
    assert decoder.feed(b"\ndata: b\n\n") == [msg("b")]


# Oversized events.


def test_max_event_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEDecoder(max_event_size=0)
    assert SSEDecoder().max_event_size == DEFAULT_MAX_EVENT_SIZE == 16 * 1024 * 1024


def test_event_size_counts_its_lines_and_line_breaks() -> None:
    # "data: abc\n" is 10 bytes; "data: x\nid: 1\n" is 14.
    assert decode(b"data: abc\n\n", max_event_size=10) == [msg("abc")]
    assert decode(b"data: abcd\n\n", max_event_size=10) == []
    assert decode(b"data: x\nid: 1\n\n", max_event_size=14) == [msg("x", id="1")]
    assert decode(b"data: x\nid: 12\n\n", max_event_size=14) == []
    # Comments count too (":c\ndata: a\n" is 11 bytes); the blank lines around do not.
    assert decode(b"\n\n:c\ndata: a\n\n\n", max_event_size=11) == [msg("a")]
    assert decode(b":cc\ndata: a\n\n", max_event_size=11) == []


def test_oversized_event_is_reported_and_its_neighbours_kept() -> None:
    decoder = SSEDecoder(max_event_size=20)
    body = b"data: before\n\ndata: " + b"x" * 50 + b"\ndata: y\n\ndata: after\n\n"
    assert decoder.feed(body) == [msg("before"), msg("after")]
    [error] = decoder.take_errors()
    assert isinstance(error, EventTooLargeError)
    assert isinstance(error, FlowithError)
    assert error.limit == 20
    assert error.size > 20
    assert "20" in str(error)
    assert decoder.take_errors() == []
    assert decoder.dropped == []
    # Its keyword-only arguments made pickle and copy raise TypeError.
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert (type(again), str(again), again.size, again.limit) == (
            EventTooLargeError,
            str(error),
            error.size,
            20,
        )


def test_oversized_event_across_chunks() -> None:
    body = b"data: before\n\nid: 1\ndata: " + b"x" * 100 + b"\n\ndata: after\n\n"
    for size in [1, 3, 7, 16, 64]:
        decoder = SSEDecoder(max_event_size=32)
        events = feed_all(decoder, [body[i : i + size] for i in range(0, len(body), size)])
        assert events == [msg("before"), msg("after")], size
        assert len(decoder.dropped) == 1
        # A dropped event has no effect at all, its id line included.
        assert decoder.last_event_id == ""


def test_huge_line_without_line_break_is_not_buffered() -> None:
    limit = 64 * 1024
    decoder = SSEDecoder(max_event_size=limit)
    assert decoder.feed(b"data: ok\n\ndata: ") == [msg("ok")]
    chunk = b"x" * 1000
    for _ in range(20 * 1024):  # 20 MiB without a line break
        assert decoder.feed(chunk) == []
        assert decoder.buffered_bytes <= limit
    assert len(decoder.dropped) == 1
    assert decoder.feed(b"\ndata: still skipped\n") == []
    assert decoder.feed(b"\ndata: recovered\n\n") == [msg("recovered")]
    assert len(decoder.take_errors()) == 1


def test_long_event_growing_past_the_limit_is_dropped_while_it_streams() -> None:
    # Past 64 KiB the decoder only checks the limit once an event may exceed it.
    limit = 1024 * 1024
    decoder = SSEDecoder(max_event_size=limit)
    assert decoder.feed(b"data: ") == []
    for _ in range(2 * 1024):  # 2 MiB in 1 KiB chunks
        assert decoder.feed(b"y" * 1024) == []
        assert decoder.buffered_bytes <= limit + 1024
    [error] = decoder.take_errors()
    assert error.size > limit
    assert decoder.feed(b"\n\ndata: next\n\n") == [msg("next")]


def test_long_events_back_to_back_in_small_chunks() -> None:
    # Each long event ends in _feed_large(), which must re-arm the checks for the next.
    value = "é" * 150_000
    body = (f"data: {value}\n\n" * 3).encode() + b"data: " + b"z" * 5000 + b"\n\n"
    decoder = SSEDecoder(max_event_size=400_000)
    events = feed_all(decoder, [body[i : i + 1000] for i in range(0, len(body), 1000)])
    assert events == [msg(value)] * 3 + [msg("z" * 5000)]
    assert decoder.dropped == []


def test_many_lines_of_one_event_are_bounded_too() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    for _ in range(1000):
        decoder.feed(b"data: 0123456789\n")
        assert decoder.buffered_bytes <= 1000
    assert decoder.feed(b"\ndata: next\n\n") == [msg("next")]
    assert len(decoder.dropped) == 1


def test_long_event_crossing_the_limit_in_its_last_chunk() -> None:
    limit = 100_000
    body = b"data: before\n\ndata: " + b"x" * (limit - 10) + b"yyyyyyyyyyyy\n\ndata: after\n\n"
    decoder = SSEDecoder(max_event_size=limit)
    assert decoder.feed(body[:80_000]) == [msg("before")]  # an event too long to keep as bytes
    assert decoder.buffered_bytes <= limit
    assert decoder.feed(body[80_000:]) == [msg("after")]
    [error] = decoder.take_errors()
    assert error.size == len(b"data: ") + limit - 10 + 12 + 1  # its line and line break


def test_errors_accumulate_until_taken() -> None:
    decoder = SSEDecoder(max_event_size=8)
    events = decoder.feed(b"data: 123456789\n\ndata: a\n\ndata: 123456789\n\n")
    assert events == [msg("a")]
    assert [error.limit for error in decoder.dropped] == [8, 8]
    assert len(decoder.take_errors()) == 2


# Long events, gathered across many chunks and decoded in place.


@pytest.mark.parametrize("unit", ["0123456789abcdef", "ünïcödé 😀 €", "x\ud7ff"])
def test_long_event_across_chunks(unit: str) -> None:
    value = unit * 20_000
    body = f"id: 1\nevent: big\ndata: {value}\ndata\ndata:{value}\n\ndata: after\n\n".encode()
    expected = [msg(f"{value}\n\n{value}", "big", "1"), msg("after", id="1")]
    for size in [4096, 4099]:
        decoder = SSEDecoder()
        assert (
            feed_all(decoder, [body[i : i + size] for i in range(0, len(body), size)]) == expected
        )
    assert feed_all(SSEDecoder(), [body]) == expected


def test_long_event_with_invalid_utf8_across_decoding_steps() -> None:
    value = (b"\xe2\x82" + b"a" * 1000 + b"\xf0\x9f\x98") * 200 + b"\xff"
    body = b"data: " + value + b"\n\n"
    expected = [msg(value.decode("utf-8", "replace"))]
    chunks = [body[i : i + 777] for i in range(0, len(body), 777)]
    assert feed_all(SSEDecoder(), chunks) == expected


def peak_while_decoding(chunks: Sequence[bytes]) -> tuple[list[ServerSentEvent], int]:
    """The events of ``chunks`` and the peak of memory allocated to decode them."""
    decoder = SSEDecoder()
    tracemalloc.start()
    try:
        events = feed_all(decoder, chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return events, peak


def test_a_long_event_in_chunks_is_held_as_text_not_bytes() -> None:
    # Its blocks are decoded as they fill: the peak is its text (one byte per
    # character here, 8 characters in 12 bytes) and the join of its pieces, not
    # its bytes joined, then decoded (2.1 times the bytes when they were).
    value = ("ünïcödé " * 300_000).encode()  # about 3.4 MiB
    body = b"data: " + value + b"\n\n"
    events, peak = peak_while_decoding([body[i : i + 4096] for i in range(0, len(body), 4096)])
    assert events == [msg(value.decode())]
    assert peak < 1.5 * len(value)


@pytest.mark.parametrize(
    ("unit", "bound"),
    [("ünïcödé ", 1.5), ("漢字😀 ", 3.2)],  # about 1.34 and 2.9: the text, and its join
)
def test_a_long_event_fed_whole_is_decoded_in_steps(unit: str, bound: float) -> None:
    # Decoded in one go, four-byte text held its bytes, drafts and copies: six times
    # the bytes for CJK and emoji, twice for Latin-1.
    value = (unit * (3_000_000 // len(unit.encode()))).encode()
    events, peak = peak_while_decoding([b"data: " + value + b"\n\ndata: next\n\n"])
    assert events == [msg(value.decode()), msg("next")]
    assert peak < bound * len(value)


@pytest.mark.parametrize("line", [b"x\n", b"event: a\n", b"id: 12\n", b"retry: 1\n"])
@pytest.mark.parametrize("chunk_size", [64 * 1024, None])
def test_a_long_run_of_other_fields_is_not_held(line: bytes, chunk_size: int | None) -> None:
    # Every field of a long event was kept until it ended: these took 13 to 32 times
    # its size. Only the last value that takes effect of each name counts.
    body = line * (512 * 1024 // len(line)) + b"data: d\n\n"
    chunks = (
        [body]
        if chunk_size is None
        else [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    )
    events, peak = peak_while_decoding(chunks)
    assert [event.data for event in events] == ["d"]
    assert peak < 4 * 64 * 1024  # a few blocks of 64 KiB, whatever the event's size


@pytest.mark.parametrize("split", range(8))
def test_a_long_event_whose_data_line_starts_across_a_block(split: int) -> None:
    # A block is read when the bytes held pass 64 KiB: here its last bytes are the
    # first ``split`` of "data: ", so the line is only known for one in the next block.
    comment = b":" + b"c" * (65 * 1024) + b"\n"
    value = "é" * 100_000
    body = comment + f"data: {value}\nid: 9\n\ndata: after\n\n".encode()
    first = len(comment) + split
    chunks = [body[:first], *(body[i : i + 4096] for i in range(first, len(body), 4096))]
    assert feed_all(SSEDecoder(), chunks) == [msg(value, id="9"), msg("after", id="9")]


def test_many_data_prefixes_on_one_line_take_linear_time() -> None:
    # A valid two-line event whose first line repeats "data: ": a search for runs of
    # one-line data events that retried at each of them would take minutes here.
    body = b"data: " + b"data: " * 100_000 + b"\nid: 7\n\n"
    started = time.perf_counter()
    [event] = SSEDecoder().feed(body)
    assert time.perf_counter() - started < 5.0
    assert event == msg("data: " * 100_000, id="7")


def test_long_event_in_small_chunks_takes_linear_time() -> None:
    # Growing an immutable buffer chunk by chunk would copy about 32 GB here.
    body = b"data: " + b"x" * (4 * 1024 * 1024) + b"\n\n"
    chunks = [body[i : i + 256] for i in range(0, len(body), 256)]
    started = time.perf_counter()
    [event] = feed_all(SSEDecoder(), chunks)
    assert time.perf_counter() - started < 5.0
    assert len(event.data) == 4 * 1024 * 1024


def test_closing_on_a_long_event_copies_it_only_to_read_a_retry_line() -> None:
    # close() joined the blocks of the event arriving (up to max_event_size) to look
    # for a retry: line in it; it now looks in each block, and across their ends.
    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    for _ in range(160):  # 10 MiB in 64 KiB chunks
        decoder.feed(b"x" * 65536)
    tracemalloc.start()
    try:
        decoder.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    decoder.feed(b"retry: 1234\ndata: ")
    for _ in range(3):
        decoder.feed(b"x" * 65536)
    decoder.feed(b"\nret")  # cut across the blocks' ends
    decoder.feed(b"ry: 2\n")
    decoder.close()
    assert decoder.retry == 2
