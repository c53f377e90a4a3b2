"""A loopback HTTP/1.1 forwarding proxy, so tests can prove ``proxy=`` is honoured.

httpx and aiohttp send a request for an ``http://`` URL to an ``http://``
proxy in absolute form (``GET http://host:port/path HTTP/1.1``). This proxy
accepts exactly that, records it, and forwards it to the origin in origin form
over a fresh upstream connection, without the hop-by-hop headers. The answer
is relayed as it arrives, chunk by chunk, so an event stream that never ends
flows through unbuffered. It speaks HTTP with h11 and does I/O with anyio, so
it runs under asyncio and trio alike. ``CONNECT`` (tunnelling, for https) is
refused with 405: the tests never need it.

A client connection is kept alive across requests. Errors stay inside their
connection; a client that leaves mid-answer closes its upstream connection
too, so the origin sees the disconnect (as it would without a proxy).
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc
import h11

from flowith_httpx.loopback import NETWORK_ERRORS, LoopbackServer, reason_phrase

__all__ = ["ForwardProxy"]

_RECEIVE_SIZE = 65536
#: Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus
#: ``expect``: the proxy answers ``100 Continue`` itself.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
    }
)
_VIA = b"1.1 forward-proxy"


def _split_target(target: str) -> tuple[str, int, str, str]:
    """``(host, port, Host header, origin-form target)`` of an absolute ``http://`` URL.

    The path and query are kept byte for byte (no re-encoding); a fragment,
    which a client should never send, is dropped.
    """
    scheme, separator, rest = target.partition("://")
    if scheme.lower() != "http" or not separator:
        raise ValueError(f"not an absolute http:// target: {target!r}")
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
    tail = tail.partition("#")[0]
    if "@" in authority:
        raise ValueError("userinfo in a proxied URL is not supported")
    if authority.startswith("["):
        host, _, port_text = authority[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError(f"no host in {target!r}")
    port = int(port_text) if port_text else 80
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {target!r}")
    if not tail.startswith("/"):
        tail = "/" + tail
    return host, port, authority, tail


def _end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without the hop-by-hop ones (those named by ``Connection`` too)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP | named]


class _UpstreamFailed(Exception):
    """The origin could not be reached or broke before answering."""


class _Connection:
    """One client connection: absolute-form requests in, the origins' answers out."""

    def __init__(self, proxy: ForwardProxy, socket: anyio.abc.SocketStream) -> None:
        self.proxy = proxy
        self.socket = socket
        self.h11 = h11.Connection(h11.SERVER)
        self.client_gone = False

    async def run(self) -> None:
        while True:
            try:
                request = await self._next_event()
            except h11.RemoteProtocolError as error:
                await self._refuse(error.error_status_hint, f"bad request: {error}")
                return
            if not isinstance(request, h11.Request):
                return
            if not await self._forward(request):
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    # -- the client side -------------------------------------------------------

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

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.socket.send(data)

    async def _refuse(self, status: int, message: str) -> None:
        """Answer with an error of the proxy's own and close the connection."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = message.encode("utf-8", "replace") + b"\n"
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("connection", "close"),
            ("via", _VIA.decode()),
        ]
        try:
            await self._send(
                h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
            )
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
        except NETWORK_ERRORS:
            pass

    async def _watch_client(self, scope: anyio.CancelScope) -> None:
        """Notice a client that leaves while the answer is silent (an idle event
        stream); bytes it sends meanwhile are kept for its next request."""
        while True:
            try:
                data = await self.socket.receive(_RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                break
            self.h11.receive_data(data)
        self.client_gone = True
        scope.cancel()

    # -- one exchange ----------------------------------------------------------

    async def _forward(self, request: h11.Request) -> bool:
        """Forward one request and relay its answer; true if the client
        connection can carry another request."""
        method = request.method.decode("ascii")
        target = request.target.decode("ascii")
        if method == "CONNECT":
            await self._refuse(405, "CONNECT is not supported by this proxy")
            return False
        try:
            host, port, authority, origin_target = _split_target(target)
        except ValueError as error:
            await self._refuse(400, str(error))
            return False
        self.proxy.requests.append((method, target))
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            upstream = await anyio.connect_tcp(host, port)
        except OSError as error:
            await self._refuse(502, f"cannot reach {authority}: {error}")
            return False
        try:
            return await self._exchange(request, upstream, authority, origin_target)
        except _UpstreamFailed as error:
            await self._refuse(502, str(error))
            return False
        finally:
            await anyio.aclose_forcefully(upstream)

    async def _exchange(
        self,
        request: h11.Request,
        upstream: anyio.abc.SocketStream,
        authority: str,
        origin_target: str,
    ) -> bool:
        origin = h11.Connection(h11.CLIENT)
        headers = [
            (name, value)
            for name, value in _end_to_end(list(request.headers.raw_items()))
            if name.lower() != b"host"
        ]
        outgoing = h11.Request(
            method=request.method,
            target=origin_target.encode("ascii"),
            headers=[(b"host", authority.encode("ascii")), *headers],
        )
        try:
            await upstream.send(origin.send(outgoing) or b"")
            while True:  # the request body, as it comes
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    await upstream.send(origin.send(event) or b"")
                elif isinstance(event, h11.EndOfMessage):
                    await upstream.send(origin.send(h11.EndOfMessage()) or b"")
                    break
                else:
                    return False  # the client left mid-body
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            raise _UpstreamFailed(f"{authority} broke while receiving: {error!r}") from error
        relayed = False
        failure: _UpstreamFailed | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_client, group.cancel_scope)
            try:
                relayed = await self._relay(origin, upstream, authority)
            except _UpstreamFailed as error:
                failure = error  # raised outside the group, which would wrap it
            group.cancel_scope.cancel()
        if failure is not None and not self.client_gone:
            raise failure
        return relayed and not self.client_gone

    async def _relay(
        self, origin: h11.Connection, upstream: anyio.abc.SocketStream, authority: str
    ) -> bool:
        """Copy the origin's answer to the client as it arrives; true if it
        ended cleanly."""
        started = False
        while True:
            try:
                event = origin.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await upstream.receive(_RECEIVE_SIZE)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        data = b""
                    origin.receive_data(data)
                    continue
            except (h11.RemoteProtocolError, OSError) as error:
                if started:
                    return False  # too late for a 502: break the client's answer too
                raise _UpstreamFailed(f"{authority} answered badly: {error!r}") from error
            if isinstance(event, h11.InformationalResponse):
                continue  # ours went out already (100) or would need an upgrade
            if isinstance(event, h11.Response):
                headers = [*_end_to_end(list(event.headers.raw_items())), (b"via", _VIA)]
                await self._send(
                    h11.Response(
                        status_code=event.status_code, headers=headers, reason=event.reason
                    )
                )
                started = True
            elif isinstance(event, h11.Data):
                await self._send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send(h11.EndOfMessage())
                return True
            elif started:
                return False  # the origin closed mid-body
            else:
                raise _UpstreamFailed(f"{authority} closed the connection without answering")


class ForwardProxy(LoopbackServer):
    """A forwarding proxy on ``http://host:port`` for as long as the ``async with`` lasts.

    :attr:`requests` lists ``(method, absolute target)`` of every request it
    forwarded. Leaving the block closes every connection at once, streams
    included. :attr:`failures` keeps any unexpected error (a bug in the proxy),
    so a test can assert there was none.
    """

    log = logging.getLogger("tests.forward_proxy")

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.requests: list[tuple[str, str]] = []
        self.failures: list[BaseException] = []

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        await _Connection(self, socket).run()

    def connection_failed(self, error: BaseException) -> None:
        self.failures.append(error)
