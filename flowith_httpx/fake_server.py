"""Serve a :class:`~flowith_proto.fake.FakeFlowith` on a loopback socket.

The model decides every answer; this module only moves bytes, with anyio
(so the same server runs under asyncio and trio) and h11 (HTTP/1.1 with
keep-alive). Event streams go out as chunked bodies, each queued frame written
the moment the model queues it. A stream ends as the script says: cleanly
(the final chunk), abruptly (the socket closes mid-body) or not at all (a
hung stream keeps its socket open, silent, until the client leaves or the
server stops). Large bodies go both ways in pieces: a request body is read
in chunks and joined once, and a large response body (a CDN file) is written
in slices of the model's one copy. Errors stay inside their connection.
"""

from __future__ import annotations

import math
import time

from flowith_proto import extras

try:
    import anyio
    import anyio.abc
    import h11

    from flowith_httpx.loopback import NETWORK_ERRORS, LoopbackServer, reason_phrase
except ModuleNotFoundError as exc:  # installed without the httpx extra: say so
    extras.explain(exc, __name__, "httpx")
    raise
from flowith_proto import logs
from flowith_proto.fake import (
    CloseStream,
    DropStream,
    FakeFlowith,
    FakeResponse,
    FakeStream,
    Hang,
    Pause,
    SendBytes,
)

__all__ = ["LOOPBACK_HOSTS", "FakeFlowithServer", "no_proxy_with_loopback"]

