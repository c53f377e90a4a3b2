"""The aiohttp transport's stream body (``flowith_aiohttp.client._Body``): however its
connection goes, a read says so with the library's error."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import weakref

import aiohttp
import pytest

from flowith_aiohttp import FlowithClient
from flowith_aiohttp.client import _Body
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.errors import ClientStateError, ConnectionFailedError, FlowithError
from flowith_proto.fake import FakeFlowith

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("closed", ["the response", "the session"])
async def test_a_read_after_the_connection_went_is_a_connection_failure(closed: str) -> None:
    # The client closing its session as a download read (a close during download())
    # left aiohttp's bare RuntimeError("Connection closed.") to the caller.
    fake = FakeFlowith()
    fake.add_file("/f/big/b.bin", os.urandom(2_000_000))
    async with FakeFlowithServer(fake) as server, aiohttp.ClientSession() as session:
        body = _Body(await session.get(server.url + "/f/big/b.bin"))
        try:
            assert await body.read(None)
            if closed == "the session":
                await session.close()
            else:
                await body.aclose()
            with pytest.raises(ConnectionFailedError, match="stream broke"):
                await body.read(None)
        finally:
            await body.aclose()  # as the client closes every body it opened


async def test_a_race_cut_short_raises_the_callers_own_cancellation() -> None:
    """anyio's scope cancels its task again at every step and knows its cancellation
    by its message: a race waiting for its cancelled tasks with ``gather`` raised
    another cancellation than the caller's, which escaped ``move_on_after`` and
    cancelled the caller's whole task (an image generation cut by a deadline, about
    1 in 500 times). Cancelled again while its tasks wind down, it raises the first."""
    winding_down = asyncio.Event()

    async def stubborn() -> None:  # takes a few steps to end once cancelled
        try:
            await asyncio.sleep(10)
        finally:
            winding_down.set()
            for _ in range(5):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)

    client = FlowithClient("t" * 20, user_id="4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
    try:
        raised: list[BaseException] = []

        async def call() -> None:
            try:
                await client._race([stubborn, stubborn])
            except asyncio.CancelledError as exc:  # what the caller's code sees
                raised.append(exc)
                raise

        racing = asyncio.ensure_future(call())
        await asyncio.sleep(0.01)
        racing.cancel("the caller's own")
        await winding_down.wait()
        racing.cancel("again, as anyio's scope does")
        with pytest.raises(asyncio.CancelledError):
            await racing
        assert [error.args for error in raised] == [("the caller's own",)]
    finally:
        await client.aclose()


async def test_a_client_closed_under_a_listener_is_let_go_of() -> None:
    """A read cut by the close fails with the one "Connection closed" error aiohttp
    shares between connections, which kept the traceback of that read: its frames held
    the closed client's session, response and token until the next such error."""

    heard: list[object] = []

    async def listen(client: FlowithClient, ended: list[BaseException]) -> None:
        try:
            async for frame in client.stream_user_sse():
                heard.append(frame)
        except FlowithError as error:
            ended.append(error)

    fake = FakeFlowith(heartbeat_interval=0.2)
    async with FakeFlowithServer(fake) as server:
        client = FlowithClient(fake.token, edge_url=server.url, supabase_url=server.url)
        session = weakref.ref(client._session())
        ended: list[BaseException] = []
        listener = asyncio.create_task(listen(client, ended))
        # It is reading (its first frame came), not merely started: a close while
        # it opens fails otherwise, and the log records the test keeps hold that failure.
        for _ in range(500):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard
        await client.aclose()
        await listener
        assert [type(error) for error in ended] == [ClientStateError]
        ended.clear()
        del client, listener
        gc.collect()
        assert session() is None


def test_the_jar_deletes_a_cookie_set_to_expire_at_the_epoch_however_it_is_given() -> None:
    # aiohttp before 3.13 hands the parsed cookies to update_cookies, later ones the
    # raw headers to update_cookies_from_headers: both paths are covered.
    from http.cookies import SimpleCookie

    from yarl import URL

    from flowith_aiohttp.cookies import CookieJar

    async def check() -> None:
        url = URL("http://127.0.0.1/")
        jar = CookieJar(unsafe=True)
        jar.update_cookies(SimpleCookie("a=1; Path=/"), url)
        jar.update_cookies([("b", SimpleCookie("b=2; Path=/")["b"])], url)
        assert sorted(morsel.key for morsel in jar) == ["a", "b"]
        epoch = 'Expires="Thu, 01 Jan 1970 00:00:00 GMT"'
        jar.update_cookies(SimpleCookie(f"a=x; Path=/; {epoch}"), url)
        gone = SimpleCookie(f"b=x; Path=/; {epoch}")["b"]
        jar.update_cookies([("b", gone)], url)
        assert list(jar) == []
        jar.update_cookies_from_headers(["c=3; Path=/"], url)
        jar.update_cookies_from_headers(["c=x; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"], url)
        assert list(jar) == []

    asyncio.run(check())


def test_a_body_read_error_says_no_400_in_either_of_aiohttps_forms() -> None:
    # Its C parser quotes the error in angle brackets, its Python parser leads with it.
    from flowith_aiohttp.client import _said

    quoted = aiohttp.ClientPayloadError(
        "Response payload is not completed: <ContentLengthError: 400, message='Not enough'>"
    )
    leading = aiohttp.ClientPayloadError("400, message: Can not decode content-encoding: gzip")
    assert _said(quoted) == (
        "ClientPayloadError: Response payload is not completed: ContentLengthError: Not enough"
    )
    assert _said(leading) == "ClientPayloadError: Can not decode content-encoding: gzip"


async def test_every_limit_aiohttp_is_given_fires_when_it_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp rounds a limit of 5 s or more up to the next whole second of its
    clock by default: get_credits(timeout=6.2) failed at 7 s, where httpx's fails at
    6.2 s, and a generation overran its one absolute deadline."""
    given: list[aiohttp.ClientTimeout] = []
    request = aiohttp.ClientSession._request

    def noting(self: aiohttp.ClientSession, *args: object, **kwargs: object) -> object:
        timeout = kwargs.get("timeout")
        assert isinstance(timeout, aiohttp.ClientTimeout)
        given.append(timeout)
        return request(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.ClientSession, "_request", noting)
    fake = FakeFlowith()
    async with FakeFlowithServer(fake) as server:
        client = FlowithClient(fake.token, edge_url=server.url, supabase_url=server.url)
        async with client:
            await client.get_credits(timeout=6.2)
            assert (await client.generate("hi", timeout=30)).text
    assert len(given) >= 3  # the credits, the generation's stream and its requests
    assert all(timeout.ceil_threshold == float("inf") for timeout in given)


async def test_a_closed_client_makes_no_session() -> None:
    """A request that passed the open-check before the close began made the session
    after it, had the client never made one: nobody would close that session."""
    client = FlowithClient("t" * 20, user_id="4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
    await client.aclose()
    with pytest.raises(ClientStateError, match="the client is closed"):
        client._session()
    assert client._http is None
