"""The httpx transport's lanes (flowith_httpx.lanes) on real loopback connections: the
fake Flowith counts the TCP connections the client opens and closes."""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any

import anyio
import anyio.abc
import pytest

from flowith_httpx import FlowithClient, lanes
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_httpx.lanes import LANES
from flowith_proto.errors import FlowithError
from flowith_proto.fake import FakeFlowith
from tests.canned_server import CannedServer
from tests.conftest import eventually

USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class CountingServer(FakeFlowithServer):
    """The fake Flowith, counting the connections made to it and those still open.

    With ``gather``, the first connections are served only once that many are open,
    so that many requests are sure to overlap.
    """

    def __init__(self, fake: FakeFlowith, *, gather: int = 0) -> None:
        super().__init__(fake)
        self.opened = 0
        self.open = 0
        self._gather = gather
        self._gathered = anyio.Event()

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        self.opened += 1
        self.open += 1
        try:
            if self.opened >= self._gather:
                self._gathered.set()
            with anyio.fail_after(5):
                await self._gathered.wait()
            await super().serve_one(socket)
        finally:
            self.open -= 1


def client_of(fake: FakeFlowith, server: FakeFlowithServer) -> FlowithClient:
    return FlowithClient(fake.token, edge_url=server.url, supabase_url=server.url)


async def test_a_quiet_client_sends_on_one_connection() -> None:
    fake = FakeFlowith()
    async with CountingServer(fake) as server, client_of(fake, server) as client:
        for _ in range(10):
            await client.list_conversations()
        assert server.opened == 1


async def test_overlapping_requests_open_a_bounded_set_of_connections_then_reuse_them() -> None:
    fake = FakeFlowith()
    async with CountingServer(fake) as server, client_of(fake, server) as client:
        async with anyio.create_task_group() as group:
            for _ in range(3 * LANES):
                group.start_soon(client.list_conversations)
        opened = server.opened
        assert 1 <= opened <= LANES
        for _ in range(10):
            await client.list_conversations()
        assert server.opened == opened


async def test_closing_the_client_closes_every_connection_it_opened() -> None:
    fake = FakeFlowith()
    async with CountingServer(fake) as server:
        async with client_of(fake, server) as client, anyio.create_task_group() as group:
            for _ in range(3 * LANES):
                group.start_soon(client.list_conversations)
        assert server.opened > 0
        await eventually(lambda: server.open == 0, within=5)


async def test_lanes_left_idle_are_closed_with_their_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes, "IDLE_LIMIT", 0.2)
    fake = FakeFlowith()
    async with CountingServer(fake, gather=4) as server, client_of(fake, server) as client:
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(client.list_conversations)
        assert server.open == 4  # four lanes, each keeping its connection alive
        await anyio.sleep(0.3)
        await client.list_conversations()  # all four are past the limit: closed, a new one made
        await eventually(lambda: server.open == 1)
        assert server.opened == 5
        await client.list_conversations()  # a lane in use is never stale
        assert (server.open, server.opened) == (1, 5)


async def test_requests_cut_short_by_asyncio_leave_no_connection_open(
    anyio_backend: str,
) -> None:
    """asyncio's task.cancel() (as asyncio.wait_for sends) could leave the cut
    request's connection counted busy in httpcore's pool: never reused and never
    closed until the client closed, one more per cancelled request."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    import asyncio

    fake = FakeFlowith()
    async with CountingServer(fake) as server, client_of(fake, server) as client:
        await client.list_conversations()
        cut = tries = 0
        while cut < 10 and tries < 200:  # cut at various points of the exchange
            try:
                await asyncio.wait_for(client.list_conversations(), 0.0003 * (tries % 10 + 1))
            except asyncio.TimeoutError:
                cut += 1
            tries += 1
        assert cut == 10
        await client.list_conversations()
        # The lane that answered last keeps its connection; no other stays open.
        await eventually(lambda: server.open == 1, within=5)


async def test_a_close_while_stale_lanes_close_leaves_no_lane_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request went on after its turn: a close while it closed stale lanes left
    it a fresh lane that nothing closed."""
    fake = FakeFlowith()
    made: list[Any] = []
    async with FakeFlowithServer(fake) as server:
        client = client_of(fake, server)
        assert client._lanes is not None
        lane_set = client._lanes
        make = lane_set._make

        def tracked() -> Any:
            made.append(make())
            return made[-1]

        lane_set._make = tracked
        await client.list_conversations()  # one idle lane
        closing = anyio.Event()
        close_stale = lane_set._close_stale

        async def slow_close_stale() -> None:
            closing.set()
            await anyio.sleep(0.2)
            await close_stale()

        lane_set._close_stale = slow_close_stale  # type: ignore[method-assign]
        outcome: list[str] = []

        async def call() -> None:
            try:
                await client.list_conversations()
            except FlowithError as exc:
                outcome.append(str(exc))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await closing.wait()
            await client.aclose()
    assert outcome == ["the client is closed"]
    assert all(lane.is_closed for lane in made)


