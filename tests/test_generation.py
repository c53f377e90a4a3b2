"""Text generation operations, driven synchronously by scripted effects."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from flowith_proto.auth import Credentials
from flowith_proto.cassette import CassetteMismatch
from flowith_proto.demux import StreamEnded
from flowith_proto.effects import NewId, NextEvent, Now, Send, Sleep, Subscribe, WallClock
from flowith_proto.endpoints import Position
from flowith_proto.errors import (
    APIError,
    GenerationError,
    NotFoundError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
)
from flowith_proto.events import Chunks, Complete, NodeFailed, parse_event
from flowith_proto.generation import (
    MAX_UNREADABLE,
    Conversation,
    NodeDone,
    NodeFailedState,
    NodePending,
    generate,
    node_state,
    send,
    turn_layout,
)
from flowith_proto.models import GenerationOutput
from flowith_proto.request import Request, Response
from flowith_proto.retry import RetryPolicy
from flowith_proto.state import ClientState
from tests.scripted import Script, json_response, uuid_n

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
CONV = "11111111-2222-4333-8444-555555555555"
USER_NODE = uuid_n(1)
AI_NODE = uuid_n(2)


def state(**overrides: Any) -> ClientState:
    return ClientState(credentials=Credentials(access_token=TOKEN, user_id=USER), **overrides)


def script_turn(
    script: Script, *, create_conv: bool = True, start: Response | None = None
) -> None:
    if create_conv:
        script.on(
            "POST", "/rest/v1/conversation", json_response(201, json.dumps([{"id": CONV}]).encode())
        )
    script.on("POST", "/rest/v1/flow_node", json_response(201))
    script.on(
        "POST",
        "/completion/async",
        start or json_response(200, b'{"status":"processing"}'),
    )


def chunks(node: str, *parts: str, seq: int | None = None) -> Chunks:
    event = parse_event(
        {
            "data": {
                "type": "chunks",
                "nodeId": node,
                "convId": CONV,
                **({} if seq is None else {"seq": seq}),
                "chunks": list(parts),
            }
        }
    )
    assert isinstance(event, Chunks)
    return event


def complete(node: str, result: str, reasoning: str = "") -> Complete:
    event = parse_event(
        {
            "data": {
                "type": "complete",
                "nodeId": node,
                "convId": CONV,
                "result": result,
                "reasoning": reasoning,
            }
        }
    )
    assert isinstance(event, Complete)
    return event


def poll_rows(status: str, value: str, **extra: Any) -> bytes:
    return json.dumps([{"data": {"status": status, "value": value, **extra}, "type": "2"}]).encode()


def test_subscribes_before_posting_the_completion() -> None:
    script = Script()
    script_turn(script)
    script.feed(AI_NODE, [complete(AI_NODE, "Warsaw")])
    result = script.run(generate(state(), "What is the capital of Poland?"))
    assert result.text == "Warsaw"
    kinds = [
        type(e).__name__
        if not isinstance(e, Send)
        else f"Send {e.request.url.split('?')[0].rsplit('/', 1)[1]}"
        for e in script.effects
    ]
    assert kinds == [
        "Now",
        "Send conversation",
        "WallClock",
        "NewId",
        "NewId",
        "Send flow_node",
        "Send flow_node",
        "Subscribe",
        "Send async",
        "Now",
        "NextEvent",
    ]
    subscribe = next(e for e in script.effects if isinstance(e, Subscribe))
    assert subscribe.node_id == AI_NODE


def test_rows_and_completion_carry_the_turn() -> None:
    script = Script()
    script_turn(script)
    script.feed(AI_NODE, [complete(AI_NODE, "Warsaw")])
    script.run(generate(state(), "Capital?", model="deepseek-r1"))
    _, user_node, ai_node, completion = script.requests
    assert user_node.json() == [
        {
            "id": USER_NODE,
            "position": {"x": 0, "y": 130},
            "type": "1",
            "conv_id": CONV,
            "p_id": CONV,
            "c_ids": [AI_NODE],
            "data": {"timestamp": "1779127457", "value": "Capital?"},
        }
    ]
    assert ai_node.json() == [
        {
            "id": AI_NODE,
            "conv_id": CONV,
            "type": "2",
            "position": {"x": 0, "y": 340},
            "data": {
                "title": "AI",
                "value": "",
                "mode": "General",
                "timestamp": "1779127457",
                "isImage": False,
                "model": "deepseek-r1",
                "status": "init",
            },
            "p_id": USER_NODE,
            "c_ids": [],
        }
    ]
    assert completion.json() == {
        "model": "deepseek-r1",
        "messages": [{"role": "user", "content": "Capital?"}],
        "nodeId": AI_NODE,
        "convId": CONV,
        "stream": True,
    }


def test_existing_conversation_is_not_recreated_and_images_become_parts() -> None:
    script = Script()
    script_turn(script, create_conv=False)
    script.feed(AI_NODE, [complete(AI_NODE, "a cat")])
    result = script.run(
        generate(state(), "What is this?", conv_id=CONV, images=["https://x/cat.png"])
    )
    assert result.conv_id == CONV
    assert [r.url.split("?")[0].rsplit("/", 1)[1] for r in script.requests] == [
        "flow_node",
        "flow_node",
        "async",
    ]
    assert script.requests[-1].json()["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
            ],
        }
    ]


def test_terminal_event_text_wins_and_think_is_split() -> None:
    script = Script()
    script_turn(script)
    script.feed(
        AI_NODE,
        [
            chunks(AI_NODE, "<thi", "nk>pondering"),
            chunks(AI_NODE, "</th", "ink>Hello"),
            complete(AI_NODE, "<think>pondering</think>Hello, world!\n"),
        ],
    )
    result = script.run(generate(state(), "hi"))
    assert (result.text, result.reasoning) == ("Hello, world!", "pondering")
    assert (result.text_delta, result.reasoning_delta) == ("", "")
    assert result.metadata["raw_text"] == "<think>pondering</think>Hello, world!\n"
    assert result.metadata["raw_reasoning"] == "pondering"  # the old client's key, kept
    assert str(result) == "Hello, world!"


@pytest.mark.parametrize(
    "terminal",
    [
        {"type": "complete", "nodeId": AI_NODE},
        {"nodeId": AI_NODE, "status": "completed"},
    ],
)
def test_a_terminal_event_without_text_takes_the_rows_text(terminal: dict[str, Any]) -> None:
    """Defect D3 again: the chunks heard were only the start of the answer."""
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Hello world")))
    script.feed(AI_NODE, [chunks(AI_NODE, "Hel"), parse_event({"data": terminal})])
    result = script.run(generate(state(), "hi", stream=True))
    steps = [*script.emitted, result]
    assert result.text == "Hello world"
    assert "".join(step.text_delta for step in steps) == "Hello world"


@pytest.mark.parametrize(
    "row", [json_response(200, poll_rows("loading", "")), json_response(503, b"{}")]
)
def test_a_terminal_event_without_text_keeps_the_chunks_when_the_row_has_nothing(
    row: Any,
) -> None:
    script = Script()
    script_turn(script)
    for _ in range(4):  # the 503 is retried
        script.on("GET", "/rest/v1/flow_node", row)
    script.feed(AI_NODE, [chunks(AI_NODE, "Hello"), complete(AI_NODE, "")])
    assert script.run(generate(state(), "hi")).text == "Hello"


@pytest.mark.parametrize(
    "cut",
    [
        ["Hi \ud83d", "\ude00 there", " friend"],  # between two events
        ["Hi \ud83d", "\ude00", "\ud83d", "\ude00 there friend"],  # twice, alone
    ],
)
def test_a_character_a_server_cut_in_two_is_streamed_whole(cut: list[str]) -> None:
    """A JavaScript server cutting its text by UTF-16 code units sends an emoji's two
    halves in two events, each a lone surrogate once decoded: the deltas made no
    text (print() and UTF-8 refused them), and the end of the answer was lost
    because the final text no longer began with what was shown."""
    emoji = "\U0001f600" * (len(cut) - 2)
    final = f"Hi {emoji} there friend!"
    script = Script()
    script_turn(script)
    script.feed(
        AI_NODE,
        [*(chunks(AI_NODE, part, seq=n) for n, part in enumerate(cut)), complete(AI_NODE, final)],
    )
    result = script.run(generate(state(), "hi", stream=True))
    deltas = [step.text_delta for step in [*script.emitted, result]]
    assert "".join(deltas) == result.text == final
    for delta in deltas:
        delta.encode("utf-8")  # each one whole text


def test_the_text_heard_joins_a_character_cut_in_two() -> None:
    """With no final text, the answer is what the chunks brought."""
    script = Script()
    script_turn(script)
    for _ in range(4):  # the 503 is retried
        script.on("GET", "/rest/v1/flow_node", json_response(503, b"{}"))
    script.feed(
        AI_NODE,
        [
            chunks(AI_NODE, "Hi \ud83d", seq=0),
            chunks(AI_NODE, "\ude00!", seq=1),
            complete(AI_NODE, ""),
        ],
    )
    assert script.run(generate(state(), "hi")).text == "Hi \U0001f600!"


def test_streaming_never_repeats_and_ends_with_the_unseen_rest() -> None:
    script = Script()
    script_turn(script)
    script.feed(
        AI_NODE,
        [
            chunks(AI_NODE, "<thi"),
            chunks(AI_NODE, "nk>why "),
            chunks(AI_NODE, "not</think>Hel"),
            chunks(AI_NODE, "lo"),
            complete(AI_NODE, "<think>why not</think>Hello there"),
        ],
    )
    final = script.run(generate(state(), "hi", stream=True))
    steps: list[GenerationOutput] = [*script.emitted, final]
    assert "".join(s.text_delta for s in steps) == "Hello there"
    assert "".join(s.reasoning_delta for s in steps) == "why not"
    assert [s.text_delta for s in script.emitted] == ["", "Hel", "lo"]
    assert final.text_delta == " there"
    assert final.text == "Hello there"
    assert script.emitted[-1].text == "Hello"


def streamed(events: list[Any], final: str) -> tuple[list[str], str]:
    """The text deltas a streaming caller sees for ``events``, and the final text."""
    script = Script()
    script_turn(script)
    script.feed(AI_NODE, [*events, complete(AI_NODE, final)])
    result = script.run(generate(state(), "hi", stream=True))
    return [step.text_delta for step in [*script.emitted, result]], result.text


def test_chunks_heard_twice_are_shown_once() -> None:
    """A replay of chunks already seen (after a reconnection) repeated them."""
    parts = [(0, "Hel"), (0, "Hel"), (1, "lo"), (0, "Hel"), (1, "lo"), (2, " world")]
    deltas, text = streamed([chunks(AI_NODE, t, seq=n) for n, t in parts], "Hello world")
    assert deltas == ["Hel", "lo", " world", ""]
    assert text == "Hello world"


def test_a_chunk_overtaken_by_later_ones_is_not_shown_and_gaps_pass_at_once() -> None:
    """Deltas already sent cannot take a late chunk back in; holding chunks for
    a missing number would stall a stream whose seq has gaps by design."""
    parts = [(0, "Hel"), (2, "lo"), (1, "?"), (7, " wor"), (8, "ld")]
    deltas, text = streamed([chunks(AI_NODE, t, seq=n) for n, t in parts], "Hel?lo world")
    assert deltas == ["Hel", "lo", " wor", "ld", ""]  # the final text differs: not reconciled
    assert text == "Hel?lo world"


def test_a_late_chunk_is_kept_in_its_place_when_no_final_text_comes() -> None:
    script = Script()
    script_turn(script)
    for _ in range(3):  # the row cannot be read (a 503, retried)
        script.on("GET", "/rest/v1/flow_node", json_response(503, b"{}"))
    parts = [(0, "Hel"), (2, " world"), (1, "lo"), (1, "lo")]
    script.feed(AI_NODE, [*(chunks(AI_NODE, t, seq=n) for n, t in parts), complete(AI_NODE, "")])
    assert script.run(generate(state(), "hi")).text == "Hello world"


def test_a_terminal_event_without_text_keeps_its_separate_reasoning() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Hello")))
    script.feed(AI_NODE, [chunks(AI_NODE, "Hel"), complete(AI_NODE, "", reasoning="I reasoned")])
    result = script.run(generate(state(), "hi"))
    assert (result.text, result.reasoning) == ("Hello", "I reasoned")


def test_a_replay_lacking_the_row_read_is_not_taken_for_an_unreadable_row() -> None:
    """Every FlowithError counted as 'the row cannot be read': a replay that
    asked for a request the cassette lacks passed with a warning."""

    def lacking(request: Any) -> Response:
        raise CassetteMismatch("the recording holds no such request")

    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", lacking)
    script.feed(AI_NODE, [chunks(AI_NODE, "Hel"), complete(AI_NODE, "")])
    with pytest.raises(CassetteMismatch):
        script.run(generate(state(), "hi"))


def test_separate_reasoning_field_is_used_when_the_text_has_none() -> None:
    script = Script()
    script_turn(script)
    script.feed(AI_NODE, [complete(AI_NODE, "42", reasoning="Deep thought")])
    result = script.run(generate(state(), "answer?"))
    assert (result.text, result.reasoning) == ("42", "Deep thought")


def test_failure_event_raises_with_the_servers_reason() -> None:
    script = Script()
    script_turn(script)
    failed = parse_event(
        {
            "data": {
                "nodeId": AI_NODE,
                "status": "failed",
                "error": "model overloaded",
                "error_type": "provider_error",
            }
        }
    )
    assert isinstance(failed, NodeFailed)
    script.feed(AI_NODE, [chunks(AI_NODE, "partial"), failed])
    with pytest.raises(GenerationError) as info:
        script.run(generate(state(), "hi"))
    assert (info.value.status, info.value.error, info.value.error_type, info.value.node_id) == (
        "failed",
        "model overloaded",
        "provider_error",
        AI_NODE,
    )
    assert info.value.partial_output is not None
    assert info.value.partial_output.text == "partial"


@pytest.mark.parametrize(
    ("row_read", "error"),
    [
        # A gateway's page where the row should be.
        (Response(200, (("content-type", "text/html"),), b"<html>Bad gateway</html>"), "decode"),
        # The row never becomes final.
        (json_response(200, poll_rows("init", "")), "timeout"),
    ],
)
def test_a_generation_failing_after_text_came_keeps_that_text(row_read: Any, error: str) -> None:
    """The error carried nothing of the text already streamed: a generate() caller
    lost it (a generate_stream() caller had seen it only as deltas)."""
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", row_read)
    script.feed(
        AI_NODE,
        [
            chunks(AI_NODE, "<think>Poland's capital", seq=1),
            chunks(AI_NODE, "</think>The capital of Poland is War", seq=2),
            StreamEnded("dropped"),
        ],
    )
    expected = ResponseDecodeError if error == "decode" else TimeoutError
    with pytest.raises(expected) as info:
        script.run(generate(state(), "Capital?", timeout=10))
    partial = info.value.partial_output
    assert partial is not None
    assert (partial.text, partial.reasoning) == ("The capital of Poland is War", "Poland's capital")
    assert (partial.node_id, partial.conv_id) == (AI_NODE, CONV)
    copied = pickle.loads(pickle.dumps(info.value))
    assert copied.partial_output == partial


def test_a_generation_failing_before_any_text_has_no_partial_output() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("init", "")))
    script.feed(AI_NODE, [StreamEnded("dropped")])
    with pytest.raises(TimeoutError) as info:
        script.run(generate(state(), "Capital?", timeout=10))
    assert info.value.partial_output is None


@pytest.mark.parametrize(
    ("answer", "fails"),
    [
        ({"status": "error", "error": "insufficient credits"}, True),
        ({"status": "failed"}, True),
        ({"error": "model not allowed", "error_type": "permission"}, True),
        ({"status": "processing"}, False),
        ({"status": "processing", "error": None}, False),
        ("not an object", False),
    ],
)
def test_a_completion_start_answer_that_says_it_failed_fails_at_once(
    answer: Any, fails: bool
) -> None:
    script = Script()
    script_turn(script, start=json_response(200, json.dumps(answer).encode()))
    script.feed(AI_NODE, [complete(AI_NODE, "Warsaw")])
    if not fails:
        assert script.run(generate(state(), "Capital?")).text == "Warsaw"
        return
    with pytest.raises(GenerationError) as info:
        script.run(generate(state(), "Capital?"))
    assert info.value.node_id == AI_NODE
    assert not any(isinstance(e, NextEvent) for e in script.effects)


def test_stream_end_without_terminal_event_polls_at_once() -> None:
    script = Script()
    script_turn(script)
    script.on(
        "GET",
        "/rest/v1/flow_node",
        json_response(200, poll_rows("init", "")),
        json_response(200, poll_rows("done", "<think>r</think>Full answer")),
    )
    script.feed(AI_NODE, [StreamEnded("closed")])
    result = script.run(generate(state(), "hi"))
    assert (result.text, result.reasoning) == ("Full answer", "r")
    polls = [e for e in script.effects if isinstance(e, Send) and e.request.method == "GET"]
    assert len(polls) == 2
    first_poll = script.effects.index(polls[0])
    assert not any(isinstance(e, Sleep) for e in script.effects[:first_poll])
    sleeps = [e for e in script.effects if isinstance(e, Sleep)]
    assert [s.until for s in sleeps] == [1000.0 + 2.0]


def test_poll_fallback_after_deltas_sends_only_the_unseen_text() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Hello world")))
    script.feed(AI_NODE, [chunks(AI_NODE, "Hel"), chunks(AI_NODE, "lo"), StreamEnded("dropped")])
    final = script.run(generate(state(), "hi", stream=True))
    assert [s.text_delta for s in script.emitted] == ["Hel", "lo"]
    assert final.text_delta == " world"
    assert final.text == "Hello world"
    assert final.metadata["nodeData"]["status"] == "done"


def test_failed_row_raises_instead_of_returning_the_error_as_text() -> None:
    script = Script()
    script_turn(script)
    script.on(
        "GET", "/rest/v1/flow_node", json_response(200, poll_rows("failed", "Content blocked"))
    )
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(GenerationError, match="failed"):
        script.run(generate(state(), "hi"))


def test_silent_stream_reads_the_row_and_times_out_at_the_deadline() -> None:
    """A 7.5 s call checks the row every quarter of its time (not the 15 s
    stall_interval it would never reach), the last time before the deadline."""
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    with pytest.raises(TimeoutError):
        script.run(generate(state(), "hi", timeout=7.5))
    waits = [e.deadline for e in script.effects if isinstance(e, NextEvent)]
    assert waits == [1001.875, 1003.75, 1005.625, 1006.5625, 1007.5]
    reads = [e for e in script.effects if isinstance(e, Send) and e.request.method == "GET"]
    assert len(reads) == 4


def test_a_short_call_finds_the_finished_row_before_its_deadline() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Hello")))
    result = script.run(generate(state(stall_interval=15.0), "hi", timeout=3.0))
    assert result.text == "Hello"
    assert script.clock == 1001.5


def test_the_last_check_comes_before_a_deadline_the_interval_would_overshoot() -> None:
    """With 40 s and a 10 s interval the fourth check would fall on the
    deadline itself: it is made half an interval earlier."""
    script = Script()
    script_turn(script)
    for _ in range(3):
        script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Late")))
    result = script.run(generate(state(), "hi", timeout=40.0))
    assert result.text == "Late"
    assert script.clock == 1035.0


def test_events_without_text_do_not_postpone_the_row_check() -> None:
    """A server repeating a status event must not keep the row unread forever."""
    status = parse_event({"data": {"type": "status", "nodeId": AI_NODE, "status": "busy"}})
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Hello")))
    script.feed(AI_NODE, [status, status, status])
    result = script.run(generate(state(stall_interval=5.0), "hi", timeout=60))
    assert result.text == "Hello"
    waits = [e.deadline for e in script.effects if isinstance(e, NextEvent)]
    assert waits == [1005.0] * 4


def test_polling_stops_at_the_deadline() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(TimeoutError):
        script.run(generate(state(poll_interval=2.0), "hi", timeout=5.0))
    sleeps = [e.until for e in script.effects if isinstance(e, Sleep)]
    assert sleeps == [1002.0, 1004.0, 1005.0]
    assert all(
        isinstance(e, Send) and e.deadline == 1005.0 for e in script.effects if isinstance(e, Send)
    )


UNAVAILABLE = json_response(503, b'{"message": "database unavailable"}')


def reads_of(script: Script) -> int:
    return sum(1 for r in script.requests if r.method == "GET")


def test_a_failing_row_check_leaves_the_answer_to_the_stream() -> None:
    """The row check of a quiet stream is a safety net: a database blip that
    outlasted the call's retries failed the generation, whose answer then came
    on the stream it was still following."""
    script = Script()
    script_turn(script)

    def last_unavailable(request: Request) -> Response:
        script.feed(AI_NODE, [complete(AI_NODE, "Hello")])  # meanwhile, on the stream
        return UNAVAILABLE

    script.on("GET", "/rest/v1/flow_node", UNAVAILABLE, UNAVAILABLE, last_unavailable)
    result = script.run(generate(state(stall_interval=5.0), "hi", timeout=60))
    assert result.text == "Hello"
    assert reads_of(script) == 3  # one read: the call's two retries, then it gave up


def test_polling_goes_on_through_a_failing_database() -> None:
    """After the stream, polling gave up at the first read whose retries were all
    answered 503, with the deadline far away and the row about to be done."""
    script = Script()
    script_turn(script)
    script.on(
        "GET",
        "/rest/v1/flow_node",
        UNAVAILABLE,
        UNAVAILABLE,
        UNAVAILABLE,
        json_response(200, poll_rows("done", "Hello")),
    )
    script.feed(AI_NODE, [StreamEnded("closed")])
    result = script.run(generate(state(poll_interval=2.0), "hi", timeout=60))
    assert result.text == "Hello"
    assert reads_of(script) == 4


def test_a_database_failing_until_the_deadline_is_the_timeouts_cause() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", UNAVAILABLE)
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(TimeoutError, match="still generating at the deadline") as caught:
        script.run(generate(state(poll_interval=2.0), "hi", timeout=6))
    assert caught.value.deadline_passed
    cause = caught.value.__cause__
    assert isinstance(cause, APIError)
    assert cause.status_code == 503


def test_a_database_that_stays_down_is_raised_after_a_few_reads() -> None:
    """With an endless timeout, a database that stayed down was polled for ever,
    where the 503 used to be raised: after MAX_UNREADABLE failed reads it is."""
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", UNAVAILABLE)
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(APIError, match="HTTP 503") as caught:
        script.run(generate(state(poll_interval=2.0), "hi", timeout=math.inf))
    assert caught.value.status_code == 503
    assert reads_of(script) == MAX_UNREADABLE * 3  # each read: its call's two retries


@pytest.mark.parametrize(("asked", "raised"), [("300", True), ("10", False)])
def test_a_throttled_row_read_waits_what_the_server_asked(asked: str, raised: bool) -> None:
    """A 429 whose Retry-After the call's retries would not wait (past 60 s) was read
    again every poll_interval, 30 times what the server asked for, and its error
    hidden until the deadline. Past the deadline it is raised at once; within it,
    the next read waits that long."""
    throttled = Response(
        429, (("content-type", "application/json"), ("retry-after", asked)), b"{}"
    )
    script = Script()
    script_turn(script)
    script.on(
        "GET", "/rest/v1/flow_node", throttled, json_response(200, poll_rows("done", "Hi"))
    )
    script.feed(AI_NODE, [StreamEnded("closed")])
    once = state(poll_interval=2.0, retry=RetryPolicy(max_retries=0))
    operation = generate(once, "hi", timeout=120)
    if raised:
        with pytest.raises(RateLimitError):
            script.run(operation)
        assert script.clock == 1000.0
    else:
        assert script.run(operation).text == "Hi"
        assert script.clock == 1010.0
    assert reads_of(script) == (1 if raised else 2)


@pytest.mark.parametrize("failure", ["unavailable", "throttled"])
def test_row_checks_failing_while_the_stream_lives_end_nothing(failure: str) -> None:
    """The limits of polling (five failed reads, a Retry-After past the deadline)
    were applied to the safety-net checks of a quiet stream too: a model thinking
    silently through a database outage lost the answer its stream then brought."""
    answer = (
        UNAVAILABLE
        if failure == "unavailable"
        else Response(429, (("content-type", "application/json"), ("retry-after", "300")), b"{}")
    )
    sent = [0]

    def failing(request: Request) -> Response:
        sent[0] += 1
        if sent[0] == 3 * (MAX_UNREADABLE + 1):  # the checks' reads, and their retries
            script.feed(AI_NODE, [complete(AI_NODE, "Hello")])
        return answer

    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", failing)
    result = script.run(generate(state(stall_interval=5.0), "hi", timeout=120))
    assert result.text == "Hello"
    assert reads_of(script) >= 3 * (MAX_UNREADABLE + 1)


def test_a_row_read_refused_for_good_still_ends_the_polling() -> None:
    """Only passing failures are waited out: a 404 (no such table) would be
    answered again until the deadline."""
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(404, b'{"message": "no table"}'))
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(NotFoundError):
        script.run(generate(state(poll_interval=2.0), "hi", timeout=60))
    assert reads_of(script) == 1
    assert script.clock == 1000.0


def test_a_row_read_the_deadline_cut_short_is_the_generations_timeout() -> None:
    # The last read before the deadline had only what was left of it (a few ms):
    # a caller who gave the generation 1 s was told "request took longer than 0.00143s".
    script = Script()
    script_turn(script)

    def cut_short(request: Request) -> Response:
        raise TimeoutError("request took longer than 0.00143s", deadline_passed=True)

    script.on("GET", "/rest/v1/flow_node", cut_short)
    script.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(TimeoutError, match=f"node {AI_NODE} did not finish in time") as caught:
        script.run(generate(state(), "hi", timeout=5.0))
    assert caught.value.deadline_passed
    assert "0.00143s" in str(caught.value.__cause__)


def test_a_generation_ended_by_its_own_timeout_says_its_deadline_passed() -> None:
    # The README: deadline_passed is True when a whole call's deadline ended it. Only
    # a row read cut short by the deadline said so; a silent stream or a row that
    # stayed unfinished until the deadline did not.
    silent = Script()
    script_turn(silent)
    silent.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    with pytest.raises(TimeoutError, match="did not finish in time") as caught:
        silent.run(generate(state(), "hi", timeout=7.5))
    assert caught.value.deadline_passed
    polled = Script()
    script_turn(polled)
    polled.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    polled.feed(AI_NODE, [StreamEnded("closed")])
    with pytest.raises(TimeoutError, match="still generating at the deadline") as caught:
        polled.run(generate(state(poll_interval=2.0), "hi", timeout=5.0))
    assert caught.value.deadline_passed


def test_reasoning_streamed_before_the_stream_dropped_is_kept() -> None:
    # The row holds the answer alone: the result recovered from it had no reasoning,
    # though the caller had been shown it.
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", "Answer")))
    script.feed(
        AI_NODE, [chunks(AI_NODE, "<think>abc</think>", seq=0), chunks(AI_NODE, "Ans", seq=1)]
    )
    script.feed(AI_NODE, [StreamEnded("closed")])
    final = script.run(generate(state(), "hi", stream=True))
    steps = [*script.emitted, final]
    assert "".join(step.reasoning_delta for step in steps) == "abc"
    assert steps[-1].reasoning == "abc"
    assert steps[-1].text == "Answer"
    assert "".join(step.text_delta for step in steps) == "Answer"


def test_http_errors_while_creating_rows_propagate_typed() -> None:
    script = Script()
    script.on("POST", "/rest/v1/conversation", json_response(404, b'{"message":"no table"}'))
    with pytest.raises(NotFoundError, match="no table"):
        script.run(generate(state(), "hi"))


def test_two_turn_session_carries_history_and_the_thread() -> None:
    script = Script()
    script_turn(script)
    conversation = Conversation(model="gemini-3.1-pro-preview")
    script.feed(uuid_n(2), [complete(uuid_n(2), "<think>note it</think>Hi Alice!")])
    first = script.run(send(state(), conversation, "My name is Alice."))
    assert first.text == "Hi Alice!"
    assert (conversation.turn, conversation.conv_id, conversation.last_ai_node_id) == (
        1,
        CONV,
        uuid_n(2),
    )

    script.feed(uuid_n(4), [complete(uuid_n(4), "Your name is Alice.")])
    second = script.run(send(state(), conversation, "What is my name?"))
    assert second.text == "Your name is Alice."
    assert conversation.turn == 2

    turn2 = script.requests[4:]  # conversation, 2 nodes, completion belong to turn 1
    user_node, ai_node, completion = turn2
    assert user_node.json()[0]["p_id"] == uuid_n(2)
    assert user_node.json()[0]["position"] == {"x": 0, "y": 550}
    assert user_node.json()[0]["c_ids"] == [uuid_n(4)]
    assert ai_node.json()[0]["p_id"] == uuid_n(3)
    assert ai_node.json()[0]["position"] == {"x": 0, "y": 760}
    assert ai_node.json()[0]["data"]["model"] == "gemini-3.1-pro-preview"
    assert completion.json()["messages"] == [
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Hi Alice!"},
        {"role": "user", "content": "What is my name?"},
    ]
    assert completion.json()["convId"] == CONV


def canvas_node(
    n: int, kind: str, parent: str, value: str, y: float, **data: Any
) -> dict[str, Any]:
    return {
        "id": uuid_n(n),
        "conv_id": CONV,
        "type": kind,
        "p_id": parent,
        "c_ids": [],
        "position": {"x": 40, "y": y},
        "data": {"value": value, **data},
    }


def resume_on(
    canvas: list[dict[str, Any]], prompt: str, answer: str
) -> tuple[Script, Conversation, GenerationOutput]:
    """A session resumed on a conversation whose canvas is ``canvas``: one turn
    asking ``prompt``, answered ``answer``."""
    script = Script()
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(canvas).encode()))
    script_turn(script, create_conv=False)
    conversation = Conversation(conv_id=CONV, resume=True)
    script.feed(uuid_n(2), [complete(uuid_n(2), answer)])
    return script, conversation, script.run(send(state(), conversation, prompt))


def test_a_session_on_an_existing_conversation_carries_its_thread_on() -> None:
    """The newest answer's thread: its text turns become the history, media
    turns and other branches do not, and the next turn hangs below it."""
    canvas = [
        canvas_node(11, "1", CONV, "Plan a trip", 130),
        canvas_node(12, "2", uuid_n(11), "Go to Kyoto.", 340.4),
        canvas_node(13, "1", uuid_n(12), "Draw it", 550),
        canvas_node(14, "2", uuid_n(13), "https://cdn/kyoto.png", 760, isImage=True),
        canvas_node(15, "1", uuid_n(12), "A branch never continued", 550),
        canvas_node(16, "1", uuid_n(14), "And the food?", 970),
        canvas_node(17, "2", uuid_n(16), "Yudofu.", 1180),
    ]
    script, conversation, result = resume_on(canvas, "Where at night?", "Gion at dusk.")
    assert result.text == "Gion at dusk."
    read, user_node, ai_node, completion = script.requests
    assert read.method == "GET"
    assert completion.json()["messages"] == [
        {"role": "user", "content": "Plan a trip"},
        {"role": "assistant", "content": "Go to Kyoto."},
        {"role": "user", "content": "And the food?"},
        {"role": "assistant", "content": "Yudofu."},
        {"role": "user", "content": "Where at night?"},
    ]
    assert user_node.json()[0]["p_id"] == uuid_n(17)
    assert user_node.json()[0]["position"] == {"x": 40, "y": 1390}
    assert ai_node.json()[0]["position"] == {"x": 40, "y": 1600}
    assert (conversation.turn, conversation.last_ai_node_id) == (4, uuid_n(2))
    # Read once: the next turn goes on from memory.
    script.feed(uuid_n(4), [complete(uuid_n(4), "Pontocho.")])
    script.run(send(state(), conversation, "And after that?"))
    assert [r.method for r in script.requests].count("GET") == 1
    assert script.requests[-3].json()[0]["position"] == {"x": 40, "y": 1810}


@pytest.mark.parametrize("y", ["1" + "0" * 400, "NaN", "-Infinity", "1e400", "9007199254740993"])
def test_a_position_no_web_app_could_store_is_read_as_zero(y: str) -> None:
    """A coordinate of hundreds of digits raised a bare OverflowError (math.isfinite
    of an int too large for a float); past 2**53 no JavaScript number holds it."""
    answer = canvas_node(12, "2", uuid_n(11), "Go to Kyoto.", 0)
    body = json.dumps([canvas_node(11, "1", CONV, "Plan a trip", 130), answer])
    body = body.replace('"y": 0}', f'"y": {y}}}')
    assert y in body
    script = Script()
    script.on("GET", "/rest/v1/flow_node", json_response(200, body.encode()))
    script_turn(script, create_conv=False)
    conversation = Conversation(conv_id=CONV, resume=True)
    script.feed(uuid_n(2), [complete(uuid_n(2), "Gion.")])
    assert script.run(send(state(), conversation, "Where at night?")).text == "Gion."
    _read, user_node, _ai_node, _completion = script.requests
    assert user_node.json()[0]["position"] == {"x": 40, "y": 340}  # the lowest usable: 130


def test_a_canvas_longer_than_the_servers_cap_is_read_whole() -> None:
    """PostgREST answers at most max-rows rows (1,000 on Supabase) and says nothing:
    a 3,000-node thread resumed from its first 1,000 hung the next turn under an old
    answer, sent a third of the history and drew it on top of existing nodes."""
    thread: list[dict[str, Any]] = []
    parent = CONV
    for turn in range(1500):
        asked, answered = uuid_n(10_000 + 2 * turn), uuid_n(10_001 + 2 * turn)
        thread.append(canvas_node(10_000 + 2 * turn, "1", parent, f"q{turn}", 130 + 420 * turn))
        thread.append(canvas_node(10_001 + 2 * turn, "2", asked, f"a{turn}", 340 + 420 * turn))
        parent = answered

    def capped(request: Request) -> Response:
        query = dict(parse_qsl(urlsplit(request.url).query))
        offset = int(query.get("offset", "0"))
        return json_response(200, json.dumps(thread[offset : offset + 1000]).encode())

    script = Script()
    script.on("GET", "/rest/v1/flow_node", capped)
    script_turn(script, create_conv=False)
    conversation = Conversation(conv_id=CONV, resume=True)
    script.feed(uuid_n(2), [complete(uuid_n(2), "done")])
    script.run(send(state(), conversation, "next"))
    reads = [r for r in script.requests if r.method == "GET"]
    assert len(reads) == 4  # 1,000 + 1,000 + 1,000, then an empty page ends it
    assert "offset=1000&limit=1000" in reads[1].url
    user_node, _ai_node, completion = script.requests[-3:]
    assert user_node.json()[0]["p_id"] == parent  # under the real last answer
    assert user_node.json()[0]["position"]["y"] == 340 + 420 * 1499 + 210
    assert len(completion.json()["messages"]) == 3001
    assert conversation.turn == 1501


def test_a_user_node_insert_cut_short_keeps_its_slot_for_the_next_turn() -> None:
    """The slot was counted only once the insert's answer came: an insert the server
    applied for a call that timed out was drawn over by the next turn's node."""
    script = Script()

    def timed_out(request: Request) -> Response:
        raise TimeoutError("request took longer than 30s", request_sent=True)

    created = json_response(201)
    script.on("POST", "/rest/v1/flow_node", timed_out, created, created)
    script_turn(script)  # its own answer to the node inserts comes after these
    conversation = Conversation()
    with pytest.raises(TimeoutError):
        script.run(send(state(retry=RetryPolicy(max_retries=0)), conversation, "two"))
    script.feed(uuid_n(4), [complete(uuid_n(4), "Three.")])
    script.run(send(state(), conversation, "three"))
    inserts = [r for r in script.requests if r.method == "POST" and "flow_node" in r.url]
    first_user, second_user = inserts[0].json()[0], inserts[1].json()[0]
    assert (first_user["type"], second_user["type"]) == ("1", "1")
    assert first_user["position"] != second_user["position"]
    assert second_user["position"]["y"] > first_user["position"]["y"]


