"""Offline testing: replay a recorded session with the client's own API.

Record once against the real service or the fake (``FlowithClient(...,
record_to="session.jsonl")``), then replay anywhere, with no network, on
asyncio or trio::

    from flowith_httpx.testing import ReplayClient

    async with ReplayClient("session.jsonl") as client:
        reply = await client.generate("What is the capital of Poland?")

A :class:`ReplayClient` has exactly the public API of ``FlowithClient``. It
hands the recorded ids and times back to the operations, answers each request
from the recording (a request that differs fails with a diff), and delivers
the recorded stream bytes in the recorded order. It needs anyio (the ``httpx``
or ``trio`` extra), not httpx itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from flowith_proto.abc import ByteStream, FlowithClientBase, Signal
from flowith_proto.cassette import CassetteMismatch, decode_body
from flowith_proto.errors import ConnectionFailedError
from flowith_proto.replay import Tape, replay_operation
from flowith_proto.request import Request, Response

__all__ = ["CassetteMismatch", "ReplayClient", "replay_operation"]

T = TypeVar("T")

#: Real seconds a replay waits for something the recording says will happen
#: before it declares the replay stuck.
STALL_SECONDS = 10.0


class _Signal:
    """A wake-up whose deadline is on the replay's virtual clock."""

    __slots__ = ("_client", "_event")

    def __init__(self, client: ReplayClient) -> None:
        self._client = client
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, deadline: float | None) -> bool:
        if self._event.is_set():
            return True
        if deadline is not None and deadline <= self._client._clock:
            return False
        with anyio.move_on_after(STALL_SECONDS):
            await self._event.wait()
            return True
        raise CassetteMismatch("the replay is stuck: the recording never woke this waiter")


class _ReplayStream:
    """A recorded stream body: its chunks, timeouts and end, in order."""

    def __init__(self, client: ReplayClient, number: int) -> None:
        self._client = client
        self._items = client._tape.streams.get(number)
        self._number = number

    async def read(self, deadline: float | None) -> bytes | None:
        items = self._items
        if not items:
            raise CassetteMismatch(
                f"stream #{self._number} was read further than the recording goes"
            )
        record = items[0]
        # A chunk is released only once the requests sent before it arrived have
        # been sent again: a stream event can never overtake its cause.
        after = int(record.get("after", 0))
        with anyio.move_on_after(STALL_SECONDS):
            while self._client._tape.sent < after:
                await self._client._request_sent.wait(None)
        if self._client._tape.sent < after:
            raise CassetteMismatch(
                f"stream #{self._number} holds data recorded after request #{after}, "
                "which the replay never sent"
            )
        kind = record["kind"]
        if kind == "chunk":
            # Yield before taking the chunk: a read cancelled here consumes nothing.
            await anyio.lowlevel.checkpoint()
            items.popleft()
            return decode_body(record.get("data")) or b""
        items.popleft()
        if kind == "read_timeout":
            if deadline is not None:
                self._client._clock = max(self._client._clock, deadline)
            return None
        if record.get("reason") == "broken":
            raise ConnectionFailedError("the recorded stream broke here")
        return b""

    async def aclose(self) -> None:
        return None


class _SentSignal:
    """Wakes stream readers each time the replay sends a request."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, _deadline: None) -> None:
        await self._event.wait()


class ReplayClient(FlowithClientBase):
    """A client that plays a cassette back instead of talking to a server."""

    def __init__(
        self,
        cassette: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        result_timeout: float = 120.0,
        poll_interval: float = 2.0,
        max_retries: int = 2,
    ) -> None:
        self._tape = Tape(cassette)
        recorded = self._tape.state()
        super().__init__(
            recorded.credentials.access_token,
            user_id=recorded.credentials.user_id,
            refresh_token=recorded.credentials.refresh_token,
            edge_url=recorded.config.edge_url,
            supabase_url=recorded.config.supabase_url,
            timeout=timeout,
            result_timeout=result_timeout,
            poll_interval=poll_interval,
            max_retries=max_retries,
        )
        self._tape.scrubber.learn(self._secrets)
        self._clock = 0.0
        self._request_sent = _SentSignal()

    @property
    def unplayed(self) -> list[str]:
        """Recorded requests this replay has not sent (``METHOD url``)."""
        return self._tape.unplayed

    # -- what operations draw comes from the recording ---------------------------------

    def _operation_clock(self) -> float:
        self._clock = float(self._tape.draw("clock"))
        return self._clock

    def _wall_clock(self) -> float:
        return float(self._tape.draw("wallclock"))

    def _new_id(self) -> str:
        return str(self._tape.draw("id"))

    def _jitter(self) -> float:
        return float(self._tape.draw("jitter"))

    # -- transport hooks ------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock

    async def _sleep_until(self, deadline: float) -> None:
        self._clock = max(self._clock, deadline)
        await anyio.lowlevel.checkpoint()

    def _new_signal(self) -> Signal:
        return _Signal(self)

    async def _send(
        self, request: Request, timeout: float | None, deadline: float | None
    ) -> Response:
        number = self._tape.match(request, stream=False)
        self._request_sent.fire()
        await anyio.lowlevel.checkpoint()
        return self._tape.answer(number)

    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        number = self._tape.match(request, stream=True)
        self._request_sent.fire()
        status, headers = self._tape.stream_head(number)
        return status, headers, _ReplayStream(self, number)

    async def _to_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(function, *args)

    async def _close_transport(self) -> None:
        return None
