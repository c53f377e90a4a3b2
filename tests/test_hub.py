"""The shared stream hub driven directly, over in-memory streams, on asyncio and trio.

Turn-taking bugs show as a generation that waits until its deadline while its
event sits on a readable stream; these tests pin the hand-overs that used to be
missed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import pytest

from flowith_httpx.client import _Signal, race
from flowith_proto.demux import StreamEnded
from flowith_proto.errors import ConnectionFailedError, RateLimitError
from flowith_proto.events import Chunks, WorkflowComplete
from flowith_proto.hub import StreamHub
from tests.memory_streams import MemoryStream, Streams

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def hub_over(streams: Streams) -> StreamHub:
    return StreamHub(streams, _Signal, anyio.current_time, race)


def frame(event: Mapping[str, object], *, envelope: bool = True) -> bytes:
    payload = {"data": event, "id": "1"} if envelope else event
    return f"data: {json.dumps(payload)}\n\n".encode()


def chunk(node: str, text: str, seq: int) -> bytes:
    return frame({"type": "chunks", "nodeId": node, "chunks": [text], "seq": seq})


async def test_a_look_at_the_stream_hands_the_reader_role_back(streams: Streams) -> None:
    """A newcomer's look took the role from a generation just handed it, and
    never handed it back: the generation slept past its event to its deadline."""
    hub = hub_over(streams)
    await hub.subscribe("reader", ["stream"], None)
    await hub.subscribe("waiter", ["stream"], None)
    stream = streams.last("stream")
    start = anyio.current_time()
    got: dict[str, tuple[type, float]] = {}

    async def wait_for(node: str) -> None:
        item = await hub.next_event(node, start + 3)
        got[node] = (type(item), anyio.current_time() - start)

    async def newcomer() -> None:  # subscribes (and looks), then never reads
        await hub.subscribe("newcomer", ["stream"], None)
        await anyio.sleep(1)
        hub.unsubscribe("newcomer")

    async with anyio.create_task_group() as group:
        group.start_soon(wait_for, "reader")
        await anyio.sleep(0.05)
        group.start_soon(wait_for, "waiter")
        await anyio.sleep(0.05)
        stream.push(chunk("reader", "r", 0))  # the reader leaves, handing over...
        group.start_soon(newcomer)  # ...as the newcomer looks at the stream
        await anyio.sleep(0.2)
        stream.push(chunk("waiter", "w", 0))
    kind, at = got["waiter"]
    assert kind is Chunks
    assert at < 1


@pytest.mark.parametrize("opens", [True, False])
async def test_a_connect_that_ends_tells_the_generations_waiting_on_it(
    streams: Streams, opens: bool
) -> None:
    """A media job whose streams were both lost while one reconnected was told
    neither that the connect failed nor that its result could now be read."""
    hub = hub_over(streams)
    await hub.subscribe("media", ["stream", "sse"], None)
    for channel in ("stream", "sse"):  # both worked (a lost stream that never did backs off)
        streams.last(channel).push(frame({"heartbeat": 1}, envelope=False))
    start = anyio.current_time()
    got: dict[str, tuple[object, float]] = {}
    gate = anyio.Event()

    answered = anyio.Event()

    async def media() -> None:
        item = await hub.next_event("media", start + 5)
        while isinstance(item, StreamEnded) and item.partial:  # one stream of two went
            item = await hub.next_event("media", start + 5)
        got["media"] = (item, anyio.current_time() - start)
        answered.set()

    async def slow_open(channel: str, deadline: float | None) -> MemoryStream:
        await gate.wait()
        if not opens:
            raise ConnectionFailedError("refused")
        return streams.new(channel)

    async def text_generation() -> None:  # reconnects /stream, then reads nothing
        await hub.subscribe("text", ["stream"], None)
        await anyio.sleep(10)

    async with anyio.create_task_group() as group:
        group.start_soon(media)
        await anyio.sleep(0.05)
        streams.last("stream").end()  # /stream lost: the job still has /sse
        await anyio.sleep(0.05)
        streams.opening = slow_open
        group.start_soon(text_generation)
        await anyio.sleep(0.05)
        streams.last("sse").end()  # /sse lost while /stream reconnects
        await anyio.sleep(0.05)
        gate.set()
        await anyio.sleep(0.05)
        if opens:
            result = {
                "type": "workflow_complete",
                "nodeId": "media",
                "status": "completed",
                "taskType": "image",
                "result": "https://x/y.png",
            }
            streams.last("stream").push(frame(result, envelope=False))
        with anyio.move_on_after(3):
            await answered.wait()
        group.cancel_scope.cancel()
    item, at = got["media"]
    assert isinstance(item, WorkflowComplete if opens else StreamEnded)
    assert at < 1


async def test_a_cancelled_connect_tells_the_others_nothing(streams: Streams) -> None:
    """The generation connecting was cancelled; the one waiting for it connected
    by itself, but had been told its stream could not be connected: it polled."""
    gate = anyio.Event()
    calls = 0

    async def first_blocks(channel: str, deadline: float | None) -> MemoryStream:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return streams.new(channel)

    streams.opening = first_blocks
    hub = hub_over(streams)
    connecting = anyio.CancelScope()

    async def first() -> None:
        with connecting:
            await hub.subscribe("first", ["stream"], None)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await anyio.sleep(0.05)
        group.start_soon(hub.subscribe, "second", ["stream"], None)
        await anyio.sleep(0.05)
        connecting.cancel()
    assert hub.connections_opened() == 1
    streams.last("stream").push(chunk("second", "hello", 0))
    item = await hub.next_event("second", anyio.current_time() + 1)
    assert isinstance(item, Chunks)
    await hub.aclose()


async def test_a_close_before_a_race_of_reads_starts_ends_the_wait_cleanly(
    streams: Streams,
) -> None:
    """A media job reads both streams in a race whose reads start in tasks of their
    own: a close in between let the connections go, and a read found none (a bare
    AssertionError out of generate_image, where the caller should learn the end)."""
    hub: StreamHub

    async def close_first(jobs: Sequence[Callable[[], Awaitable[bool]]]) -> bool:
        await hub.aclose()
        return await race(jobs)

    hub = StreamHub(streams, _Signal, anyio.current_time, close_first)
    await hub.subscribe("job", ["stream", "sse"], None)
    with anyio.fail_after(3):
        item = await hub.next_event("job", anyio.current_time() + 2)
    assert isinstance(item, StreamEnded)


@pytest.mark.parametrize(("asked", "reconnects_at"), [(5.0, 5.0), (86_400.0, 300.0)])
async def test_a_stream_throttled_with_retry_after_waits_that_long(
    streams: Streams, asked: float, reconnects_at: float
) -> None:
    """A 429 on the shared stream was tried again after the backoff's 0.5 s, the
    server's Retry-After unread; a day's is kept to LONGEST_RECONNECT_WAIT (300 s)."""
    clock = [0.0]
    hub = StreamHub(streams, _Signal, lambda: clock[0], race)
    attempts: list[float] = []

    async def throttled(channel: str, deadline: float | None) -> MemoryStream:
        attempts.append(clock[0])
        if len(attempts) == 1:
            raise RateLimitError("HTTP 429 from GET /user_stream/stream", retry_after_s=asked)
        return streams.new(channel)

    streams.opening = throttled
    for node, at in [("a", 0.0), ("b", 1.0), ("c", reconnects_at - 0.1), ("d", reconnects_at)]:
        clock[0] = at
        await hub.subscribe(node, ["stream"], None)
    assert attempts == [0.0, reconnects_at]
    assert len(streams.opened["stream"]) == 1


@pytest.mark.parametrize("how", ["ended", "broken"])
async def test_a_lost_stream_is_closed_at_once(streams: Streams, how: str) -> None:
    """A connection the server ended, or that broke, was closed only at the next
    subscription or at the client's close: an idle client held it meanwhile."""
    hub = hub_over(streams)
    await hub.subscribe("node", ["stream"], None)
    stream = streams.last("stream")
    if how == "broken":

        async def broken(deadline: float | None) -> bytes | None:
            raise ConnectionFailedError("reset by peer")

        stream.read = broken  # type: ignore[method-assign]
    else:
        stream.end()
    item = await hub.next_event("node", anyio.current_time() + 1)
    assert isinstance(item, StreamEnded)
    assert stream.closed


