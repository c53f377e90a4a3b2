"""The fake Flowith on a real loopback socket, spoken to by a plain httpx client.

Every test runs under asyncio and trio. The requests come from the core's
builders, so these tests also show that what the core builds survives a real
HTTP round trip (percent-encoding, chunked bodies, keep-alive).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.auth import Credentials
from flowith_proto.config import FlowithConfig
from flowith_proto.endpoints import Endpoints, Position
from flowith_proto.events import Chunks, Complete, Connected, FlowithEvent, Heartbeat, decode_event
from flowith_proto.fake import (
    FakeFlowith,
    Turn,
    chunk,
    close_stream,
    complete,
    drop,
    hang,
    pause,
)
from flowith_proto.request import MultipartForm, Request
from flowith_proto.sse import SSEDecoder
from tests.conftest import eventually
from tests.scripted import uuid_n

pytestmark = pytest.mark.anyio

#: How a client sees a body cut short: EOF mid-chunk, or a reset.
BROKEN = (httpx.RemoteProtocolError, httpx.ReadError)
USER_NODE = uuid_n(1)
AI_NODE = uuid_n(2)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- helpers ---------------------------------------------------------------------


@asynccontextmanager
async def serving(fake: FakeFlowith) -> AsyncIterator[tuple[httpx.AsyncClient, Endpoints]]:
    async with FakeFlowithServer(fake) as server, httpx.AsyncClient(timeout=5) as client:
        config = FlowithConfig(edge_url=server.url, supabase_url=server.url)
        yield client, Endpoints(config, Credentials.from_tokens(fake.token))


def json_body(request: Request) -> bytes:
    """The body of a request the core built with a JSON (not multipart) body."""
    assert not isinstance(request.body, MultipartForm)
    return request.body or b""


async def send(client: httpx.AsyncClient, request: Request) -> httpx.Response:
    return await client.request(
        request.method, request.url, headers=list(request.headers), content=json_body(request)
    )


@asynccontextmanager
async def opened(client: httpx.AsyncClient, request: Request) -> AsyncIterator[EventReader]:
    """An open event stream whose body a background task decodes.

    The task is cancelled on exit, so httpx's body generators always finish
    (by the cancellation) instead of being abandoned half-read, which trio
    reports as a ResourceWarning when they are garbage collected.
    """
    async with client.stream(request.method, request.url, headers=list(request.headers)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        send_end, receive_end = anyio.create_memory_object_stream[FlowithEvent | Exception](
            math.inf
        )
        with send_end, receive_end:
            async with anyio.create_task_group() as group:
                group.start_soon(read_events, r, send_end)
                yield EventReader(receive_end)
                group.cancel_scope.cancel()


async def read_events(
    response: httpx.Response, events: MemoryObjectSendStream[FlowithEvent | Exception]
) -> None:
    decoder = SSEDecoder()
    with events:
        try:
            async for data in response.aiter_raw():
                for sse in decoder.feed(data):
                    events.send_nowait(decode_event(sse.data))
        except httpx.TransportError as error:
            events.send_nowait(error)


class EventReader:
    """Decoded Flowith events of one stream, one at a time."""

    def __init__(self, events: MemoryObjectReceiveStream[FlowithEvent | Exception]) -> None:
        self._events = events

    async def next(self) -> FlowithEvent:
        """The next event; ``StopAsyncIteration`` at the end of the body, and
        the transport's error if the body broke."""
        try:
            item = await self._events.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, Exception):
            raise item
        return item

    async def until(self, done: Callable[[FlowithEvent], bool]) -> list[FlowithEvent]:
        events = [await self.next()]
        while not done(events[-1]):
            events.append(await self.next())
        return events

    async def rest(self) -> list[FlowithEvent]:
        events = []
        while True:
            try:
                events.append(await self.next())
            except StopAsyncIteration:
                return events


async def prepare(client: httpx.AsyncClient, e: Endpoints) -> str:
    """A conversation with its user node and AI node, created over HTTP."""
    created = await send(client, e.create_conversation())
    assert created.status_code == 201
    conv_id = created.json()[0]["id"]
    assert isinstance(conv_id, str)
    user_node = e.create_user_node(
        node_id=USER_NODE,
        conv_id=conv_id,
        parent_id=conv_id,
        prompt="hello",
        timestamp="1779127457",
        position=Position(0, 130),
    )
    ai_node = e.create_ai_node(
        node_id=AI_NODE,
        conv_id=conv_id,
        parent_id=USER_NODE,
        data={"status": "init", "value": ""},
        position=Position(0, 340),
    )
    assert (await send(client, user_node)).status_code == 201
    assert (await send(client, ai_node)).status_code == 201
    return conv_id