def _refused_answer_insert(script: Script, read: bytes, clear: Response) -> APIError:
    """A turn whose user node lands and whose answer's insert is refused (a 403 of
    row-level security), with ``read`` the answer's row read back."""
    created = json_response(201)
    refused = json_response(403, b'{"code":"42501","message":"row-level security"}')
    script.on("POST", "/rest/v1/flow_node", created, refused)
    script.on("GET", "/rest/v1/flow_node", json_response(200, read))
    script.on("PATCH", "/rest/v1/flow_node", clear)
    with pytest.raises(APIError) as caught:
        script.run(generate(state(retry=RetryPolicy(max_retries=0)), "Hi", conv_id=CONV))
    return caught.value


def test_a_refused_answer_insert_takes_its_name_back_from_the_user_node() -> None:
    """The user node names its answer in c_ids before the answer is inserted: when
    that insert was refused, the canvas kept naming a node that never existed."""
    script = Script()
    error = _refused_answer_insert(script, b"[]", json_response(204))
    assert error.status_code == 403  # the refusal, not the repair, is what the caller hears
    user_insert, _ai_insert, read, clear = script.requests
    assert user_insert.json()[0]["c_ids"] == [AI_NODE]
    assert (read.method, parse_qsl(urlsplit(read.url).query)[0]) == ("GET", ("id", f"eq.{AI_NODE}"))
    assert clear.method == "PATCH"
    assert parse_qsl(urlsplit(clear.url).query) == [("id", f"eq.{USER_NODE}")]
    assert clear.json() == {"c_ids": []}


