"""The httpx transport: performs the core's effects with httpx and anyio.

Runs on asyncio and on trio (anyio picks whichever is running). Nothing here
knows an endpoint or parses a body: it sends the core's requests unchanged and
maps httpx's failures onto the library's two transport errors.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import contextvars
import functools
import math
import os
import re
import sys
import urllib.request
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from http.cookiejar import CookieJar
from typing import Any, TypeVar, cast
from urllib.parse import quote

from flowith_proto import extras, logs

try:
    import anyio
    import anyio.to_thread
    import httpx

    from flowith_httpx.in_flight import InFlight
    from flowith_httpx.lanes import LANES, Lanes
    from flowith_httpx.routes import EnvironmentRoutes

    if sys.version_info < (3, 11):  # anyio's own dependency there, for its groups
        from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]
except ModuleNotFoundError as exc:  # installed without the httpx extra: say so
    extras.explain(exc, __name__, "httpx")
    raise
from flowith_proto.abc import ByteStream, FlowithClientBase, Signal, TokenCallback
from flowith_proto.arguments import require_option
from flowith_proto.codings import (
    ContentDecoder,
    ContentDecodingError,
    WholeAnswer,
    broken_stream,
    content_decoder,
)
from flowith_proto.config import (
    DEFAULT_EDGE_URL,
    DEFAULT_SUPABASE_KEY,
    DEFAULT_SUPABASE_URL,
    DEFAULT_TIMEOUT,
    LONG_REQUESTS_AT_ONCE,
    EdgeAuth,
)
from flowith_proto.errors import (
    ConnectionFailedError,
    ResponseDecodeError,
    TimeoutError,
    drop_frames,
    error_chain,
    one_line,
    raise_interrupt_in,
    redact_chain,
    redirect_port_out_of_range,
    undecodable_body,
    waited_for_turn,
)
from flowith_proto.logs import report_left_failure
from flowith_proto.progress import RequestProgress
from flowith_proto.proxies import refused_setting
from flowith_proto.request import Request, Response, header_pairs, header_text
from flowith_proto.silence import DEFAULT_STREAM_IDLE_TIMEOUT
from flowith_proto.state import MAX_COOKIES, excess_cookies

__all__ = ["FlowithClient"]

# httpx logs each request's URL (a signed download's) at INFO, and httpcore each
# answer's headers (the cookies it sets) at DEBUG: their records are masked as the
# library's own are. (A logger's filter sees only the records logged to it.)
for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
):
    logs.logger(_name)

sniffio: Any
try:
    import sniffio
except ModuleNotFoundError:  # trio needs it, anyio no longer does: no sniffio, no trio
    sniffio = None

T = TypeVar("T")


class _Signal:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, deadline: float | None) -> bool:
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            await self._event.wait()
        return self._event.is_set()


async def race(jobs: Sequence[Callable[[], Awaitable[T]]]) -> T:
    """Run ``jobs`` at once in a task group; the first to finish gives the result
    (or its error), and the others are cancelled.

    Each job runs in a cancel scope of its own, which the first to finish cancels:
    cancelling the group's would cancel the caller's wait too, and on Python 3.10,
    which cannot count a task's cancellations, anyio would then take a cancellation
    of the caller arriving in the same step for its own, and lose it."""
    outcomes: list[tuple[T | None, Exception | None]] = []
    scopes = [anyio.CancelScope() for _ in jobs]

    async def run(job: Callable[[], Awaitable[T]], scope: anyio.CancelScope) -> None:
        with scope:
            try:
                value = await job()
            except Exception as exc:
                if not outcomes:
                    outcomes.append((None, exc))
            else:
                if not outcomes:
                    outcomes.append((value, None))
        for each in scopes:
            each.cancel()

    try:
        async with anyio.create_task_group() as group:
            for job, scope in zip(jobs, scopes, strict=True):
                group.start_soon(run, job, scope)
    except BaseException as exc:
        # trio raises Ctrl-C in whichever task runs, a job's too: its task group
        # wraps it in an exception group, which the caller's `except
        # KeyboardInterrupt` would miss.
        raise_interrupt_in(exc)
        raise
    value, error = outcomes[0]
    if error is not None:
        raise error
    return value  # type: ignore[return-value]  # set whenever error is None


@contextlib.contextmanager
def cancellable() -> Iterator[Callable[[], None]]:
    """:meth:`FlowithClientBase._cancellable`: an anyio cancel scope, which takes
    its own cancellation and nothing else."""
    with anyio.CancelScope() as scope:
        yield scope.cancel


#: Shielded work running in tasks of its own on asyncio: the loop keeps only weak
#: references to tasks.
_SHIELDED: set[asyncio.Future[Any]] = set()


def _on_asyncio() -> bool:
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no asyncio loop runs here: trio
        return False


def _on_trio() -> bool:
    """Whether trio runs this code: also as a guest of an asyncio loop
    (``trio.lowlevel.start_guest_run``), where ``asyncio.get_running_loop()``
    answers the host's loop. sniffio tells, as it tells anyio (trio needs it)."""
    if sniffio is None:
        return False
    try:
        library: str = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return library == "trio"