def _failing_until(streams: Streams, clock: list[float], failures: int) -> list[float]:
    """Make the first ``failures`` opens fail; the times of every open are returned."""
    attempts: list[float] = []

    async def opening(channel: str, deadline: float | None) -> MemoryStream:
        attempts.append(clock[0])
        if len(attempts) <= failures:
            raise ConnectionFailedError("connection refused")
        return streams.new(channel)

    streams.opening = opening
    return attempts


async def _hub_after_failures(
    streams: Streams, failures: int, gap: float
) -> tuple[StreamHub, list[float], list[float]]:
    """A hub on a clock of its own whose stream failed to open ``failures`` times,
    ``gap`` seconds apart (past each backoff); its clock and the opens' times."""
    clock = [0.0]
    hub = StreamHub(streams, _Signal, lambda: clock[0], race)
    attempts = _failing_until(streams, clock, failures)
    for number in range(failures):
        await hub.subscribe(f"failed-{number}", ["stream"], None)
        clock[0] += gap
    return hub, clock, attempts


async def test_a_stream_failing_for_hours_still_backs_off_at_most_30_s(streams: Streams) -> None:
    """The backoff doubled an int per failure: from the 1,025th failure on (hours of
    an outage, in all, over a process's life), OverflowError ended every generation."""
    hub, _, attempts = await _hub_after_failures(streams, 1_100, 30.0)
    assert len(attempts) == 1_100
    await hub.subscribe("later", ["stream"], None)
    assert len(streams.opened["stream"]) == 1


async def test_a_stream_that_worked_forgets_the_failures_before_it(streams: Streams) -> None:
    """A connection that delivered events and was then found closed by a look (nobody
    was reading it) left the failures before it counted: the next outage began with
    the longest backoff, 30 s without a stream, instead of half a second."""
    hub, clock, attempts = await _hub_after_failures(streams, 6, 60.0)
    await hub.subscribe("reader", ["stream"], None)
    stream = streams.last("stream")
    stream.push(chunk("reader", "text", 0))
    assert isinstance(await hub.next_event("reader", clock[0] + 1), Chunks)
    hub.unsubscribe("reader")
    stream.end()  # closed while nobody reads: the next subscription's look finds it
    opened = len(attempts)

    async def refused(channel: str, deadline: float | None) -> MemoryStream:
        attempts.append(clock[0])
        raise ConnectionFailedError("connection refused")

    streams.opening = refused
    await hub.subscribe("first of the outage", ["stream"], None)
    assert len(attempts) == opened + 1
    clock[0] += 0.6  # past the first backoff (0.5 s): tried again
    await hub.subscribe("second", ["stream"], None)
    assert len(attempts) == opened + 2