def test_an_answer_insert_that_landed_on_an_earlier_try_keeps_its_name() -> None:
    """A refusal after a retry does not prove the first try failed: the node is read
    back, and a node that exists stays named."""
    script = Script()
    row = poll_rows("init", "")
    _refused_answer_insert(script, row, json_response(204))
    assert [r.method for r in script.requests] == ["POST", "POST", "GET"]


def test_a_failed_repair_is_logged_and_the_refusal_still_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script()
    error = _refused_answer_insert(script, b"[]", json_response(500, b'{"message":"down"}'))
    assert error.status_code == 403
    assert f"user node {USER_NODE} may still name its answer {AI_NODE}" in caplog.text


def test_an_answer_insert_that_may_have_landed_is_left_alone() -> None:
    """A timeout after sending may have landed: no read, no repair."""
    script = Script()

    def timed_out(request: Request) -> Response:
        raise TimeoutError("request took longer than 30s", request_sent=True)

    script.on("POST", "/rest/v1/flow_node", json_response(201), timed_out)
    with pytest.raises(TimeoutError):
        script.run(generate(state(retry=RetryPolicy(max_retries=0)), "Hi", conv_id=CONV))
    assert [r.method for r in script.requests] == ["POST", "POST"]


def test_a_resumed_canvas_reads_rows_as_the_web_app_writes_them() -> None:
    """An answer still being written counted as finished (its half text went into
    the history), isImage "false" made a text turn a media one, and coordinates
    stored as text were read as 0 (the next node went on top of the answer)."""
    canvas = [
        canvas_node(11, "1", CONV, "Plan a trip", 130),
        canvas_node(12, "2", uuid_n(11), "Go to Kyoto.", 340, isImage="false"),
        canvas_node(13, "1", uuid_n(12), "And the food?", 550),
        canvas_node(14, "2", uuid_n(13), "Half an ans", 760, status="generating"),
    ]
    canvas[1]["position"] = {"x": "40", "y": "340"}
    script, _conversation, _result = resume_on(canvas, "Where to eat?", "Yudofu.")
    _read, user_node, _ai_node, completion = script.requests
    assert completion.json()["messages"] == [
        {"role": "user", "content": "Plan a trip"},
        {"role": "assistant", "content": "Go to Kyoto."},
        {"role": "user", "content": "Where to eat?"},
    ]
    assert user_node.json()[0]["p_id"] == uuid_n(12)
    assert user_node.json()[0]["position"] == {"x": 40, "y": 970}  # below every node