def running_loop() -> object:
    """What identifies the running event loop: asyncio's loop, or trio's run."""
    if _on_trio():
        import trio

        return trio.lowlevel.current_trio_token()
    return asyncio.get_running_loop()


async def shielded(work: Callable[[], Coroutine[Any, Any, T]], *, hold: bool = True) -> T:
    """Run ``work`` to its end whatever befalls the caller.

    On asyncio it runs in a task of its own, which no cancellation of the
    caller reaches (anyio's scopes and asyncio's own ``cancel()`` alike): a
    cancelled caller leaves at once. On trio, with ``hold``, a shielded scope
    holds the caller until the work is done, then delivers the cancellation (a
    close: the caller goes on once the connections are closed); without, the
    work runs in a system task of its own and a cancelled caller leaves at once,
    as on asyncio (a token refresh: the caller's deadline must fire).
    """
    if _on_asyncio():
        task = asyncio.ensure_future(work())
        _SHIELDED.add(task)
        task.add_done_callback(_SHIELDED.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(functools.partial(report_left_failure, work))
            raise
    if not hold:
        return await _on_its_own(work)
    with anyio.CancelScope(shield=True):
        return await work()
    raise AssertionError("unreachable: a shielded scope swallows no exception")


class _Outcome:
    """How shielded work ended on trio, told as asyncio tells a finished task."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

    def cancelled(self) -> bool:
        import trio

        return isinstance(self.error, trio.Cancelled)

    def exception(self) -> BaseException | None:
        return self.error


async def _on_its_own(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` in a trio system task (it sees the caller's context
    variables); the caller waits for its outcome, and may leave when cancelled."""
    import trio

    outcome = _Outcome()
    finished = trio.Event()
    caller_left = False

    async def run() -> None:
        try:
            outcome.value = await work()
        except BaseException as error:  # a failure that ends a system task ends the run
            outcome.error = error
        finished.set()
        if caller_left:  # nobody else sees how it ended
            _left_behind(work, outcome)

    trio.lowlevel.spawn_system_task(
        run, name="flowith shielded work", context=contextvars.copy_context()
    )
    try:
        await finished.wait()
    except trio.Cancelled:
        caller_left = True
        if finished.is_set():  # it ended as the caller was cancelled
            _left_behind(work, outcome)
        raise
    if outcome.error is not None:
        raise outcome.error
    return cast(T, outcome.value)


def _left_behind(work: Callable[..., object], outcome: _Outcome) -> None:
    """Deal with how work its caller left ended: a failure is logged, and an exit
    (``SystemExit``, ``KeyboardInterrupt``) raised, to end the run as it ends
    asyncio's (trio reports it as an internal error, caused by the exit)."""
    import trio

    if isinstance(outcome.error, (Exception, trio.Cancelled)) or outcome.error is None:
        report_left_failure(work, outcome)
    else:
        raise outcome.error


def _transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, progress: RequestProgress | None = None
) -> ConnectionFailedError | TimeoutError | ResponseDecodeError:
    """The library's error for ``exc``, which is cleared of credentials: it becomes
    the error's cause, which a traceback or a repr shows. (``InvalidURL``, no
    ``HTTPError``: a redirect to a URL httpx cannot request, ``mailto:`` say.)"""
    _clear_credentials(exc)
    if isinstance(exc, httpx.DecodingError):  # an answer came: trying again gets it again
        return undecodable_body(exc)
    # Failing to connect (or to get a pooled connection) means no byte of the
    # request left this machine.
    unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    sent = not unsent and (progress is None or progress.sent)
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"request timed out ({type(exc).__name__})", request_sent=sent)
    return ConnectionFailedError(f"{type(exc).__name__}: {_detail(exc)}", request_sent=sent)


def _build_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    **options: Any,
) -> httpx.Request:
    """``http.build_request()``; when a cookie the server set is not ASCII, with the
    cookies sent in UTF-8, as a browser sends them. httpx writes its ``Cookie``
    header in ASCII and failed on it, on every request after that one answer."""
    try:
        return http.build_request(method, url, headers=list(headers), **options)
    except UnicodeEncodeError:
        cookies = _cookie_header(http.cookies.jar, url)
        if cookies is None or cookies.isascii():  # not the cookies' fault
            raise
    # A Cookie header given, the jar adds none of its own.
    raw = [(name.encode(), value.encode()) for name, value in headers]
    raw.append((b"Cookie", cookies.encode("utf-8")))
    return http.build_request(method, url, headers=raw, **options)


