"""Record a session on one transport and event loop, replay it on another."""

from __future__ import annotations

import functools
import gc
import inspect
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowith_httpx import FlowithClient, testing
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_httpx.testing import CassetteMismatch, ReplayClient, replay_operation
from flowith_proto.abc import ConversationSession, FlowithClientBase
from flowith_proto.auth import Credentials, read_claims
from flowith_proto.cassette import (
    CASSETTE_VERSION,
    MAX_SECRETS,
    CassetteError,
    Scrubber,
    decode_body,
    redact_jwt,
)
from flowith_proto.config import FlowithConfig
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import (
    FlowithError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
)
from flowith_proto.fake import (
    KYOTO_TRIP,
    PRODUCT_LAUNCH,
    QUARTERLY_REPORT,
    FakeFlowith,
    chunk,
    complete,
    hang,
    pause,
    row,
)
from flowith_proto.generation import Conversation, generate, send
from flowith_proto.models import AuthSession, FlowNode
from flowith_proto.operation_names import OperationNames
from flowith_proto.queries import rows
from flowith_proto.recording import Recorder
from flowith_proto.replay import Tape
from flowith_proto.request import Request, Response
from flowith_proto.state import ClientState
from tests.sessions import CASSETTES, broad_session

Session = Callable[[FlowithClientBase], Awaitable[list[Any]]]


async def record(
    path: Path, session: Session, fake: FakeFlowith, stream_idle_timeout: float = 60.0
) -> list[Any]:
    async with FakeFlowithServer(fake) as server:
        client = FlowithClient(
            fake.token,
            refresh_token=fake.refresh_token,
            edge_url=server.url,
            supabase_url=server.url,
            poll_interval=0.05,
            record_to=path,
            stream_idle_timeout=stream_idle_timeout,
        )
        async with client:
            return await session(client)


async def replay(
    path: Path, session: Session, stall_timeout: float = testing.STALL_SECONDS
) -> tuple[list[Any], list[str]]:
    async with ReplayClient(path, stall_timeout=stall_timeout) as client:
        results = await session(client)
        return results, client.unplayed


def comparable(value: Any) -> Any:
    if isinstance(value, AuthSession):
        return value.user_id
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def test_a_session_recorded_on_asyncio_replays_identically_on_trio(tmp_path: Path) -> None:
    cassette = tmp_path / "session.jsonl"
    recorded = anyio.run(record, cassette, broad_session, FakeFlowith(), backend="asyncio")
    replayed, unplayed = anyio.run(replay, cassette, broad_session, backend="trio")
    assert comparable(replayed) == comparable(recorded)
    assert unplayed == []
    streamed_recorded, streamed_replayed = recorded[1], replayed[1]
    assert [s.text_delta for s in streamed_replayed] == [s.text_delta for s in streamed_recorded]


def test_a_stream_found_closed_by_a_look_replays_its_reconnection(tmp_path: Path) -> None:
    """The client looks at an idle stream before counting on it; the look that
    found it closed is recorded, the looks that found nothing are not."""
    fake = FakeFlowith()

    async def session(client: FlowithClientBase) -> list[Any]:
        first = await client.generate("a")
        if not isinstance(client, ReplayClient):
            fake.close_streams(now=time.time())
            await anyio.sleep(0.3)
        second = [step.text_delta async for step in client.generate_stream("b")]
        return [first.text, second, client.stream_connections]

    fake.script(chunk("first"), complete())
    fake.script(chunk("He"), pause(0.1), chunk("llo"), complete())
    cassette = tmp_path / "look.jsonl"
    recorded = anyio.run(record, cassette, session, fake, backend="asyncio")
    assert recorded == ["first", ["He", "llo", ""], 2]
    looks = [r for r in map(json.loads, cassette.read_text().splitlines()[1:]) if r.get("look")]
    assert [(r["kind"], r.get("reason")) for r in looks] == [("end", "eof")]
    for backend in ("asyncio", "trio"):
        replayed, unplayed = anyio.run(replay, cassette, session, backend=backend)
        assert (replayed, unplayed) == (recorded, [])


def test_a_stream_taken_for_dead_replays_its_break_without_a_clock(tmp_path: Path) -> None:
    """The watchdog's verdict is recorded as the stream's break, so a replay
    (whose clock measures no silence) repeats it and reconnects where the
    recording did."""
    fake = FakeFlowith(heartbeat_interval=0.1)

    async def session(client: FlowithClientBase) -> list[Any]:
        first = await client.generate("a", timeout=20)
        second = [step.text_delta async for step in client.generate_stream("b", timeout=20)]
        return [first.text, second, client.stream_connections]

    fake.script(chunk("Hel"), hang(), row("done", "Hello"))
    fake.script(chunk("again"), complete())
    cassette = tmp_path / "silent.jsonl"
    recorded = anyio.run(record, cassette, session, fake, 0.5, backend="asyncio")
    assert recorded == ["Hello", ["again", ""], 2]
    ends = [r for r in map(json.loads, cassette.read_text().splitlines()[1:]) if r["kind"] == "end"]
    assert ends[0]["reason"] == "broken"
    for backend in ("asyncio", "trio"):
        replayed, unplayed = anyio.run(replay, cassette, session, backend=backend)
        assert (replayed, unplayed) == (recorded, [])


def test_a_replay_polls_and_retries_as_the_recording_did(tmp_path: Path) -> None:
    """The recording's settings are in its header and a replay runs with them:
    one recorded with a short poll interval polled a row several times, which a
    replay polling every 2 s (the default) asked for fewer times and failed."""
    fake = FakeFlowith(heartbeat_interval=0.05)

    async def session(client: FlowithClientBase) -> list[Any]:
        return [(await client.generate(prompt, timeout=5)).text for prompt in ("one", "two")]

    fake.script(chunk("x"), hang(), pause(0.3), row("done", "xy"))
    fake.script(chunk("q"), complete())
    cassette = tmp_path / "polled.jsonl"
    recorded = anyio.run(record, cassette, session, fake, 0.2, backend="asyncio")
    assert recorded == ["xy", "q"]
    header = json.loads(cassette.read_text(encoding="utf-8").splitlines()[0])
    assert header["settings"] == {
        "timeout": 30.0,
        "result_timeout": 120.0,
        "poll_interval": 0.05,
        "max_retries": 2,
    }
    for backend in ("asyncio", "trio"):
        replayed, unplayed = anyio.run(replay, cassette, session, backend=backend)
        assert (replayed, unplayed) == (recorded, [])
    state = Tape(cassette).state()
    assert (state.poll_interval, state.result_timeout, state.retry.max_retries) == (0.05, 120, 2)
    overridden = ReplayClient(cassette, poll_interval=1.5, max_retries=0, timeout=4)
    assert overridden.timeout == 4
    assert overridden._state.poll_interval == 1.5
    assert overridden._state.retry.max_retries == 0


def test_an_endless_result_timeout_is_recorded_as_json_null(tmp_path: Path) -> None:
    # JSON has no infinity: json.dumps wrote Infinity, which strict readers refuse.
    cassette = tmp_path / "endless.jsonl"

    async def record_nothing() -> None:
        user = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
        async with FlowithClient("t", user_id=user, result_timeout=math.inf, record_to=cassette):
            pass

    anyio.run(record_nothing)
    header = json.loads(cassette.read_text().splitlines()[0], parse_constant=_refuse)
    assert header["settings"]["result_timeout"] is None
    assert Tape(cassette).state().result_timeout == math.inf
    assert ReplayClient(cassette)._state.result_timeout == math.inf


