"""The aiohttp transport: performs the core's effects with aiohttp on asyncio.

Nothing here knows an endpoint or parses a body: it sends the core's requests
unchanged (the URL is already encoded, so yarl is told not to touch it) and maps
aiohttp's failures onto the library's two transport errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import os
import re
import socket
import sys
import urllib.request
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Coroutine,
    Iterator,
    Sequence,
)
from http.cookies import Morsel
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from flowith_aiohttp.cookies import CookieJar
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
    REQUESTS_AT_ONCE,
    EdgeAuth,
)
from flowith_proto.errors import (
    ClientStateError,
    ConnectionFailedError,
    FlowithError,
    TimeoutError,
    drop_frames,
    error_chain,
    mask_url,
    masked_headers,
    one_line,
    redact,
    redact_chain,
    redirect_port_out_of_range,
    waited_for_turn,
)
from flowith_proto.logs import report_left_failure
from flowith_proto.progress import RequestProgress
from flowith_proto.proxies import EnvironmentProxies, lower_scheme, refused_setting
from flowith_proto.request import Request, Response, header_pairs
from flowith_proto.silence import DEFAULT_STREAM_IDLE_TIMEOUT
from flowith_proto.state import MAX_COOKIES, excess_cookies

if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # aiohttp installs async-timeout on these
    from async_timeout import timeout_at  # type: ignore[import-not-found,unused-ignore]

__all__ = ["FlowithClient"]

T = TypeVar("T")


async def _before(deadline: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``, or :class:`asyncio.TimeoutError` once the loop's clock
    reaches ``deadline``.

    Not :func:`asyncio.wait_for`: up to Python 3.11 it can swallow a
    cancellation that arrives as the awaited thing finishes (CPython
    gh-86296), and a task cancelled by its caller's timeout then runs on.
    """
    async with timeout_at(deadline):
        return await awaitable


class _Turns:
    """``count`` requests out at once; more wait their turn, each within its limit."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._semaphore: asyncio.Semaphore | None = None  # made in the event loop

    async def take(self, limit: float) -> tuple[Callable[[], None], float]:
        """Wait up to ``limit`` seconds for a turn (a request never sent, if it runs
        out); return what gives the turn back (once, whoever calls it) and the
        seconds left of ``limit``."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.count)
        semaphore = self._semaphore
        if not semaphore.locked():  # a turn is free: taken at once, no timer to set
            await semaphore.acquire()
            left = limit
        else:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await _before(started + limit, semaphore.acquire())
            except asyncio.TimeoutError as exc:
                raise waited_for_turn(limit, self.count) from exc
            # Never 0: to aiohttp, a total of 0 means no limit at all.
            left = max(limit - (loop.time() - started), 1e-3)
        held = [True]

        def release() -> None:
            if held:
                held.clear()
                semaphore.release()

        return release, left


#: The longest response header line read, as httpcore's h11 reads (aiohttp: 8190).
_HEADER_LIMIT = 100 * 1024
#: As many header lines as a head within that size may hold (aiohttp: 128, which an
#: answer with many cookies or tracing headers passes), where aiohttp lets it be set
#: (3.13 and later).
_HEADER_LINES: dict[str, Any] = (
    {"max_headers": _HEADER_LIMIT // 4}
    if "max_headers" in inspect.signature(aiohttp.ClientSession).parameters
    else {}
)
#: Redirects a download follows: 20, as httpx follows.
_MAX_REDIRECTS = 20
#: The statuses of a redirect (RFC 9110 15.4), as httpx follows them.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")

# aiohttp adds a Content-Type to a bodiless POST; the core's request has none.
_NO_AUTO_HEADERS = ("Content-Type",)


class _Signal:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, deadline: float | None) -> bool:
        if deadline is None:
            await self._event.wait()
            return True
        try:
            await _before(deadline, self._event.wait())
        except asyncio.TimeoutError:
            return self._event.is_set()
        return True