def _unsendable_cookie() -> ConnectionFailedError:
    """A redirect httpx builds itself carries the cookies in ASCII, which fails on
    one that is not (the first request is built by :func:`_build_request`)."""
    return ConnectionFailedError(
        "cannot follow the redirect: a cookie the server set is not ASCII, and httpx "
        "sends a redirect's cookies in ASCII only",
        request_sent=True,
    )


def _port_out_of_range(exc: BaseException) -> bool:
    """Whether ``exc`` is what connecting to a port past 65535 raises, as it comes out
    of anyio's connect: an OverflowError, in an exception group. httpx checks the
    port of a URL it is given, not of a redirect's ``Location``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    # Its words, as CPython's socket module says them: another OverflowError (one of
    # an event hook's, say) is no port's.
    return isinstance(exc, _PortOutOfRange) or (
        isinstance(exc, OverflowError) and "port must be 0-65535" in str(exc)
    )


def _drop_emptied_paths(jar: CookieJar) -> None:
    """Let go of the paths and domains of ``jar`` that hold no cookie any more.

    The standard library's jar keeps a dict per domain and per path, and clearing a
    cookie (trimmed here, expired, or deleted by its server) leaves its path's dict
    in place, empty: a server setting a cookie on ever new paths (a CDN's, whose
    path is each file's folder) grew the jar by a dict per path, and every request,
    which walks them all for its Cookie header, slower with it.
    """
    domains: dict[str, dict[str, dict[str, Any]]] = jar._cookies  # type: ignore[attr-defined]
    for domain in [domain for domain, paths in domains.items() if not all(paths.values())]:
        paths = domains[domain]
        for path in [path for path, named in paths.items() if not named]:
            del paths[path]
        if not paths:
            del domains[domain]


def _cookie_header(jar: CookieJar, url: str) -> str | None:
    """The ``Cookie`` header ``jar`` gives a request to ``url``."""
    probe = urllib.request.Request(url)
    jar.add_cookie_header(probe)
    return probe.get_header("Cookie")


def _clear_credentials(exc: BaseException) -> None:
    """httpx's errors keep the request they failed: its URL (a download's is signed)
    and its headers (the token, the API key, the cookies), shown by ``.request`` of
    the library's error's cause; and the errors they were raised from quote the line
    of the answer they refused, which a traceback prints. Drop the requests (and a
    status error's answer), and redact what every error of the chain says. The
    frames of httpx's own errors hold the headers sent (and a proxy's password):
    their tracebacks go (see :func:`~flowith_proto.errors.drop_frames`)."""
    redact_chain(exc)
    if isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
        drop_frames(exc)
    for current in error_chain(exc):
        if isinstance(current, httpx.HTTPError):
            # As in an error httpx made without a request (its typing allows none):
            # reading .request then says it was never set.
            held: Any = current
            held.request = None
            if isinstance(current, httpx.HTTPStatusError):  # an event hook's
                held.response = None


def _detail(exc: Exception) -> str:
    """What ``exc`` says, on one line (as a message quoting a server's words), or what
    an error it was raised from says: httpcore's often say nothing, and on trio a
    refused certificate is three causes down."""
    for link in error_chain(exc):
        said = one_line(str(link))
        if said:
            return said
    return "the connection broke or was closed"


async def _whole_body(answer: httpx.Response, endpoint: str) -> bytes:
    """The answer's body, read as it came and decoded here (see
    :class:`~flowith_proto.codings.WholeAnswer`, which bounds it).

    A body refused part way (too large, or not what its coding says) ends the
    reading by a cancellation, never by leaving the loop: the next read meets it and
    ends httpx's and httpcore's readers below, where leaving them suspended makes
    trio warn as it collects each (closing the outermost closes none of them).
    """
    whole = WholeAnswer(_content_decoder(answer), answer.status_code, endpoint)
    chunks = answer.aiter_raw()
    async for chunk in chunks:
        try:
            whole.feed(chunk)
        except ResponseDecodeError:
            with anyio.CancelScope() as stopping:
                stopping.cancel()
                async for _ in chunks:  # the next read meets the cancellation
                    pass
            raise
    return whole.content()


def _content_decoder(answer: httpx.Response) -> ContentDecoder | None:
    """What undoes the answer's Content-Encoding, read from each of its lines (see
    :mod:`flowith_proto.codings`: httpx's own decoders keep the first member of a
    multi-member gzip body, knew no ``x-gzip``, and passed a gzip stream cut short)."""
    return content_decoder(answer.headers.get_list("content-encoding"))


def _tracer(
    progress: RequestProgress | None = None,
) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore ``trace`` hook noting how far a request got, and closing the
    connection a TLS handshake cut short leaves.

    httpcore closes that connection when the handshake fails, but not when it is
    cancelled (a call's deadline, or its caller's): against a server that never
    answers the handshake, each try left a socket open until it was collected.
    """
    handshaking: list[Any] = []  # the connection whose handshake is under way

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            if progress is not None:
                progress.connecting()
        elif event.endswith("send_request_headers.started"):
            if progress is not None:
                progress.sending()
        elif event == "connection.connect_tcp.complete":
            handshaking[:] = [info.get("return_value")]
        elif event.endswith("start_tls.complete"):
            handshaking.clear()
        elif event.endswith("start_tls.failed") and handshaking:
            connection = handshaking.pop()
            if connection is not None:
                with anyio.CancelScope(shield=True):  # it may be cancelled: close it all the same
                    await connection.aclose()

    return trace


