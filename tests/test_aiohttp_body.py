"""The aiohttp transport's stream body (``flowith_aiohttp.client._Body``): however its
connection goes, a read says so with the library's error."""

from __future__ import annotations

import os

import aiohttp
import pytest

from flowith_aiohttp.client import _Body
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.errors import ConnectionFailedError
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