async def _connecting(_session: object, context: Any, _params: object) -> None:
    if isinstance(context.trace_request_ctx, RequestProgress):
        context.trace_request_ctx.connecting()


async def _connected(_session: object, context: Any, _params: object) -> None:
    # From here on any byte may go out: the request counts as sent.
    if isinstance(context.trace_request_ctx, RequestProgress):
        context.trace_request_ctx.sending()


def _progress_tracing() -> aiohttp.TraceConfig:
    """Tracing that tells a request's :class:`RequestProgress` whether it ever
    had a connection (for the client's own session only)."""
    config = aiohttp.TraceConfig()
    config.on_connection_create_start.append(_connecting)
    config.on_connection_create_end.append(_connected)
    config.on_connection_reuseconn.append(_connected)
    return config


def _transport_error(exc: aiohttp.ClientError) -> FlowithError:
    """The library's error for ``exc``, which is cleared of credentials: it becomes
    the error's cause, which a traceback or a repr shows. An error of the library's
    own that aiohttp wrapped (the upload's body raised it: the file changed) comes
    out as it was raised, as on httpx, its cause then aiohttp's wrapper."""
    own = exc.__cause__
    if isinstance(own, FlowithError):
        exc.__cause__ = None  # raised from exc: no loop of causes
        if exc.__context__ is own:
            exc.__context__ = None
        return own
    _clear_credentials(exc)
    if isinstance(exc, aiohttp.ClientResponseError) and isinstance(
        exc.__cause__, HttpProcessingError
    ):
        # aiohttp's parser refused the answer, which it reports as a 400 no server
        # sent, with a caret drawing of the bad line: its first line says it all.
        said = exc.message.split("\n", 1)[0].rstrip(": ")
        return ConnectionFailedError(f"malformed answer: {said}")
    # A connector error means no byte of the request left this machine.
    sent = not isinstance(exc, aiohttp.ClientConnectorError)
    return ConnectionFailedError(_said(exc), request_sent=sent)


#: How aiohttp quotes the parser's error inside a body-read error, with the 400 an
#: HttpProcessingError carries by default: "<ContentLengthError: 400, message='...'>",
#: or, from its pure-Python parser, "400, message: ..." at the start.
_QUOTED_PARSER_ERROR = re.compile(r"<(\w+): 400, message=(['\"])(.*?)\2>")
_PARSER_ERROR_400 = re.compile(r"^400, message:\s*")


def _said(exc: aiohttp.ClientError) -> str:
    """``exc``'s type and words, on one line (aiohttp's may take two), without the
    400 its parser's errors carry: no server sent one (the answer came, its body
    broke), and a reader takes it for the status."""
    said = _QUOTED_PARSER_ERROR.sub(r"\1: \3", one_line(str(exc)))
    said = _PARSER_ERROR_400.sub("", said)
    return f"{type(exc).__name__}: {said}"


#: The one "Connection closed" error aiohttp raises for every connection closed under a
#: read (a module-level instance of its client_reqrep; ``None`` if a version has none).
_SHARED_CLOSED: BaseException | None = getattr(
    aiohttp.client_reqrep, "_CONNECTION_CLOSED_EXCEPTION", None
)