async def test_downloads_cut_short_in_a_crowd_leave_no_connection_slot_taken() -> None:
    """Past its pool's 100 connections, httpx queued downloads inside httpcore's pool,
    and one cut short there left its slot taken for good (httpcore#1093): after a few
    bursts of timed-out downloads, every download, upload and event stream of the
    client timed out, the server long idle again. They now wait for a turn of ours."""
    server = CannedServer(200, [("Content-Type", "application/octet-stream")], b"ok")
    server.delay = 5.0
    async with server:
        url = server.url + "/f/a.bin"
        client = FlowithClient("t" * 20, user_id=USER, timeout=5, max_retries=0)
        async with client:
            with tempfile.TemporaryDirectory() as folder:

                async def download() -> None:
                    with anyio.move_on_after(0.5):
                        await client.download(url, folder)

                for _burst in range(2):  # on trio, fewer are cut while queued: twice
                    async with anyio.create_task_group() as group:
                        for _ in range(150):
                            group.start_soon(download)
                pool = client._http._transport._pool  # type: ignore[attr-defined]
                await eventually(lambda: "CONNECTING" not in repr(pool.connections))
                server.delay = 0.0
                with anyio.fail_after(5):
                    saved = await client.download(url, folder, filename="after.bin")
                assert saved.read_bytes() == b"ok"


async def test_a_stream_closed_as_asyncio_cancels_its_reader_gives_its_turn_back(
    anyio_backend: str,
) -> None:
    """asyncio's own cancel() reached the closing of a stream's body through anyio's
    shield, before it gave its turn back: each cost one of the 64 turns for good, and
    past 64 every stream, download and upload of the client waited for a turn."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    import asyncio

    async def listen_then_be_cancelled(client: FlowithClient) -> None:
        me = asyncio.current_task()
        assert me is not None
        async with contextlib.aclosing(client.stream_user_sse()) as frames:
            async for _ in frames:
                asyncio.get_running_loop().call_soon(me.cancel)  # lands as it closes
                break

    fake = FakeFlowith(heartbeat_interval=0.05)
    async with FakeFlowithServer(fake) as server:
        url = fake.add_file("/f/x/a.bin", b"z" * 1000)
        client = FlowithClient(fake.token, edge_url=server.url, supabase_url=server.url, timeout=2)
        async with client:
            for _ in range(70):
                task = asyncio.create_task(listen_then_be_cancelled(client))
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with tempfile.TemporaryDirectory() as folder:
                saved = await client.download(url, folder)
                assert saved.read_bytes() == b"z" * 1000


async def test_uploads_cut_short_by_asyncio_leave_no_connection_open(anyio_backend: str) -> None:
    """An upload cut short by asyncio's task.cancel() (what asyncio.timeout and
    wait_for send) could leave its connection counted busy in the main client's pool
    for good (httpcore#1093), its socket open: a hundred of them and no stream or
    download found room. An upload now goes on a client of its own, closed after."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    import asyncio
    import random

    fake = FakeFlowith()
    async with CountingServer(fake) as server, client_of(fake, server) as client:
        started = anyio.current_time()
        await client.upload_file(data=b"q" * 300_000, filename="a.bin")
        took = anyio.current_time() - started
        pick = random.Random(1)
        for _ in range(300):
            task = asyncio.create_task(client.upload_file(data=b"q" * 300_000, filename="a.bin"))
            await asyncio.sleep(pick.uniform(0, took * 1.2))  # cut at any point of it
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Closed, but for one the main client may keep alive.
        await eventually(lambda: server.open <= 1, within=5)
