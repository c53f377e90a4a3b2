"""The httpx transport's stream body (``flowith_httpx.client._Body``): a reader's
cancellation may end the read, never cost a chunk."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import httpx
import pytest

from flowith_httpx.client import _Body
from flowith_proto.errors import ConnectionFailedError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncio's own task.cancel(), which anyio's scopes do not go through


async def read_all(body: _Body) -> bytes:
    parts = []
    while chunk := await body.read(None):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("turns", range(8))
async def test_a_chunk_arriving_as_asyncio_cancels_its_reader_is_kept(turns: int) -> None:
    # Handed straight to the waiting reader (an anyio memory object stream), the chunk
    # went with the CancelledError when the cancel landed between the hand-over and the
    # reader's next step: another generation sharing the stream lost that text.
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    reader: asyncio.Task[bytes | None] | None = None

    def cancel_after(turns_left: int) -> None:  # lands that many loop turns later
        if turns_left:
            loop.call_soon(cancel_after, turns_left - 1)
        else:
            assert reader is not None
            reader.cancel()

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            await started.wait()
            cancel_after(turns)
            yield b"first "
            yield b"second"

    body = _Body(httpx.Response(200, stream=Chunks()))
    reader = asyncio.ensure_future(body.read(None))
    await asyncio.sleep(0)  # the reader waits
    started.set()
    try:
        first = await reader
    except asyncio.CancelledError:
        first = b""
    assert (first or b"") + await read_all(body) == b"first second"
    await body.aclose()


async def test_a_read_past_its_deadline_returns_none_and_loses_nothing() -> None:
    release = anyio.Event()

    class Late(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            await release.wait()
            yield b"late"

    body = _Body(httpx.Response(200, stream=Late()))
    assert await body.read(anyio.current_time() + 0.05) is None
    assert await body.read(anyio.current_time() - 1) is None  # a look: nothing yet
    release.set()
    assert await read_all(body) == b"late"
    await body.aclose()
    assert await body.read(None) == b""  # read after aclose()


async def test_a_stream_reset_without_a_word_still_says_what_broke() -> None:
    # httpcore's ReadError for a reset on asyncio has no message: "stream broke: ReadError: "
    class Reset(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"partial"
            raise httpx.ReadError("")

    body = _Body(httpx.Response(200, stream=Reset()))
    assert await body.read(None) == b"partial"
    with pytest.raises(ConnectionFailedError) as broke:
        await body.read(None)
    assert str(broke.value) == "stream broke: ReadError: the connection broke or was closed"
    await body.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_body_it_cannot_decode_leaves_no_reader_suspended() -> None:
    # A corrupt gzip body failed in httpx's aiter_bytes(), above the readers it reads
    # through: they were left suspended for the collector, and trio warned for each.
    ended: list[str] = []

    class NotGzip(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                yield b"not gzip at all"
                await anyio.sleep(30)
                yield b"never read"
            finally:
                ended.append("ended")

    response = httpx.Response(200, headers={"content-encoding": "gzip"}, stream=NotGzip())
    body = _Body(response)
    not_gzip = "could not be decoded: it is not gzip"
    with anyio.fail_after(5), pytest.raises(ConnectionFailedError, match=not_gzip):
        await read_all(body)
    assert ended == ["ended"]  # before any collection: ended, not abandoned
    await body.aclose()


async def test_an_encoded_body_is_decoded_chunk_by_chunk() -> None:
    text = b"data: " + b"streamed words " * 2000 + b"\n\n"
    encoded = gzip.compress(text)

    class Gzipped(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for start in range(0, len(encoded), 100):
                yield encoded[start : start + 100]
                await anyio.lowlevel.checkpoint()

    body = _Body(httpx.Response(200, headers={"content-encoding": "gzip"}, stream=Gzipped()))
    assert await read_all(body) == text
    await body.aclose()
