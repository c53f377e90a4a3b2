"""Flowith event parsing (protocol.md 4.1-4.3) and routing by node."""

from __future__ import annotations

import gc
import json
import sys
import weakref
from typing import Any

import pytest

from flowith_proto.demux import Demultiplexer, StreamEnded
from flowith_proto.errors import APIError, ResponseDecodeError, error_from_response
from flowith_proto.events import (
    Chunks,
    Complete,
    Connected,
    Heartbeat,
    MalformedEvent,
    NodeFailed,
    UnknownEvent,
    WorkflowComplete,
    decode_event,
    parse_event,
    unwrap,
)
from flowith_proto.request import Response
from flowith_proto.stream import StreamRouter

NODE = "99999999-8888-4777-8666-555555555555"
OTHER = "12345678-1234-4234-8234-123456789012"
THIRD = "abcdefab-cdef-4abc-8def-abcdefabcdef"
CONV = "11111111-2222-4333-8444-555555555555"


def test_chunks_event_in_its_envelope() -> None:
    event = decode_event(
        json.dumps(
            {
                "data": {
                    "type": "chunks",
                    "nodeId": NODE,
                    "convId": CONV,
                    "seq": 3,
                    "timestamp": 1779127465201,
                    "chunks": ["Hel", "lo"],
                },
                "id": "17",
            }
        )
    )
    assert event == Chunks(NODE, CONV, 3, ("Hel", "lo"), {})
    assert isinstance(event, Chunks)
    assert event.raw["timestamp"] == 1779127465201


def test_complete_event() -> None:
    event = parse_event(
        {
            "data": {
                "type": "complete",
                "nodeId": NODE,
                "convId": CONV,
                "result": "<think>r</think>text",
                "reasoning": "summary",
            },
            "id": "18",
        }
    )
    assert event == Complete(NODE, CONV, "<think>r</think>text", "summary", "", {})


def test_heartbeat_and_connected() -> None:
    assert parse_event({"heartbeat": 1779127465201}) == Heartbeat(1779127465201, {})
    assert parse_event({"data": {"heartbeat": 5}}) == Heartbeat(5, {})
    assert parse_event({"status": "connected"}) == Connected({})


def test_workflow_complete_success_on_the_bare_sse_stream() -> None:
    event = parse_event(
        {
            "type": "workflow_complete",
            "taskType": "image",
            "nodeId": NODE,
            "convId": CONV,
            "status": "completed",
            "result": "https://cdn/x.png",
            "error": "",
            "error_type": "",
            "isPaid": True,
            "timestamp": 1,
            "sender": "worker",
        }
    )
    assert event == WorkflowComplete(NODE, CONV, "image", "https://cdn/x.png", {})


@pytest.mark.parametrize("result", [{"url": "https://cdn/x.png"}, ["https://cdn/x.png"], 5, True])
def test_a_completed_job_whose_result_is_not_text_is_malformed(result: object) -> None:
    # It passed for a success with no URL: generate_image returned no image, no error.
    event = parse_event(
        {"type": "workflow_complete", "nodeId": NODE, "status": "completed", "result": result}
    )
    assert isinstance(event, MalformedEvent)
    assert (event.node_id, event.reason) == (NODE, "'result' of a terminal event is not text")


@pytest.mark.parametrize("kind", ["complete", "workflow_complete"])
def test_an_object_beside_the_result_text_changes_nothing(kind: str) -> None:
    # The generic path still called the whole event malformed for an object in a
    # field the result is not read from.
    event = parse_event(
        {"type": kind, "nodeId": NODE, "status": "completed", "result": "x", "imageUrl": ["a"]}
    )
    assert not isinstance(event, MalformedEvent)


def test_a_completed_job_is_judged_by_its_result_alone() -> None:
    # An object in a field the job's URL does not come from made it malformed.
    event = parse_event(
        {
            "type": "workflow_complete",
            "nodeId": NODE,
            "status": "completed",
            "result": "https://cdn/x.png",
            "imageUrl": ["a"],
            "nodeData": {"value": {"x": 1}},
        }
    )
    assert isinstance(event, WorkflowComplete)
    assert event.result == "https://cdn/x.png"