def _clear_credentials(exc: aiohttp.ClientError) -> None:
    """aiohttp's errors quote the request's URL (a download's is signed) and where a
    redirect led, and its response errors keep the request's headers (its token and
    API key), the answer's (its cookies) and the redirects it followed. Their str and
    repr show them, and so does every traceback of the library's error they caused:
    redact what they and the errors they were raised from say (the parser quotes the
    line it refused), mask the URLs and the credential headers, drop the redirects,
    and the tracebacks, whose frames hold the headers sent and a proxy's password
    (see :func:`~flowith_proto.errors.drop_frames`)."""
    for current in error_chain(exc):
        if isinstance(current, aiohttp.ServerDisconnectedError) and not isinstance(
            current.message, str
        ):
            # It holds the head it had read when the connection ended (a
            # RawResponseMessage, no text to redact): the cookies set, a signed Location.
            current.message = "Server disconnected before the answer's head was complete"
            current.args = (current.message,)
    redact_chain(exc)
    drop_frames(exc)
    if exc is _SHARED_CLOSED:
        # Shared by every connection, it keeps what it was last raised from, whose
        # frames hold a closed client's session (and its request's token) for as
        # long as aiohttp is loaded: let go of it.
        exc.__context__ = None
    if isinstance(exc, aiohttp.ClientConnectorError):
        _clear_connection_key(exc)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)) and exc.args:
        # A redirect's Location, quoted as it came (an aiohttp session you bring
        # follows redirects itself): masked whatever its form, as redact() reads
        # URLs with "://" only; held as a str, or as a yarl URL redact_chain skips.
        masked = mask_url(str(exc.args[0]))
        if isinstance(exc, aiohttp.InvalidURL):
            exc._url = masked
        exc.args = (masked, *exc.args[1:])
    if not isinstance(exc, aiohttp.ClientResponseError):
        return
    info = exc.request_info
    exc.request_info = type(info)(
        _masked_url(info.url), info.method, _masked(info.headers), _masked_url(info.real_url)
    )
    exc.history = ()
    exc.args = (exc.request_info, exc.history)
    if exc.headers is not None:
        exc.headers = _masked(exc.headers)


def _clear_connection_key(exc: aiohttp.ClientConnectorError) -> None:
    """A connector error keeps its connection key (its args, its repr): the proxy's
    URL, password included, and its BasicAuth. Mask the one, drop the other, keeping
    the rest, which the error's str reads (host, port, ssl)."""
    key: Any = getattr(exc, "_conn_key", None)
    if not hasattr(key, "_replace") or not hasattr(key, "proxy"):
        return  # an aiohttp that keeps it otherwise: nothing of ours to mask
    key = key._replace(proxy=None if key.proxy is None else _masked_url(key.proxy), proxy_auth=None)
    exc._conn_key = key
    exc.args = (key, *exc.args[1:])


def _masked_url(url: URL) -> URL:
    """``url`` with its password and its signed credentials masked."""
    if url.raw_password is None:
        return URL(redact(str(url), ()), encoded=True)
    rest = _masked_url(url.with_password(None))
    # Built, not parsed: yarl takes the brackets of "[REDACTED]" before a host for IPv6.
    return URL.build(
        scheme=rest.scheme,
        user=rest.raw_user,
        password="[REDACTED]",
        host=rest.raw_host or "",
        port=rest.explicit_port,
        path=rest.raw_path,
        query_string=rest.raw_query_string,
        fragment=rest.raw_fragment,
        encoded=True,
    )


def _masked(headers: Any) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(masked_headers(headers.items())))


def _cookie_name(morsel: Morsel[str]) -> str:
    return morsel.key


def _headers(
    answer: aiohttp.ClientResponse, hops: Sequence[aiohttp.ClientResponse] = ()
) -> tuple[tuple[str, str], ...]:
    """The answer's headers, names lower-cased as httpx gives them (a cassette
    recorded on either transport is then the same), after the cookies its
    redirects (``hops``) set: the session keeps those too, so the client must know
    them to hide their values."""
    hop_cookies = header_pairs(
        (name, value)
        for hop in hops
        for name, value in hop.raw_headers
        if name.lower() == b"set-cookie"
    )
    return hop_cookies + header_pairs(answer.raw_headers)