async def start(client: httpx.AsyncClient, e: Endpoints, conv_id: str, prompt: str = "hi") -> None:
    request = e.start_completion(
        model="m", messages=[{"role": "user", "content": prompt}], node_id=AI_NODE, conv_id=conv_id
    )
    response = await send(client, request)
    assert response.status_code == 200, response.text


def is_complete(event: FlowithEvent) -> bool:
    return isinstance(event, Complete)


# -- tests -----------------------------------------------------------------------


async def test_json_requests_round_trip_on_one_connection() -> None:
    fake = FakeFlowith()
    async with serving(fake) as (client, e):
        conv_id = await prepare(client, e)
        polled = await send(client, e.poll_node(AI_NODE))
        assert polled.status_code == 200
        assert polled.json() == [{"data": {"status": "init", "value": ""}, "type": "2"}]
        assert polled.headers["content-length"] == str(len(polled.content))
        missing = await client.get(e.config.edge_url + "/nowhere")
        assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
    assert fake.conversations[conv_id]["user_id"] == fake.user_id
    [insert, _] = fake.requests_to("POST", "/rest/v1/flow_node")
    assert insert.target.startswith("/rest/v1/flow_node?columns=%22id%22,%22position%22")


async def test_a_head_request_gets_the_head_of_its_answer() -> None:
    """A HEAD's answer went out with its body, which h11 refuses: the connection was
    dropped without a word, where the fake documents a 405 for a file's wrong method."""
    fake = FakeFlowith()
    async with serving(fake) as (client, e):
        url = fake.add_file("/f/a/clip.bin", b"the clip")
        answers = [
            await client.head(target)
            for target in (url, e.config.edge_url + "/user/credits", e.config.edge_url + "/x")
        ]
        assert [(a.status_code, a.content) for a in answers] == [(405, b"")] * 2 + [(404, b"")]
        assert (await client.get(url)).content == b"the clip"  # the connection goes on


async def test_a_large_chunked_request_body_is_read_whole() -> None:
    fake = FakeFlowith()
    prompt = "x" * 3_000_000
    async with serving(fake) as (client, e):
        conv_id = await prepare(client, e)
        request = e.start_completion(
            model="m",
            messages=[{"role": "user", "content": prompt}],
            node_id=AI_NODE,
            conv_id=conv_id,
        )
        body = json_body(request)

        async def pieces() -> AsyncIterator[bytes]:
            for offset in range(0, len(body), 65536):
                yield body[offset : offset + 65536]

        headers = [(k, v) for k, v in request.headers]
        response = await client.post(request.url, headers=headers, content=pieces())
        assert response.status_code == 200
    [recorded] = fake.requests_to("POST", "/completion/async")
    assert recorded.header("transfer-encoding") == "chunked"
    assert fake.turns[0].prompt == prompt


async def test_a_stream_receives_a_scripted_generation() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hel"), pause(0.05), chunk("lo"), complete())
    async with serving(fake) as (client, e), opened(client, e.user_stream()) as stream:
        conv_id = await prepare(client, e)
        started = time.monotonic()
        await start(client, e, conv_id)
        events = await stream.until(is_complete)
        assert time.monotonic() - started >= 0.04
    chunks = [c for event in events if isinstance(event, Chunks) for c in event.chunks]
    assert chunks == ["Hel", "lo"]
    final = events[-1]
    assert isinstance(final, Complete)
    assert final.result == "Hello"
    assert fake.stream_connections == 1


async def test_sse_starts_with_connected() -> None:
    fake = FakeFlowith()
    async with serving(fake) as (client, e), opened(client, e.user_sse()) as stream:
        assert isinstance(await stream.next(), Connected)
    assert fake.sse_connections == 1


async def test_an_idle_stream_gets_heartbeats() -> None:
    fake = FakeFlowith(heartbeat_interval=0.05)
    async with serving(fake) as (client, e), opened(client, e.user_stream()) as stream:
        started = time.monotonic()
        first, second = await stream.next(), await stream.next()
        elapsed = time.monotonic() - started
    assert isinstance(first, Heartbeat)
    assert isinstance(second, Heartbeat)
    assert 0.08 <= elapsed < 1.0
    assert fake.streams[0].heartbeats_sent >= 2


async def test_close_stream_ends_the_body_and_keeps_the_connection() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hel"), close_stream())
    async with serving(fake) as (client, e):
        async with opened(client, e.user_stream()) as stream:
            conv_id = await prepare(client, e)
            await start(client, e, conv_id)
            events = await stream.rest()  # ends without an error
        assert [type(event) for event in events] == [Chunks]
        polled = await send(client, e.poll_node(AI_NODE))
        assert polled.json()[0]["data"]["status"] == "init"
    assert fake.streams[0].closed


