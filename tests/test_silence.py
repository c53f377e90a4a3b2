"""The silence watchdog: a live stream that sends nothing, not even a heartbeat,
for ``stream_idle_timeout`` seconds is a broken connection, on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest

from flowith_httpx.client import _Signal, race
from flowith_proto.demux import StreamEnded
from flowith_proto.errors import ConnectionFailedError
from flowith_proto.events import Chunks
from flowith_proto.hub import IDLE_LOOK, StreamHub
from flowith_proto.silence import SilenceWatchdog
from tests.memory_streams import Streams
from tests.test_hub import chunk, frame

pytestmark = pytest.mark.anyio

HEARTBEAT = frame({"heartbeat": 1}, envelope=False)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_nothing_for_the_limit_breaks_the_connection(streams: Streams) -> None:
    watched = SilenceWatchdog(streams.new("stream"), anyio.current_time, 0.2)
    started = anyio.current_time()
    with pytest.raises(ConnectionFailedError, match=r"sent nothing for 0\.2 s"):
        await watched.read(None)
    assert 0.15 <= anyio.current_time() - started < 1.0


async def test_every_chunk_starts_the_silence_afresh(streams: Streams) -> None:
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 1.0)

    async def beat() -> None:
        for _ in range(8):  # 1.2 s in all, never 1 s apart (however slow the machine)
            await anyio.sleep(0.15)
            stream.push(HEARTBEAT)

    async with anyio.create_task_group() as group:
        group.start_soon(beat)
        for _ in range(8):
            assert await watched.read(None) == HEARTBEAT


async def test_a_deadline_before_the_limit_is_a_plain_timeout(streams: Streams) -> None:
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 5.0)
    assert await watched.read(anyio.current_time() + 0.05) is None
    stream.push(b"data: x\n\n")
    assert await watched.read(anyio.current_time() + 0.05) == b"data: x\n\n"


async def test_a_look_within_the_limit_takes_what_came_or_gives_the_verdict(
    streams: Streams,
) -> None:
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 0.2)
    await anyio.sleep(0.1)
    stream.push(HEARTBEAT)
    assert await watched.read(anyio.current_time()) == HEARTBEAT
    assert await watched.read(anyio.current_time()) is None  # nothing more, within the limit
    await anyio.sleep(0.3)
    with pytest.raises(ConnectionFailedError, match="sent nothing"):
        await watched.read(anyio.current_time() + 5)


async def test_what_the_idle_look_finds_counts_as_heard_when_the_stream_was_last_read(
    streams: Streams,
) -> None:
    # Buffered bytes may be heartbeats from before the connection died: they
    # vouch only for the moment of the last read, not for now.
    # On a clock of the test's own (looks do not wait): a loaded machine's late
    # wake-up from a real sleep of 0.2 s was past the 0.3 s limit.
    clock = [0.0]
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, lambda: clock[0], 0.3)
    assert await watched.read(IDLE_LOOK) is None
    clock[0] += 0.2
    stream.push(HEARTBEAT)
    assert await watched.read(IDLE_LOOK) == HEARTBEAT
    clock[0] += 0.15  # 0.35 s after the last read that found nothing
    with pytest.raises(ConnectionFailedError, match="sent nothing"):
        await watched.read(IDLE_LOOK)


async def test_a_look_at_a_stream_unread_past_the_limit_is_the_verdict(streams: Streams) -> None:
    # Whatever it buffered: heartbeats that came before a NAT forgot the
    # connection would otherwise pass it for alive.
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 0.1)
    await anyio.sleep(0.05)
    stream.push(HEARTBEAT)
    await anyio.sleep(0.15)
    with pytest.raises(ConnectionFailedError, match=r"not read for over 0\.1 s"):
        await watched.read(IDLE_LOOK)


async def test_a_reader_whose_deadline_passed_is_no_idle_look(streams: Streams) -> None:
    # A consumer slow for longer than the limit: its next read's deadline has
    # passed, yet what came meanwhile is taken, not judged stale.
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 0.2)
    deadline = anyio.current_time() + 0.1
    await anyio.sleep(0.15)
    stream.push(HEARTBEAT)
    await anyio.sleep(0.15)
    assert await watched.read(deadline) == HEARTBEAT
    # ...and counts as heard now: the stream is not judged silent at the next read.
    stream.push(HEARTBEAT)
    assert await watched.read(deadline) == HEARTBEAT
    assert await watched.read(anyio.current_time() + 0.05) is None


async def test_a_slow_reader_is_not_a_silent_stream(streams: Streams) -> None:
    # A listener's caller may take its time between events: a read that waits
    # (not a look) takes what came meanwhile as fresh.
    stream = streams.new("stream")
    watched = SilenceWatchdog(stream, anyio.current_time, 0.1)
    await anyio.sleep(0.2)
    stream.push(HEARTBEAT)
    assert await watched.read(None) == HEARTBEAT


async def test_the_end_of_the_body_is_passed_on_not_taken_for_silence(streams: Streams) -> None:
    stream = streams.new("stream")
    stream.end()
    watched = SilenceWatchdog(stream, anyio.current_time, 0.1)
    assert await watched.read(None) == b""


def watched_hub(streams: Streams, limit: float) -> StreamHub:
    async def open_watched(channel: str, deadline: float | None) -> SilenceWatchdog:
        return SilenceWatchdog(streams.new(channel), anyio.current_time, limit)

    return StreamHub(open_watched, _Signal, anyio.current_time, race)


async def test_a_generation_on_a_silent_stream_learns_it_is_gone(streams: Streams) -> None:
    hub = watched_hub(streams, 0.3)
    await hub.subscribe("node", ["stream"], None)
    streams.last("stream").push(HEARTBEAT)
    started = anyio.current_time()
    item = await hub.next_event("node", started + 5)
    assert isinstance(item, StreamEnded)  # it reads its row from here on
    assert "sent nothing for 0.3 s" in item.reason
    assert anyio.current_time() - started < 2
    hub.unsubscribe("node")
    await hub.subscribe("next", ["stream"], None)  # it delivered before: no backoff
    assert len(streams.opened["stream"]) == 2
    streams.last("stream").push(chunk("next", "fresh", 0))
    item = await hub.next_event("next", anyio.current_time() + 2)
    assert isinstance(item, Chunks)
    assert item.chunks == ("fresh",)
    await hub.aclose()


async def test_an_idle_stream_gone_silent_is_replaced_before_use(streams: Streams) -> None:
    # No generation read it while it died; the newcomer's look finds it silent
    # and connects afresh at once, not after a backoff (the dead stream never
    # delivered anything, which is no failure of a connection attempt).
    hub = watched_hub(streams, 0.2)
    await hub.subscribe("first", ["stream"], None)
    hub.unsubscribe("first")
    await anyio.sleep(0.3)
    await hub.subscribe("second", ["stream"], None)
    assert len(streams.opened["stream"]) == 2
    streams.last("stream").push(chunk("second", "here", 0))
    item = await hub.next_event("second", anyio.current_time() + 2)
    assert isinstance(item, Chunks)
    assert item.chunks == ("here",)
    assert hub.connections_opened() == 2
    await hub.aclose()


async def test_an_idle_stream_is_replaced_whatever_it_buffered(streams: Streams) -> None:
    # Heartbeats piled up while nobody read; then the connection may have died.
    hub = watched_hub(streams, 0.2)
    await hub.subscribe("first", ["stream"], None)
    hub.unsubscribe("first")
    for _ in range(3):
        await anyio.sleep(0.1)
        streams.last("stream").push(HEARTBEAT)
    await hub.subscribe("second", ["stream"], None)
    assert len(streams.opened["stream"]) == 2
    streams.last("stream").push(chunk("second", "fresh", 0))
    item = await hub.next_event("second", anyio.current_time() + 2)
    assert isinstance(item, Chunks)
    assert item.chunks == ("fresh",)
    await hub.aclose()
