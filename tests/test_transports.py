"""One behavioural suite, run on httpx+asyncio, httpx+trio and aiohttp against the
fake Flowith on loopback: real sockets, real HTTP, real SSE bytes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import socket
import sys
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto import abc as abc_module
from flowith_proto.errors import (
    APIError,
    ClientStateError,
    ConnectionFailedError,
    FileUploadError,
    FlowithError,
    GenerationError,
    NotFoundError,
    PermissionDeniedError,
    TimeoutError,
)
from flowith_proto.fake import (
    FakeFlowith,
    Step,
    Turn,
    chunk,
    close_stream,
    comment,
    complete,
    fail,
    hang,
    heartbeat,
    other_node,
    pause,
    row,
    workflow_complete,
)
from flowith_proto.models import GenerationOutput
from flowith_proto.state import MAX_COOKIES
from tests.canned_server import CannedServer, raw_server
from tests.conftest import MakeClient, Transport, eventually, shown_with_variables

pytestmark = pytest.mark.anyio


async def collect(iterator: object) -> list[GenerationOutput]:
    return [output async for output in iterator]  # type: ignore[attr-defined]


async def test_plain_chunks(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(chunk("The capital "), chunk("of Poland "), chunk("is Warsaw."), complete())
    async with make_client() as client:
        result = await client.generate("Capital of Poland?")
    assert result.text == "The capital of Poland is Warsaw."
    assert result.node_id in fake.nodes
    assert result.conv_id in fake.conversations


async def test_think_tags_split_across_chunks_while_streaming(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(
        chunk("<thi"),
        chunk("nk>Let me think"),
        chunk(" hard.</th"),
        chunk("ink>Answer: "),
        chunk("42"),
        complete(),
    )
    async with make_client() as client:
        steps = await collect(client.generate_stream("Meaning of life?"))
    final = steps[-1]
    assert (final.text, final.reasoning) == ("Answer: 42", "Let me think hard.")
    assert "".join(s.text_delta for s in steps) == "Answer: 42"
    assert "".join(s.reasoning_delta for s in steps) == "Let me think hard."
    assert all("<" not in s.text_delta for s in steps)


async def test_a_run_gives_its_result_again_after_its_end(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # result() after iterating (as openai's get_final_completion()) returned None.
    fake.script(chunk("Answer: "), chunk("42"), complete())
    async with make_client() as client:
        run = client.generate_stream("Meaning of life?")
        steps = [step async for step in run]
        assert await run.result() == steps[-1]
        assert (await run.result()).text == "Answer: 42"
        left = client.generate_stream("unfinished")
        await left.aclose()
        with pytest.raises(ClientStateError, match="closed before its end"):
            await left.result()
        fake.script(chunk("half"), fail("quota"))
        failed = client.generate_stream("fails")
        for _ in range(2):  # the second call raised ClientStateError, hiding the cause
            with pytest.raises(GenerationError, match="quota"):
                await failed.result()


async def test_a_run_is_iterated_by_one_task_at_a_time(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # A second task's result() sent None into the first one's pending step: an
    # AttributeError in one task and None in the other.
    fake.script(chunk("slow"), pause(0.3), complete())
    outcomes: list[object] = []

    async def wait_for(run: Any) -> None:
        try:
            outcomes.append((await run.result()).text)
        except ClientStateError as exc:
            outcomes.append(str(exc))

    async with make_client() as client:
        run = client.generate_stream("hi")
        async with anyio.create_task_group() as both:
            both.start_soon(wait_for, run)
            await anyio.sleep(0.1)
            both.start_soon(wait_for, run)
    assert outcomes == ["this run is already being iterated by another task", "slow"]


async def test_a_client_is_entered_once_and_never_reopened(make_client: MakeClient) -> None:
    # A second block entered a closed client (its calls failed later), and a
    # nested one closed the client under the outer block.
    client = make_client()
    async with client:
        with pytest.raises(ClientStateError, match="already open"):
            async with client:
                pass
        assert await client.get_credits() is not None  # the outer block still works
    with pytest.raises(ClientStateError, match="not reopened") as info:
        async with client:
            pass
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(ClientStateError, match="the client is closed"):
        await client.get_credits()


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("multiline", [False, True])
async def test_line_endings_and_multiline_data(
    fake: FakeFlowith, make_client: MakeClient, line_ending: str, multiline: bool
) -> None:
    fake.script(
        chunk("héllo, "),
        comment("keep-alive"),
        heartbeat(),
        chunk("wörld 🌍"),
        complete(),
        line_ending=line_ending,  # type: ignore[arg-type]
        multiline=multiline,
    )
    async with make_client() as client:
        steps = await collect(client.generate_stream("greet"))
    assert steps[-1].text == "héllo, wörld 🌍"
    assert "".join(s.text_delta for s in steps) == "héllo, wörld 🌍"


async def test_other_nodes_events_are_ignored(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(
        other_node("noise"),
        chunk("mine "),
        other_node("more noise"),
        chunk("only"),
        other_node("even more"),
        complete(),
    )
    async with make_client() as client:
        steps = await collect(client.generate_stream("hi"))
    assert "".join(s.text_delta for s in steps) == "mine only"


async def test_stream_closing_early_falls_back_to_the_row(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(close_stream(), pause(0.2), row("done", "Recovered from the row."))
    async with make_client() as client:
        result = await client.generate("hi", timeout=10)
    assert result.text == "Recovered from the row."
    assert fake.requests_to("GET", "/rest/v1/flow_node")


async def test_poll_fallback_after_deltas_sends_only_what_is_new(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("Hello"), close_stream(), row("done", "Hello, world"))
    async with make_client() as client:
        steps = await collect(client.generate_stream("hi", timeout=10))
    assert [s.text_delta for s in steps] == ["Hello", ", world"]
    assert steps[-1].text == "Hello, world"


async def test_a_silent_server_times_out_on_time(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(hang())
    async with make_client() as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.generate("hi", timeout=0.6)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3.0


@pytest.fixture
def unconnectable() -> Iterator[str]:
    """A loopback URL whose connections never complete: a listener with a full
    accept queue, so the kernel drops further connection attempts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for each in (*fillers, listener):
            each.close()


async def test_a_write_stuck_connecting_is_retried_as_never_sent(
    fake: FakeFlowith, transport: Transport, unconnectable: str, tmp_path: Path
) -> None:
    # It never left: repeating it cannot apply it twice, as after a refused connection.
    cassette = tmp_path / "attempts.jsonl"
    client = transport.client_class()(
        fake.token,
        edge_url=unconnectable,
        supabase_url=unconnectable,
        timeout=0.3,
        record_to=cassette,
    )
    async with client:
        with pytest.raises(TimeoutError, match="was not sent: connecting took longer") as info:
            await client.claim_daily_reward()
    assert info.value.request_sent is False
    records = [json.loads(line) for line in cassette.read_text().splitlines()[1:]]
    attempts = [r for r in records if r["kind"] == "request"]
    assert len(attempts) == 3  # the first try and max_retries=2 retries
    assert all(r["method"] == "POST" for r in attempts)


async def test_a_deadline_reached_while_polling_is_the_librarys_timeout(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("partial"), close_stream())  # the row never becomes final
    async with make_client(poll_interval=0.3) as client:
        started = time.monotonic()
        # (The last read may be under way at the deadline: the deadline cuts it short.)
        deadline = "still generating at the deadline|did not finish in time"
        with pytest.raises(TimeoutError, match=deadline) as caught:
            await client.generate("hi", timeout=1.0)
        elapsed = time.monotonic() - started
    assert isinstance(caught.value, FlowithError)
    assert caught.value.deadline_passed
    assert 0.9 <= elapsed < 3.0