class _RequestBody(httpx.AsyncByteStream):
    """A request body httpx sends without an async generator of its own.

    httpx wraps a body in a generator, and httpcore, cancelled while it sends
    one, leaves it suspended: trio warns as it collects it. Plain iterators
    leave nothing to collect (a streamed body's own generator is closed by
    :meth:`~flowith_proto.abc.FlowithClientBase._wired`). Bytes can be sent
    again (an auth flow of an ``http_client`` you bring may resend a request);
    a streamed body, as in httpx, only once.
    """

    __slots__ = ("_body", "_sent")

    def __init__(self, body: bytes | AsyncIterator[bytes] | None) -> None:
        self._body = body
        self._sent = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        body = self._body
        if body is None or isinstance(body, bytes):
            return _Once(body)
        if self._sent:
            raise httpx.StreamConsumed()
        self._sent = True
        return body


class _Once:
    """An async iterator over one piece of bytes (none for ``None``)."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes | None) -> None:
        self._body = body

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise StopAsyncIteration
        return body


def _with_body(
    outgoing: httpx.Request, body: bytes | AsyncIterator[bytes] | None
) -> httpx.Request:
    """``outgoing`` sending ``body`` through a :class:`_RequestBody` (its headers,
    a length included, are those httpx derived from the body)."""
    outgoing.stream = _RequestBody(body if body else None)
    return outgoing


def _headers(answer: httpx.Response) -> tuple[tuple[str, str], ...]:
    """The answer's headers, after the cookies its redirects set: the client keeps
    those too, so it must know them to hide their values."""
    hops = header_pairs(
        (name, value)
        for hop in answer.history
        for name, value in hop.headers.raw
        if name.lower() == b"set-cookie"
    )
    return hops + header_pairs(answer.headers.raw)


#: Chunks a stream's pump may read ahead of its readers (each at most 64 KiB, raw or
#: decoded: see flowith_proto.codings.PIECE_SIZE).
_READ_AHEAD = 4
#: The pumps running on asyncio: the loop keeps only weak references to tasks.
_pumps: set[asyncio.Task[None]] = set()


def _start_system_task(function: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``function`` in a task of its own, outside any task group.

    A body's pump must outlive the task that opened the stream (a shared stream
    is opened by one generation and read by others), and a client needs no task
    group of its own (see :mod:`flowith_proto.hub`): so the pump is a task of the
    event loop itself, which cancels it when the run ends.
    """
    if _on_trio():
        import trio

        trio.lowlevel.spawn_system_task(function, name="flowith stream pump")
    else:
        task = asyncio.get_running_loop().create_task(function(), name="flowith stream pump")
        _pumps.add(task)
        task.add_done_callback(_pumps.discard)