#: The names of this machine a client of the fake may use.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_RECEIVE_SIZE = 256 * 1024
#: Response bodies larger than this are written in slices of this size.
_SEND_SLICE = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class _Wakeup:
    """The model's ``on_activity`` hook, re-armed before every pull."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def set(self) -> None:
        self.event.set()


class _Connection:
    """One client connection: requests in, the model's answers out."""

    def __init__(self, fake: FakeFlowith, socket: anyio.abc.SocketStream) -> None:
        self.fake = fake
        self.socket = socket
        self.h11 = h11.Connection(h11.SERVER)

    async def run(self) -> None:
        while True:
            try:
                request = await self._next_event()
                if not isinstance(request, h11.Request):
                    return
                if self.h11.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                body = await self._read_body()
            except h11.RemoteProtocolError as error:
                await self._bad_request(error)
                return
            if body is None:
                return
            result = self._answer(request, body)
            if isinstance(result, FakeStream):
                if not await self._stream(result):
                    return
            else:
                await self._respond(result, head=request.method == b"HEAD")
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    def _answer(self, request: h11.Request, body: bytes) -> FakeResponse | FakeStream:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw_items()
        ]
        try:
            return self.fake.handle(
                request.method.decode("ascii"),
                request.target.decode("ascii"),
                headers,
                body,
                now=time.time(),
            )
        except Exception:
            # A bug in the model: answer 500 on this request, keep serving the others.
            FakeFlowithServer.log.exception("the fake Flowith failed on %r", request.target)
            return FakeResponse(
                500,
                (("content-type", "application/json"),),
                b'{"message":"the fake Flowith failed; see the server log"}',
            )

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is h11.PAUSED or isinstance(event, h11.Event):
                return event
            try:
                data = await self.socket.receive(_RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                data = b""
            self.h11.receive_data(data)

    async def _read_body(self) -> bytes | None:
        """The whole request body (any length, any framing), or ``None`` if the
        client left before sending it."""
        parts: list[bytes] = []
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                return None

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.socket.send(data)

    async def _respond(self, response: FakeResponse, *, head: bool = False) -> None:
        """Send ``response``; to a ``HEAD``, its head only, which says the length its
        body would have (RFC 9110 9.3.2): h11 refuses a body there, and the connection
        was dropped without an answer."""
        headers = [
            (name, value)
            for name, value in response.headers
            if name.lower() not in ("content-length", "transfer-encoding")
        ]
        headers.append(("server", "fake-flowith"))
        body = b"" if response.status in _NO_BODY_STATUSES else response.body
        if response.status not in _NO_BODY_STATUSES:
            headers.append(("content-length", str(len(body))))
        data = self.h11.send(
            h11.Response(
                status_code=response.status, headers=headers, reason=reason_phrase(response.status)
            )
        )
        if head:
            body = b""
        if len(body) <= _SEND_SLICE:
            if body:
                data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
            await self.socket.send(data)
            return
        # A large body (a CDN file): slices of the model's one copy, each sent
        # as soon as the socket takes it, never the whole body joined again.
        await self.socket.send(data or b"")
        view = memoryview(body)
        for offset in range(0, len(body), _SEND_SLICE):
            await self._send(h11.Data(data=bytes(view[offset : offset + _SEND_SLICE])))
        await self._send(h11.EndOfMessage())

    async def _bad_request(self, error: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f'{{"message":"bad request: {error}"}}'.encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        try:
            await self._send(h11.Response(status_code=error.error_status_hint, headers=headers))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except NETWORK_ERRORS:
            pass

    async def _stream(self, stream: FakeStream) -> bool:
        """Serve one event stream; true if the connection can carry another request."""
        headers = [*stream.headers, ("transfer-encoding", "chunked"), ("server", "fake-flowith")]
        reason = reason_phrase(stream.status)
        await self._send(h11.Response(status_code=stream.status, headers=headers, reason=reason))
        wakeup = _Wakeup()
        stream.on_activity = wakeup.set
        outcome = "client gone"
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_client, group.cancel_scope)
                outcome = await self._pump(stream, wakeup)
                group.cancel_scope.cancel()
        finally:
            stream.on_activity = None
            stream.close()
        return outcome == "closed"

    async def _watch_client(self, scope: anyio.CancelScope) -> None:
        """Notice a client that leaves while the stream is silent (a hang, a long
        pause); bytes it sends meanwhile are kept for the next request."""
        while True:
            try:
                data = await self.socket.receive(_RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                break
            self.h11.receive_data(data)
        scope.cancel()

    async def _pump(self, stream: FakeStream, wakeup: _Wakeup) -> str:
        """Write what the model queues, as soon as it is due; heartbeats when idle."""
        interval = self.fake.heartbeat_interval
        last_write = anyio.current_time()
        while True:
            wakeup.event = anyio.Event()  # armed before the pull: no activity is missed
            pause = math.inf
            for item in stream.pull(now=time.time()):
                if isinstance(item, SendBytes):
                    await self._send(h11.Data(data=item.data))
                    last_write = anyio.current_time()
                elif isinstance(item, Pause):
                    pause = item.seconds
                elif isinstance(item, CloseStream):
                    await self._send(h11.EndOfMessage())
                    return "closed"
                elif isinstance(item, DropStream):
                    return "dropped"
                elif isinstance(item, Hang):
                    await anyio.sleep_forever()
            idle_left = last_write + interval - anyio.current_time()
            if idle_left <= 0:
                await self._send(h11.Data(data=stream.heartbeat(now=time.time())))
                last_write = anyio.current_time()
                continue
            with anyio.move_on_after(min(pause, idle_left)):
                await wakeup.event.wait()


def no_proxy_with_loopback(no_proxy: str | None) -> str:
    """A ``NO_PROXY`` value that also names :data:`LOOPBACK_HOSTS`.

    Both transports honour ``HTTP_PROXY`` from the environment, and neither
    exempts loopback by itself: code that points a client at the fake (the demo,
    the pytest plugin) sets this so the fake is reached directly wherever a
    proxy is configured.
    """
    names = [name.strip() for name in (no_proxy or "").split(",") if name.strip()]
    return ",".join([*names, *(host for host in LOOPBACK_HOSTS if host not in names)])


class FakeFlowithServer(LoopbackServer):
    """A :class:`FakeFlowith` on ``http://host:port`` for as long as the ``async with`` lasts.

    Point both of a client's hosts at :attr:`url` (``edge_url`` and
    ``supabase_url``): the model tells them apart by path. The fake's CDN
    (``/f/...``) is served here too: on entry the server tells the model its
    URL, which becomes the base of the file URLs it hands out (unless the fake
    was given a ``cdn_url``). Leaving the block closes every connection, open
    event streams included, at once.
    """

    log = logs.logger("flowith.fake_server")

    def __init__(self, fake: FakeFlowith, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.fake = fake

    def bound(self) -> None:
        self.fake.serving_at(self.url)  # the CDN's file URLs point here from now on

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        await _Connection(self.fake, socket).run()