@pytest.mark.parametrize("fields", [{"error_type": "unknown"}, {"error": "none"}])
def test_a_completed_job_with_a_result_succeeds_whatever_its_error_fields(
    fields: dict[str, Any],
) -> None:
    """protocol.md 4.3: success is "completed" with a result; error fields are read on
    failure only. A finished image's URL was thrown away as a failure."""
    event = parse_event(
        {
            "type": "workflow_complete",
            "nodeId": NODE,
            "status": "completed",
            "result": "https://cdn/x.png",
            **fields,
        }
    )
    assert isinstance(event, WorkflowComplete)
    assert event.result == "https://cdn/x.png"


@pytest.mark.parametrize(
    ("payload", "status", "error", "error_type"),
    [
        (
            {
                "type": "workflow_complete",
                "nodeId": NODE,
                "status": "failed",
                "error": "nsfw",
                "error_type": "content_policy",
            },
            "failed",
            "nsfw",
            "content_policy",
        ),
        (
            {"type": "workflow_complete", "nodeId": NODE, "status": "completed", "result": ""},
            "completed",
            "no result",
            "unknown",
        ),
        ({"data": {"nodeId": NODE, "status": "error"}}, "error", "", ""),
        ({"data": {"type": "complete", "nodeId": NODE, "error": "quota"}}, "", "quota", ""),
        ({"data": {"type": "status", "nodeId": NODE, "error_type": "timeout"}}, "", "", "timeout"),
    ],
)
def test_failures(payload: dict[str, Any], status: str, error: str, error_type: str) -> None:
    event = parse_event(payload)
    assert isinstance(event, NodeFailed)
    assert (event.node_id, event.status, event.error, event.error_type) == (
        NODE,
        status,
        error,
        error_type,
    )


def done_with(**fields: Any) -> dict[str, Any]:
    """A terminal status event of NODE, in its envelope."""
    return {"data": {"nodeId": NODE, "status": "done", **fields}}


@pytest.mark.parametrize(
    ("payload", "result"),
    [
        ({"data": {"type": "result", "nodeId": NODE, "result": "r"}}, "r"),
        ({"data": {"nodeId": NODE, "status": "done", "nodeData": {"value": "v"}}}, "v"),
        # nodeData or data: an empty or null nodeData falls back to data
        (done_with(nodeData=None, data={"value": "d"}), "d"),
        (done_with(nodeData={}, data={"value": "d"}), "d"),
        # an error JSON holds as false or empty is no error
        (done_with(result="R", error=False, error_type=""), "R"),
        (done_with(result="R", error=0, error_type=None), "R"),
        ({"data": {"nodeId": NODE, "resultUrl": "https://u"}}, "https://u"),
        ({"data": {"type": "complete", "nodeId": NODE, "imageUrl": "https://i"}}, "https://i"),
    ],
)
def test_other_terminal_forms(payload: dict[str, Any], result: str) -> None:
    event = parse_event(payload)
    assert isinstance(event, Complete)
    assert event.result == result


def test_envelope_is_unwrapped_only_when_present() -> None:
    bare = {"type": "complete", "nodeId": NODE, "data": {"value": "x"}}
    assert unwrap(bare) is bare
    assert unwrap({"data": {"a": 1}, "id": "1"}) == {"a": 1}
    assert unwrap({"data": "text"}) == {"data": "text"}


@pytest.mark.parametrize(
    ("data", "node_id"),
    [
        ("not json", ""),
        ("[1, 2]", ""),
        ("null", ""),
        (json.dumps({"data": {"type": "chunks", "nodeId": NODE, "chunks": [1, 2]}}), NODE),
        (json.dumps({"data": {"type": "chunks", "nodeId": NODE, "chunks": {"a": 1}}}), NODE),
    ],
)
def test_malformed_payloads_are_kept_typed(data: str, node_id: str) -> None:
    event = decode_event(data)
    assert isinstance(event, MalformedEvent)
    assert event.node_id == node_id