def _redirect_target(answer: aiohttp.ClientResponse) -> URL | None:
    """Where ``answer`` redirects to, as aiohttp reads a ``Location`` (``http:path``
    is relative, as browsers read it), or ``None``: not a redirect, or one without a
    ``Location`` (which the core reports). A ``Location`` that is not UTF-8 is read
    as Latin-1, as httpx reads it. One no request can go to raises aiohttp's own
    error, which the transport's callers report."""
    if answer.status not in _REDIRECTS:
        return None
    raw = next((value for name, value in answer.raw_headers if name.lower() == b"location"), b"")
    try:
        location = raw.decode().strip()
    except UnicodeDecodeError:
        location = raw.decode("latin-1").strip()
    if not location:
        return None
    quoted = mask_url(location)  # what an error says: a signed URL's signature masked
    try:
        target = URL(location)
    except ValueError as exc:
        if "Port out of range" in str(exc):  # yarl's words
            raise redirect_port_out_of_range() from None
        raise aiohttp.InvalidUrlRedirectClientError(quoted, "not a URL") from None
    scheme = target.scheme
    if scheme not in ("http", "https", ""):
        raise aiohttp.NonHttpUrlRedirectClientError(quoted)
    base = answer.url
    if not scheme or (scheme == base.scheme and not _has_authority(location, scheme)):
        target = base.join(target)
    try:
        target.origin()
    except ValueError:
        raise aiohttp.InvalidUrlRedirectClientError(quoted, "no origin") from None
    if not target.host:
        raise aiohttp.InvalidUrlRedirectClientError(quoted, "no host")
    return target


def _has_authority(location: str, scheme: str) -> bool:
    """Whether ``location`` has ``//`` after its ``scheme:``, read as browsers and
    aiohttp read it (a backslash for a slash; controls and spaces around, and tabs
    and line breaks inside, left out): ``http:path`` has none, and is relative."""
    cleaned = location.strip("".join(map(chr, range(33)))).translate(_TAB_OR_NEWLINE)
    return all(c in ("/", "\\") for c in cleaned[len(scheme) + 1 : len(scheme) + 3].ljust(2))


def _latin1_credentials(url: str) -> bool:
    """Whether the user and password of proxy ``url`` are Latin-1, in which aiohttp
    sends them: on any other character it failed every request with a bare
    ``UnicodeEncodeError``."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    try:
        unquote(parts.username or "").encode("latin-1")
        unquote(parts.password or "").encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _on_time(*, total: float | None, sock_connect: float | None = None) -> aiohttp.ClientTimeout:
    """A limit that fires when it is due: by default aiohttp rounds one of 5 s or
    more up to the next whole second of its clock, so ``timeout=6.2`` fired at 7 s
    (httpx: at 6.2 s), past a generation's one absolute deadline."""
    return aiohttp.ClientTimeout(total=total, sock_connect=sock_connect, ceil_threshold=math.inf)


def _decoding(answer: aiohttp.ClientResponse) -> ContentDecoder | None:
    """What undoes ``answer``'s Content-Encoding, read from each of its lines (see
    :mod:`flowith_proto.codings`: aiohttp, left to decode, undid a single coding
    only, on one line of several, and refused a few bytes after a gzip stream).
    A transfer coding other than ``chunked`` is refused, as httpx refuses it
    (aiohttp passes the body on still encoded)."""
    # Every line: aiohttp's parser acts on one of several, and a second one
    # ("chunked", then "gzip") left the chunks' framing in the body.
    transfer = ", ".join(answer.headers.getall("Transfer-Encoding", ()))
    if transfer and [c.strip().lower() for c in transfer.split(",")] != ["chunked"]:
        raise ConnectionFailedError(
            f"malformed answer: Transfer-Encoding {one_line(transfer)!r}: only chunked, "
            "given once, is supported"
        )
    return content_decoder(answer.headers.getall("Content-Encoding", ()))


