"""A loopback server that answers every request with the same canned bytes.

For answers the fake Flowith never gives (its bodies are JSON): a proxy's HTML
error page, a sign-in page where an event stream was asked for. It runs under
asyncio and trio alike, reads one request head and answers with
``Connection: close``, so each request gets its own connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc

from flowith_httpx.loopback import LoopbackServer, reason_phrase

__all__ = ["CannedServer"]


class CannedServer(LoopbackServer):
    """Answer every request with ``status``, ``headers`` and ``body``; the paths
    asked for are kept in :attr:`paths`."""

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(host=host)
        #: Seconds each answer waits after its request arrived (a busy server).
        self.delay = 0.0
        head = [f"HTTP/1.1 {status} {reason_phrase(status).decode()}"]
        head += [f"{name}: {value}" for name, value in headers]
        head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        #: The bytes sent back, whole: a test may set malformed ones.
        self.answer = "\r\n".join(head).encode("latin-1") + body
        #: Other bytes for some paths: ``{"/user/credits": b"HTTP/1.1 200 OK..."}``.
        self.answers: dict[str, bytes] = {}
        self.paths: list[str] = []

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await socket.receive()
        target = received.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
        path = target.split("?", 1)[0]
        self.paths.append(path)
        if self.delay:
            await anyio.sleep(self.delay)
        await socket.send(self.answers.get(path, self.answer))


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A loopback server that hands each connection to ``handler`` (raw bytes, for
    answers no well-behaved server gives); yields its ``http://`` URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handler)
        yield f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
        group.cancel_scope.cancel()