def test_a_record_to_that_cannot_be_written_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder was found only at the first call, as a bare IsADirectoryError; and a
    run whose cassette could not be opened then failed in the collector
    (AttributeError: no ``_done``), which pytest reports as an unraisable warning."""
    user = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    with pytest.raises(ValueError, match="record_to names a folder, not a cassette file"):
        FlowithClient("t", user_id=user, record_to=tmp_path)
    in_a_file = tmp_path / "a file"
    in_a_file.write_text("not a folder")
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    async def call() -> None:
        client = FlowithClient("t", user_id=user, record_to=in_a_file / "session.jsonl")
        with pytest.raises(OSError, match="a file"):
            await client.get_credits()
        gc.collect()
        with pytest.raises(OSError, match="a file"):
            await client.aclose()  # the cassette it could not write: still said

    anyio.run(call)
    gc.collect()
    assert unraisable == []


def test_a_recording_becomes_the_cassette_only_when_its_session_ends_well(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file was written as the session ran: a re-recording that failed, or a
    process killed, replaced a good cassette with a part of a session."""
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")
    good = cassette.read_bytes()
    partial = tmp_path / "one.jsonl.partial"

    async def credits_then_failure(client: FlowithClientBase) -> list[Any]:
        await client.get_credits()
        assert cassette.read_bytes() == good  # meanwhile, the cassette is the old one
        assert b"/user/credits" in partial.read_bytes()
        raise LookupError("the code under test failed")

    with pytest.raises(LookupError, match="failed"):
        anyio.run(record, cassette, credits_then_failure, FakeFlowith(), backend="trio")
    assert cassette.read_bytes() == good
    assert b"/user/credits" in partial.read_bytes()  # kept, to see what happened
    (warning,) = [r for r in caplog.records if "recorded session" in r.getMessage()]
    assert warning.getMessage() == (
        f"an error ended the recorded session: {cassette} is left as it was, and what was "
        f"recorded is in {partial}"
    )

    async def just_credits(client: FlowithClientBase) -> list[Any]:
        return [await client.get_credits()]

    anyio.run(record, cassette, just_credits, FakeFlowith(), backend="asyncio")
    assert b"/user/credits" in cassette.read_bytes()
    assert not partial.exists()
    assert anyio.run(replay, cassette, just_credits)[1] == []


def test_a_recording_to_a_pipe_is_written_to_it(tmp_path: Path) -> None:
    """Written beside it and moved into its place, the recording replaced a pipe (or
    os.devnull, as root) with a regular file."""

    async def just_credits(client: FlowithClientBase) -> list[Any]:
        return [await client.get_credits()]

    pipe = tmp_path / "cassette.pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # so that the writer opens it
    received = bytearray()
    try:
        anyio.run(record, pipe, just_credits, FakeFlowith(), backend="asyncio")
        while chunk := os.read(reader, 65536):  # (a session far below a pipe's buffer)
            received += chunk
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert received.startswith(b'{"cassette":"flowith"')
    assert b"/user/credits" in received
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cassette.pipe"]


def test_a_recording_to_a_link_replaces_the_file_it_names(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "one.jsonl"
    target.parent.mkdir()
    target.write_text("an older cassette\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    anyio.run(record, link, one_generation, FakeFlowith(), backend="asyncio")
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8").startswith('{"cassette":"flowith"')
    assert sorted(p.name for p in target.parent.iterdir()) == ["one.jsonl"]


def _refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ('"fast"', "'settings' must be an object"),
        ('{"poll_interval": 0}', "'poll_interval' is not usable: 0"),
        ('{"max_retries": 1.5}', "'max_retries' is not usable: 1.5"),
        ('{"timeout": true}', "'timeout' is not usable: True"),
    ],
)
def test_unusable_recorded_settings_are_refused(settings: str, problem: str) -> None:
    header = f'{{"cassette":"flowith","version":1,"settings":{settings}}}'
    with pytest.raises(CassetteError, match=re.escape(problem)):
        Tape([header])


def test_a_cassette_without_settings_replays_with_the_defaults() -> None:
    state = Tape([HEADER, '{"kind":"clock","value":1.5}']).state()
    assert (state.poll_interval, state.result_timeout, state.retry.max_retries) == (2, 120, 2)
    assert Tape([HEADER]).settings == {}


def test_a_refresh_retried_after_a_rate_limit_replays(tmp_path: Path) -> None:
    """The waits between a refresh's attempts are judged on the operation's
    recorded clock, not the replay's own (which starts at 0)."""
    fake = FakeFlowith()
    fake.expire_token(fake.token)
    fake.fail_next(1, 429, method="POST", path="/auth/v1/token", headers=[("Retry-After", "1")])

    async def session(client: FlowithClientBase) -> list[Any]:
        return [len(await client.get_credits())]

    cassette = tmp_path / "refresh.jsonl"
    recorded = anyio.run(record, cassette, session, fake, backend="asyncio")
    assert recorded[0] >= 1
    assert fake.faults_served == 1
    for backend in ("asyncio", "trio"):
        replayed, unplayed = anyio.run(replay, cassette, session, backend=backend)
        assert (replayed, unplayed) == (recorded, [])


def test_the_cassette_holds_no_secret(tmp_path: Path) -> None:
    cassette = tmp_path / "session.jsonl"
    fake = FakeFlowith()
    anyio.run(record, cassette, broad_session, fake, backend="asyncio")
    text = cassette.read_text(encoding="utf-8")
    assert fake.token not in text
    assert len(fake.issued_refresh_tokens) >= 2  # the session refreshed: the token rotated
    for refresh_token in fake.issued_refresh_tokens:
        assert refresh_token not in text
    assert fake.supabase_key not in text
    # No signed JWT at all (a replay keeps only the claims sub and exp, unsigned).
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", text)
    header = json.loads(text.splitlines()[0])
    assert header["cassette"] == "flowith"
    assert header["version"] == CASSETTE_VERSION


async def one_generation(client: FlowithClientBase) -> list[Any]:
    return [[step async for step in client.generate_stream("Say hello", model="deepseek-r1")]]


async def generations_at_once(client: FlowithClientBase) -> list[Any]:
    """Two streamed generations at once, then a plain and a streamed one at once."""
    results: dict[str, Any] = {}

    async def streamed(key: str, prompt: str) -> None:
        results[key] = [step async for step in client.generate_stream(prompt, model="deepseek-r1")]

    async def plain(key: str, prompt: str) -> None:
        results[key] = await client.generate(prompt)

    async with anyio.create_task_group() as group:
        group.start_soon(streamed, "A", "Alpha")
        group.start_soon(streamed, "B", "Beta")
    async with anyio.create_task_group() as group:
        group.start_soon(plain, "C", "Gamma")
        group.start_soon(streamed, "D", "Delta")
    return [results[key] for key in "ABCD"]


@pytest.mark.parametrize("recorded_on", ["asyncio", "trio"])
def test_operations_running_at_once_replay_on_either_loop_in_any_order(
    tmp_path: Path, recorded_on: str
) -> None:
    # Each operation gets back the ids, times and answers it was recorded with,
    # whatever order the loop runs them in (trio shuffles it on purpose).
    fake = FakeFlowith()
    fake.script(chunk("<think>a</think>"), pause(0.05), chunk("A-1 "), chunk("A-2"), complete())
    fake.script(chunk("<think>b"), pause(0.02), chunk("</think>B-1 B-2"), complete())
    fake.script(chunk("C-1"), pause(0.03), complete())
    fake.script(chunk("D-1"), pause(0.01), chunk("D-2"), complete())
    cassette = tmp_path / "at_once.jsonl"
    recorded = anyio.run(record, cassette, generations_at_once, fake, backend=recorded_on)
    assert {step.text for step in (recorded[0][-1], recorded[1][-1])} == {"A-1 A-2", "B-1 B-2"}
    for backend in ("asyncio", "trio"):
        for _ in range(8):
            replayed, unplayed = anyio.run(replay, cassette, generations_at_once, backend=backend)
            assert comparable(replayed) == comparable(recorded)
            assert unplayed == []


async def retried_beside_a_streamed_generation(client: FlowithClientBase) -> list[Any]:
    results: dict[str, Any] = {}

    async def streamed() -> None:
        results["text"] = (await client.generate("slow one", timeout=2)).text

    async def retried() -> None:
        results["credits"] = len(await client.get_credits())  # after two 503s

    async with anyio.create_task_group() as group:
        group.start_soon(streamed)
        group.start_soon(retried)
    return [results["text"], results["credits"]]


@pytest.mark.parametrize("retry_after", [None, "1"])
def test_a_retry_wait_beside_a_streamed_generation_replays(
    tmp_path: Path, retry_after: str | None
) -> None:
    """The wait before a retry moved the replay's clock to its end at once: the
    generation running beside it found its own deadline passed, read its row, which
    the recording never did, and every replay failed."""
    fake = FakeFlowith()
    fake.script(chunk("s1 "), pause(0.3), chunk("s2 "), pause(0.3), chunk("s3"), complete())
    headers = [] if retry_after is None else [("Retry-After", retry_after)]
    fake.fail_next(2, 503, path="/user/credits", headers=headers)
    cassette = tmp_path / "retried_beside.jsonl"
    recorded = anyio.run(record, cassette, retried_beside_a_streamed_generation, fake)
    assert recorded[0] == "s1 s2 s3"
    for backend in ("asyncio", "trio") * 3:
        replayed, unplayed = anyio.run(
            replay, cassette, retried_beside_a_streamed_generation, 2.0, backend=backend
        )
        assert replayed == recorded
        assert unplayed == []