class _Body:
    """A streaming response body read chunk by chunk under a deadline, and
    decoded by the core (see :func:`_decoding`).

    A read that runs out of time leaves aiohttp's buffer intact, so the
    connection stays usable for the next reader.
    """

    __slots__ = ("_decoding", "_ended", "_release", "_response")

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        decoding: ContentDecoder | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._response = response
        self._decoding = decoding
        self._ended = False
        self._release = release  # gives the stream's turn back

    async def read(self, deadline: float | None) -> bytes | None:
        decoding = self._decoding
        if decoding is None:
            return await self._read(deadline)
        try:
            # A piece at a time: what one read of the connection holds may inflate
            # to gigabytes (aiohttp's own decoding, turned off, read in pieces too).
            while not (piece := decoding.read()):
                if self._ended:
                    return b""
                chunk = await self._read(deadline)
                if chunk is None:
                    return None
                if chunk:
                    decoding.feed(chunk)
                else:
                    self._ended = True
                    decoding.end()
        except ContentDecodingError as exc:
            raise broken_stream(exc) from exc
        return piece

    async def _read(self, deadline: float | None) -> bytes | None:
        content = self._response.content
        try:
            if deadline is None:
                return await content.readany()
            return await _before(deadline, content.readany())
        except asyncio.TimeoutError:
            return None
        except aiohttp.ClientError as exc:
            _clear_credentials(exc)
            raise ConnectionFailedError(f"stream broke: {_said(exc)}") from exc
        except RuntimeError as exc:
            # What aiohttp raises for a read of a body whose connection its session
            # closed (the client closing as a download reads): the connection is gone.
            if not str(exc).startswith("Connection closed"):
                raise
            raise ConnectionFailedError("stream broke: the connection was closed") from exc

    async def aclose(self) -> None:
        try:
            self._response.close()
        finally:
            if self._release is not None:
                self._release()


async def _cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> asyncio.CancelledError | None:
    """Cancel ``tasks`` and wait until each has ended; return a cancellation of the
    caller that came meanwhile rather than raise it. Waiting with ``gather`` let a
    repeated cancellation (anyio delivers its scope's at every step) out as a task's
    own bare ``CancelledError``, which anyio's scope did not take for its own: the
    cancellation escaped ``move_on_after`` and cancelled the caller's whole task."""
    for task in tasks:
        task.cancel()
    cancelled: asyncio.CancelledError | None = None
    # Looked at afresh each time: a wait cancelled again before its callbacks ran
    # would otherwise wait anew for tasks long done, for ever.
    while pending := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    return cancelled


def _new_socket(
    made: weakref.WeakSet[socket.socket], address: aiohttp.AddrInfoType
) -> socket.socket:
    """A socket for a session's connector, as aiohttp makes one, kept track of in ``made``."""
    family, kind, protocol, _, _ = address
    new = socket.socket(family=family, type=kind, proto=protocol)
    made.add(new)
    return new