class _Body:
    """A streaming response body read chunk by chunk under a deadline.

    httpx reads a body through async generators, and a generator interrupted by
    a cancellation (a deadline, a cancelled reader) is finished for good, with
    its connection. So a pump task of its own reads the body ahead into a small
    buffer, and readers take from that, which a deadline or a cancellation can
    interrupt without losing a byte: the connection stays usable for the next
    reader, as :class:`~flowith_proto.hub.ByteStream` requires.

    A chunk stays in the buffer until a running reader takes it. (Handed straight
    to a waiting reader, as a memory object stream does, a chunk was lost when
    asyncio's own ``cancel()`` reached the reader after the hand-over: a
    generation under ``asyncio.timeout`` cost the others sharing the stream
    their text.)
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_failure",
        "_pump_done",
        "_pump_scope",
        "_readable",
        "_release",
        "_response",
        "_room",
    )

    def __init__(
        self, response: httpx.Response, release: Callable[[], None] | None = None
    ) -> None:
        self._response = response
        self._release = release  # the main client's slot it holds, given back at the close
        self._buffer: collections.deque[bytes] = collections.deque()
        self._readable = anyio.Event()  # set when a chunk arrives or the pump ends
        self._room = anyio.Event()  # set when a reader takes a chunk
        self._failure: ConnectionFailedError | None = None
        self._closed = False
        self._pump_scope = anyio.CancelScope()
        self._pump_done = anyio.Event()
        _start_system_task(self._pump)

    def _arrived(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._readable.set()

    async def _pump(self) -> None:
        undecodable: ContentDecodingError | None = None
        try:
            with self._pump_scope:
                answer = self._response
                # A body an event hook of your http_client read, httpx replays from
                # memory, decoded by its own rules: it has no raw bytes left to decode.
                replayed = answer.is_stream_consumed
                decoder = None if replayed else _content_decoder(answer)
                # Ended by a cancellation, never by leaving the loop: the next read
                # meets it and ends httpx's readers below (trio warns as it collects
                # one left suspended).
                stopped = False
                async for chunk in answer.aiter_bytes() if replayed else answer.aiter_raw():
                    if stopped or undecodable is not None:
                        continue  # bytes httpx had already read: the next read ends
                    try:
                        stopped = not await self._hand_over(chunk, decoder)
                    except ContentDecodingError as exc:
                        undecodable = exc
                        self._pump_scope.cancel()
                if decoder is not None and undecodable is None and not self._closed:
                    decoder.end()
                    try:
                        await self._hand_over(b"", decoder)
                    except ContentDecodingError as exc:
                        undecodable = exc
            if undecodable is not None:
                raise undecodable
        except Exception as exc:  # httpx's errors, or any other: the reader raises it
            # (never let it out: an error ending a trio system task ends the whole run)
            _clear_credentials(exc)
            if isinstance(exc, ContentDecodingError):
                self._failure = broken_stream(exc)
            else:
                failure = ConnectionFailedError(
                    f"stream broke: {type(exc).__name__}: {_detail(exc)}"
                )
                failure.__cause__ = exc
                self._failure = failure
        finally:
            self._pump_done.set()
            self._readable.set()

    async def _hand_over(self, chunk: bytes, decoder: ContentDecoder | None) -> bool:
        """Give the readers ``chunk``, decoded by ``decoder`` a piece at a time, each
        once they are fewer than :data:`_READ_AHEAD` pieces behind; ``False`` if the
        body was closed meanwhile."""
        pieces: Iterable[bytes]
        if decoder is None:
            pieces = (chunk,) if chunk else ()
        else:
            decoder.feed(chunk)
            pieces = iter(decoder.read, b"")
        for piece in pieces:
            self._arrived(piece)
            while len(self._buffer) >= _READ_AHEAD:
                if self._room.is_set():
                    self._room = anyio.Event()
                try:
                    await self._room.wait()
                except anyio.get_cancelled_exc_class():
                    # Closed while the buffer was full: the pump's next read meets the
                    # cancellation (it lasts) and ends httpx's readers.
                    self._pump_scope.cancel()
                    return False
        return True

    async def read(self, deadline: float | None) -> bytes | None:
        while True:
            if self._closed:  # read after aclose()
                return b""
            if self._buffer:
                chunk = self._buffer.popleft()
                self._room.set()
                return chunk
            if self._pump_done.is_set():
                if self._failure is not None:
                    raise self._failure from self._failure.__cause__
                return b""
            # A deadline already past is a look at what an idle stream holds: it
            # has been looked at, and nothing has arrived.
            if deadline is not None and deadline <= anyio.current_time():
                return None
            if self._readable.is_set():
                self._readable = anyio.Event()
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                await self._readable.wait()

    async def aclose(self) -> None:
        # Shielded from anyio's cancellations; asyncio's own cancel() reaches in
        # anyway, at the first wait: the response is closed and the turn given back
        # whatever ends the wait (each leaked one of the 64 turns for good).
        with anyio.CancelScope(shield=True):
            self._closed = True
            self._buffer.clear()
            self._readable.set()  # a reader waiting ends (b"")
            self._pump_scope.cancel()
            try:
                await self._pump_done.wait()
            finally:
                try:
                    await self._response.aclose()
                finally:
                    if self._release is not None:
                        self._release()


#: The constructor's refusal of a proxy httpx cannot use: ``proxy=``, or one in the
#: environment. Neither is quoted.
_PROXY_URL = "an http://, https://, socks5:// or socks5h:// URL with a valid host and port"
_REFUSED_PROXY = (
    f"proxy must be {_PROXY_URL}: this transport speaks HTTP proxies, and SOCKS ones "
    "with socksio installed"
)
_REFUSED_SETTING = (
    "a proxy setting in the environment (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) is no URL "
    f"httpx can read: a proxy must be {_PROXY_URL}"
)


class _PortOutOfRange(OverflowError):
    """A request to a port past 65535 (see :func:`_port_in_range`): an OverflowError,
    as asyncio's connect raises, so that every path that reports that reports this."""