async def listening_beside_a_generation(
    client: FlowithClientBase, listening: Callable[[], bool] = lambda: True
) -> list[Any]:
    """``listening``: whether the listener's stream is open on the server (recorded
    live, the generation must not start before, or the listener hears nothing)."""
    heard: list[Any] = []
    generated: list[str] = []

    async def listen() -> None:
        heard.extend([event async for event in client.stream_user_stream(timeout=2)])

    async def generate() -> None:
        generated.append((await client.generate("x")).text)

    async with anyio.create_task_group() as group:
        group.start_soon(listen)  # its window opens first
        await anyio.lowlevel.checkpoint()
        while not listening():  # noqa: ASYNC110 (the fake's state has no event)
            await anyio.sleep(0.01)
        group.start_soon(generate)
    return [heard, generated]


@pytest.mark.parametrize("recorded_on", ["asyncio", "trio"])
def test_a_listening_window_beside_a_generation_replays_what_it_heard(
    tmp_path: Path, recorded_on: str
) -> None:
    """The window's end was read on the replay's clock, which the generation's
    recorded readings move: the listener heard 1 event of 4, or on trio 1 or 4 at
    random."""
    cassette = tmp_path / "listening.jsonl"
    fake = FakeFlowith(heartbeat_interval=0.1)
    session = functools.partial(
        listening_beside_a_generation, listening=lambda: fake.open_streams("stream") != []
    )
    recorded = anyio.run(record, cassette, session, fake, backend=recorded_on)
    assert len(recorded[0]) >= 2
    for backend in ("asyncio", "trio"):
        for _ in range(8):
            replayed, unplayed = anyio.run(
                replay, cassette, listening_beside_a_generation, backend=backend
            )
            assert replayed == recorded
            assert unplayed == []


def test_a_replay_that_does_more_than_the_recording_names_the_operation(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")

    async def twice(client: FlowithClientBase) -> list[Any]:
        return [*await one_generation(client), *await one_generation(client)]

    with pytest.raises(CassetteMismatch, match=r"generate \(generate:\w+#2\) was not recorded"):
        anyio.run(replay, cassette, twice, backend="asyncio")


def test_a_replay_that_does_less_than_the_recording_fails_listing_what_it_never_sent(
    tmp_path: Path,
) -> None:
    # It passed: a call the code no longer made went unnoticed, unless the test
    # asserted on client.unplayed itself.
    cassette = tmp_path / "two.jsonl"

    async def two_calls(client: FlowithClientBase) -> list[Any]:
        return [*await one_generation(client), await client.get_credits()]

    recorded = anyio.run(record, cassette, two_calls, FakeFlowith(), backend="asyncio")
    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, one_generation, backend="trio")
    message = str(info.value)
    assert "the replay never sent 1 of the recorded requests:" in message
    assert re.search(r"\n  GET http://127\.0\.0\.1:\d+/\S*credits\S*\n", message)
    assert "assert_all_played=False" in message

    async def part_of_it(client: ReplayClient) -> tuple[list[Any], list[str]]:
        results = await one_generation(client)
        with pytest.raises(CassetteMismatch, match="never sent 1 of"):
            client.assert_all_played()
        return results, client.unplayed

    async def replay_a_part() -> tuple[list[Any], list[str]]:
        async with ReplayClient(cassette, assert_all_played=False) as client:
            return await part_of_it(client)

    replayed, unplayed = anyio.run(replay_a_part, backend="asyncio")
    assert replayed == recorded[:-1]
    (unsent,) = unplayed
    assert re.fullmatch(r"GET http://127\.0\.0\.1:\d+/\S*credits\S*", unsent)


def test_an_error_leaving_a_short_replay_is_not_hidden_by_the_check(tmp_path: Path) -> None:
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")

    async def fails_first(client: FlowithClientBase) -> list[Any]:
        raise LookupError("the code under test failed before its first call")

    with pytest.raises(LookupError, match="before its first call"):
        anyio.run(replay, cassette, fails_first, backend="asyncio")


def test_a_replay_waiting_for_what_the_recording_lacks_says_so(tmp_path: Path) -> None:
    """It waits stall_timeout real seconds (10 by default) for the missing request."""
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")
    lines = cassette.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines[1:]]
    first_chunk = next(r for r in records if r["kind"] == "chunk")
    first_chunk["after"] = 99  # as if recorded after a request the replay never sends
    cassette.write_text(
        "\n".join([lines[0], *(json.dumps(r) for r in records)]) + "\n", encoding="utf-8"
    )
    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, one_generation, 0.2, backend="trio")
    message = str(info.value)
    assert "holds data recorded after request #99" in message
    assert "after 0.2s the replay gave up" in message
    assert "waits for something the recording does not hold" in message


@pytest.mark.parametrize("stall_timeout", [0, -1, math.nan, "1"])
def test_a_stall_timeout_no_clock_can_wait_is_refused(tmp_path: Path, stall_timeout: Any) -> None:
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")
    with pytest.raises(ValidationError, match="stall_timeout"):
        ReplayClient(cassette, stall_timeout=stall_timeout)


def test_a_mismatch_is_not_swallowed_by_code_that_handles_the_librarys_errors(
    tmp_path: Path,
) -> None:
    """CassetteMismatch was a FlowithError: an app's 'except FlowithError' fallback
    turned a drifted prompt into a passing test."""

    def summary(prompt: str) -> Session:
        async def session(client: FlowithClientBase) -> list[Any]:
            try:
                return [(await client.generate(prompt)).text]
            except FlowithError:
                return ["(summary unavailable)"]

        return session

    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, summary("recorded"), FakeFlowith())
    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, summary("drifted"))
    assert isinstance(info.value, AssertionError)
    assert not isinstance(info.value, FlowithError)


def test_a_replay_with_another_timeout_says_it_may_be_the_timeout(tmp_path: Path) -> None:
    """Only the timeout changed, and the error spoke of calls and streams only."""

    def generate_within(seconds: float) -> Session:
        async def session(client: FlowithClientBase) -> list[Any]:
            try:
                return [(await client.generate("a", timeout=seconds)).text]
            except TimeoutError:
                return ["timed out"]

        return session

    fake = FakeFlowith()
    fake.script(hang())
    cassette = tmp_path / "timeout.jsonl"
    assert anyio.run(record, cassette, generate_within(0.5), fake) == ["timed out"]
    with pytest.raises(CassetteMismatch, match="a timeout other than the recorded call's"):
        anyio.run(replay, cassette, generate_within(30))


def test_generations_replayed_in_another_order_say_which_request_never_came(
    tmp_path: Path,
) -> None:
    # Their events share one recorded stream, in the recorded order: the second
    # one's data waits for the first one's requests. The error gave only numbers.
    async def in_order(client: FlowithClientBase, prompts: Sequence[str]) -> list[Any]:
        return [(await client.generate(prompt)).text for prompt in prompts]

    cassette = tmp_path / "two.jsonl"
    anyio.run(record, cassette, lambda client: in_order(client, ["Alpha", "Beta"]), FakeFlowith())
    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, lambda client: in_order(client, ["Beta", "Alpha"]), 0.2)
    message = str(info.value)
    sender = r"sent by generate \(generate:\w+#1\)"
    assert re.search(rf"but request #\d+ \(POST /\S+, {sender}\) was never sent again", message)
    assert "in another order than recorded" in message


def test_the_same_cassette_replays_synchronously_in_the_core(tmp_path: Path) -> None:
    cassette = tmp_path / "one.jsonl"
    fake = FakeFlowith()
    fake.script(chunk("<think>greet</think>"), chunk("Hel"), chunk("lo!"), complete())
    (steps,) = anyio.run(record, cassette, one_generation, fake, backend="asyncio")
    result = replay_operation(
        cassette, lambda state: generate(state, "Say hello", model="deepseek-r1", stream=True)
    )
    assert [*result.emitted, result.value] == steps
    assert result.value.text == "Hello!"
    assert result.value.reasoning == "greet"


def test_a_changed_request_fails_with_a_readable_diff(tmp_path: Path) -> None:
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")

    async def different_prompt(client: FlowithClientBase) -> list[Any]:
        return [await client.generate("Say goodbye", model="deepseek-r1")]

    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, different_prompt, backend="trio")
    message = str(info.value)
    assert "does not match the recording" in message
    assert "recorded:" in message
    assert "replayed:" in message
    assert "Say goodbye" in message


def test_the_committed_cassette_replays_on_both_event_loops() -> None:
    """tests/cassettes/broad_session.jsonl (re-record: python -m tests.record_cassettes)."""
    cassette = CASSETTES / "broad_session.jsonl"
    on_asyncio, left_asyncio = anyio.run(replay, cassette, broad_session, backend="asyncio")
    on_trio, left_trio = anyio.run(replay, cassette, broad_session, backend="trio")
    assert comparable(on_asyncio) == comparable(on_trio)
    assert left_asyncio == left_trio == []
    assert on_trio[0].text  # a real answer came back, from the recording


