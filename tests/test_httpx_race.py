"""``flowith_httpx.client.race``: the first of several jobs to finish, the others
cancelled (a generation reading both event streams, a refresh's caller and its
deadline), without ever taking the caller's own cancellation for its own."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import anyio
import httpx
import pytest

from flowith_httpx import FlowithClient
from flowith_httpx.client import race
from flowith_proto.fake import FakeFlowith

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_the_first_to_finish_wins_and_the_others_are_cancelled() -> None:
    cancelled: list[str] = []

    async def slow() -> str:
        try:
            await anyio.sleep(30)
        finally:
            cancelled.append("slow")
        return "slow"

    async def quick() -> str:
        await anyio.sleep(0.01)
        return "quick"

    async def failing() -> str:
        await anyio.sleep(0.01)
        raise ValueError("no")

    with anyio.fail_after(5):
        assert await race([slow, quick]) == "quick"
        with pytest.raises(ValueError, match="no"):
            await race([failing, slow])
    assert cancelled == ["slow", "slow"]


@pytest.mark.parametrize("hops", [1, 2, 3])
async def test_a_cancellation_of_the_caller_as_the_race_ends_is_never_lost(
    anyio_backend: str, hops: int
) -> None:
    """The first to finish cancelled the whole task group, the caller's wait in it
    too: on Python 3.10, which cannot count a task's cancellations, anyio took one
    of the caller's arriving right after for its own, and the race returned."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    loop = asyncio.get_running_loop()

    async def caller() -> str:
        host = asyncio.current_task()
        assert host is not None

        def cancel_later(hops_left: int) -> Callable[[], object]:
            if hops_left == 0:
                return host.cancel
            return lambda: loop.call_soon(cancel_later(hops_left - 1))

        async def first() -> str:
            await asyncio.sleep(0)
            loop.call_soon(cancel_later(hops - 1))
            return "first"

        async def forever() -> str:
            await asyncio.sleep(30)
            return "forever"

        try:
            await race([first, forever])
        except asyncio.CancelledError:
            return "cancelled"
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            return "cancelled at its next await"
        return "lost"

    with anyio.fail_after(5):
        assert await asyncio.ensure_future(caller()) == "cancelled"


def test_ctrl_c_in_a_job_on_trio_is_a_keyboard_interrupt() -> None:
    """trio raises Ctrl-C in whichever task runs, a job's too: the race's task group
    wrapped it, and an `except KeyboardInterrupt` around generate_image() missed it."""
    import trio

    async def interrupted() -> str:
        raise KeyboardInterrupt

    async def slow() -> str:
        await anyio.sleep(10)
        return "slow"

    async def racing() -> str:
        return await race([interrupted, slow])

    with pytest.raises(KeyboardInterrupt):
        trio.run(racing)


class _ConnectInterrupted(httpx.AsyncBaseTransport):
    """A transport whose connect is interrupted as trio's is: anyio's connect_tcp
    races its attempts in a task group, which wraps the KeyboardInterrupt trio raised
    in the task waiting there."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise BaseExceptionGroup("Exceptions from Trio nursery", [KeyboardInterrupt()])


@pytest.mark.parametrize("call", ["request", "stream"])
async def test_ctrl_c_while_connecting_is_a_keyboard_interrupt(call: str) -> None:
    """It reached the caller as a BaseExceptionGroup: an `except KeyboardInterrupt`
    around any first call (each new connection goes through connect) missed it."""
    fake = FakeFlowith()

    async def listen(client: FlowithClient) -> None:
        async for _ in client.stream_user_sse(timeout=5):
            pass

    async with (
        httpx.AsyncClient(transport=_ConnectInterrupted()) as http,
        FlowithClient(fake.token, http_client=http, max_retries=0) as client,
    ):
        with pytest.raises(KeyboardInterrupt):
            await (client.get_credits() if call == "request" else listen(client))