async def _port_in_range(request: httpx.Request) -> None:
    """Refuse a request to a port no socket has before it connects. httpx checks the
    port of a URL it is given, not of a redirect's ``Location``: asyncio's connect
    refused it, but trio's takes it modulo 65536, and connected to another port
    (99999 to 34463), a server nobody named."""
    port = request.url.port
    if port is not None and not 0 <= port <= 65535:
        raise _PortOutOfRange(port)


async def _location_as_aiohttp_reads_it(answer: httpx.Response) -> None:
    """A redirect's ``Location`` as aiohttp's transport reads it, for httpx to follow.

    An empty one is dropped: httpx took it for the URL it was sent to and asked again,
    20 times, to fail with ``TooManyRedirects``; aiohttp, and the core for an answer
    it does not follow, read it as no target ("without a Location to follow"). A
    non-ASCII one is read on its own (see :func:`~flowith_proto.request.header_text`)
    and percent-encoded: httpx read it as Latin-1 whenever another header of the
    answer was not UTF-8, and fetched ``/caf%C3%83%C2%A9.bin`` for ``/café.bin``.
    """
    # The status first: this runs on every answer, and reading a header scans them all.
    if not 300 <= answer.status_code < 400:
        return
    raw = answer.headers.raw
    location = next((value for name, value in raw if name.lower() == b"location"), None)
    if location == b"":
        del answer.headers["location"]
    elif location is not None and not location.isascii():
        answer.headers["location"] = _NON_ASCII.sub(
            lambda run: quote(run[0], safe=""), header_text(location)
        )


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _own_client(
    new_client: Callable[[], httpx.AsyncClient],
    proxy: str | None,
    environment: Mapping[str, str],
) -> httpx.AsyncClient:
    """The client ``new_client`` makes, or a ``ValueError`` that quotes nothing for a
    proxy (``proxy``, else the ``environment``'s) httpx cannot use: httpx's own errors
    quote the URL, password and all, and it takes a port out of range, then fails every
    call."""
    if refused_setting(proxy, environment) is None:
        try:
            return new_client()
        except ImportError:  # httpx's, for a SOCKS proxy: refused as a setting, as aiohttp's
            raise ValueError(
                "a SOCKS proxy (proxy=, or ALL_PROXY, HTTPS_PROXY or HTTP_PROXY in the "
                'environment) needs the socksio package: pip install "httpx[socks]"'
            ) from None
        except (ValueError, httpx.InvalidURL):
            # httpx's quotes the URL, with its password when the scheme is missing
            # ("alice:pw@proxy:3128" reads as scheme "alice"); its InvalidURL (a
            # port that is no number) is no ValueError.
            pass
    # Out here, httpx's error is not even its context.
    raise ValueError(_REFUSED_PROXY if proxy is not None else _REFUSED_SETTING)