def test_a_single_string_chunk_is_accepted() -> None:
    event = parse_event({"data": {"type": "chunks", "nodeId": NODE, "chunks": "solo"}})
    assert isinstance(event, Chunks)
    assert event.chunks == ("solo",)


def test_unknown_types_are_kept_raw() -> None:
    event = parse_event({"data": {"type": "title_update", "nodeId": NODE, "title": "T"}})
    assert event == UnknownEvent(NODE, {})
    assert isinstance(event, UnknownEvent)
    assert event.raw["title"] == "T"
    assert parse_event({"something": "else"}) == UnknownEvent("", {})


def test_node_id_snake_case_is_accepted() -> None:
    event = parse_event({"data": {"type": "chunks", "node_id": NODE, "chunks": ["x"]}})
    assert isinstance(event, Chunks)
    assert event.node_id == NODE


def chunk(node: str, text: str) -> Chunks:
    event = parse_event({"data": {"type": "chunks", "nodeId": node, "chunks": [text]}})
    assert isinstance(event, Chunks)
    return event


def test_demux_routes_by_node_and_buffers_until_read() -> None:
    demux = Demultiplexer()
    demux.subscribe(NODE)
    assert demux.route(chunk(NODE, "a"))
    assert not demux.route(chunk(OTHER, "x"))  # nobody waits on it: dropped
    assert demux.route(chunk(NODE, "b"))
    assert not demux.route(Heartbeat(1, {}))
    first, second = demux.pop(NODE), demux.pop(NODE)
    assert isinstance(first, Chunks)
    assert isinstance(second, Chunks)
    assert (first.chunks, second.chunks) == (("a",), ("b",))
    assert demux.pop(NODE) is None


def test_demux_end_all_comes_after_buffered_events() -> None:
    demux = Demultiplexer()
    demux.subscribe(NODE)
    demux.subscribe(OTHER)
    demux.route(chunk(NODE, "a"))
    demux.end_all("eof")
    assert isinstance(demux.pop(NODE), Chunks)
    assert demux.pop(NODE) == StreamEnded("eof")
    assert demux.pop(OTHER) == StreamEnded("eof")


def test_demux_unsubscribe_forgets_and_alias_routes() -> None:
    demux = Demultiplexer()
    demux.subscribe(NODE)
    demux.alias(OTHER, NODE)
    assert demux.route(chunk(OTHER, "via alias"))
    assert demux.pending(NODE)
    demux.unsubscribe(NODE)
    assert not demux.is_subscribed(NODE)
    assert not demux.route(chunk(OTHER, "gone"))
    assert demux.subscriptions == 0


def test_events_that_arrive_just_before_an_alias_are_not_lost() -> None:
    demux = Demultiplexer()
    demux.subscribe(NODE)
    assert not demux.route(chunk(OTHER, "early"))  # the server's id is not known yet
    demux.alias(OTHER, NODE)
    early = demux.pop(NODE)
    assert isinstance(early, Chunks)
    assert early.chunks == ("early",)
    assert demux.pop(NODE) is None


def test_unrouted_events_are_kept_only_while_a_generation_is_under_way() -> None:
    # They were kept (256 of them, whatever their size) until newer ones pushed
    # them out: the late answers of generations that timed out stayed in memory
    # while the client idled, and a later generation could be handed them.
    demux = Demultiplexer()
    late = chunk(OTHER, "x" * 100_000)
    still_there = weakref.ref(late)
    demux.subscribe(NODE)
    assert not demux.route(late)  # perhaps the server's id for NODE's job: kept
    del late
    assert still_there() is not None
    demux.unsubscribe(NODE)  # nobody is left to alias it
    gc.collect()
    assert still_there() is None
    assert not demux.route(chunk(OTHER, "later"))  # nobody waits: not kept either
    demux.subscribe(THIRD)
    demux.alias(OTHER, THIRD)
    assert demux.pop(THIRD) is None


DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit when decoded