async def undecodable_then_fine(client: FlowithClientBase) -> list[Any]:
    """An answer the transport cannot decode, then a good one."""
    try:
        await client.get_credits()
    except ResponseDecodeError as error:
        first: Any = (type(error).__name__, error.status_code, error.endpoint)
    return [first, await client.get_credits()]


def test_an_answer_the_transport_could_not_decode_replays_as_such(tmp_path: Path) -> None:
    # Only connection failures and timeouts were recorded: the replay found request 1
    # without an answer.
    fake = FakeFlowith()
    fake.fail_next(1, 200, path="/user/credits", headers=[("Content-Encoding", "gzip")])
    cassette = tmp_path / "undecodable.jsonl"
    recorded = anyio.run(record, cassette, undecodable_then_fine, fake, backend="asyncio")
    assert recorded[0] == ("ResponseDecodeError", 200, "GET /user/credits")
    replayed, unplayed = anyio.run(replay, cassette, undecodable_then_fine, backend="trio")
    assert replayed == recorded
    assert unplayed == []


async def download_said(client: FlowithClientBase, url: str) -> str:
    """What a download of ``url`` came to: ``downloaded``, or its error."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            await client.download(url, folder)
        except FlowithError as exc:
            return f"{type(exc).__name__}: {exc}"
    return "downloaded"


async def replayed_download(path: Path, url: str) -> str:
    async with ReplayClient(path, stall_timeout=1) as client:
        return await download_said(client, url)


@pytest.mark.parametrize("status", [200, 404])
def test_a_stream_found_undecodable_replays_its_error_not_a_dropped_connection(
    tmp_path: Path, status: int
) -> None:
    # A broken stream was replayed as "the recorded stream broke here", a dropped
    # connection: retried (then a mismatch for the retry's jitter), its message and
    # its 404 lost.
    from tests.canned_server import CannedServer

    gzip_cut = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"not deflate at all"
    headers = [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]

    async def recorded() -> tuple[str, str]:
        async with CannedServer(status, headers, gzip_cut) as server:
            url = f"{server.url}/f/file.txt"
            async with FlowithClient(FakeFlowith().token, record_to=path) as client:
                return url, await download_said(client, url)

    path = tmp_path / "undecodable.jsonl"
    url, said = anyio.run(recorded)
    expected = {
        200: "ConnectionFailedError: stream broke: the body could not be decoded: it is not "
        "gzip data",
        404: "ResponseDecodeError: HTTP 404 from GET /f/file.txt: its body could not be "
        "decoded: it is not gzip data",
    }
    assert said.startswith(expected[status])
    assert anyio.run(replayed_download, path, url) == said
    assert anyio.run(replayed_download, path, url, backend="trio") == said


def test_a_stream_broken_by_the_connection_replays_its_message(tmp_path: Path) -> None:
    from tests.canned_server import CannedServer

    async def recorded() -> tuple[str, str]:
        async with CannedServer(200, [], b"") as server:
            server.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes."
            url = f"{server.url}/f/file.txt"
            async with FlowithClient(FakeFlowith().token, record_to=path, max_retries=0) as client:
                return url, await download_said(client, url)

    path = tmp_path / "broken.jsonl"
    url, said = anyio.run(recorded)
    assert said.startswith("ConnectionFailedError: stream broke: ")
    assert anyio.run(replayed_download, path, url) == said  # was "the recorded stream broke here"


def test_a_request_that_never_left_replays_its_retry(tmp_path: Path) -> None:
    """A recorded timeout came back from the cassette as a request that had left: a
    generation's POST that timed out connecting, retried when recorded (it never
    left), was not retried on replay, which failed."""
    fake = FakeFlowith()
    fake.script(chunk("Hello"), complete())

    async def session(client: FlowithClientBase) -> list[Any]:
        if isinstance(client, FlowithClient):  # recording: its first POST never leaves
            send = client._send
            tripped: list[Request] = []

            async def connect_timeout(
                request: Request, timeout: Any, deadline: Any, operation: str
            ) -> Response:
                if "/completion/async" in request.url and not tripped:
                    tripped.append(request)
                    raise TimeoutError("request timed out (ConnectTimeout)", request_sent=False)
                return await send(request, timeout, deadline, operation)

            client._send = connect_timeout  # type: ignore[method-assign]
        return [(await client.generate("hi")).text]

    cassette = tmp_path / "never_left.jsonl"
    assert anyio.run(record, cassette, session, fake) == ["Hello"]
    assert '"request_sent":false' in cassette.read_text(encoding="utf-8")
    for backend in ("asyncio", "trio"):
        replayed, unplayed = anyio.run(replay, cassette, session, 2.0, backend=backend)
        assert replayed == ["Hello"]
        assert unplayed == []


def test_a_download_and_a_listener_retried_replay_as_recorded(tmp_path: Path) -> None:
    """Their retries draw the backoff's jitter, which the cassette holds."""
    fake = FakeFlowith()
    fake.fail_next(1, 502, method="GET", path="/f/x/a.bin")
    fake.fail_next(1, 503, method="GET", path="/user_stream/sse")
    urls: list[str] = []

    async def session(client: FlowithClientBase) -> list[Any]:
        if not urls:  # recording: the fake serves it from its server's URL
            urls.append(fake.add_file("/f/x/a.bin", b"hello"))
        url = urls[0]
        with tempfile.TemporaryDirectory() as folder:
            saved = (await client.download(url, folder)).read_bytes()
        async for _ in client.stream_user_sse(timeout=1):
            pass
        return [saved]

    cassette = tmp_path / "retried.jsonl"
    assert anyio.run(record, cassette, session, fake) == [b"hello"]
    text = cassette.read_text(encoding="utf-8")
    assert text.count('"kind":"jitter"') == 2
    replayed, unplayed = anyio.run(replay, cassette, session, backend="trio")
    assert replayed == [b"hello"]
    assert unplayed == []


def test_a_version_1_cassette_still_replays_on_both_event_loops() -> None:
    """tests/cassettes/broad_session_v1.jsonl: recorded before operations were named by
    method (version 1 named them by generator, e.g. ``rows:4f1cf181#1``)."""
    cassette = CASSETTES / "broad_session_v1.jsonl"
    assert cassette.read_text(encoding="utf-8").startswith('{"cassette":"flowith","version":1,')
    on_asyncio, left_asyncio = anyio.run(replay, cassette, broad_session, backend="asyncio")
    on_trio, left_trio = anyio.run(replay, cassette, broad_session, backend="trio")
    assert comparable(on_asyncio) == comparable(on_trio)
    assert left_asyncio == left_trio == []


async def different_calls_at_once(client: FlowithClientBase) -> list[Any]:
    """Calls of one generic operation (a listing, a JSON answer) running at once, then
    the same prompt sent in two conversations at once."""
    first = client.start_conversation()
    second = client.start_conversation()
    await first.send("Name a colour")
    await second.send("Name a fruit")
    results: dict[str, Any] = {}

    async def keep(key: str, call: Awaitable[Any]) -> None:
        results[key] = await call

    async with anyio.create_task_group() as group:
        for conv_id in (KYOTO_TRIP, QUARTERLY_REPORT, PRODUCT_LAUNCH):
            group.start_soon(keep, f"nodes {conv_id}", client.get_flow_nodes(conv_id))
        group.start_soon(keep, "user", client.get_auth_user())
        group.start_soon(keep, "rewards", client.get_daily_rewards_status())
        group.start_soon(keep, "featurebase", client.get_featurebase_status())
        for session in ("sess-a", "sess-b", "sess-c"):  # a request body, not a plain value
            group.start_soon(keep, session, client.remove_online_session(session))
        for language in ("en", "pl"):
            group.start_soon(keep, language, client.update_user_profile(language=language))
    # The generations at once on their own: a stream's data recorded after another
    # call's request waits for that request in a replay (see flowith_proto.replay).
    async with anyio.create_task_group() as group:
        group.start_soon(keep, "first", first.send("Who am I?"))
        group.start_soon(keep, "second", second.send("Who am I?"))
    return [results[key] for key in sorted(results)]