async def test_a_request_the_callers_deadline_cut_short_says_so(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A row read within the last milliseconds of a generation's timeout failed
    with "request took longer than 0.00143s", as if that were the limit asked for."""
    fake.script(chunk("partial"), close_stream())  # the row never becomes final
    async with make_client(poll_interval=30.0) as client:  # the client's timeout: 30 s
        send = client._send

        async def row_reads_time_out(
            request: Any, timeout: Any, deadline: Any, operation: str
        ) -> Any:
            if request.method == "GET" and "/rest/v1/flow_node" in request.url:
                raise TimeoutError("request took longer than 0.00143s")
            return await send(request, timeout, deadline, operation)

        client._send = row_reads_time_out
        with pytest.raises(TimeoutError, match="did not finish in time") as caught:
            await client.generate("hi", timeout=1.0)
    assert caught.value.deadline_passed


async def test_a_conversation_turn_obeys_the_clients_result_timeout(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("slow "), pause(30), complete())
    async with make_client(result_timeout=0.8) as client:
        session = client.start_conversation()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await session.send("hi")
    assert time.monotonic() - started < 3.0


async def test_heartbeats_alone_do_not_keep_a_generation_alive(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("partial"), pause(30))  # heartbeats flow, nothing else
    async with make_client() as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.generate("hi", timeout=0.8)
    assert time.monotonic() - started < 3.0


async def test_failure_event_raises_a_typed_error(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("I will"), fail(error="upstream overloaded", error_type="provider_error"))
    async with make_client() as client:
        with pytest.raises(GenerationError) as info:
            await client.generate("hi")
    assert info.value.error == "upstream overloaded"
    assert info.value.error_type == "provider_error"


async def test_two_turn_session(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(chunk("Nice to meet you, Alice."), complete())
    fake.script(chunk("Your name is Alice."), complete())
    async with make_client() as client:
        session = client.start_conversation(model="gemini-3.1-pro-preview")
        first = await session.send("My name is Alice.")
        second = await session.send("What is my name?")
    assert (first.text, second.text) == ("Nice to meet you, Alice.", "Your name is Alice.")
    assert session.turn == 2
    assert first.conv_id == second.conv_id == session.conv_id
    completions = fake.requests_to("POST", "/completion/async")
    assert completions[1].json()["messages"] == [
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": "Nice to meet you, Alice."},
        {"role": "user", "content": "What is my name?"},
    ]
    second_user_node = fake.nodes[fake.nodes[second.node_id]["p_id"]]
    assert second_user_node["p_id"] == first.node_id


async def test_works_without_async_with(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(chunk("no context manager needed"), complete())
    client = make_client()
    try:
        result = await client.generate("hi")
    finally:
        await client.aclose()
    assert result.text == "no context manager needed"


async def test_fifty_concurrent_streams_share_one_connection(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    results: dict[int, str] = {}
    async with make_client() as client:

        async def one(i: int) -> None:
            steps = await collect(client.generate_stream(f"number {i}"))
            results[i] = "".join(s.text_delta for s in steps)
            assert steps[-1].text == results[i].strip()

        async with anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(one, i)
        assert client.stream_connections == 1
    assert fake.stream_connections == 1
    assert len(results) == 50
    for i, text in results.items():
        assert f"number {i}" in text


async def test_delete_conversation(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(chunk("bye"), complete())
    async with make_client() as client:
        session = client.start_conversation()
        await session.send("hello")
        conv_id = session.conv_id
        assert conv_id is not None
        await session.delete()
    assert session.conv_id is None
    assert fake.conversations[conv_id]["is_delete"] is True


async def test_stream_user_sse_yields_raw_frames_and_ends_after_its_window(
    make_client: MakeClient,
) -> None:
    async with make_client() as client:
        started = time.monotonic()
        frames = [frame async for frame in client.stream_user_sse(timeout=0.7)]
        elapsed = time.monotonic() - started
    assert frames[0] == {"status": "connected"}
    assert any(set(f) == {"heartbeat"} for f in frames[1:])  # heartbeats kept
    assert 0.6 <= elapsed < 3.0


async def test_open_event_streams_leave_room_for_requests(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Connections held for long (listeners, downloads) do not count against the
    # bound on requests in flight: with 24 listeners open, a listing gets through.
    listeners = 24
    async with make_client() as client:

        async def listen() -> None:
            async for _event in client.stream_user_stream(timeout=10):
                pass

        async with anyio.create_task_group() as group:
            for _ in range(listeners):
                group.start_soon(listen)
            await eventually(lambda: fake.stream_connections == listeners, within=5)
            with anyio.fail_after(5):
                conversations = await client.list_conversations()
            group.cancel_scope.cancel()
    assert conversations  # the fake's seeded ones


async def test_stream_user_stream_yields_unwrapped_events_without_heartbeats(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(pause(0.3), chunk("seen by a listener"), complete())
    events: list[dict[str, object]] = []
    async with make_client() as client:

        async def listen() -> None:
            async for event in client.stream_user_stream(timeout=1.5):
                events.append(event)

        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            # Connected before the generation starts: the fake puts a turn's frames
            # on the streams open when its POST arrives.
            await eventually(lambda: fake.open_streams("stream") != [])
            result = await client.generate("hi")
    assert result.text == "seen by a listener"
    kinds = [e.get("type") for e in events]
    assert kinds == ["chunks", "complete"]
    assert events[0]["nodeId"] == result.node_id
    assert all("heartbeat" not in e for e in events)


async def test_leaving_a_stream_early_releases_it_and_the_client_goes_on(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("one "), pause(0.2), chunk("two "), pause(0.2), chunk("three"), complete())
    fake.script(chunk("next answer"), complete())
    async with make_client() as client:
        async for step in client.generate_stream("count"):
            assert step.text_delta == "one "
            break  # no aclosing() needed, on trio either
        assert client._hub.demux.subscriptions == 0
        result = await client.generate("again")
    assert result.text == "next answer"


async def test_cancelling_the_generation_reading_the_stream_leaves_the_others_streaming(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("slow"), pause(5), complete())
    for i in range(3):
        fake.script(pause(0.3), chunk(f"answer {i}"), complete())
    deltas: dict[int, list[str]] = {}
    doomed_scope = anyio.CancelScope()
    async with make_client() as client:

        async def doomed() -> None:
            with doomed_scope:
                await client.generate("slow one")

        async def fine(i: int) -> None:
            steps = await collect(client.generate_stream(f"q{i}"))
            deltas[i] = [step.text_delta for step in steps if step.text_delta]

        async with anyio.create_task_group() as group:
            group.start_soon(doomed)
            # Its POST reached the server (it takes the first script), not only its
            # subscription: the others' may overtake it while its stream connects.
            await eventually(lambda: len(fake.turns) == 1)
            for i in range(3):
                group.start_soon(fine, i)
            await eventually(lambda: client._hub.demux.subscriptions == 4)
            doomed_scope.cancel()  # the first generation is the stream's reader
        assert doomed_scope.cancelled_caught
        assert client._hub.demux.subscriptions == 0
        # One connection throughout, and the others streamed their deltas from it:
        # none had to recover its answer from its row.
        assert client.stream_connections == 1
    # (The scripts go to the generations in the order their requests arrive.)
    assert sorted(map(tuple, deltas.values())) == [(f"answer {i}",) for i in range(3)]
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


async def test_a_reader_running_out_of_time_leaves_the_stream_to_the_others(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("a "), pause(5), complete())
    fake.script(pause(1.2), chunk("b1 "), chunk("b2"), complete())
    outcome: dict[str, object] = {}
    async with make_client() as client:

        async def first() -> None:
            with pytest.raises(TimeoutError):
                await client.generate("times out while reading", timeout=0.8)
            outcome["first"] = "timed out"

        async def second() -> None:
            steps = await collect(client.generate_stream("streams after that"))
            outcome["second"] = [step.text_delta for step in steps if step.text_delta]
            second_node.append(steps[-1].node_id)

        second_node: list[str] = []
        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await eventually(lambda: len(fake.turns) == 1)  # its POST took the first script
            group.start_soon(second)
        assert client.stream_connections == 1
    assert outcome == {"first": "timed out", "second": ["b1 ", "b2"]}
    # The first looked at its row before giving up (its time is shorter than the
    # stall interval); the second streamed its answer and never needed to.
    row_reads = {r.target for r in fake.requests_to("GET", "/rest/v1/flow_node")}
    assert row_reads
    assert not any(second_node[0] in target for target in row_reads)


async def test_a_token_read_with_its_newline_works_and_a_broken_one_is_refused_unquoted(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """httpx quoted the whole token in its 'Illegal header value' error."""
    async with make_client(token=fake.token + "\n") as client:
        assert (await client.get_credits()) is not None
    broken = fake.token[:20] + "\x00" + fake.token[20:]
    with pytest.raises(ValueError, match="at position 20") as info:
        make_client(token=broken)
    assert fake.token[:20] not in str(info.value)


async def test_a_stream_the_server_closed_while_idle_is_replaced_before_the_next_generation(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The next generation counted on the dead connection: its first read found
    it closed, so it streamed nothing and waited for the row instead."""
    fake.script(chunk("first"), complete())
    async with make_client(poll_interval=2.0) as client:
        await client.generate("a")
        fake.close_streams(now=time.time())
        await eventually(lambda: fake.open_streams("stream") == [])
        fake.script(chunk("He"), pause(0.1), chunk("llo"), complete())
        started = time.monotonic()
        steps = await collect(client.generate_stream("b"))
        elapsed = time.monotonic() - started
        assert client.stream_connections == 2
    assert [step.text_delta for step in steps if step.text_delta] == ["He", "llo"]
    assert elapsed < 1.5  # not a poll interval's wait for the row
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


async def test_long_headers_and_cookies_of_an_ip_host_are_kept_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """aiohttp refused a header line past 8190 bytes and dropped cookies set by
    an IP-address host (the fake is on 127.0.0.1); httpx did neither."""
    fake.fail_next(
        1,
        200,
        path="/user/credits",
        body=[],
        headers=[("X-Big", "a" * 9000), ("Set-Cookie", "sid=abc; Path=/")],
    )
    async with make_client() as client:
        assert await client.get_credits() is not None
        await client.get_credits()
    later = fake.requests_to("GET", "/user/credits")[-1]
    assert later.header("cookie") == "sid=abc"


async def test_an_answer_of_many_header_lines_is_read_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """aiohttp refuses more than 128 header lines unless told otherwise ("Too many
    headers received"): an answer with many cookies or tracing headers failed."""
    many = [(f"X-Trace-{index}", "x") for index in range(300)]
    fake.fail_next(1, 200, path="/user/credits", body=[], headers=many)
    async with make_client() as client:
        assert await client.get_credits() == []


async def test_a_dropped_read_is_sent_as_often_as_max_retries_says(
    fake: FakeFlowith, transport: Transport
) -> None:
    """aiohttp resent an idempotent request itself once more when its connection
    dropped: six sends where max_retries=2 means three."""
    sends = 0

    async def answer_nothing(stream: anyio.abc.SocketStream) -> None:
        nonlocal sends
        async with stream:
            await stream.receive()
            sends += 1

    async with raw_server(answer_nothing) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url)
        async with client:
            with pytest.raises(FlowithError):
                await client.get_credits()
    assert sends == 3


