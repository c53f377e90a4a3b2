"""In-memory stream bodies for driving the hub without a network."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["MemoryStream", "Streams"]


class MemoryStream:
    """A stream body fed by the test, read as the transports' bodies are (a read
    that times out or is cancelled takes nothing); it refuses a second reader."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](100)
        self._readers = 0
        self.closed = False

    def push(self, data: bytes) -> None:
        self._send.send_nowait(data)

    def end(self) -> None:
        self._send.close()

    async def read(self, deadline: float | None) -> bytes | None:
        self._readers += 1
        try:
            assert self._readers == 1, "two readers at once"
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                return await self._receive.receive()
            return None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return b""
        finally:
            self._readers -= 1

    async def aclose(self) -> None:
        self.closed = True
        self._send.close()
        self._receive.close()


Opener = Callable[[str, "float | None"], Awaitable[MemoryStream]]


class Streams:
    """Opens a new :class:`MemoryStream` per connection, or does what ``opening`` says."""

    def __init__(self) -> None:
        self.opened: dict[str, list[MemoryStream]] = {"stream": [], "sse": []}
        self.opening: Opener | None = None

    async def __call__(self, channel: str, deadline: float | None) -> MemoryStream:
        if self.opening is not None:
            return await self.opening(channel, deadline)
        return self.new(channel)

    def new(self, channel: str) -> MemoryStream:
        stream = MemoryStream()
        self.opened[channel].append(stream)
        return stream

    def last(self, channel: str) -> MemoryStream:
        return self.opened[channel][-1]

    async def aclose(self) -> None:
        for stream in [*self.opened["stream"], *self.opened["sse"]]:
            await stream.aclose()