def test_a_resumed_thread_sends_visible_replies_and_passes_over_a_failed_turn() -> None:
    """As a live session would have: no reasoning in the history, and a failed
    last turn neither continued from nor counted."""
    canvas = [
        canvas_node(11, "1", CONV, "Think first", 130),
        canvas_node(12, "2", uuid_n(11), "<think>ponder 1</think>\n\nAnswer 1", 340, status="done"),
        canvas_node(13, "1", uuid_n(12), "Then fail", 550),
        canvas_node(14, "2", uuid_n(13), "", 760, status="failed", error="boom"),
    ]
    script, conversation, _result = resume_on(canvas, "Again", "Answer 2")
    _read, user_node, _ai_node, completion = script.requests
    assert completion.json()["messages"] == [
        {"role": "user", "content": "Think first"},
        {"role": "assistant", "content": "Answer 1"},
        {"role": "user", "content": "Again"},
    ]
    assert user_node.json()[0]["p_id"] == uuid_n(12)
    assert user_node.json()[0]["position"] == {"x": 40, "y": 970}  # below the failed turn
    assert conversation.turn == 2


def test_a_session_on_a_conversation_without_an_answer_hangs_from_its_root() -> None:
    script = Script()
    script.on(
        "GET",
        "/rest/v1/flow_node",
        json_response(200, json.dumps([canvas_node(11, "1", CONV, "unanswered", 130)]).encode()),
    )
    script_turn(script, create_conv=False)
    conversation = Conversation(conv_id=CONV, resume=True)
    script.feed(uuid_n(2), [complete(uuid_n(2), "ok")])
    script.run(send(state(), conversation, "hello?"))
    _, user_node, _, completion = script.requests
    assert user_node.json()[0]["p_id"] == CONV
    assert user_node.json()[0]["position"] == {"x": 0, "y": 340}  # below the lowest node
    assert completion.json()["messages"] == [{"role": "user", "content": "hello?"}]
    assert conversation.turn == 1