def test_json_nested_too_deeply_is_a_malformed_event_not_a_crash() -> None:
    event = decode_event(DEEP)
    assert isinstance(event, MalformedEvent)
    assert event.reason == "JSON nested too deeply"


def test_a_deep_frame_does_not_cost_the_events_after_it() -> None:
    router = StreamRouter()
    router.demux.subscribe(NODE)
    good = json.dumps({"data": {"type": "complete", "nodeId": NODE, "result": "kept"}})
    woken = router.feed(f"data: {DEEP}\n\ndata: {good}\n\n".encode())
    assert woken == {NODE}
    delivered = router.demux.pop(NODE)
    assert isinstance(delivered, Complete)
    assert delivered.result == "kept"


def test_a_deep_answer_is_a_typed_decode_error() -> None:
    with pytest.raises(ResponseDecodeError):
        Response(200, (), DEEP.encode()).json()
    error = error_from_response(500, (), DEEP.encode())
    assert isinstance(error, APIError)
    assert error.body == DEEP


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "complete", "result": 42},
        {"type": "complete", "result": {"text": "x"}},
        {"type": "complete", "resultUrl": ["https://a"]},
        {"status": "done", "nodeData": {"value": 7}},
    ],
)
def test_a_terminal_event_whose_result_is_not_text_is_malformed_not_empty(
    fields: dict[str, Any],
) -> None:
    # Read as "", it ended a generation with no text and no error.
    event = parse_event({"nodeId": NODE, **fields})
    assert isinstance(event, MalformedEvent)
    assert event.node_id == NODE
    assert "is not text" in event.reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"nodeId": NODE, "type": ["x"]}, "'type' is not a string"),
        ({"nodeId": NODE, "type": {"kind": "chunks"}}, "'type' is not a string"),
        ({"nodeId": 123, "type": "chunks", "chunks": ["a"]}, "'nodeId' is not a string"),
        ({"nodeId": ["n"], "type": "complete"}, "'nodeId' is not a string"),
    ],
)
def test_fields_of_the_wrong_type_make_a_malformed_event(
    fields: dict[str, Any], reason: str
) -> None:
    # A list as 'type' raised TypeError (unhashable) out of the decoder, and a number as
    # 'nodeId' passed for an event of no node, dropped without a word.
    event = decode_event(json.dumps(fields))
    assert isinstance(event, MalformedEvent)
    assert event.reason.startswith(reason)


def test_a_null_node_id_defers_to_node_id() -> None:
    event = decode_event(json.dumps({"nodeId": None, "node_id": NODE, "type": "chunks",
                                     "chunks": ["a"]}))
    assert isinstance(event, Chunks)
    assert event.node_id == NODE


def test_a_frame_of_the_wrong_shape_costs_no_event_after_it() -> None:
    router = StreamRouter()
    router.demux.subscribe(NODE)
    frames = [
        {"nodeId": NODE, "type": "chunks", "chunks": ["a"]},
        {"nodeId": "someone-else", "type": ["x"]},
        {"nodeId": NODE, "type": "chunks", "chunks": ["b"]},
    ]
    router.feed(b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames))
    first, second = router.demux.pop(NODE), router.demux.pop(NODE)
    assert isinstance(first, Chunks)
    assert isinstance(second, Chunks)
    assert [first.chunks, second.chunks] == [("a",), ("b",)]


def test_an_answer_nested_deeper_than_python_recurses_is_still_a_decode_error() -> None:
    # Legal JSON (json.loads takes it) that the error's redaction could not walk: it
    # raised RecursionError instead of ResponseDecodeError.
    from flowith_proto.convert import structure_row
    from flowith_proto.models import ConversationRecord

    # Deeper than Python recurses, built by hand: how deep json.loads itself goes
    # differs between versions (3.12 moved its limit to the C stack).
    value: list[object] = []
    for _ in range(sys.getrecursionlimit() + 100):
        value = [value]
    deep = {"id": value}
    with pytest.raises(ResponseDecodeError) as caught:
        structure_row(deep, ConversationRecord)
    assert caught.value.body == "[a JSON value nested too deeply to keep]"