@pytest.mark.parametrize("recorded_on", ["asyncio", "trio"])
def test_different_calls_of_one_generic_operation_replay_in_any_order(
    tmp_path: Path, recorded_on: str
) -> None:
    # They were all named after the generic operation (rows, json_body) and the
    # conversation was not in a send's name, so a replay that started them in
    # another order gave each another's answer.
    fake = FakeFlowith()
    for text in ("Red", "Apple", "You are the first", "You are the second"):
        fake.script(chunk(text), complete())
    cassette = tmp_path / "at_once.jsonl"
    recorded = anyio.run(record, cassette, different_calls_at_once, fake, backend=recorded_on)
    for backend in ("asyncio", "trio"):
        for _ in range(10):
            replayed, unplayed = anyio.run(
                replay, cassette, different_calls_at_once, backend=backend
            )
            assert comparable(replayed) == comparable(recorded)
            assert unplayed == []


def uploads_at_once(folder: Path) -> Session:
    """Two files uploaded at once from ``folder``."""

    async def session(client: FlowithClientBase) -> list[Any]:
        results: dict[str, Any] = {}

        async def upload(name: str) -> None:
            results[name] = await client.upload_file(folder / name)

        async with anyio.create_task_group() as group:
            for name in ("a.txt", "b.txt"):
                (folder / name).write_text(f"the file {name}", encoding="utf-8")
                group.start_soon(upload, name)
        return [results["a.txt"], results["b.txt"]]

    return session


def test_files_uploaded_at_once_replay_from_another_folder(tmp_path: Path) -> None:
    # A file counted by its whole path: a test's temporary folder differs per run, so
    # a replay found no name and took the recordings in their recorded order.
    cassette = tmp_path / "uploads.jsonl"
    (tmp_path / "recorded").mkdir()
    recorded = anyio.run(
        record, cassette, uploads_at_once(tmp_path / "recorded"), FakeFlowith(), backend="trio"
    )
    for run in range(10):
        folder = tmp_path / f"replay{run}"
        folder.mkdir()
        replayed, unplayed = anyio.run(replay, cassette, uploads_at_once(folder), backend="trio")
        assert replayed == recorded
        assert unplayed == []


def test_operations_are_named_after_the_method_and_what_its_request_needs() -> None:
    names = OperationNames(Scrubber())

    def listing(conv_id: str) -> Any:
        return rows(ClientState(), lambda e: e.flow_nodes(conv_id), FlowNode, "get_flow_nodes")

    first, second, again = listing(KYOTO_TRIP), listing(QUARTERLY_REPORT), listing(KYOTO_TRIP)
    assert names.kind(first).startswith("listing:")
    assert names.kind(first) != names.kind(second)
    assert names.kind(first) == names.kind(again)
    talk, other = Conversation(conv_id=KYOTO_TRIP), Conversation(conv_id=QUARTERLY_REPORT)
    in_one, in_other = send(ClientState(), talk, "hi"), send(ClientState(), other, "hi")
    assert names.kind(in_one) != names.kind(in_other)
    # A version 1 cassette's names: the generator and its plain arguments only.
    legacy = OperationNames(Scrubber(), version=1)
    assert legacy.kind(first) == legacy.kind(second)
    assert legacy.kind(first).startswith("rows:")
    for operation in (first, second, again, in_one, in_other):
        operation.close()


def test_a_missing_call_is_named_after_its_method(tmp_path: Path) -> None:
    cassette = tmp_path / "one.jsonl"
    anyio.run(record, cassette, one_generation, FakeFlowith(), backend="asyncio")

    async def more(client: FlowithClientBase) -> list[Any]:
        return [*await one_generation(client), await client.get_flow_nodes(KYOTO_TRIP)]

    with pytest.raises(CassetteMismatch) as info:
        anyio.run(replay, cassette, more, backend="trio")
    assert str(info.value).startswith("get_flow_nodes (get_flow_nodes:")
    assert str(info.value).endswith("the recording ran: generate")


def test_the_committed_cassette_also_drives_a_synchronous_core_replay() -> None:
    """Its first operation, replayed by the core alone, with no event loop."""
    result = replay_operation(
        CASSETTES / "broad_session.jsonl",
        lambda state: generate(state, "What is the capital of Poland?"),
    )
    on_trio, _ = anyio.run(replay, CASSETTES / "broad_session.jsonl", broad_session, backend="trio")
    assert result.value == on_trio[0]
    assert result.emitted == ()


def test_the_recorded_session_calls_every_public_method() -> None:
    source = inspect.getsource(broad_session)
    lifecycle = {"close", "aclose"}  # the session's async with / logout close it
    for cls in (FlowithClient, ConversationSession):
        names = {n for n, m in inspect.getmembers(cls, callable) if not n.startswith("_")}
        missing = sorted(n for n in names - lifecycle if f".{n}(" not in source)
        assert not missing, f"{cls.__name__} methods not recorded: {missing}"


# -- the scrubber, on what a session rarely shows ----------------------------------------


SECRET = "s3cr3t-refresh-0123456789"


def scrubber() -> Scrubber:
    found = Scrubber()
    found.learn([SECRET])
    return found


def stored_bytes(stored: Any) -> bytes:
    data = decode_body(stored)
    assert data is not None
    return data


def test_a_body_that_is_not_utf_8_is_scrubbed_before_base64() -> None:
    body = b"\xff\xfe" + SECRET.encode() + b" and a JWT eyJhbGciOi.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    stored = scrubber().body(body)
    assert "base64" in stored
    kept = stored_bytes(stored)
    assert SECRET.encode() not in kept
    assert b"c2lnbmF0dXJl" not in kept  # the JWT lost its signature
    assert kept.startswith(b"\xff\xfe[REDACTED]")


def test_a_chunk_cut_inside_a_character_is_scrubbed_before_base64() -> None:
    chunk = f'data: {{"token":"{SECRET}","text":"caf'.encode() + "é".encode()[:1]
    kept = stored_bytes(scrubber().chunk(chunk))
    assert SECRET.encode() not in kept


def test_text_that_is_not_json_loses_its_token_fields() -> None:
    cut_short = '{"access_token":"never-learned-AAAA","refresh_token":"never-learned-BBBB","exp'
    kept = scrubber().text(cut_short)
    assert "never-learned" not in kept
    assert '"refresh_token":"[REDACTED]"' in kept


def test_a_refreshed_access_token_keeps_its_claims_unsigned() -> None:
    # Masked whole, the replay's token would have no expiry: the replayed client
    # would stop reading the clock before requests and every later time would shift.
    token = FakeFlowith().token
    body = json.dumps({"access_token": token, "refresh_token": SECRET}).encode()
    for stored in (scrubber().body(body), {"text": scrubber().text(body.decode()[:-1])}):
        kept = json.loads(stored["text"] + ("" if stored["text"].endswith("}") else "}"))
        assert kept["refresh_token"] == "[REDACTED]"
        assert kept["access_token"] == redact_jwt(token)
        assert read_claims(kept["access_token"]) == read_claims(token)
        assert not kept["access_token"].rsplit(".", 1)[1]  # no signature


def test_credentials_the_client_never_held_are_masked_too() -> None:
    headers = scrubber().headers(
        [("X-Api-Key", "sk-live-0001"), ("x-auth-token", "opaque-0002"), ("X-Request-Id", "r1")]
    )
    assert headers == [
        ["X-Api-Key", "[REDACTED]"],
        ["x-auth-token", "[REDACTED]"],
        ["X-Request-Id", "r1"],
    ]
    frame = (
        'data: {"cookie":"sid=raw-cookie-0003","Authorization":"Bearer raw-bearer-0004",'
        '"note":"{\\"access_token\\":\\"never-learned-0005\\",\\"n\\":1}",'
        '"author":"Ann","password":"hunter2-0006"}\n\n'
    )
    kept = scrubber().text(frame)
    for secret in ("0003", "0004", "0005", "0006"):
        assert secret not in kept
    assert '"author":"Ann"' in kept
    assert '\\"access_token\\":\\"[REDACTED]\\",\\"n\\":1' in kept
    assert scrubber().text("Authorization: Bearer abc.def-0007") == (
        "Authorization: Bearer [REDACTED]"
    )


@pytest.mark.parametrize(
    "kept",
    [
        "The ring bearer delivered it. Bearer bonds pay well.",  # a word after bearer
        '{"token_type":"bearer","expires_in":3600}',  # names a kind of token, holds none
        '{"tokenizer":"cl100k_base","prompt_tokens":12}',
    ],
)
def test_text_that_only_looks_like_a_credential_is_kept(kept: str) -> None:
    # A replay gave the model's answer and AuthSession.token_type back masked.
    assert scrubber().text(kept) == kept
    assert scrubber().body(kept.encode()) == {"text": kept}


@pytest.mark.parametrize(
    "token", ["sk_live_abcdefgh", "abc.def-ghij", "a1b2c3d4e5", "onlylettersbutverylongindeed"]
)
def test_what_follows_bearer_is_masked_when_it_can_be_a_credential(token: str) -> None:
    assert scrubber().text(f"auth: bearer {token}") == "auth: bearer [REDACTED]"