@pytest.mark.parametrize("how", ["timeout", "cancelled", "download"])
async def test_a_tls_handshake_cut_short_leaves_no_connection_open(
    fake: FakeFlowith, transport: Transport, tmp_path: Path, how: str
) -> None:
    """Against a server that never answers the handshake, httpcore closed the
    connection only when the handshake failed, not when it was cancelled (the
    call's deadline, or its caller's): httpx left each try's socket open until it
    was collected, with a ResourceWarning."""
    accepted = closed = 0

    async def never_shakes_hands(stream: anyio.abc.SocketStream) -> None:
        nonlocal accepted, closed
        accepted += 1
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive()  # the client's hello, then its close
        closed += 1

    async with raw_server(never_shakes_hands) as url:
        url = url.replace("http://", "https://")
        client = transport.client_class()(
            fake.token, edge_url=url, supabase_url=url, timeout=0.3, max_retries=1
        )
        async with client:
            failure: pytest.ExceptionInfo[TimeoutError] | None = None
            if how == "cancelled":
                with anyio.move_on_after(0.3) as scope:
                    await client.get_credits()
                assert scope.cancelled_caught
            elif how == "download":
                with pytest.raises(TimeoutError) as failure:
                    await client.download(f"{url}/f/a.txt", tmp_path)
            else:
                with pytest.raises(TimeoutError) as failure:
                    await client.get_credits()
            # While the error is held (its traceback holds the connection), not
            # once it is collected.
            await eventually(lambda: accepted > 0 and closed == accepted)
            del failure
    assert os.listdir(tmp_path) == []


async def test_an_answer_too_malformed_to_read_is_not_called_a_400(
    fake: FakeFlowith, transport: Transport
) -> None:
    """aiohttp reports an answer its parser refuses as a ClientResponseError with a
    400 status of its own making, and a caret drawing of the bad line: the error
    said "400" although the server sent 200."""
    body = b'[{"remain_quota": 5}]'

    async def conflicting_lengths(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n%s" % (len(body), body)
            )

    async with raw_server(conflicting_lengths) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url, max_retries=0)
        async with client:
            with pytest.raises(ConnectionFailedError) as caught:
                await client.get_credits()
    message = str(caught.value)
    assert not re.search(r"\b400\b", message), message
    assert "\n" not in message
    assert re.search("(conflicting|duplicate) content-length", message, re.IGNORECASE), message


async def test_a_body_cut_short_is_not_called_a_400(
    fake: FakeFlowith, transport: Transport, tmp_path: Path
) -> None:
    """aiohttp quotes its parser's error inside the body-read error, with the 400 that
    error carries by default: "<ContentLengthError: 400, message='Not enough
    data...'>", though the server sent 200."""
    body = b'[{"remain_quota": 5}]'

    async def cut_short(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            await stream.send(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])

    messages = []
    async with raw_server(cut_short) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url, max_retries=0)
        async with client:
            with pytest.raises(ConnectionFailedError) as read:
                await client.get_credits()
            messages.append(str(read.value))
            with pytest.raises(ConnectionFailedError) as downloaded:
                await client.download(f"{url}/f.json", tmp_path)
            messages.append(str(downloaded.value))
    for message in messages:
        assert not re.search(r"\b400\b", message), message
        assert re.search(r"5 (of|bytes, expected) 21", message), message


@pytest.mark.parametrize("call", ["download", "listener"])
async def test_an_error_answer_whose_body_stalls_ends_within_the_clients_timeout(
    fake: FakeFlowith, transport: Transport, tmp_path: Path, call: str
) -> None:
    """A download or a listener without a deadline of its own waited for ever on
    the body of a 404 that never came whole: only its read had no bound."""
    stop = anyio.Event()

    async def stalled_404(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"message": "no such'
            )
            await stop.wait()

    async def listen(client: Any) -> None:
        async for _event in client.stream_user_sse():
            pass

    async with raw_server(stalled_404) as url:
        client = transport.client_class()(
            fake.token, edge_url=url, supabase_url=url, timeout=0.5, stream_idle_timeout=None
        )
        async with client:
            work = listen(client) if call == "listener" else None
            started = time.monotonic()
            with anyio.fail_after(10), pytest.raises(NotFoundError) as caught:
                await (work or client.download(f"{url}/f/x.bin", tmp_path))
            elapsed = time.monotonic() - started
        stop.set()
    assert 0.4 <= elapsed < 3.0
    assert caught.value.status_code == 404