def test_the_turn_after_a_failed_one_covers_none_of_its_nodes() -> None:
    # The failed turn's nodes stay on the canvas; the next turn hangs from the
    # last good answer but is laid out below them.
    script = Script()
    script_turn(script)
    conversation = Conversation()
    script.feed(uuid_n(2), [complete(uuid_n(2), "first")])
    script.run(send(state(), conversation, "one"))
    failed = parse_event({"data": {"nodeId": uuid_n(4), "status": "failed", "error": "boom"}})
    script.feed(uuid_n(4), [failed])
    with pytest.raises(GenerationError):
        script.run(send(state(), conversation, "two"))
    script.feed(uuid_n(6), [complete(uuid_n(6), "third")])
    script.run(send(state(), conversation, "three"))
    nodes = [r.json()[0] for r in script.requests if "/rest/v1/flow_node" in r.url]
    positions = [node["position"]["y"] for node in nodes]
    assert positions == [130, 340, 550, 760, 970, 1180]
    assert nodes[4]["p_id"] == uuid_n(2)  # the thread skips the failed turn
    assert conversation.turn == 2


def test_a_failed_turn_does_not_advance_the_session() -> None:
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("loading", "")))
    conversation = Conversation()
    with pytest.raises(TimeoutError):
        script.run(send(state(), conversation, "hello", timeout=1.0))
    assert (conversation.turn, conversation.messages, conversation.last_ai_node_id) == (0, [], None)
    assert conversation.conv_id == CONV  # the conversation itself exists now