HEADER = '{"cassette":"flowith","version":1}'


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ('{"kind":"response","status":200,"headers":[],"body":null}', "needs 'n'"),
        ('{"kind":"response","n":1,"status":"abc","headers":[]}', "'status' of a 'response'"),
        ('{"kind":"stream","n":1,"status":null,"headers":[]}', "must be int, not None"),
        ('{"kind":"chunk","n":1,"t":0.1,"after":"five","data":null}', "'after' of a 'chunk'"),
        ('{"kind":"clock","value":true}', "'value' of a 'clock' record must be int or float"),
        ('{"kind":"id","op":7,"value":"x"}', "'op' of a 'id' record must be str"),
        ('{"kind":"request","n":1,"method":"GET","url":"u","headers":[["a"]]}', "pairs"),
        ('{"kind":"end","n":1,"reason":"gone"}', "eof, broken or closed"),
        ('{"kind":"chunk","n":1,"t":0,"after":0,"data":{"base64":"%%%"}}', "'data' of a"),
        ('{"kind":"rewind"}', "unknown record kind 'rewind'"),
        # Read by Python's json as floats, and once a bare ValueError in the replay.
        ('{"kind":"clock","value":NaN}', "'value' of a 'clock' record must be a finite number"),
        ('{"kind":"chunk","n":1,"t":Infinity,"after":0,"data":null}', "finite number, not inf"),
        ('{"kind":"end","n":1,"reason":"broken","fault":1}', "'fault' of an 'end' record"),
    ],
)
def test_a_hand_edited_record_is_refused_with_its_line(record: str, problem: str) -> None:
    lines = [HEADER, '{"kind":"clock","value":1.5}', record]
    with pytest.raises(CassetteError, match="line 3 of the cassette") as info:
        Tape(lines)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "header",
    [
        "[" * 100_000 + "]" * 100_000,  # a RecursionError
        '{"cassette":"flowith","version":2,"token":5}',  # a bare ValueError
        '{"cassette":"flowith","version":2,"edge_url":5}',  # a ValidationError
        '{"cassette":"flowith","version":2,"user_id":"user-1"}',  # not the token's, no UUID
    ],
)
def test_a_hand_edited_header_is_a_cassette_error(header: str, tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="cassette header"):
        Tape([header]).state()
    cassette = tmp_path / "edited.jsonl"
    cassette.write_text(header + "\n", encoding="utf-8")
    with pytest.raises(CassetteError, match="cassette header"):
        ReplayClient(cassette)


def test_a_cassette_of_a_token_whose_user_is_no_uuid_still_replays(tmp_path: Path) -> None:
    """A token's own user needs no UUID (the client never checked one): the check of
    user_ids given to the constructor refused the replay of such a recording."""
    token = jwt.encode({"sub": "user-1", "exp": 4_102_444_800}, "k" * 32, algorithm="HS256")
    header = {"cassette": "flowith", "version": 2, "user_id": "user-1", "token": token}
    cassette = tmp_path / "odd-user.jsonl"
    cassette.write_text(json.dumps(header) + "\n", encoding="utf-8")
    assert ReplayClient(cassette).user_id == "user-1"


def test_a_recorded_decoding_failure_goes_back_into_the_operation(tmp_path: Path) -> None:
    """replay_operation raised a recorded ResponseDecodeError where the async
    replay (and the recorded run) handed it to the operation, which recovers."""
    path = tmp_path / "decode.jsonl"
    fake = FakeFlowith()
    fake.script(chunk("Hel"), chunk("lo!"), complete(""))  # without its text: the row is read

    async def say_hello(client: FlowithClientBase) -> list[Any]:
        return [(await client.generate("Say hello")).text]

    assert anyio.run(record, path, say_hello, fake) == ["Hello!"]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    (row_read,) = [
        r["n"] for r in records if r.get("kind") == "request" and "/flow_node?" in r["url"]
    ][-1:]
    edited = [
        {"kind": "error", "n": row_read, "type": "ResponseDecodeError", "message": "bad gzip"}
        if r.get("kind") == "response" and r.get("n") == row_read
        else r
        for r in records
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in edited), encoding="utf-8")
    replayed = replay_operation(path, lambda state: generate(state, "Say hello"))
    assert replayed.value.text == "Hello!"  # what the stream brought


@pytest.mark.parametrize("line", [1, 2, 3, 200])
def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path: Path, line: int) -> None:
    # Far into a long file too: a text file decodes blocks of lines at once, and its
    # error named no line (past the header) or blamed the header (within its block).
    lines = [HEADER.encode(), *[b'{"kind":"clock","value":1.5}'] * 300]
    lines[line - 1] = lines[line - 1][:-1] + b"\xff}"
    cassette = tmp_path / "bad.jsonl"
    cassette.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(CassetteError, match=rf"^line {line} of the cassette is not UTF-8 text"):
        Tape(cassette)


def test_a_call_the_recording_never_made_is_named_as_such() -> None:
    # Its first request, not only its first drawn value, says so (it said the call
    # "asks for one more" request, as if it had been recorded).
    tape = Tape(
        [
            HEADER,
            '{"kind":"clock","op":"generate:ab12#1","value":1.5}',
            '{"kind":"request","n":1,"op":"generate:ab12#1","method":"POST",'
            '"url":"https://edge.test/completion","headers":[]}',
        ]
    )
    request = Request("GET", "https://edge.test/user/credits")
    with pytest.raises(CassetteMismatch) as info:
        tape.match(request, stream=False, operation="credits:cd34#1")
    assert str(info.value) == (
        "credits (credits:cd34#1) was not recorded with these arguments, or not this many "
        "times; the recording ran: generate"
    )
    with pytest.raises(CassetteMismatch, match=r"^credits \(credits:cd34#1\) was not"):
        tape.draw("clock", "credits:cd34#1")


def new_recorder(path: Path, secrets: Sequence[str]) -> Recorder:
    """A recorder into ``path`` for a client that held ``secrets``."""
    return Recorder(
        path,
        user_id="u",
        access_token="",
        has_refresh_token=False,
        edge_url="https://edge.test",
        supabase_url="https://sb.test",
        secrets=secrets,
    )


def recorded_response(tmp_path: Path, response: Response, secrets: Sequence[str] = ()) -> str:
    """The cassette text of one recorded answer."""
    path = tmp_path / "answer.jsonl"
    recorder = new_recorder(path, secrets)
    recorder.response(1, response)
    recorder.close()
    return path.read_text(encoding="utf-8")


def test_a_token_an_answer_brings_is_hidden_everywhere_in_that_answer(tmp_path: Path) -> None:
    # The answer was recorded before the client learned the tokens it brought: the
    # new refresh token was masked in its own field, and kept in a header and a note.
    new = "rtNEW_rotated_77QQpp"
    body = json.dumps({"refresh_token": new, "note": f"rotated to {new}"}).encode()
    text = recorded_response(tmp_path, Response(200, (("x-session-refresh", new),), body))
    assert new not in text
    assert text.count("[REDACTED]") == 3


def test_a_relative_location_is_recorded_masked(tmp_path: Path) -> None:
    # Only a URL with "://" was masked: an OAuth callback's code went in as it was.
    headers = (("Location", "/auth/callback?code=OAUTHCODEsecret777&state=x"),)
    text = recorded_response(tmp_path, Response(302, headers, b""))
    assert "OAUTHCODEsecret777" not in text
    assert "/auth/callback?code=[REDACTED]&state=x" in text


def test_an_answer_quoting_its_urls_credentials_is_recorded_masked(tmp_path: Path) -> None:
    # S3's SignatureDoesNotMatch spells out the signature and the security token it
    # was sent, outside any URL: the cassette held them, the request's URL masked.
    signature, token = "5d1f0c2b9a8e7d6c5b4a3928", "IQoJb3JpZ2luX2VjEXAMPLE"
    url = f"https://cdn.test/f.png?X-Amz-Security-Token={token}&X-Amz-Signature={signature}"
    path = tmp_path / "download.jsonl"
    recorder = new_recorder(path, [])
    number = recorder.request(Request("GET", url, follow_redirects=True), "download")
    body = f"<Error><SignatureProvided>{signature}</SignatureProvided>{token}</Error>"
    recorder.response(number, Response(403, (("content-type", "application/xml"),), body.encode()))
    recorder.close()
    text = path.read_text(encoding="utf-8")
    assert signature not in text
    assert token not in text
    assert "<SignatureProvided>[REDACTED]</SignatureProvided>[REDACTED]" in text