async def test_closing_the_client_while_its_streams_connect_ends_everything_the_same_way(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Generations waiting for another's connect then opened the stream on the
    closed HTTP client themselves: RuntimeError ("the client has been closed",
    "Session is closed"), and on httpx a stream left open after aclose()."""
    client = make_client()
    outcomes: list[str] = []
    # The first connect (of the stream every generation reads first) is held once
    # its answer came, until the client closes: then nothing can finish first, and
    # the seven other generations are surely waiting for that connect.
    opened = anyio.Event()
    open_stream = client._hub._open_stream

    async def held(*args: Any) -> Any:
        connection = await open_stream(*args)
        await opened.wait()
        return connection

    client._hub._open_stream = held

    async def one(i: int) -> None:
        work = client.generate_image if i % 2 else client.generate
        try:
            await work(f"q{i}", timeout=10)
            outcomes.append("done")
        except FlowithError as exc:
            outcomes.append(str(exc))

    # (The block closes it too if the test fails: its leftovers then stay out of
    # later tests, which aiohttp's "Unclosed client session" warning broke.)
    async with client, anyio.create_task_group() as group:
        for i in range(8):
            group.start_soon(one, i)
        await eventually(lambda: len(client._hub._connect_waiters) == 7)
        await eventually(lambda: len(fake.open_streams()) == 1)
        opened.set()
        await client.aclose()
    assert outcomes == ["the client is closed"] * 8
    assert all(c.connection is None for c in client._hub._channels.values())
    await eventually(lambda: fake.open_streams() == [])


async def test_an_idle_stream_that_never_carried_an_event_is_replaced_when_closed(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A server closing a stream nobody read is no failed connection to back off
    from: the next generation polled its row instead of streaming."""
    async with make_client(poll_interval=2.0) as client:
        fake.fail_next(1, 400, method="POST", path="/completion/async")
        with pytest.raises(FlowithError):
            await client.generate("refused")  # the stream opened; nothing came on it
        fake.close_streams(now=time.time())
        await eventually(lambda: fake.open_streams("stream") == [])
        fake.script(chunk("He"), pause(0.1), chunk("llo"), complete())
        steps = await collect(client.generate_stream("b"))
        assert client.stream_connections == 2
    assert [step.text_delta for step in steps if step.text_delta] == ["He", "llo"]
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


async def test_closing_the_client_ends_what_is_running_on_it(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A generation reading the stream, one polling its row and a listener all
    end with "the client is closed" at once, and the server sees every
    connection go."""
    fake.script(chunk("reading "), pause(30), complete())
    fake.script(close_stream())  # its row never becomes final: it polls
    outcomes: dict[str, str] = {}
    client = make_client(poll_interval=0.1)

    async def run(name: str, work: Callable[[], Awaitable[object]]) -> None:
        with anyio.fail_after(5):
            try:
                await work()
            except FlowithError as exc:
                outcomes[name] = str(exc)

    async def listen() -> None:
        async for _event in client.stream_user_sse():
            pass

    async with client, anyio.create_task_group() as group:  # closed even if the test fails
        group.start_soon(run, "reader", lambda: client.generate("first"))
        await eventually(lambda: fake.requests_to("POST", "/completion/async") != [])
        group.start_soon(run, "poller", lambda: client.generate("second"))
        group.start_soon(run, "listener", listen)
        await eventually(lambda: len(fake.requests_to("GET", "/rest/v1/flow_node")) >= 2)
        await eventually(lambda: len(fake.open_streams("sse")) == 1)
        await client.aclose()
    assert outcomes == dict.fromkeys(("reader", "poller", "listener"), "the client is closed")
    polls = len(fake.requests_to("GET", "/rest/v1/flow_node"))
    await anyio.sleep(0.3)
    assert len(fake.requests_to("GET", "/rest/v1/flow_node")) == polls  # none after close
    await eventually(lambda: fake.open_streams() == [])


@pytest.fixture
def mute() -> Iterator[str]:
    """A loopback URL whose connections complete (the kernel queues them) but
    whose requests are never read, let alone answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


async def test_a_second_aclose_returns_once_the_first_has_closed(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It returned at once while the first was still closing (waiting for a token
    refresh in flight, say): its caller was told the client was closed with its
    connections still open, and leaving the event loop then cut the first short."""
    client = make_client()
    await client.get_credits()
    may_close = anyio.Event()
    closing = client._close_transport
    closed: list[bool] = []

    async def held_close() -> None:
        await may_close.wait()
        await closing()
        closed.append(True)

    monkeypatch.setattr(client, "_close_transport", held_close)
    returned: list[bool] = []

    async def second_close() -> None:
        await client.aclose()
        returned.append(bool(closed))

    async with anyio.create_task_group() as group:
        group.start_soon(client.aclose)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(second_close)
        await anyio.wait_all_tasks_blocked()
        waited = returned == []  # for the first
        may_close.set()
    assert waited
    assert returned == [True]


async def test_an_aclose_from_on_token_refresh_as_the_client_closes_returns_at_once(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The first close waits for the refresh in flight to hand its tokens on, and
    a second close waited for the first: one made by on_token_refresh waited for
    itself, the whole timeout, with a warning that the refresh may be lost."""
    fake.expire_token(fake.token)
    closed: list[str] = []

    async def saved(access_token: str, refresh_token: str) -> None:
        await eventually(lambda: client._closed)  # the app's other close has begun
        await client.aclose()
        closed.append("callback")

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=saved, timeout=30)

    async def call() -> None:
        with contextlib.suppress(FlowithError):
            await client.get_credits()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            # Its 401 started a refresh, whose request the server has: a close
            # before that refuses the request instead, and no tokens come.
            await eventually(lambda: bool(fake.requests_to("POST", "/auth/v1/token")))
            await client.aclose()
            closed.append("app")
    assert closed == ["callback", "app"]


async def test_closing_the_client_under_requests_in_flight_says_it_closed(
    fake: FakeFlowith, transport: Transport, mute: str
) -> None:
    """They failed with the network error the closing caused (ReadError,
    ServerDisconnectedError), which an app cannot tell from an outage. And on
    aiohttp an upload the server stopped reading held aclose() until its own
    timeout: aiohttp waited for its connection to close before the socket was shut."""
    client = transport.client_class()(fake.token, edge_url=mute, supabase_url=mute, timeout=30)
    outcomes: list[str] = []

    async def call(work: Callable[[], Awaitable[object]]) -> None:
        with anyio.fail_after(5):
            try:
                await work()
            except FlowithError as exc:
                outcomes.append(str(exc))

    async with anyio.create_task_group() as group:
        group.start_soon(call, client.claim_daily_reward)
        group.start_soon(call, client.get_credits)
        group.start_soon(call, lambda: client.generate("hi"))
        group.start_soon(call, lambda: client.upload_file(data=b"x" * (8 << 20), filename="a"))
        await anyio.sleep(0.3)
        await client.aclose()
    assert outcomes == ["the client is closed"] * 4


def open_sockets() -> int:
    """The sockets this process holds (client and fake server sides alike)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def test_closing_the_client_while_requests_connect_leaves_no_socket_open(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Closing httpx's pools cannot reach a connection still being set up: its
    request went on after aclose() and its socket was left to the collector."""
    before = open_sockets()
    client = make_client()
    outcomes: list[str] = []

    async def credits() -> None:
        try:
            await client.get_credits()
            outcomes.append("done")
        except FlowithError as exc:
            outcomes.append(str(exc))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(credits)
        await anyio.sleep(0.003)
        await client.aclose()
        answered = len(fake.requests_to("GET", "/user/credits"))
    assert set(outcomes) <= {"done", "the client is closed"}
    assert outcomes.count("done") <= answered
    gc.collect()  # an unclosed socket would warn here (an error under this suite)
    await eventually(lambda: open_sockets() <= before)


@pytest.mark.parametrize("what", ["upload", "download"])
@pytest.mark.parametrize("after", [0.0, 0.002, 0.005])
async def test_closing_the_client_while_long_requests_connect_leaves_no_socket_open(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path, what: str, after: float
) -> None:
    """Uploads and downloads go out on the main HTTP client, not on a lane: on
    httpx, one still setting up its connection when the client closed went on
    over a socket nobody closed (a ResourceWarning when collected)."""
    before = open_sockets()
    client = make_client()
    source = tmp_path / "sent.txt"
    source.write_bytes(b"x" * 1000)
    url = fake.add_file("/f/close/got.bin", b"y" * 1000)
    outcomes: list[str] = []

    async def one(i: int) -> None:
        try:
            if what == "upload":
                await client.upload_file(source)
            else:
                await client.download(url, tmp_path / str(i))
            outcomes.append("done")
        except FlowithError as exc:
            outcomes.append(str(exc))

    async with anyio.create_task_group() as group:
        for i in range(10):
            group.start_soon(one, i)
        await anyio.sleep(after)
        await client.aclose()
    assert len(outcomes) == 10
    assert all(o == "done" or o.startswith("the client is closed") for o in outcomes), outcomes
    gc.collect()  # an unclosed socket would warn here (an error under this suite)
    await eventually(lambda: open_sockets() <= before)


def open_files(path: Path) -> int:
    """How many of this process's descriptors have ``path`` open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


async def test_an_upload_cut_short_or_refused_closes_its_file_at_once(
    fake: FakeFlowith, make_client: MakeClient, transport: Transport, mute: str, tmp_path: Path
) -> None:
    """The file was closed only when the collector found the abandoned stream
    (and trio warned that it was collected unfinished)."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (120 * 1024))  # 30 MB: more than socket buffers hold
    stuck = transport.client_class()(fake.token, edge_url=mute, supabase_url=mute)
    async with stuck:
        with anyio.move_on_after(0.3) as cut:  # the server never reads: the upload stalls
            await stuck.upload_file(big)
        assert cut.cancelled_caught
        # At once, or (aiohttp sends in a task of its own) when that task ends.
        await eventually(lambda: open_files(big) == 0)
    fake.fail_next(1, 413, path="/file/store")
    async with make_client() as client:
        with pytest.raises(FlowithError):
            await client.upload_file(big)
        await eventually(lambda: open_files(big) == 0)
    gc.collect()  # an abandoned stream would warn here (an error under this suite)


async def test_an_upload_a_server_stopped_reading_leaves_no_socket_after_close(
    fake: FakeFlowith, transport: Transport, mute: str
) -> None:
    """aiohttp closes a connection gracefully, waiting to send what it buffered: a
    server that never read the upload kept the client's socket open after aclose()."""
    before = open_sockets()
    client = transport.client_class()(fake.token, edge_url=mute, supabase_url=mute)
    async with client:
        with pytest.raises(TimeoutError):
            await client.upload_file(data=b"x" * (8 << 20), filename="a.bin", timeout=0.5)
    gc.collect()
    await eventually(lambda: open_sockets() <= before)


async def test_a_close_left_to_finish_on_its_own_reports_how_it_failed(
    fake: FakeFlowith,
    make_client: MakeClient,
    transport: Transport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On asyncio a cancelled close returns at once and the closing goes on in a
    task of its own, whose failure (a recording that could not be written, say)
    nobody saw: asyncio marks it retrieved."""
    if transport.backend != "asyncio":
        pytest.skip("on trio a cancelled close waits for the closing, and raises its failure")
    client = make_client()
    await client.get_credits()
    close_transport = client._close_transport

    async def failing() -> None:
        await close_transport()
        raise OSError("no space left on the device")

    client._close_transport = failing
    with anyio.CancelScope() as scope:
        scope.cancel()
        await client.aclose()
    await eventually(lambda: "no space left" in caplog.text)
    (record,) = [r for r in caplog.records if "no space left" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "FlowithClientBase._close_connections failed after its caller was cancelled: "
        "OSError: no space left on the device"
    )


async def test_an_asyncio_cancellation_is_never_lost_mid_stream(
    fake: FakeFlowith, make_client: MakeClient, transport: Transport
) -> None:
    """asyncio.wait_for (Python <= 3.11) could swallow a cancel that arrived as
    a read finished: a few of many generations cancelled mid-stream ran to their end.

    The cancels come once every generation streams, when no connection is being
    made: on Python 3.10 anyio loses one that lands in the step a connection is
    made (README, "Limits"), and on a loaded machine the shared stream may open
    a second after the start. A task suspended when cancelled cannot end
    normally: one that does after the cancels went out lost its cancel."""
    if transport.backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    steps = [step for k in range(150) for step in (chunk(f"{k} "), pause(0.02))]
    fake.responder = lambda turn: [*steps, complete()]
    loop = asyncio.get_running_loop()
    streaming: set[int] = set()
    all_streaming = asyncio.Event()
    cancelled = False
    ran_on: list[int] = []
    async with make_client() as client:

        async def streamed(i: int) -> None:
            async for _step in client.generate_stream(f"q{i}", timeout=30):
                streaming.add(i)
                if len(streaming) == 150:
                    all_streaming.set()
            if cancelled:
                ran_on.append(i)

        def cancel_all() -> None:
            nonlocal cancelled
            cancelled = True
            for task in tasks:
                task.cancel()

        tasks = [asyncio.ensure_future(streamed(i)) for i in range(150)]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(all_streaming.wait(), 20)
        loop.call_later(0.2, cancel_all)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert ran_on == []
    assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes)
    # Mid-stream for most (each streams for 3 s; a starved machine delivers some in
    # one burst, over before the cancels), or the test proves little.
    assert sum(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes) >= 75


@pytest.mark.parametrize("also_stopped", [False, True])
async def test_a_stop_takes_back_its_own_cancellation_only(
    make_client: MakeClient, transport: Transport, also_stopped: bool
) -> None:
    """What a stop button's cancellation rests on (OperationRun._step): a
    cancellation of the task's own goes through a stoppable block, stopped or not.
    (Python 3.10 cannot count a task's cancellations: one arriving in the same step
    as a stop is taken with it, on anyio's scopes as on aiohttp.)"""
    if transport.backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    if also_stopped and sys.version_info < (3, 11):
        pytest.skip("Task.uncancel() counts cancellations from Python 3.11")
    client = make_client()
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    async def cancelled_inside() -> None:
        with client._cancellable() as cancel:
            if also_stopped:
                loop.call_soon(cancel)  # from outside the task, as a stop button
            loop.call_soon(task.cancel)
            await asyncio.sleep(5)

    with pytest.raises(asyncio.CancelledError):
        await cancelled_inside()
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 1
        task.uncancel()
    went_on = False
    with client._cancellable() as cancel:  # stopped alone: it ends quietly
        loop.call_soon(cancel)
        await asyncio.sleep(5)
        went_on = True
    assert not went_on
    with client._cancellable() as cancel:  # work that catches the stop and returns
        loop.call_soon(cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(5)
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # nothing left for a later timeout to misread


async def test_a_listener_closed_by_aclosing_closes_its_stream_at_once(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client() as client:
        async with contextlib.aclosing(client.stream_user_sse()) as frames:
            async for _frame in frames:
                break
        assert client._open_bodies == set()
        await eventually(lambda: fake.open_streams("sse") == [])


async def test_an_image_reported_only_on_sse_arrives_without_waiting_for_the_row(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The fake's default media answer is a workflow_complete on /user_stream/sse only.
    async with make_client() as client:
        started = time.monotonic()
        result = await client.generate_image("a fox")
    assert result.image is not None
    assert result.image.url.endswith(".png")
    assert time.monotonic() - started < 5  # not the 15 s stall_interval
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_a_media_result_reported_only_on_stream_arrives_at_once_too(
    fake: FakeFlowith, make_client: MakeClient, kind: str
) -> None:
    """Which stream carries media results is unverified (protocol.md 4.3): a job
    reads both, so a ``complete`` on ``/stream`` alone is not left waiting for
    the stall check."""

    def respond(turn: Turn) -> list[Step]:
        return [pause(0.2), complete(result=turn.result_url)]

    fake.media_responder = respond
    async with make_client() as client:
        started = time.monotonic()
        if kind == "image":
            url = (await client.generate_image("a fox")).images[0].url
        else:
            url = (await client.generate_video("a fox", timeout=30)).video_url
        elapsed = time.monotonic() - started
        assert (client.stream_connections, fake.sse_connections) == (1, 1)
    assert url.startswith(fake.file_url("/"))
    assert elapsed < 5  # not the 15 s stall_interval
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


async def test_media_jobs_and_texts_at_once_share_the_streams_without_a_second_reader(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A job reading both streams claimed them only once its race's tasks ran;
    in between another job read the same stream too (aiohttp: RuntimeError
    'readany() called while another coroutine is already waiting')."""

    def respond(turn: Turn) -> list[Step]:
        return [pause(0.3), workflow_complete(turn.result_url, task_type=turn.kind)]

    fake.media_responder = respond
    fake.heartbeat_interval = 0.05
    results: dict[str, str] = {}
    async with make_client() as client:

        async def image(i: int) -> None:
            results[f"image {i}"] = (await client.generate_image(f"cat {i}")).images[0].url

        async def text(i: int) -> None:
            results[f"text {i}"] = (await client.generate(f"dog {i}")).text

        async with anyio.create_task_group() as group:
            for i in range(5):
                group.start_soon(image, i)
                group.start_soon(text, i)
        assert (client.stream_connections, fake.sse_connections) == (1, 1)
    assert len(results) == 10
    assert all(results[f"image {i}"].startswith(fake.file_url("/")) for i in range(5))


async def test_a_media_job_whose_sse_breaks_reads_its_row_as_when_polling(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Its result comes on /sse; with /sse gone it still listened on /stream and
    found the result only at the 15 s row check."""

    def respond(turn: Turn) -> list[Step]:
        return [pause(0.8), workflow_complete(turn.result_url, task_type=turn.kind)]

    fake.media_responder = respond
    async with make_client(poll_interval=0.5) as client:

        async def break_sse() -> None:
            await eventually(lambda: fake.turns != [])
            await anyio.sleep(0.3)
            fake.drop_streams(now=time.time(), channel="sse")

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(break_sse)
            image = await client.generate_image("a fox")
        elapsed = time.monotonic() - started
    assert image.image is not None
    assert image.image.url.startswith(fake.file_url("/"))
    assert elapsed < 4  # the row's poll cadence, not the stall interval


async def test_a_media_job_keeps_reading_one_stream_when_the_other_cannot_open(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # /sse answers 500: the result on /stream is still read, not left to the row.
    def respond(turn: Turn) -> list[Step]:
        return [pause(0.2), complete(result=turn.result_url)]

    fake.media_responder = respond
    fake.fail_next(5, 500, method="GET", path="/user_stream/sse")
    async with make_client() as client:
        started = time.monotonic()
        url = (await client.generate_image("a fox", timeout=30)).images[0].url
        elapsed = time.monotonic() - started
    assert url.startswith(fake.file_url("/"))
    assert elapsed < 5  # not polling until the row says so
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


@pytest.mark.parametrize("refused", [["sse"], ["sse", "stream"]])
async def test_a_media_job_refused_one_stream_goes_on_with_the_other(
    fake: FakeFlowith, make_client: MakeClient, refused: list[str]
) -> None:
    """A 404 on /sse ended an image job before its start: the conversation and a node
    stuck at "init" were left behind, although /stream (and the row) would tell it.
    Refused both, it cannot go on."""
    for name in refused:
        fake.fail_next(1, 404, method="GET", path=f"/user_stream/{name}")
    async with make_client() as client:
        if len(refused) == 2:
            with pytest.raises(NotFoundError):
                await client.generate_image("a fox", timeout=30)
            assert not fake.requests_to("POST", "/image_gen/async")
            for name in refused:
                fake.fail_next(1, 404, method="GET", path=f"/user_stream/{name}")
            with pytest.raises(NotFoundError):  # asked again, and refused again
                await client.generate_image("a fox", timeout=30)
        else:
            image = await client.generate_image("a fox", timeout=30)
            assert image.images[0].url.startswith(fake.file_url("/"))
            assert fake.requests_to("POST", "/image_gen/async")
        assert (await client.generate_image("a hen", timeout=30)).images  # goes on


async def test_a_media_result_routed_by_another_generation_wakes_its_job(
    transport: Transport,
) -> None:
    """A text generation reads ``/stream``; an image job, reading ``/sse`` (quiet:
    no heartbeat for 30 s), gets its result on ``/stream`` through that reader
    and must be woken at once, not at its next ``/sse`` chunk or stall check."""
    fake = FakeFlowith(heartbeat_interval=30)

    def respond(turn: Turn) -> list[Step]:
        return [pause(0.3), complete(result=turn.result_url)]

    fake.media_responder = respond
    fake.script(chunk("a long "), pause(4), chunk("answer"), complete())
    finished: dict[str, float] = {}
    async with FakeFlowithServer(fake) as server:
        client = transport.client_class()(
            fake.token, edge_url=server.url, supabase_url=server.url, poll_interval=0.05
        )
        async with client:
            started = time.monotonic()

            async def run(name: str, work: Callable[[], Awaitable[object]]) -> None:
                await work()
                finished[name] = time.monotonic() - started

            async with anyio.create_task_group() as group:
                group.start_soon(run, "text", lambda: client.generate("tell me"))
                await eventually(lambda: client._hub.demux.subscriptions == 1)
                group.start_soon(run, "image", lambda: client.generate_image("a fox"))
    assert finished["image"] < 2.0, finished  # not after the text (4 s) or a stall (15 s)
    assert finished["text"] >= 4.0
    assert not fake.requests_to("GET", "/rest/v1/flow_node")


async def test_logout_drops_the_refresh_token(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client(refresh_token=fake.refresh_token) as client:
        await client.logout()
        assert client.get_refresh_token() == ""


async def test_closing_a_stream_whose_read_ahead_is_full_leaves_nothing_to_collect(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """An idle shared stream fills its read-ahead with heartbeats; closing it then
    left httpx's body generators suspended, and trio warned about each as it
    collected them (six warnings at every close)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fake.heartbeat_interval = 0.02
        async with make_client() as client:
            await client.generate("hi")
            await anyio.sleep(0.5)  # far more heartbeats than the read-ahead holds
        gc.collect()
        await anyio.lowlevel.checkpoint()  # trio finalizes collected generators in a task
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


class _SlowCounter:
    """A bare HTTP server answering every request ``delay`` seconds late with ``[]``,
    counting the requests it holds at once."""

    ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.holding = 0
        self.most = 0

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    try:
                        buffered += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        return
                buffered = buffered.split(b"\r\n\r\n", 1)[1]  # GETs: no body
                self.holding += 1
                self.most = max(self.most, self.holding)
                try:
                    await anyio.sleep(self.delay)
                    await stream.send(self.ANSWER)
                except (anyio.BrokenResourceError, OSError):
                    return
                finally:
                    self.holding -= 1


async def test_every_transport_sends_as_many_requests_at_once(transport: Transport) -> None:
    """Swapping transports changes nothing: at most REQUESTS_AT_ONCE short requests
    are out at once (httpx's lanes; aiohttp allowed 100), and one that times out
    waiting for its turn says it was never sent."""
    from flowith_proto.config import REQUESTS_AT_ONCE
    from flowith_proto.errors import TimeoutError as FlowithTimeout

    server = _SlowCounter(delay=0.3)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    url = f"http://127.0.0.1:{port}"
    outcomes: list[object] = []
    async with listener, anyio.create_task_group() as serving:
        serving.start_soon(listener.serve, server.serve)
        user = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
        client = transport.client_class()("t", user_id=user, edge_url=url, max_retries=0)
        async with client:

            async def one(timeout: float) -> None:
                try:
                    outcomes.append(len(await client.get_credits(timeout=timeout)))
                except FlowithTimeout as exc:
                    outcomes.append(exc.request_sent)

            async with anyio.create_task_group() as group:
                for _ in range(2 * REQUESTS_AT_ONCE + 3):
                    group.start_soon(one, 5.0)
            assert outcomes == [0] * (2 * REQUESTS_AT_ONCE + 3)
            assert server.most == REQUESTS_AT_ONCE
            outcomes.clear()
            server.delay = 1.0
            async with anyio.create_task_group() as group:
                for _ in range(REQUESTS_AT_ONCE):
                    group.start_soon(one, 5.0)
                await eventually(lambda: server.holding == REQUESTS_AT_ONCE)
                for _ in range(4):
                    group.start_soon(one, 0.2)  # no turn comes free within 0.2 s
            assert outcomes == [False] * 4 + [0] * REQUESTS_AT_ONCE
        serving.cancel_scope.cancel()


async def test_long_requests_take_turns_and_never_crowd_out_short_ones(
    transport: Transport, tmp_path: Path
) -> None:
    """aiohttp sent every download at once, in the pool of 100 its short requests
    share: beside 100 downloads a write waited in that pool, timed out and said it
    was sent. Both transports now send at most LONG_REQUESTS_AT_ONCE long requests
    at once; one that runs out of time waiting for its turn says it was never sent."""
    from flowith_proto.config import LONG_REQUESTS_AT_ONCE
    from flowith_proto.errors import TimeoutError as FlowithTimeout

    downloads: list[str] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            path = head.split(b" ", 2)[1].decode()
            if path.startswith("/f/"):
                downloads.append(path)
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                await anyio.sleep_forever()  # the file comes no further
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n[]"
            )

    async with raw_server(serve) as url:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=url, supabase_url=url, timeout=15, max_retries=0
        )
        async with client, anyio.create_task_group() as group:
            for number in range(100):
                group.start_soon(client.download, f"{url}/f/{number}.bin", tmp_path)
            await eventually(lambda: len(downloads) >= LONG_REQUESTS_AT_ONCE)
            await anyio.sleep(0.2)  # time enough for more to arrive, were they sent
            assert len(downloads) == LONG_REQUESTS_AT_ONCE
            with anyio.fail_after(5):
                assert await client.get_credits() == []
            with pytest.raises(FlowithTimeout) as caught:
                await client.download(f"{url}/f/late.bin", tmp_path, timeout=0.3)
            group.cancel_scope.cancel()
    assert caught.value.request_sent is False
    # The limit is what was left of the 0.3 s when the wait began (less by the
    # download's own steps before it: a thread's mkdir, a slow loop).
    waited = re.match(r"request was not sent: it waited (0\.\d+)s for its turn", str(caught.value))
    assert waited is not None, str(caught.value)
    assert 0.1 <= float(waited.group(1)) <= 0.3
    assert "/f/late.bin" not in downloads


async def test_a_utf8_location_beside_a_latin1_header_leads_to_the_same_file(
    transport: Transport, tmp_path: Path
) -> None:
    """httpx read every header of a head as Latin-1 once one was not UTF-8: the
    UTF-8 ``Location`` /café.bin led it to /caf%C3%83%C2%A9.bin (aiohttp: /caf%C3%A9.bin)."""
    async with CannedServer(200, [("Content-Type", "text/plain")], b"the file") as server:
        server.answers["/start.bin"] = (
            b"HTTP/1.1 302 Found\r\nLocation: /caf\xc3\xa9.bin\r\nX-Note: caf\xe9\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        async with transport.client_class()(FakeFlowith().token, max_retries=0) as client:
            saved = await client.download(f"{server.url}/start.bin", tmp_path)
    assert server.paths == ["/start.bin", "/caf%C3%A9.bin"]
    assert saved.read_bytes() == b"the file"


async def test_each_header_is_read_as_utf8_where_it_is_else_as_latin1(
    transport: Transport,
) -> None:
    """aiohttp kept the bytes of a header that is not UTF-8 as lone surrogates: an error
    quoting it could not be written to a UTF-8 log or terminal. httpx read the
    UTF-8 header beside it as Latin-1."""
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/h\xe9ml\r\nX-Note: caf\xc3\xa9\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    server = CannedServer(200, [], b"")
    server.answer = answer
    async with server:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            with pytest.raises(FlowithError) as caught:
                async for _ in client.stream_user_sse(timeout=5):
                    pass
    assert "got text/héml" in str(caught.value)
    str(caught.value).encode("utf-8")  # writable as UTF-8


async def test_a_deadline_gone_before_sending_says_the_request_was_not_sent(
    make_client: MakeClient, fake: FakeFlowith
) -> None:
    """It said so in words but had request_sent=True, which tells a caller that a
    write may have been applied."""
    async with make_client() as client:
        await client.get_credits()  # connected: the next call's deadline is all that ends it
        with pytest.raises(TimeoutError, match="before the request could be sent") as caught:
            await client.generate("x", timeout=1e-9)
    assert caught.value.request_sent is False
    assert caught.value.deadline_passed


async def test_debug_logs_say_what_the_client_did_and_hold_no_secret(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """``set_log_level("DEBUG")`` showed nothing in normal use: no request, no stream,
    no generation (the old client logged each)."""
    caplog.set_level(logging.DEBUG, logger="flowith")
    fake.fail_next(1, 404, method="GET", path="/rest/v1/conversation")
    async with make_client() as client:
        reply = await client.generate("hi")
        await client.upload_file(data=b"x", filename="a.txt")
        await client.generate_image("a fox")
        with pytest.raises(NotFoundError):
            await client.list_conversations()
    lines = [f"{r.name} {r.getMessage()}" for r in caplog.records]
    shown = "\n".join(lines)
    assert "flowith.http POST /rest/v1/conversation: 201 in " in shown
    assert "flowith.http POST /file/store: 200 in " in shown
    assert "flowith.http GET /user_stream/stream (streamed): 200" in shown
    assert "flowith.http GET /rest/v1/conversation: 404 in " in shown
    assert "flowith.stream /user_stream/stream is open (connection 1)" in shown
    assert "flowith.stream /user_stream/sse closed by the client" in shown
    assert f"flowith.generation node {reply.node_id}: generating with gpt-4.1-nano in" in shown
    assert f"flowith.generation node {reply.node_id}: done, {len(reply.text)} characters" in shown
    assert re.search(r"generation node \S+: image done \(from the (stream|its row)\)", shown)
    assert fake.token not in shown
    assert fake.refresh_token not in shown


async def test_an_api_errors_traceback_shows_no_credential_among_its_variables(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The frame raising every API error held all the call's credentials in one
    tuple (the refresh token whole), which ``pytest -l`` and error reporters print
    with the frame; a refresh's frames held the refresh token too."""
    fake.fail_next(1, 404, path="/user/credits")
    async with make_client(refresh_token=fake.refresh_token) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_credits()
        fake.fail_next(1, 500, path="/auth/v1/token")
        with pytest.raises(APIError) as refusal:
            await client.refresh_access_token()
    # The variables are shown, hiding their secrets.
    for error, variable in ((caught.value, "secrets = <"), (refusal.value, "token = '[REDACTED]'")):
        shown = shown_with_variables(error)
        assert variable in shown
        assert fake.token not in shown
        assert fake.refresh_token not in shown


async def test_the_transports_logs_show_no_signed_url_or_cookie(
    transport: Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs each request's URL at INFO (a signed download's), httpcore each
    answer's headers at DEBUG (the cookie set, before the client knows it)."""
    caplog.set_level(logging.DEBUG)
    signature, cookie = "SIGNATURE0123456789abcdef", "sidCOOKIEVALUE0123456789"
    headers = [("Content-Type", "image/png"), ("Set-Cookie", f"sid={cookie}; Path=/")]
    client = transport.client_class()(FakeFlowith().token, max_retries=0)
    async with CannedServer(200, headers, b"PNG") as server, client:
        await client.download(f"{server.url}/f/a.png?X-Amz-Signature={signature}", tmp_path)
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    if transport.library == "httpx":  # aiohttp logs neither
        assert "httpx HTTP Request: GET http://127.0.0.1" in logged
        assert "httpcore.http11 receive_response_headers.complete" in logged
    assert signature not in logged
    assert cookie not in logged


async def test_debug_logs_of_failures_hold_their_text_not_the_error(
    fake: FakeFlowith, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed request's or stream's debug record held the error object: a handler
    keeping records (caplog, a buffer) kept its traceback, and through its frames the
    closed client, its session and its token."""
    caplog.set_level(logging.DEBUG, logger="flowith")
    with socket.socket() as unused:  # a port nobody listens on: refused at once
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
    client = transport.client_class()(
        fake.token, edge_url=nowhere, supabase_url=nowhere, max_retries=0
    )
    async with client:
        with pytest.raises(ConnectionFailedError):
            await client.get_credits()
        with pytest.raises(ConnectionFailedError):
            async for _ in client.stream_user_sse(timeout=5):
                pass
    failures = [r for r in caplog.records if r.name == "flowith.http"]
    assert len(failures) == 2
    for record in failures:
        args = record.args if isinstance(record.args, tuple) else ()
        assert not any(isinstance(arg, BaseException) for arg in args)


async def test_a_path_that_is_no_readable_file_is_refused_before_uploading(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """A folder went on the wire and failed there, differently on each transport
    (httpx: a bare IsADirectoryError; aiohttp: ConnectionFailedError, sent); a FIFO
    would wait for a writer for ever. It is the OSError of reading it, as the
    original client's (a FileUploadError was caught by no ``except OSError``)."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    unreadable = tmp_path / "unreadable.txt"
    unreadable.write_text("secret")
    unreadable.chmod(0)
    cases: dict[Path, tuple[type[OSError], str]] = {
        tmp_path / "missing.txt": (FileNotFoundError, "No such file or directory"),
        tmp_path: (IsADirectoryError, "a folder, not a file to upload"),
        pipe: (OSError, "not a regular file (an upload is read from a file)"),
    }
    if os.geteuid() != 0:  # root reads it anyway
        cases[unreadable] = (PermissionError, "Permission denied")
    async with make_client() as client:
        for path, (kind, reason) in cases.items():
            with anyio.fail_after(5), pytest.raises(kind, match=re.escape(reason)) as refused:
                await client.upload_file(path)
            assert type(refused.value) is kind
            assert str(refused.value) == f"[Errno {refused.value.errno}] {reason}: {str(path)!r}"
            assert refused.value.filename == str(path)
    assert fake.requests_to("POST", "/file/store") == []


@pytest.mark.parametrize("change", [-1000, 1000], ids=["shrank", "grew"])
async def test_a_file_that_changes_size_while_it_is_uploaded_is_a_file_upload_error(
    fake: FakeFlowith,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: int,
) -> None:
    """The size measured first is announced, then the file is streamed: one another
    process truncated or appended to meanwhile made httpx fail with h11's own
    LocalProtocolError (no FlowithError), and aiohttp wait for the answer to a body
    that never ended, the whole upload timeout. (Measured here as it would have
    been before the change.)"""
    path = tmp_path / "growing.log"
    path.write_bytes(b"x" * 300_000)
    measure = abc_module._upload_size
    monkeypatch.setattr(abc_module, "_upload_size", lambda p: measure(p) - change)
    stored = dict(fake.files)
    async with make_client() as client:
        with anyio.fail_after(5), pytest.raises(FileUploadError) as failed:
            await client.upload_file(path)
    said = "300000 when it ended" if change < 0 else "more when it ended"
    assert str(failed.value) == (
        f"upload failed: {str(path)!r} changed while it was being uploaded: it held "
        f"{300_000 - change} bytes when the upload began, {said}"
    )
    assert failed.value.status_code is None
    assert fake.files == stored


def _jar_size(client: Any) -> int:
    """How many cookies the client's own jar holds: httpx's, or aiohttp's session's."""
    jar = getattr(client, "_jar", None)
    return len(jar if jar is not None else client._http.cookie_jar)


def _jar_paths(client: Any) -> int:
    """How many (domain, path) places the client's own jar keeps, emptied ones too."""
    jar = getattr(client, "_jar", None)
    if jar is None:
        return len(client._http.cookie_jar._cookies)
    return sum(len(paths) for paths in jar._cookies.values())


@pytest.mark.parametrize("flood", ["names", "paths"])
async def test_a_server_setting_cookies_without_end_grows_no_jar_past_the_bound(
    fake: FakeFlowith, make_client: MakeClient, flood: str
) -> None:
    """The jar kept every cookie, and sent them all back with every request; then
    it kept those of the names whose values the client hides, so one name set on
    new paths still grew it, and a short value (``lang=en``) went even when newest.
    httpx's jar then kept each path's emptied dict: a dict per path ever set, all
    walked by every request."""
    for batch in range(3):  # 40 and one a time: aiohttp 3.14 reads 50 from one answer
        if flood == "names":
            cookies = [f"c{batch}x{n:02d}=value-{batch}-{n:02d}; Path=/" for n in range(40)]
        else:
            cookies = [f"a=value-{batch}-{n:02d}; Path=/p{batch}x{n:02d}" for n in range(40)]
        fake.fail_next(
            1,
            200,
            method="GET",
            path="/featurebase/status",
            body={"ok": True},
            headers=[("Set-Cookie", cookie) for cookie in [*cookies, "lang=en; Path=/"]],
        )
    async with make_client() as client:
        for _ in range(4):
            await client.get_featurebase_status()
        assert _jar_size(client) <= MAX_COOKIES
        assert _jar_paths(client) <= MAX_COOKIES
    last = fake.requests_to("GET", "/featurebase/status")[-1]
    sent = dict(pair.split("=", 1) for pair in (last.header("cookie") or "").split("; "))
    assert sent["lang"] == "en"
    if flood == "names":
        assert {f"c2x{n:02d}" for n in range(40)} <= set(sent)  # the latest are kept
        sent.pop("lang")
        assert all(value == f"value-{name[1]}-{name[3:]}" for name, value in sent.items())


@pytest.mark.parametrize(
    "where", ["request", "retry wait", "token refresh", "stream connect", "event wait"]
)
async def test_closing_a_run_from_another_task_ends_its_slow_step(
    fake: FakeFlowith, make_client: MakeClient, where: str
) -> None:
    """A stop button pressed while the run's task was inside a slow request (the
    generation's POST, here answered after 30 s) waited for its answer; inside a
    retry's wait (``Retry-After: 30``), for the wait; inside a token refresh or the
    event stream's connect, for them; reading the event stream for the next event,
    for the next frame (a heartbeat, every 5 s from the real service)."""
    if where == "event wait":
        fake.heartbeat_interval = 60
        fake.script(chunk("first "), pause(30), complete())
    else:
        fake.script(chunk("never seen"), complete())
    if where == "token refresh":
        fake.expire_token(fake.token)
    async with make_client(refresh_token=fake.refresh_token, timeout=60) as client:
        inside = anyio.Event()
        send, open_stream = client._send, client._open_stream
        slow_url = {"request": "/completion/async", "token refresh": "/auth/v1/token"}.get(where)
        # A refresh goes on after the stop, to be adopted: a shorter one, not to wait long.
        delay = 5 if where == "token refresh" else 30

        async def slowed(request: Any, timeout: Any, deadline: Any, operation: str) -> Any:
            response = await send(request, timeout, deadline, operation)
            if slow_url is not None and slow_url in request.url:
                inside.set()
                await anyio.sleep(delay)
            return response

        async def slow_open(request: Any, deadline: Any) -> Any:
            inside.set()
            await anyio.sleep(30)
            return await open_stream(request, deadline)

        client._send = slowed
        if where == "retry wait":
            fake.fail_next(
                1, 429, method="POST", path="/completion/async", headers=[("Retry-After", "30")]
            )
        elif where == "stream connect":
            client._open_stream = slow_open
        run = client.generate_stream("q", timeout=120)
        ended = anyio.Event()

        async def consume() -> None:
            async for _ in run:
                inside.set()  # the first words: it waits for the next event now
            ended.set()

        def posted() -> bool:
            return bool(fake.requests_to("POST", "/completion/async"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await eventually(lambda: inside.is_set() or (where != "event wait" and posted()))
                await anyio.sleep(0.1)  # inside the slow step
                started = time.monotonic()
                await run.aclose()
                await ended.wait()
                assert time.monotonic() - started < delay / 2
        with pytest.raises(ClientStateError, match="closed before its end"):
            await run.result()
        client._send, client._open_stream = send, open_stream
        if where == "token refresh":  # it went on in its own task, and was adopted
            state = client._state
            await eventually(lambda: state.credentials.access_token != fake.token, within=10)
        assert (await client.generate("next")).text  # the client goes on


async def test_closing_a_run_from_inside_its_own_step_leaves_its_task_uncancelled(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """On aiohttp, a close() from code running inside the step (a hook) cancelled the
    task itself: the cancellation then fired at the caller's next await."""
    fake.script(chunk("x"), complete())
    async with make_client() as client:
        send = client._send
        runs: list[Any] = []

        async def closing(request: Any, timeout: Any, deadline: Any, operation: str) -> Any:
            response = await send(request, timeout, deadline, operation)
            if "/completion/async" in request.url:
                runs[0].close()
            return response

        client._send = closing
        run = client.generate_stream("q")
        runs.append(run)
        with anyio.fail_after(10):
            assert [step async for step in run] == []
            client._send = send
            await anyio.sleep(0.01)  # a pending cancellation would fire here
            assert (await client.generate("next")).text


async def test_closing_a_run_from_another_task_ends_its_loop_with_no_bogus_step(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A "stop" button: the iterating task waited until the next row check (up to
    15 s), then got a ``None`` step, and ``result()`` returned ``None``."""
    fake.script(chunk("a "), pause(30), chunk("b"), complete())
    async with make_client() as client:
        run = client.generate_stream("q", timeout=60)
        seen: list[Any] = []
        started = time.monotonic()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:

                async def consume() -> None:
                    async for step in run:
                        seen.append(step)

                group.start_soon(consume)
                await eventually(lambda: len(seen) == 1)
                await run.aclose()
        assert time.monotonic() - started < 5  # the fake's heartbeat wakes its read
        assert [step.text_delta for step in seen] == ["a "]
        with pytest.raises(ClientStateError, match="closed before its end"):
            await run.result()
        assert (await client.generate("next")).text  # the client goes on


def test_a_second_aclose_from_another_event_loop_returns() -> None:
    """Waiting for the first close there failed with a cryptic error of the other
    loop (a trio event awaited on asyncio, or the reverse): it returns, as before."""
    import asyncio

    import trio

    from flowith_httpx import FlowithClient

    client = FlowithClient(FakeFlowith().token)
    trio.run(client.aclose)
    asyncio.run(client.aclose())
    other = FlowithClient(FakeFlowith().token)
    asyncio.run(other.aclose())
    trio.run(other.aclose)


async def test_a_redirect_to_a_port_past_65535_is_refused_on_every_loop(
    fake: FakeFlowith, transport: Transport, tmp_path: Path
) -> None:
    """httpx checks the port of a URL it is given, not of a redirect's Location.
    asyncio's connect refused it; trio's took it modulo 65536 and connected to
    another port (99999 to 34463), a server never named."""
    from tests.canned_server import CannedServer

    wrapped_to = 99999 - 65536
    async with CannedServer(302, [("Location", "http://127.0.0.1:99999/b.txt")], b"") as server:
        client = transport.client_class()(fake.token, max_retries=0)
        async with client:
            with pytest.raises(ConnectionFailedError) as refused:
                await client.download(f"{server.url}/a.txt", tmp_path)
    assert str(refused.value) == "cannot follow the redirect: it leads to a port outside 0-65535"
    assert str(wrapped_to) not in repr(refused.value.__cause__)
    assert refused.value.request_sent is True
    assert server.paths == ["/a.txt"]


async def test_a_download_error_quoting_its_signed_url_hides_the_signature(
    fake: FakeFlowith, transport: Transport, tmp_path: Path
) -> None:
    """S3 answers a signature it refuses with the signature and the security token
    it was sent, outside any URL: the error, its body and the cassette quoted them."""
    from tests.canned_server import CannedServer

    signature, token = "5d1f0c2b9a8e7d6c5b4a39281706f5e4", "IQoJb3JpZ2luX2VjEXAMPLEtoken"
    body = (
        "<Error><Code>SignatureDoesNotMatch</Code>"
        f"<SignatureProvided>{signature}</SignatureProvided>"
        f"<CanonicalRequest>GET /f.png X-Amz-Security-Token={token}</CanonicalRequest></Error>"
    )
    cassette = tmp_path / "download.jsonl"
    headers = [("Content-Type", "application/xml")]
    async with CannedServer(403, headers, body.encode()) as server:
        url = f"{server.url}/f.png?X-Amz-Security-Token={token}&X-Amz-Signature={signature}"
        client = transport.client_class()(fake.token, max_retries=0, record_to=cassette)
        async with client:
            with pytest.raises(PermissionDeniedError) as refused:
                await client.download(url, tmp_path)
    shown = f"{refused.value} {refused.value.body} {cassette.read_text(encoding='utf-8')}"
    assert "SignatureDoesNotMatch" in shown
    assert signature not in shown
    assert token not in shown


def _numbered_event(text: str, event_id: str) -> bytes:
    """A /user_stream/stream frame of one chunk, with an ``id:`` line."""
    payload = {"data": {"type": "chunks", "nodeId": "n", "chunks": [text]}}
    return f"id: {event_id}\ndata: {json.dumps(payload)}\n\n".encode()


async def _last_event_id_asked(stream: anyio.abc.SocketStream) -> str | None:
    """Read a request's head; the ``Last-Event-ID`` it sent, if any."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive()
    fields = (line.partition(": ") for line in head.decode("latin-1").split("\r\n"))
    last = [value for name, _, value in fields if name.lower() == "last-event-id"]
    return last[0] if last else None


async def test_a_listener_reopens_its_stream_within_its_window(
    fake: FakeFlowith, transport: Transport
) -> None:
    """A listener ended at the first close or break of its stream, whatever was
    left of its window, and never said Last-Event-ID: what the server sent later
    was lost. It now reopens as an EventSource does, after the server's retry:."""
    asked: list[str | None] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            asked.append(await _last_event_id_asked(stream))
            chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            chunked += b"Transfer-Encoding: chunked\r\n\r\n"
            if len(asked) == 1:  # ended cleanly
                body = b"retry: 50\n" + _numbered_event("one", "ev-1")
                await stream.send(chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            elif len(asked) == 2:  # broken: no last chunk
                body = _numbered_event("two", "ev-2")
                await stream.send(chunked + b"%x\r\n%s\r\n" % (len(body), body))
            else:  # open until the window ends
                body = _numbered_event("three", "ev-3")
                await stream.send(chunked + b"%x\r\n%s\r\n" % (len(body), body))
                await anyio.sleep(30)

    async with raw_server(serve) as url:
        client = transport.client_class()(fake.token, edge_url=url, max_retries=0)
        async with client:
            heard = [e["chunks"] async for e in client.stream_user_stream(timeout=1.5)]
    assert heard == [["one"], ["two"], ["three"]]
    assert asked == [None, "ev-1", "ev-2"]


async def test_a_client_dropped_with_open_streams_says_so(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A client dropped without aclose() left its shared stream open for the rest of
    the event loop's life (a task of the loop reads it), and said nothing."""
    fake.script(chunk("hello"), complete())
    client = make_client()
    assert (await client.generate("Hi")).text == "hello"
    assert fake.stream_connections == 1
    with pytest.warns(ResourceWarning, match="unclosed FlowithClient with open streams"):
        client.__del__()
    await client.aclose()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.__del__()  # closed: nothing to say
        make_client().__del__()  # never used: nothing open


async def test_a_client_dropped_unclosed_is_freed_and_warns(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """An aiohttp client's connector held it through its socket factory, and the event
    loop holds the connector while a socket is open: a client dropped unclosed lived
    on with its streams, and said nothing."""
    fake.script(chunk("hello"), complete())
    client = make_client()
    assert (await client.generate("Hi")).text == "hello"
    http = client._http  # closed below: what the client left open
    dropped = weakref.ref(client)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert dropped() is None
    assert any(
        issubclass(w.category, ResourceWarning) and "unclosed FlowithClient" in str(w.message)
        for w in said
    )
    await (http.aclose() if isinstance(http, httpx.AsyncClient) else http.close())


async def test_a_listener_reopening_for_hours_backs_off_at_most_30_s(
    make_client: MakeClient,
) -> None:
    """The reopen wait doubled an int per quiet connection: a listener without an end
    whose stream kept closing at once raised OverflowError at its 1,026th reopening."""
    client = make_client()
    async with client:
        # A window that ends before the wait would (30 s): computed, and not waited.
        assert await client._reconnect_wait(None, 5_000, client._now() + 29.9) is False


@pytest.mark.parametrize("event_id", ["7 ", " 7", "é-1"])
async def test_an_event_id_no_header_can_carry_is_not_sent_when_reopening(
    fake: FakeFlowith, transport: Transport, event_id: str
) -> None:
    """h11 refuses a header value with spaces around it, and httpx one that is not
    ASCII: the listener broke when it reopened its stream with such an id. The
    stream is reopened without it, as for a new listener."""
    asked: list[str | None] = []
    event = _numbered_event("x", event_id)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            asked.append(await _last_event_id_asked(stream))
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            answer += b"Content-Length: %d\r\n\r\n%s" % (len(event), event)
            await stream.send(answer)

    async with raw_server(serve) as url:
        client = transport.client_class()(fake.token, edge_url=url, max_retries=0)
        async with client:
            heard = [e async for e in client.stream_user_stream(timeout=1.5)]
    assert asked == [None, None]  # at 0 and 1 s
    assert len(heard) == 2