class FlowithClient(FlowithClientBase):
    """Async Flowith client on aiohttp (asyncio).

    ``http_client`` lets you bring your own ``aiohttp.ClientSession``; the
    client then never closes it, and since it cannot trace that session's
    connections, a write that timed out is never retried (it may have left).
    Otherwise one is created on first use, with TLS verification on (the
    system's trust store, where httpx uses certifi's); ``proxy`` applies to every
    request, and without it the environment's ``HTTP_PROXY``/``HTTPS_PROXY``/
    ``NO_PROXY`` do, read as httpx reads them. As on httpx, at most 16 short
    requests are out at once on it; more wait their turn, within their timeout
    (one that times out waiting says it was never sent). Event streams,
    downloads and uploads, which hold a connection for long, wait for one of 64
    turns of their own instead.
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
        http_client: aiohttp.ClientSession | None = None,
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
        environment = urllib.request.getproxies() if http_client is None else {}
        if proxy is not None:
            proxy = lower_scheme(proxy)
        refused = refused_setting(proxy, environment)
        if proxy is not None and not proxy.startswith(("http://", "https://")):
            # Refused here, as httpx refuses it: aiohttp would send a SOCKS or
            # schemeless proxy plain HTTP proxy requests.
            refused = "proxy"
        if refused == "proxy":
            raise ValueError(
                "proxy must be an http:// or https:// URL with a valid host and port: this "
                "transport speaks HTTP proxies only (the httpx transport, with socksio "
                "installed, speaks SOCKS)"
            )
        if refused == "environment":
            raise ValueError(  # quoting nothing: a proxy URL may hold a password
                "a proxy setting in the environment (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) "
                "is no URL with a valid host and port"
            )
        in_use = (
            [proxy]
            if proxy is not None
            else [url for scheme, url in environment.items() if scheme in ("http", "https", "all")]
        )
        if not all(_latin1_credentials(url) for url in in_use if url):
            raise ValueError(  # quoting nothing: the password is the trouble
                "the proxy's user name or password holds a character aiohttp cannot send "
                "(it sends them in Latin-1): use the httpx transport, which sends UTF-8"
            )
        self._owns_http = http_client is None
        # On our own session: short requests, and long ones (streams, downloads,
        # uploads), each out at once up to their number, as on httpx; together fewer
        # than the pool's connections, so that none waits inside it behind the others.
        self._short_turns = _Turns(REQUESTS_AT_ONCE)
        self._long_turns = _Turns(LONG_REQUESTS_AT_ONCE)
        self._shielded_tasks: set[asyncio.Future[Any]] = set()
        # The sockets of our session's connections (see _close_transport).
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._http = http_client
        self._proxy = proxy
        # Without proxy=, the environment's proxies apply to the client's own session,
        # as httpx applies them, read once here as httpx reads them when a client is
        # made (aiohttp's trust_env would read the environment, and ~/.netrc, on
        # every request). A session you bring keeps its own settings.
        self._environment = (
            EnvironmentProxies(environment) if self._owns_http and proxy is None else None
        )

    def _session(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be born inside a running loop.
        if self._http is None:
            if self._closed:  # a session made now would never be closed
                raise ClientStateError("the client is closed")
            session = aiohttp.ClientSession(
                # Not a method of the client: the event loop holds the connector while
                # a socket is open, and a client dropped unclosed must still be freed
                # (and warn) rather than live on with its streams.
                connector=aiohttp.TCPConnector(
                    socket_factory=functools.partial(_new_socket, self._sockets)
                ),
                trace_configs=[_progress_tracing()],
                # What httpx does, so that swapping transports changes nothing: cookies of
                # an IP-address host are kept, and headers as long as httpcore reads.
                cookie_jar=CookieJar(unsafe=True, quote_cookie=False),
                max_line_size=_HEADER_LIMIT,
                max_field_size=_HEADER_LIMIT,
                **_HEADER_LINES,
            )
            # aiohttp resends an idempotent request once when its connection drops,
            # on top of the client's own retries: max_retries would not mean the same.
            if hasattr(session, "_retry_connection"):  # aiohttp 3.11 and later
                session._retry_connection = False
            self._http = session
        return self._http

    def _proxy_for(self, url: URL) -> str | None:
        """``proxy=``, else the environment's proxy for the URL (see
        :mod:`flowith_proto.proxies`), by its host's ASCII name (``NO_PROXY`` holds
        ``xn--bcher-kva.example``, where yarl's ``host`` is ``bücher.example``)."""
        if self._environment is None:
            return self._proxy
        return self._environment.for_url(url.scheme, url.raw_host or "", url.port)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(deadline - self._now(), 0.0))

    def _new_signal(self) -> Signal:
        return _Signal()

    async def _send(
        self, request: Request, timeout: float | None, deadline: float | None, operation: str
    ) -> Response:
        limit = self._request_limit(timeout, deadline)
        progress = RequestProgress()
        async with self._wired(request) as (body, headers), self._turn(body, limit) as left:
            try:
                answer, hops = await self._followed(
                    request, body, headers, _on_time(total=left), progress
                )
                async with answer:  # released, and its body's writer done, however it ends
                    whole = WholeAnswer(_decoding(answer), answer.status, request.endpoint)
                    try:
                        async for data in answer.content.iter_any():
                            whole.feed(data)
                    except aiohttp.ClientError as exc:
                        raise _transport_error(exc) from exc
                    return Response(answer.status, _headers(answer, hops), whole.content())
            except asyncio.TimeoutError as exc:
                raise progress.timed_out(limit) from exc
            except aiohttp.ClientError as exc:
                raise _transport_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _turn(
        self, body: bytes | AsyncIterator[bytes] | None, limit: float
    ) -> AsyncIterator[float]:
        """Wait for a turn on the client's own session, as the httpx transport waits
        (a short request's on its lanes, an upload's on its main client); yield the
        seconds left of ``limit``. (A session you bring keeps its own limits.)"""
        if not self._owns_http:
            yield limit
            return
        short = body is None or isinstance(body, bytes)
        turns = self._short_turns if short else self._long_turns
        release, left = await turns.take(limit)
        try:
            yield left
        finally:
            release()

    def _request(
        self,
        request: Request,
        url: URL,
        body: bytes | AsyncIterator[bytes] | None,
        headers: Sequence[tuple[str, str]],
        timeout: aiohttp.ClientTimeout,
        progress: RequestProgress | None = None,
        *,
        follow: bool = False,
    ) -> Any:
        """The core's request, unchanged but for its ``url`` (a redirect's), as an
        aiohttp request, with the body and headers :meth:`_wired` gave, that aiohttp
        lets ``follow`` redirects (see :meth:`_followed`); ``progress`` learns
        whether it ever had a connection."""
        return self._session().request(
            request.method,
            url,
            headers=list(headers),
            data=body,
            skip_auto_headers=_NO_AUTO_HEADERS if body is None else None,
            proxy=self._proxy_for(url),
            timeout=timeout,
            allow_redirects=follow,
            # aiohttp gives up at its max_redirects-th redirect, not after that many.
            max_redirects=_MAX_REDIRECTS + 1,
            auto_decompress=False,  # decoded by flowith_proto.codings, as on every transport
            trace_request_ctx=progress,
        )

    async def _followed(
        self,
        request: Request,
        body: bytes | AsyncIterator[bytes] | None,
        headers: Sequence[tuple[str, str]],
        timeout: aiohttp.ClientTimeout,
        progress: RequestProgress | None = None,
    ) -> tuple[aiohttp.ClientResponse, list[aiohttp.ClientResponse]]:
        """The answer to ``request``, and the redirects followed to it (a download
        follows up to :data:`_MAX_REDIRECTS`; nothing else follows any), one hop at a
        time: aiohttp, left to follow them, kept the first hop's proxy for all (httpx
        picks each hop's), and dropped the bytes of a ``Location`` that is not UTF-8,
        fetching another path.

        A session you bring follows them itself, by its own rules: it adds its
        default headers (``Authorization``, ``Cookie``) to every request it sends,
        and only its own following drops them on a hop to another origin."""
        url = URL(request.url, encoded=True)
        if not self._owns_http:
            answer = await self._request(
                request, url, body, headers, timeout, progress, follow=request.follow_redirects
            )
            return answer, list(answer.history)
        hops: list[aiohttp.ClientResponse] = []
        while True:
            answer = await self._request(request, url, body, headers, timeout, progress)
            try:
                target = _redirect_target(answer) if request.follow_redirects else None
            except BaseException:
                answer.release()
                raise
            if target is None:
                return answer, hops
            answer.release()
            hops.append(answer)
            if len(hops) > _MAX_REDIRECTS:
                raise aiohttp.TooManyRedirects(hops[0].request_info, tuple(hops))
            url = target

    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        limit = left = self._request_limit(None, deadline)
        release: Callable[[], None] | None = None
        if self._owns_http:  # its turn comes back when its body is closed
            release, left = await self._long_turns.take(limit)
        try:
            try:
                # Reaching the headers is bounded; reads wait as long as the caller's
                # deadline. (A stream's request has no file to close.)
                body, headers = self._wire_body(request)
                answer, hops = await _before(
                    asyncio.get_running_loop().time() + left,
                    self._followed(request, body, headers, _on_time(total=None, sock_connect=left)),
                )
            except asyncio.TimeoutError as exc:
                raise TimeoutError(f"stream did not open within {limit:.3g}s") from exc
            except aiohttp.ClientError as exc:
                raise _transport_error(exc) from exc
            try:
                decoding = _decoding(answer)
            except BaseException:
                answer.close()
                raise
        except BaseException:
            if release is not None:
                release()
            raise
        return answer.status, _headers(answer, hops), _Body(answer, decoding, release)

    async def _race(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> T:
        tasks = [asyncio.ensure_future(job()) for job in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _cancel_all(tasks)
            raise  # the caller's own cancellation, which anyio's scope knows as its own
        again = await _cancel_all(tasks)
        if again is not None:
            raise again
        first = next(task for task in tasks if task in done)
        return first.result()

    async def _to_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    @contextlib.contextmanager
    def _cancellable(self) -> Iterator[Callable[[], None]]:
        # The task's own cancellation, taken back when it arrives. On Python 3.10,
        # which cannot count a task's cancellations, one from elsewhere arriving in
        # the same step as ours is taken with it (anyio's scopes have the same limit).
        task = asyncio.current_task()
        assert task is not None  # an aiohttp client runs in asyncio tasks
        cancelled = False

        def cancel() -> None:
            nonlocal cancelled
            # From the task itself (a hook inside the step) there is nothing to
            # interrupt: the run sees it is closed once the step returns, and a
            # cancel would fire at its caller's next await instead.
            if not cancelled and asyncio.current_task() is not task:
                cancelled = True
                task.cancel()

        taken_back = False
        try:
            yield cancel
        except asyncio.CancelledError:
            if not cancelled:
                raise
            if sys.version_info >= (3, 11):
                taken_back = True
                if task.uncancel() > 0:  # one from elsewhere too
                    raise
        finally:
            # The work may have caught ours and returned, or turned it into another
            # error: the task's count of cancellations must not keep it (a later
            # asyncio.timeout or TaskGroup in the task reads it).
            if cancelled and not taken_back and sys.version_info >= (3, 11):
                task.uncancel()

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, T]], *, hold: bool = True
    ) -> T:
        # A cancelled caller leaves at once, ``hold`` or not, as on httpx's asyncio
        # path; the work goes on in its own task, held here (the loop keeps only
        # weak references to tasks).
        task = asyncio.ensure_future(work())
        self._shielded_tasks.add(task)
        task.add_done_callback(self._shielded_tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(functools.partial(report_left_failure, work))
            raise

    def _event_loop(self) -> object:
        return asyncio.get_running_loop()

    def _trim_cookies(self, recent: Container[str]) -> None:
        if self._owns_http and self._http is not None and len(self._http.cookie_jar) > MAX_COOKIES:
            jar = self._http.cookie_jar
            excess = {id(morsel) for morsel in excess_cookies(list(jar), _cookie_name, recent)}
            jar.clear(lambda morsel: id(morsel) in excess)

    def _http_client_closed(self) -> bool:
        return self._http is not None and self._http.closed

    async def _close_transport(self) -> None:
        if self._owns_http and self._http is not None:
            # aiohttp closes a connection gracefully, after sending what it still
            # buffers, and its close() waits for that: a server that stopped reading
            # an upload held it (and aclose()) until the upload's own timeout, then
            # kept the socket open. Shut down first, the socket fails that write and
            # its transport closes it.
            for left in list(self._sockets):
                if left.fileno() != -1:
                    with contextlib.suppress(OSError):
                        left.shutdown(socket.SHUT_RDWR)
            await self._http.close()