@pytest.mark.parametrize(
    "body",
    [
        b"access_token=at-0123456789&refresh_token=NEWRTSECRETrefresh456",
        b"<html><p>Your new session: NEWRTSECRETrefresh456</p></html>",
        b"\xff refresh NEWRTSECRETrefresh456",  # no UTF-8 either
    ],
)
def test_a_token_grant_answered_without_json_is_recorded_as_redacted(
    tmp_path: Path, body: bytes
) -> None:
    # Its tokens may be anywhere in it, where no field name tells: the new refresh
    # token was recorded in clear, though the error refused to quote the answer.
    path = tmp_path / "refresh.jsonl"
    recorder = new_recorder(path, [])
    endpoints = Endpoints(FlowithConfig(supabase_url="https://sb.test"), Credentials())
    refresh = endpoints.refresh_session("rt-0001-abcdefgh")  # marked: it grants tokens
    number = recorder.request(refresh, "refresh")
    recorder.response(number, Response(200, (("content-type", "text/html"),), body))
    other = recorder.request(Request("GET", "https://sb.test/rest/v1/conversation"), "list")
    recorder.response(other, Response(500, (), b"plain text is kept"))
    recorder.close()
    text = path.read_text(encoding="utf-8")
    assert "NEWRTSECRETrefresh456" not in text
    responses = [json.loads(line) for line in text.splitlines() if '"response"' in line]
    assert [r["body"] for r in responses] == [
        {"text": "[REDACTED]"},
        {"text": "plain text is kept"},
    ]


def test_only_the_tokens_of_a_token_answer_are_learned(tmp_path: Path) -> None:
    # Every credential-named field's value was learned and masked wherever it appeared
    # later: a replay, which learns nothing from the answers it plays, then saw the
    # program send "work-laptop" where the recording held [REDACTED].
    scrubber = Scrubber()
    body = {"token_label": "work-laptop", "theme": "work-laptop", "refresh_token": "rtNEW0001x"}
    stored = scrubber.body(json.dumps(body).encode())
    assert json.loads(stored["text"]) == {
        "token_label": "[REDACTED]",
        "theme": "work-laptop",
        "refresh_token": "[REDACTED]",
    }
    assert scrubber.secrets == {"rtNEW0001x"}
    assert scrubber.text('{"title":"work-laptop"}') == '{"title":"work-laptop"}'


def test_a_recording_client_holds_a_bounded_number_of_secrets() -> None:
    # Each refresh added its tokens for good: a soak that refreshed 2,000 times held
    # 2,000 secrets, and each stream chunk took 16 ms to check against them.
    scrubber = Scrubber()
    current = ["sb_publishable_key_0123", "cookie-value-0123"]
    for refresh in range(1_000):
        scrubber.learn([*current, f"rt_refresh_{refresh:06}"])  # as the client does
    assert len(scrubber.secrets) == MAX_SECRETS
    assert scrubber.text(" ".join(current)) == "[REDACTED] [REDACTED]"
    assert scrubber.text("rt_refresh_000999") == "[REDACTED]"  # the latest are kept
    assert scrubber.text("rt_refresh_000000") == "rt_refresh_000000"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text("abc", min_size=8, max_size=24), min_size=1, max_size=4),
    st.text("abc", max_size=40),
)
def test_the_bytes_held_back_are_the_longest_start_of_a_secret(
    secrets: list[str], end: str
) -> None:
    # Checked one possible length at a time, which cost 16 ms per chunk with 2,000
    # secrets; now only where a secret's first byte occurs.
    scrubber = Scrubber()
    scrubber.learn(secrets)
    data = b"x" * 70_000 + end.encode()  # a line too long to hold whole
    starts = [k for s in secrets for k in range(1, len(s)) if data.endswith(s[:k].encode())]
    assert scrubber.held_back(data) == max(starts, default=0)


@settings(max_examples=300, deadline=None)
@given(st.text("eyJa.- ", max_size=60))
def test_the_bytes_held_back_for_a_jwt_start_where_its_run_ends(end: str) -> None:
    # Searched as "eyJ[\w.-]*\Z" from every "eyJ" of the held window, each try
    # reading to its end; now the last run is found once and "eyJ" looked for in it.
    data = b"x" * 70_000 + end.encode()  # a line too long to hold whole
    tail = data[-4096:]
    first = re.search(rb"eyJ[\w.-]*\Z", tail)  # what is held: the reading of before
    assert Scrubber().held_back(data) == (len(tail) - first.start() if first else 0)


def test_an_escaped_lone_surrogate_in_a_masked_answer_is_recorded_and_replayed(
    tmp_path: Path,
) -> None:
    # Masking re-wrote the JSON with the surrogate raw, which no UTF-8 file takes:
    # the recording failed with a UnicodeEncodeError.
    body = b'{"access_token":"at-never-learned-123","title":"half \\ud83d"}'
    text = recorded_response(tmp_path, Response(200, (), body))
    record = json.loads(text.splitlines()[1])
    stored = json.loads(record["body"]["text"])
    assert stored == {"access_token": "[REDACTED]", "title": "half \ud83d"}
    assert stored_bytes(record["body"]).decode("utf-8")  # what a replay hands the client


def test_a_held_secret_escaped_in_json_is_hidden_too(tmp_path: Path) -> None:
    # The text was searched as sent: "rt\u005fSECRET..." decodes to the secret.
    held = "rt_SECRET_abc123XYZ"
    body = ('{"message":"no session for ' + held.replace("_", "\\u005f") + '"}').encode()
    text = recorded_response(tmp_path, Response(500, (), body), secrets=[held])
    record = json.loads(text.splitlines()[1])
    assert json.loads(record["body"]["text"]) == {"message": "no session for [REDACTED]"}


def test_a_held_secret_escaped_in_a_stream_chunk_or_plain_text_is_hidden_too() -> None:
    # Only a body that is JSON as a whole was decoded: a frame quoting a cookie
    # JSON-escaped, or a text/plain answer quoting it percent-encoded, kept it.
    held = "Zm9v/YmFy+YmF6cXV4==xyzw"
    recorder = Scrubber()
    recorder.learn([held])
    frame = b'data: {"info":"session Zm9v\\/YmFy+YmF6cXV4==xyzw"}\n\n'
    stored = recorder.chunk(frame)
    assert stored == {"text": 'data: {"info":"session [REDACTED]"}\n\n'}
    plain = b"expired; resume at /login?s=Zm9v%2FYmFy%2BYmF6cXV4%3D%3Dxyzw"
    assert recorder.body(plain) == {"text": "expired; resume at /login?s=[REDACTED]"}