async def test_drop_breaks_the_body() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hel"), drop())
    async with serving(fake) as (client, e), opened(client, e.user_stream()) as stream:
        conv_id = await prepare(client, e)
        await start(client, e, conv_id)
        assert isinstance(await stream.next(), Chunks)
        with pytest.raises(BROKEN):
            await stream.next()


async def test_a_hung_stream_stays_silent_until_the_client_leaves() -> None:
    fake = FakeFlowith(heartbeat_interval=0.02)
    fake.script(chunk("a"), hang(), chunk("never"))
    async with serving(fake) as (client, e):
        async with opened(client, e.user_stream()) as stream:
            conv_id = await prepare(client, e)
            await start(client, e, conv_id)
            # Heartbeats may come first on a busy machine; the chunk must come.
            events = await stream.until(lambda event: isinstance(event, Chunks))
            assert isinstance(events[-1], Chunks)
            with anyio.move_on_after(0.2) as silence:
                await stream.next()
            assert silence.cancelled_caught
        await eventually(lambda: fake.streams[0].closed)  # the server notices the client left
        assert fake.streams[0].hung
        assert (await send(client, e.poll_node(AI_NODE))).status_code == 200


async def test_fifty_concurrent_streams_and_requests() -> None:
    fake = FakeFlowith()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    results: list[str] = []
    async with FakeFlowithServer(fake) as server, httpx.AsyncClient(limits=limits) as client:
        e = Endpoints(
            FlowithConfig(edge_url=server.url, supabase_url=server.url),
            Credentials.from_tokens(fake.token),
        )
        conv_id = await prepare(client, e)
        ready = anyio.Event()

        async def listen() -> None:
            async with opened(client, e.user_stream()) as stream:
                if fake.stream_connections == 50:
                    ready.set()
                final = (await stream.until(is_complete))[-1]
                assert isinstance(final, Complete)
                results.append(final.result)

        async def poll() -> None:
            assert (await send(client, e.poll_node(AI_NODE))).status_code == 200

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(listen)
                await ready.wait()
                for _ in range(20):
                    group.start_soon(poll)
                await start(client, e, conv_id, prompt="all of you")
    assert results == ["You said: all of you"] * 50
    assert fake.stream_connections == 50


async def test_the_server_stops_promptly_with_an_open_stream() -> None:
    fake = FakeFlowith()
    fake.script(chunk("a"), hang())
    stop, stopped = anyio.Event(), anyio.Event()
    shutdown: list[float] = []

    async def run_server(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        async with FakeFlowithServer(fake) as server:
            task_status.started(server.url)
            await stop.wait()
            started = time.monotonic()
        shutdown.append(time.monotonic() - started)
        stopped.set()

    async with httpx.AsyncClient(timeout=5) as client, anyio.create_task_group() as group:
        url = await group.start(run_server)
        e = Endpoints(
            FlowithConfig(edge_url=url, supabase_url=url), Credentials.from_tokens(fake.token)
        )
        async with opened(client, e.user_stream()) as stream:
            conv_id = await prepare(client, e)
            await start(client, e, conv_id)
            assert isinstance(await stream.next(), Chunks)
            stop.set()
            await stopped.wait()
            with anyio.fail_after(2), pytest.raises(BROKEN):
                await stream.next()
    assert shutdown[0] < 1.0
    assert fake.open_streams() == []


async def test_a_client_leaving_early_does_not_disturb_the_server() -> None:
    fake = FakeFlowith(heartbeat_interval=0.01)
    async with serving(fake) as (client, e):
        for _ in range(3):
            async with opened(client, e.user_stream()) as stream:
                assert isinstance(await stream.next(), Heartbeat)
        assert (await send(client, e.poll_node(AI_NODE))).status_code == 200
        await eventually(lambda: not fake.open_streams())
    assert fake.stream_connections == 3


async def test_a_failing_model_answers_500_and_serving_goes_on() -> None:
    def broken(turn: Turn) -> list[object]:
        raise RuntimeError("responder bug")

    fake = FakeFlowith(responder=broken)  # type: ignore[arg-type]
    async with serving(fake) as (client, e):
        conv_id = await prepare(client, e)
        request = e.start_completion(
            model="m", messages=[{"role": "user", "content": "x"}], node_id=AI_NODE, conv_id=conv_id
        )
        assert (await send(client, request)).status_code == 500
        assert (await send(client, e.poll_node(AI_NODE))).status_code == 200


async def test_garbage_gets_a_400() -> None:
    fake = FakeFlowith()
    async with FakeFlowithServer(fake) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as sock:
            await sock.send(b"NOT HTTP AT ALL\r\n\r\n")
            answer = b""
            with anyio.fail_after(2):
                while b"\r\n\r\n" not in answer:
                    answer += await sock.receive()
        assert answer.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/nowhere")).status_code == 404