def test_turn_layout() -> None:
    assert turn_layout(0) == (Position(0, 130), Position(0, 340))
    user, ai = turn_layout(2)
    assert (user.y, ai.y) == (970, 1180)


#: What JSON holds as "no error" in an ``error`` field.
NO_ERRORS: tuple[object, ...] = (False, 0, "", [], {}, None)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], NodePending()),
        ([{"data": {"status": "init", "value": ""}}], NodePending()),
        ([{"data": {"status": "loading", "value": "partial"}}], NodePending()),
        (
            [{"data": {"status": "done", "value": "x"}}],
            NodeDone("x", {"status": "done", "value": "x"}),
        ),
        (
            [{"data": {"status": "finished", "value": "x"}}],
            NodeDone("x", {"status": "finished", "value": "x"}),
        ),
        ([{"data": {"status": "failed", "value": ""}}], NodeFailedState("failed", "", "")),
        *(
            (
                # The reason a failed node keeps in value is its error (it was dropped).
                [{"data": {"status": word, "value": "the job's last words"}}],
                NodeFailedState(word.lower(), "the job's last words", ""),
            )
            for word in ("cancelled", "Canceled", "timeout", "rejected", "failure")
        ),
        ([{"data": {"status": "done", "error": "boom"}}], NodeFailedState("done", "boom", "")),
        (
            [{"data": '{"status": "done", "value": "from a string"}'}],
            NodeDone("from a string", {"status": "done", "value": "from a string"}),
        ),
        ([{"data": None}], NodePending()),  # the row's data is not written yet
        # An error that JSON holds as false or empty is no error.
        *(
            (
                [{"data": {"status": "done", "value": "v", "error": none}}],
                NodeDone("v", {"status": "done", "value": "v", "error": none}),
            )
            for none in NO_ERRORS
        ),
    ],
)
def test_node_state(rows: Any, expected: object) -> None:
    assert node_state(rows) == expected
    assert node_state(rows, media=True) == expected