class Chunks:
    """A stream body handing out fixed chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, deadline: float | None) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        return None


def record_stream(
    tmp_path: Path, first: bytes, second: bytes, *, secrets: Sequence[str] = ()
) -> str:
    """The cassette text of a stream that arrived as ``first`` then ``second``,
    recorded by a client that held ``secrets``."""
    path = tmp_path / "split.jsonl"
    recorder = new_recorder(path, secrets)
    body = recorder.stream(1, 200, [], Chunks(first, second), lambda: 0.0)

    async def read_all() -> bytes:
        parts = []
        while data := await body.read(None):
            parts.append(data)
        return b"".join(parts)

    assert anyio.run(read_all) == first + second  # the client still gets the real bytes
    recorder.close()
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("field", ["refresh_token", "password"])
def test_a_credential_field_the_client_never_held_cut_between_chunks_is_scrubbed(
    tmp_path: Path, field: str
) -> None:
    """Cut in its value or in its name, the field is seen whole."""
    event = f'data: {{"type":"x","{field}":"OPAQUEnewREFRESHsecret99"}}\n\n'.encode()
    for at in (event.index(b"OPAQUE") + 9, event.index(field.encode()) + 5):
        text = record_stream(tmp_path, event[:at], event[at:])
        assert "secret99" not in text
        assert "OPAQUE" not in text


@pytest.mark.parametrize("where", ["value", "name"])
def test_a_credential_field_cut_in_a_line_too_long_to_hold_is_scrubbed(
    tmp_path: Path, where: str
) -> None:
    """Past the 64 KiB a line is held whole, a cut credential field leaked."""
    text = "a" * (70 * 1024)
    event = f'data: {{"chunks":["{text}"],"refresh_token":"OPAQUEnewREFRESHsecret99"}}\n\n'.encode()
    at = event.index(b"OPAQUE") + 9 if where == "value" else event.index(b"refresh_to") + 5
    recorded = record_stream(tmp_path, event[:at], event[at:])
    assert "secret99" not in recorded
    assert "OPAQUE" not in recorded


def test_credentials_in_urls_are_masked() -> None:
    location = (
        "https://flowith.io/cb?code=OAUTHCODE0123#access_token=tok-0001&refresh_token=tok-0002"
        "&provider_token=ya29.tok-0003 and https://alice:pw-0004@proxy.test:3128 "
        "https://cdn.test/f.png?X-Amz-Signature=sig-0005&id=keep"
    )
    kept = scrubber().text(location)
    for secret in ("OAUTHCODE", "0001", "0002", "0003", "0004", "0005"):
        assert secret not in kept
    assert "alice:" in kept
    assert "id=keep" in kept


def test_signed_url_credentials_are_masked_whatever_the_scheme_names_them() -> None:
    # Names were listed exactly: every signed-URL scheme the list missed was kept.
    signed = {
        "x-oss-signature": "OSSSIG0123",  # Alibaba OSS
        "x-oss-security-token": "OSSSTS0123",
        "q-signature": "COSSIG0123",  # Tencent COS
        "hdnts": "exp=1999999999~acl=/*~hmac=AKAMAI0123",  # Akamai
        "auth_key": "1999999999-0-0-ALIYUN0123",  # Aliyun CDN
        "upload_token": "UPLOAD0123",
        "X-Goog-Credential": "GOOG0123",
    }
    url = "https://cdn.test/a.png?" + "&".join(f"{k}={v}" for k, v in signed.items())
    kept = scrubber().text(url + "&width=512&token_type=bearer&user_id=eq.u-1&select=id")
    for secret in ("OSSSIG", "OSSSTS", "COSSIG", "AKAMAI", "ALIYUN", "UPLOAD", "GOOG0"):
        assert secret not in kept
    assert kept.endswith("&width=512&token_type=bearer&user_id=eq.u-1&select=id")


@pytest.mark.parametrize("cut", [1, 6, len(SECRET) - 1])
def test_a_secret_cut_between_two_stream_chunks_is_still_scrubbed(tmp_path: Path, cut: int) -> None:
    event = f'data: {{"note":"{SECRET}"}}\n\n'.encode()
    at = event.index(SECRET.encode()) + cut
    text = record_stream(tmp_path, event[:at], event[at:], secrets=[SECRET])
    assert SECRET not in text
    chunks = [json.loads(line) for line in text.splitlines()[1:] if '"chunk"' in line]
    recorded = b"".join(stored_bytes(record["data"]) for record in chunks)
    assert recorded == event.replace(SECRET.encode(), b"[REDACTED]")


def test_a_credential_field_before_a_long_line_cut_inside_a_character_is_scrubbed(
    tmp_path: Path,
) -> None:
    """A line too long to hold whole was cut wherever the secrets allowed, inside a
    character too: that chunk, no UTF-8 text on its own, was stored as bytes, where
    credential-named fields were not masked."""
    event = ('data: {"api_key": "never-learned-key-0123"} ' + "漢" * 40_000 + "\n\n").encode()
    at = len(event) * 3 // 4  # past the 64 KiB held whole
    at += event[at] & 0xC0 != 0x80  # inside a character
    recorded = record_stream(tmp_path, event[:at], event[at:])
    assert "never-learned" not in recorded
    chunks = [json.loads(line) for line in recorded.splitlines()[1:] if '"chunk"' in line]
    assert all("text" in record["data"] for record in chunks)
    assert b"".join(stored_bytes(record["data"]) for record in chunks) == event.replace(
        b"never-learned-key-0123", b"[REDACTED]"
    )


def test_bytes_that_are_not_utf_8_lose_credential_fields_and_url_credentials_too() -> None:
    body = (
        b'\xff{"api_key": "never-learned-key-0123", "u": "https://cdn.test/f?token=tok-0001"'
        b', "auth": "Bearer abcdefghijklmnop0123"} \xe6\x97'
    )
    kept = stored_bytes(scrubber().body(body))
    for secret in (b"never-learned", b"tok-0001", b"abcdefghijklmnop0123"):
        assert secret not in kept
    assert kept.startswith(b"\xff{")
    assert kept.endswith(b"} \xe6\x97")


@pytest.mark.parametrize(
    ("data", "held"),
    [
        (b'data: {"a":1}\r\r', 0),
        (b'data: {"a":1}\r\n\r', 0),
        (b'data: {"a":1}\r\rdata: {"b"', len(b'data: {"b"')),
        (b'data: {"a":1}\n\n', 0),
    ],
)
def test_a_cr_ends_the_line_the_recorder_holds_back(data: bytes, held: int) -> None:
    # LF alone was looked for: a stream of CR line breaks was held back whole, its
    # events recorded when it closed, after requests sent later, and the replay stalled.
    assert Scrubber().held_back(data) == held


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stream_of_cr_line_breaks_replays(tmp_path: Path, backend: str) -> None:
    async def session(client: FlowithClientBase) -> list[Any]:
        first = [step.text_delta async for step in client.generate_stream("one")]
        return [first, (await client.generate("two")).text]

    fake = FakeFlowith()
    fake.script(chunk("Hel"), chunk("lo"), complete(), line_ending="\r")
    fake.script(chunk("Wor"), chunk("ld"), complete(), line_ending="\r")
    path = tmp_path / "cr.jsonl"
    recorded = anyio.run(record, path, session, fake)
    assert recorded == [["Hel", "lo", ""], "World"]
    replayed, unplayed = anyio.run(replay, path, session, backend=backend)
    assert (replayed, unplayed) == (recorded, [])


class _UidCookieFlowith(FakeFlowith):
    """Sets ``uid=<user id>`` on every answer, as many sites do."""

    def handle(self, *args: Any, **kwargs: Any) -> Any:
        from flowith_proto.fake.wire import FakeResponse

        answer = super().handle(*args, **kwargs)
        if isinstance(answer, FakeResponse):
            cookie = ("Set-Cookie", f"uid={self.user_id}; Path=/")
            answer = attrs.evolve(answer, headers=(*answer.headers, cookie))
        return answer


def test_a_cookie_whose_value_a_request_holds_too_replays(tmp_path: Path) -> None:
    # The recording masked the cookie's value (the user id) in every request; the
    # replay, which never learns a cookie, sent the user id, and did not match.
    async def session(client: FlowithClientBase) -> list[Any]:
        credits = await client.get_credits()
        return [len(credits), (await client.generate("hi")).text]

    fake = _UidCookieFlowith()
    fake.script(chunk("Hello"), complete())
    path = tmp_path / "uid.jsonl"
    recorded = anyio.run(record, path, session, fake)
    assert "user_id=[REDACTED]" in path.read_text()  # masked in the requests
    replayed, unplayed = anyio.run(replay, path, session)
    assert (replayed, unplayed) == (recorded, [])


def test_a_value_the_recording_masked_matches_a_run_of_characters_only() -> None:
    from flowith_proto.replay import _matches

    recorded = 'https://h/stream?user_id=[REDACTED]&x=1'
    assert _matches(recorded, "https://h/stream?user_id=0f1e-2d3c&x=1")
    assert not _matches(recorded, "https://h/stream?user_id=a&b=2&x=1")  # no next parameter
    assert not _matches(recorded, "https://h/stream?user_id=&x=1")
    assert _matches({"text": '{"id":"[REDACTED]"}'}, {"text": '{"id":"u-1"}'})
    assert not _matches({"text": '{"id":"[REDACTED]"}'}, {"text": '{"id":"u-1","more":1}'})
    assert not _matches([["a", "[REDACTED]"]], [["a", "b"], ["c", "d"]])
    # What today's rules mask in the live request, an older recording may have kept.
    assert _matches("https://h/a?q-signature=abc123", "https://h/a?q-signature=[REDACTED]")


def test_a_request_unlike_a_masked_recording_is_refused_in_one_pass() -> None:
    # Each mask could stop anywhere in a run: ten masks in a row took seconds to
    # refuse, twelve minutes. Run apart, so that such a hang fails the test.
    check = (
        "from flowith_proto.replay import _matches\n"
        "assert not _matches('[REDACTED],' * 40 + 'end', 'a,' * 120 + 'enX')\n"
        "assert _matches('[REDACTED],' * 40 + 'end', 'a,' * 40 + 'end')\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=30)


def test_a_cassette_recorded_with_a_base_url_not_in_ascii_replays(tmp_path: Path) -> None:
    # Its requests went out as given; the client now sends the host's ASCII name.
    lines = [
        json.dumps({"cassette": "flowith", "version": CASSETTE_VERSION,
                    "edge_url": "http://bücher.example", "supabase_url": "http://bücher.example"}),
        json.dumps({"kind": "request", "n": 1, "method": "GET",
                    "url": "http://bücher.example/user/credits", "headers": []}),
    ]
    tape = Tape(lines)
    assert tape.unplayed == ["GET http://xn--bcher-kva.example/user/credits"]