class _Slots:
    """Turns on the main client, waited for here, where a cancellation is clean."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._semaphore: anyio.Semaphore | None = None  # made in the event loop

    async def take(self) -> Callable[[], None]:
        """Wait for a turn; return what gives it back (once, whoever calls it)."""
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(self._count)
        semaphore = self._semaphore
        await semaphore.acquire()
        held = [True]

        def release() -> None:
            if held:
                held.clear()
                semaphore.release()

        return release


class FlowithClient(FlowithClientBase):
    """Async Flowith client on httpx, for asyncio and trio.

    ``http_client`` lets you bring your own ``httpx.AsyncClient`` (its proxy,
    limits, TLS settings); the client then never closes it. Otherwise one is
    created with ``proxy`` (else the environment's ``HTTP_PROXY``/``HTTPS_PROXY``/
    ``NO_PROXY``, as httpx reads them) and TLS verification on, and short requests go out
    on up to 16 lanes, small clients that carry one request each at a time
    (:mod:`flowith_httpx.lanes`), so a thousand concurrent generations cost each
    request what one does; more requests wait their turn, in order, within their
    timeout (one that times out waiting says it was never sent). Event streams,
    downloads and uploads, which hold a connection for long, wait for one of 64
    turns of their own instead (an upload then goes out on a client of its own).
    For hundreds of requests at once against a slow network, bring a client with
    the limits you want: all requests then go through it.
    """

    def __init__(
        self,
        token: str = "",
        *,
        user_id: str | None = "",
        refresh_token: str | None = "",
        edge_url: str = DEFAULT_EDGE_URL,
        supabase_url: str = DEFAULT_SUPABASE_URL,
        supabase_key: str = DEFAULT_SUPABASE_KEY,
        timeout: float = DEFAULT_TIMEOUT,
        result_timeout: float = 120.0,
        poll_interval: float = 2.0,
        max_retries: int = 2,
        on_token_refresh: TokenCallback | None = None,
        edge_auth: EdgeAuth | str = EdgeAuth.BARE,
        record_to: str | os.PathLike[str] | None = None,
        stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT,
        proxy: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            token,
            user_id=user_id,
            refresh_token=refresh_token,
            edge_url=edge_url,
            supabase_url=supabase_url,
            supabase_key=supabase_key,
            timeout=timeout,
            result_timeout=result_timeout,
            poll_interval=poll_interval,
            max_retries=max_retries,
            on_token_refresh=on_token_refresh,
            edge_auth=edge_auth,
            record_to=record_to,
            stream_idle_timeout=stream_idle_timeout,
        )
        if proxy is not None:
            proxy = require_option(proxy, "proxy")
        if http_client is not None and proxy is not None:
            raise ValueError("pass proxy to your own http_client, not to FlowithClient")
        if http_client is None:
            # The client and its lanes read the CA bundle once and keep one cookie jar,
            # so that to a server they are one client.
            tls = httpx.create_ssl_context()
            jar = CookieJar()
            # Read once (see flowith_httpx.routes): httpx would read it for each client.
            environment = urllib.request.getproxies() if proxy is None else {}
            routes = any(environment.get(scheme) for scheme in ("http", "https", "all"))

            def new_client() -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    proxy=proxy,
                    transport=EnvironmentRoutes(environment, tls) if routes else None,
                    trust_env=False,
                    timeout=timeout,
                    verify=tls,
                    cookies=jar,
                    event_hooks={
                        "request": [_port_in_range],
                        "response": [_location_as_aiohttp_reads_it],
                    },
                )

            self._http = _own_client(new_client, proxy, environment)
            self._new_client = new_client
            self._jar: CookieJar | None = jar
            self._lanes: Lanes | None = Lanes(new_client)
            # Downloads, event streams (on self._http) and uploads (on clients of their
            # own), which we close.
            self._in_flight: InFlight | None = InFlight()
            self._main_slots: _Slots | None = _Slots(LONG_REQUESTS_AT_ONCE)
        else:
            self._http = http_client
            self._jar = None  # yours: its cookies are yours to keep
            self._lanes = None
            self._in_flight = None  # requests on your client are yours to end
            self._main_slots = None  # its pool's size is yours

    def _now(self) -> float:
        return anyio.current_time()

    async def _sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)

    def _new_signal(self) -> Signal:
        return _Signal()

    async def _send(
        self, request: Request, timeout: float | None, deadline: float | None, operation: str
    ) -> Response:
        limit = self._request_limit(timeout, deadline)
        progress = RequestProgress()
        had_turn = False
        try:
            async with self._wired(request) as (body, headers):
                with anyio.fail_after(limit):
                    async with self._client_for(body) as http:
                        had_turn = True
                        outgoing = _build_request(
                            http,
                            request.method,
                            request.url,
                            headers,
                            content=body,
                            timeout=limit,
                            extensions={"trace": _tracer(progress)},
                        )
                        answer = await http.send(
                            _with_body(outgoing, body),
                            follow_redirects=request.follow_redirects,
                            stream=True,
                        )
                        try:
                            if answer.is_stream_consumed:  # an event hook or auth of yours read it
                                content = answer.content
                            else:
                                content = await _whole_body(answer, request.endpoint)
                        finally:
                            await answer.aclose()
        except builtins.TimeoutError as exc:
            if not had_turn:  # say so: the server was never asked
                if self._lanes is not None and self._lanes.crowded:  # the cure is on this side
                    raise waited_for_turn(limit, LANES) from exc
                raise TimeoutError(
                    f"request was not sent: its {limit:.3g}s ran out before it could start",
                    request_sent=False,
                ) from exc
            raise progress.timed_out(limit) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _transport_error(exc, progress) from exc
        except UnicodeEncodeError as exc:  # built by httpx for a redirect: see _build_request
            raise _unsendable_cookie() from exc
        except (OverflowError, BaseExceptionGroup) as exc:
            raise_interrupt_in(exc)  # Ctrl-C on trio, wrapped by anyio's connect_tcp group
            if not _port_out_of_range(exc):
                raise
            raise redirect_port_out_of_range() from exc
        except httpx.StreamConsumed as exc:  # a RuntimeError, not an httpx.HTTPError
            raise ConnectionFailedError(
                "the upload's body was sent once and cannot be sent again (an auth flow of "
                "the http_client you brought asked for it)",
                request_sent=True,
            ) from exc
        return Response(answer.status_code, _headers(answer), content)

    def _client_for(self, body: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        """The client to send on: a lane for a short request on our own connections.

        An upload (a streamed body) goes on a client of its own: like a download, it
        may hold its connection for long, and the short requests must not wait.
        """
        if self._lanes is None:
            return contextlib.nullcontext(self._http)
        if body is None or isinstance(body, bytes):
            return self._lanes.lane()
        return self._on_a_client_of_its_own()

    @contextlib.asynccontextmanager
    async def _on_a_client_of_its_own(self) -> AsyncIterator[httpx.AsyncClient]:
        """An upload's client, made for it and closed once it is sent, within one of
        the turns of the main client (streams and downloads take them too).

        Not the main client: an upload cut short by asyncio's ``task.cancel()`` can
        leave httpcore counting its connection busy for good (httpcore#1093), open
        and never reused, and in the main client's pool a hundred of them left no
        room for any stream or download. Closing its own client closes it. An
        upload is large and rare: its one connect costs nothing to speak of."""
        with self._out_on_main_client():
            release = await self._main_slots.take() if self._main_slots is not None else None
            try:
                client = self._new_client()
                try:
                    yield client
                finally:
                    with anyio.CancelScope(shield=True):
                        await client.aclose()
            finally:
                if release is not None:
                    release()

    def _out_on_main_client(self) -> AbstractContextManager[None]:
        """Carry a request on the main client: cancelled by a close of ours."""
        return contextlib.nullcontext() if self._in_flight is None else self._in_flight.request()

    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        limit = self._request_limit(None, deadline)
        body, headers = self._wire_body(request)
        outgoing = _build_request(
            self._http,
            request.method,
            request.url,
            headers,
            content=body,
            # Connect and write are bounded; reads wait as long as the caller's deadline.
            timeout=httpx.Timeout(limit, read=None),
            extensions={"trace": _tracer()},
        )
        release: Callable[[], None] | None = None
        try:
            with anyio.fail_after(limit), self._out_on_main_client():
                if self._main_slots is not None:
                    release = await self._main_slots.take()
                answer = await self._http.send(
                    _with_body(outgoing, body),
                    stream=True,
                    follow_redirects=request.follow_redirects,
                )
        except BaseException as exc:
            if release is not None:
                release()
            if isinstance(exc, builtins.TimeoutError):
                if self._main_slots is not None and release is None:  # the server was never asked
                    raise waited_for_turn(limit, LONG_REQUESTS_AT_ONCE) from exc
                raise TimeoutError(f"stream did not open within {limit:.3g}s") from exc
            if isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
                raise _transport_error(exc) from exc
            if isinstance(exc, UnicodeEncodeError):  # a redirect's: see _build_request
                raise _unsendable_cookie() from exc
            if _port_out_of_range(exc):
                raise redirect_port_out_of_range() from exc
            raise_interrupt_in(exc)
            raise
        return answer.status_code, _headers(answer), _Body(answer, release)

    async def _race(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> T:
        return await race(jobs)

    def _cancellable(self) -> AbstractContextManager[Callable[[], None]]:
        return cancellable()

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, T]], *, hold: bool = True
    ) -> T:
        return await shielded(work, hold=hold)

    async def _to_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(function, *args)

    def _event_loop(self) -> object:
        return running_loop()

    def _trim_cookies(self, recent: Container[str]) -> None:
        jar = self._jar
        if jar is None:
            return
        if len(jar) > MAX_COOKIES:
            for cookie in excess_cookies(list(jar), lambda cookie: cookie.name, recent):
                jar.clear(cookie.domain, cookie.path, cookie.name)
        _drop_emptied_paths(jar)

    def _http_client_closed(self) -> bool:
        return self._http.is_closed

    async def _close_transport(self) -> None:
        if self._lanes is not None and self._in_flight is not None:  # the clients are ours
            self._in_flight.cancel()
            await self._lanes.aclose()
            await self._http.aclose()