@pytest.mark.parametrize("status", ["init", "generating", "loading"])
def test_a_url_is_a_media_rows_result_but_a_text_row_may_begin_with_one(status: str) -> None:
    """A text row still being written whose answer began with a URL was taken for
    done: the answer so far became the result, and the rest was never read."""
    data = {"status": status, "value": "https://example.com is a"}
    assert node_state([{"data": data}]) == NodePending()
    assert node_state([{"data": data}], media=True) == NodeDone(data["value"], data)


@pytest.mark.parametrize(
    "value", ['{"name": "Alice", "age": 3}', '{"value": "x", "other": 1}', '{"error": "E42"}']
)
def test_a_text_answer_that_is_json_is_the_answer(value: str) -> None:
    """Only a media row's value can be a {value, error} wrapper: a text answer
    that is JSON was cut down to its "value", or raised as a failure."""
    data = {"status": "done", "value": value}
    assert node_state([{"data": data}]) == NodeDone(value, data)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"error": "provider said no"}', NodeFailedState("done", "provider said no", "")),
        ('{"value": "https://cdn/x.png"}', NodeDone("https://cdn/x.png", {})),
    ],
)
def test_a_media_rows_json_value_is_unwrapped(value: str, expected: object) -> None:
    data = {"status": "done", "value": value}
    outcome = node_state([{"data": data}], media=True)
    if isinstance(expected, NodeDone):
        assert isinstance(outcome, NodeDone)
        assert outcome.value == expected.value
    else:
        assert outcome == expected


