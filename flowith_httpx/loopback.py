"""A small HTTP/1.1 server on a loopback socket: what the fake Flowith and the test
suite's forwarding proxy share.

The listener and the task group of its connections live for an ``async with``;
leaving it closes every connection at once. A subclass serves one connection
in :meth:`LoopbackServer.serve_one`; the ordinary ways a connection dies (the
peer left, h11 refused its bytes) are logged at DEBUG, anything else is a bug
of the subclass, logged and handed to :meth:`LoopbackServer.connection_failed`.
"""

from __future__ import annotations

import abc
import http
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.abc
import h11

from flowith_proto import logs

__all__ = ["NETWORK_ERRORS", "LoopbackServer", "is_network_failure", "reason_phrase"]

#: How a connection ends without anyone being at fault.
NETWORK_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
    h11.ProtocolError,
)

_Server = TypeVar("_Server", bound="LoopbackServer")


def is_network_failure(error: BaseException) -> bool:
    """Whether ``error`` (or every error of a group) is an ordinary network failure."""
    inner = getattr(error, "exceptions", None)
    if isinstance(inner, tuple):
        return all(is_network_failure(e) for e in inner)
    return isinstance(error, NETWORK_ERRORS)


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status``, or ``b""`` for an unknown one."""
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class LoopbackServer(abc.ABC):
    """Listen on ``http://host:port`` for as long as the ``async with`` lasts."""

    #: The logger a subclass reports its connections on.
    log = logs.logger("flowith.loopback")

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        #: The bound port (the OS picks one when ``port`` is 0); set on entry.
        self.port = port
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._group: anyio.abc.TaskGroup | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @abc.abstractmethod
    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        """Serve one client connection until it ends."""

    def bound(self) -> None:  # noqa: B027  (an optional hook: most servers need none)
        """Called on entry once :attr:`port` is known, before any connection is served."""

    def connection_failed(self, error: BaseException) -> None:  # noqa: B027  (optional)
        """A connection failed in a way no network explains (already logged)."""

    async def __aenter__(self: _Server) -> _Server:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.bound()
        group = anyio.create_task_group()
        await group.__aenter__()
        group.start_soon(listener.serve, self._serve_connection, group)
        self._listener, self._group = listener, group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        listener, group = self._listener, self._group
        self._listener = self._group = None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            # Shielded: left by a cancellation (Ctrl-C on flowith fake, a test's
            # scope), the listening socket was never closed.
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()

    async def _serve_connection(self, socket: anyio.abc.SocketStream) -> None:
        try:
            await self.serve_one(socket)
        except Exception as error:
            if is_network_failure(error):
                self.log.debug("a connection ended: %r", error)
            else:
                self.log.exception("a connection failed")
                self.connection_failed(error)
        finally:
            await anyio.aclose_forcefully(socket)