def test_a_json_answer_recovered_from_the_row_is_returned_whole() -> None:
    answer = '{"name": "Alice", "age": 3}'
    script = Script()
    script_turn(script)
    script.on("GET", "/rest/v1/flow_node", json_response(200, poll_rows("done", answer)))
    script.feed(AI_NODE, [chunks(AI_NODE, '{"na'), StreamEnded("dropped")])
    assert script.run(generate(state(), "give json")).text == answer


@pytest.mark.parametrize(
    "rows",
    [
        ["not a row"],
        [42],
        [{"data": 42}],
        [{"data": "plain text"}],
        [{"data": {"status": "done", "value": [1, 2]}}],
        [{"data": {"status": "done", "value": True}}],
        # Answered "nan" and "inf" (JSON's NaN, and 1e400 overflowing to inf).
        json.loads('[{"data": {"status": "done", "value": NaN}}]'),
        json.loads('[{"data": {"status": "done", "value": 1e400}}]'),
        json.loads('[{"data": {"status": "done", "value": -Infinity}}]'),
    ],
)
def test_a_row_of_the_wrong_shape_is_a_decode_error_not_pending_forever(rows: Any) -> None:
    with pytest.raises(ResponseDecodeError, match="expected a flow_node row"):
        node_state(rows)


def test_effect_types_are_small_values() -> None:
    assert Now() == Now()
    assert WallClock() == WallClock()
    assert NewId() == NewId()
