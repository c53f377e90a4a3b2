"""The async client every transport shares: public methods, driver, shared stream.

Like ``gidgethub.abc``, this layer holds all the async logic once, in terms of
a handful of abstract hooks that a transport implements in a few dozen lines
(send a request, open a byte stream, read the clock, sleep, make a wake-up
signal). It imports no event loop library: the hooks bring asyncio, trio or
aiohttp along. Every protocol decision stays in the operations of
``flowith_proto``; this module only performs their effects.

The shared stream needs a reader, yet a client may be used without
``async with`` (and so without a task group) on trio. The waiting generations
therefore take turns: whoever waits while nobody reads becomes the reader,
routes every event to its node's queue, wakes the nodes that got one, and
hands the role over when its own event arrives.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import copy
import errno
import functools
import inspect
import math
import os
import random
import stat
import time
import types
import uuid
import warnings
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Generic, TypeVar, overload

import attrs

from flowith_proto import logs, queries
from flowith_proto import media as media_ops
from flowith_proto import uploads as upload_ops
from flowith_proto.api import WebAppMethods
from flowith_proto.arguments import (
    require_callable,
    require_count,
    require_option,
    require_path,
)
from flowith_proto.auth import Credentials
from flowith_proto.codings import ACCEPT_ENCODING, ContentDecodingError
from flowith_proto.config import (
    DEFAULT_EDGE_URL,
    DEFAULT_SUPABASE_KEY,
    DEFAULT_SUPABASE_URL,
    DEFAULT_TIMEOUT,
    EdgeAuth,
    FlowithConfig,
    check_seconds,
)
from flowith_proto.effects import (
    Alias,
    Effect,
    Emit,
    Jitter,
    NewId,
    NextEvent,
    Now,
    Operation,
    RefreshToken,
    Send,
    Sleep,
    Subscribe,
    WallClock,
)
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ClientStateError,
    ConnectionFailedError,
    FileUploadError,
    FlowithError,
    ResponseDecodeError,
    SecretText,
    TimeoutError,
    error_from_response,
    hide_secrets_of,
    is_expired_token_error,
    redact,
    scrub,
    undecodable_body,
    url_secrets,
)
from flowith_proto.files import download_request, numbered_name, safe_filename, target_inside
from flowith_proto.generation import Conversation
from flowith_proto.generation import generate as generate_op
from flowith_proto.generation import send as send_op
from flowith_proto.hub import ByteStream, Signal, StreamHub
from flowith_proto.models import (
    AspectRatio,
    AuthSession,
    FileRecord,
    GenerationOutput,
    ImageModel,
    ImageOutput,
    VideoModel,
    VideoOutput,
)
from flowith_proto.recording import Recorder
from flowith_proto.request import (
    MultipartForm,
    Request,
    Response,
    WireHeaders,
    first_header,
    require_uuid,
)
from flowith_proto.retry import RetryPolicy, doubled
from flowith_proto.silence import DEFAULT_STREAM_IDLE_TIMEOUT, SilenceWatchdog
from flowith_proto.sse import SSEDecoder
from flowith_proto.state import ClientState
from flowith_proto.stream import listener_payloads

__all__ = [
    "ByteStream",
    "ConversationSession",
    "FlowithClientBase",
    "OperationRun",
    "Signal",
    "TokenCallback",
]

# ByteStream and Signal are what a transport's hooks return; they live with the
# stream hub that consumes them.

log = logs.logger("flowith.client")


@attrs.define
class _TokenCallback:
    """A call of ``on_token_refresh`` in progress. A task the callback starts copies
    the context, and with it this object: it learns the callback ended too."""

    running: bool = True


#: Set while ``on_token_refresh`` runs: an ``aclose()`` or ``logout()`` it makes (or a
#: task it starts makes, while it runs) does not wait for that callback to end, since
#: it would wait for itself.
_HANDING_ON_TOKENS: contextvars.ContextVar[_TokenCallback | None] = contextvars.ContextVar(
    "flowith_handing_on_tokens", default=None
)


def _in_token_callback() -> bool:
    """Whether this code runs in ``on_token_refresh``, or in a task it started, while
    that callback still runs."""
    callback = _HANDING_ON_TOKENS.get()
    return callback is not None and callback.running


#: One DEBUG record per request: its method and path (no query), status and time.
_http_log = logs.logger("flowith.http")

T = TypeVar("T")
R = TypeVar("R")

#: Seconds an upload may take at least (a large file needs more than a request).
_UPLOAD_TIMEOUT = 120.0
#: Bytes read from a file per step of an upload.
_UPLOAD_CHUNK = 1024 * 1024
#: Bytes of an error answer on a stream request read before giving up on it.
_STREAM_ERROR_BODY_LIMIT = 64 * 1024


#: Called with the new access and refresh tokens after every refresh, so an
#: application can persist them (refresh tokens are single-use).
TokenCallback = Callable[[str, str], "Awaitable[None] | None"]


@attrs.define(eq=False)  # one flight is itself, whatever its fields
class _Flight:
    """A refresh in progress, which other callers wait for.

    ``done`` is set once its outcome (``session`` or ``error``) is known,
    ``finished`` once the new tokens were handed to ``on_token_refresh`` too.
    """

    done: Signal
    finished: Signal
    refresh_token: str = attrs.field(repr=False)  # a repr is shown with a traceback's locals
    #: The flight before this one, whose tokens reach ``on_token_refresh`` first.
    previous: _Flight | None = None
    #: The caller that started it still waits for it, and raises its failure itself.
    caller_waiting: bool = False
    #: It renews the client's own refresh token (not one passed to a call): its
    #: failure is that of every call waiting for it.
    own: bool = True
    error: FlowithError | None = None
    session: AuthSession | None = None
    #: What interrupted the refresh (not a FlowithError): its starter raises it.
    interruption: BaseException | None = None


def _fresh(error: FlowithError) -> FlowithError:
    """A copy of ``error`` for one more caller to raise: one object raised in
    several tasks would gather all their tracebacks and keep their frames alive.
    It keeps ``error``'s cause and context, and is raised without ``from``: raised
    from ``error``, a traceback showed the same error twice."""
    try:
        copied = copy.copy(error)
    except Exception:  # an error class that cannot be rebuilt from its args
        return error
    copied.__cause__ = error.__cause__
    copied.__context__ = error.__context__
    copied.__suppress_context__ = error.__suppress_context__
    return copied.with_traceback(None)


def _create_binary(path: Path) -> BinaryIO:
    return open(path, "xb")


def _exists(target: Path) -> FileExistsError:
    """The refusal to replace ``target``; its ``filename`` lets a caller (the CLI)
    word it in its own terms."""
    # Built as the OS builds its own (errno, text, filename): a filename set afterwards
    # turned str(error) into "[Errno None] None: '...'".
    reason = "the file exists; pass overwrite=True to replace it"
    return FileExistsError(errno.EEXIST, reason, str(target))


#: How many numbered names (``image-1.png`` ...) a download tries before it gives up.
_NUMBERED_NAMES = 1000


def _publish(partial: Path, target: Path, overwrite: bool, numbered: bool) -> Path:
    """Move a finished download into place and return where it went. Without
    ``overwrite`` a hard link makes "create only if absent" atomic, so a racing
    writer is not clobbered; with ``numbered`` a taken name gives way to the first
    free ``name-N.ext``, else it is :class:`FileExistsError`."""
    if overwrite:
        os.replace(partial, target)
        return target
    for number in range(_NUMBERED_NAMES if numbered else 1):
        candidate = target.with_name(numbered_name(target.name, number)) if number else target
        try:
            os.link(partial, candidate)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network or FAT file systems)
            if os.path.lexists(candidate):
                continue
            os.replace(partial, candidate)
            return candidate
        # (Gone already if a cancelled caller removed it: see _Publishing.)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        return candidate
    raise _exists(target)


class _Publishing:
    """A finished download moved into place in a worker thread, which its caller may
    leave (cancelled) before or after the move: a download the caller was told is
    cancelled must leave no new file. A thread aiohttp's executor runs goes on
    without its caller, and anyio's holds the caller but loses the path it made.

    Whichever of the two sees the other's mark removes the new file, and only one
    does: each takes it out of ``_made`` (``list.pop()`` is atomic), so no file put
    there meanwhile by someone else is removed. A file ``overwrite`` replaced is
    left: the old one is gone either way, and the new one is complete.
    """

    def __init__(self, partial: Path, target: Path, *, overwrite: bool, numbered: bool) -> None:
        self._args = (partial, target, overwrite, numbered)
        self._made: list[Path] = []  # the new file, until removed
        self._abandoned: list[bool] = []

    def publish(self) -> Path:
        """Move the file into place (in the worker thread)."""
        made = _publish(*self._args)
        if not self._args[2]:  # not overwrite: a new name, removed if abandoned
            self._made.append(made)
            if self._abandoned:  # the caller left while the file was moved
                self._remove()
        return made

    def abandon(self) -> None:
        """The caller left (in the event loop's thread)."""
        self._abandoned.append(True)
        self._remove()

    def _remove(self) -> None:
        try:
            made = self._made.pop()
        except IndexError:
            return  # not moved yet, or the other side removed it
        with contextlib.suppress(OSError):
            os.unlink(made)


def _upload_size(path: str) -> int:
    """The size of the regular file ``path`` after checking that it opens: a folder
    or an unreadable file found only once the upload was on the wire failed with a
    different error on each transport. (Not a pipe or a device: opening a FIFO
    waits for a writer, and the form needs a size up front.) What is wrong is the
    :class:`OSError` of reading it (``FileNotFoundError``...), as the original
    client's ``Path.read_bytes()`` raised."""
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file to upload", path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (an upload is read from a file)", path)
    with open(path, "rb"):
        return info.st_size


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")


class FlowithClientBase(WebAppMethods):
    """What every transport's ``FlowithClient`` is: the public API, once.

    A transport subclasses it and implements the abstract hooks; see
    ``flowith_httpx.FlowithClient`` and ``flowith_aiohttp.FlowithClient``.
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
    ) -> None:
        check_seconds("timeout", timeout)
        require_count(max_retries, "max_retries")
        check_seconds("result_timeout", result_timeout, endless=True)
        check_seconds("poll_interval", poll_interval)
        if on_token_refresh is not None:  # else found out at the first refresh, too late
            require_callable(on_token_refresh, "on_token_refresh")
        if record_to is not None:
            require_path(record_to, "record_to")
        # None (or infinity): no watchdog.
        check_seconds("stream_idle_timeout", stream_idle_timeout, endless=True)
        if user_id is None:  # an unset os.environ.get(...): the token's, as ""
            user_id = ""
        elif user_id != "":  # else the token's: checked at the first call that needs it
            user_id = require_uuid(user_id, "user_id")
        self._state = ClientState(
            config=FlowithConfig(
                edge_url=edge_url,
                supabase_url=supabase_url,
                supabase_key=supabase_key,
                edge_auth=edge_auth,
            ),
            credentials=Credentials.from_tokens(
                token, refresh_token=refresh_token, user_id=user_id
            ),
            result_timeout=result_timeout,
            poll_interval=poll_interval,
            retry=RetryPolicy(max_retries=max_retries),
        )
        hide_secrets_of(self._state)
        #: Seconds one HTTP request may take (connect, read and total).
        self.timeout = timeout
        #: Seconds of silence (not even a heartbeat) after which a live stream's
        #: connection is taken for dead (see :mod:`flowith_proto.silence`).
        self.stream_idle_timeout = None if stream_idle_timeout == math.inf else stream_idle_timeout
        self._on_token_refresh = on_token_refresh
        self._refreshing: _Flight | None = None
        self._last_flight: _Flight | None = None  # the latest refresh, done or not
        #: The client's own refresh token the auth server refused, and its refusal:
        #: a 401 finding that token still held raises it rather than send it again.
        self._refused: tuple[str, AuthenticationError] | None = None
        #: Refreshes whose tokens are not yet adopted and handed on: aclose() waits.
        self._flying: set[_Flight] = set()
        self._hub = StreamHub(self._open_channel, self._new_signal, self._now, self._race)
        self._closed = False
        #: Set once the closing aclose() began is done: a second aclose() waits for it.
        self._closing_done: Signal | None = None
        self._entered = False  # by an ``async with`` block (see __aenter__)
        #: What identifies the event loop the client first ran in (see _other_loop).
        self._loop: object | None = None
        #: The bodies of listeners and downloads in progress, which aclose() ends.
        self._open_bodies: set[ByteStream] = set()
        #: The stop buttons of listeners waiting to reopen their streams: aclose() ends them.
        self._reopen_waits: set[Callable[[], None]] = set()
        self._walks = weakref.WeakSet()
        credentials = self._state.credentials
        #: Writes a cassette of the session when ``record_to`` is given.
        # The cassette is opened at first use (see _recorder): a transport's own checks
        # come after this constructor, and one refusing its arguments must not have
        # emptied an existing cassette already.
        if record_to is not None and os.path.isdir(record_to):
            # Found only at the first call, as a bare IsADirectoryError, and again at
            # every call and at aclose().
            raise ValueError(f"record_to names a folder, not a cassette file: {record_to!r}")
        self._recording: Recorder | None = None
        # An error left the 'async with' block: the recording is not made the cassette.
        self._session_failed = False
        self._start_recording: Callable[[], Recorder] | None = (
            None
            if record_to is None
            else functools.partial(
                Recorder,
                record_to,
                user_id=credentials.user_id,
                access_token=credentials.access_token,
                has_refresh_token=bool(credentials.refresh_token),
                edge_url=self._state.config.edge_url,
                supabase_url=self._state.config.supabase_url,
                secrets=self._secrets,
                settings={
                    "timeout": timeout,
                    "result_timeout": result_timeout,
                    "poll_interval": poll_interval,
                    "max_retries": max_retries,
                },
            )
        )

    @property
    def _recorder(self) -> Recorder | None:
        """The cassette being written with ``record_to``, opened at first use."""
        if self._start_recording is not None:
            self._recording, self._start_recording = self._start_recording(), None
        return self._recording

    # -- hooks a transport implements --------------------------------------

    @abc.abstractmethod
    def _now(self) -> float:
        """The event loop's monotonic clock, in seconds."""

    @abc.abstractmethod
    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until the monotonic time ``deadline``."""

    @abc.abstractmethod
    def _new_signal(self) -> Signal:
        """A fresh one-shot wake-up signal."""

    @abc.abstractmethod
    async def _send(
        self, request: Request, timeout: float | None, deadline: float | None, operation: str
    ) -> Response:
        """Send ``request`` as it is and return the whole answer.

        The exchange is bounded by ``timeout`` (else :attr:`timeout`) and by
        ``deadline``;
        transport failures become :class:`ConnectionFailedError` or
        :class:`TimeoutError`. ``operation`` names the operation sending it
        (see :meth:`_operation_name`): a replay answers from what that
        operation was answered; a network transport ignores it."""

    @abc.abstractmethod
    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        """Send a streaming request; return status, headers and the body stream
        once the headers have arrived."""

    @abc.abstractmethod
    async def _race(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> T:
        """Run ``jobs`` at once; return the first to finish's result (or raise its
        error) once the others are cancelled and done."""

    @abc.abstractmethod
    def _cancellable(self) -> contextlib.AbstractContextManager[Callable[[], None]]:
        """A block whose work the function it gives cancels from another task of the
        client's event loop (a stop button): the work stops at its next await and
        the block ends quietly. Until that function is called, a cancellation of
        the caller's own goes through untouched."""

    @abc.abstractmethod
    async def _to_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (file reads and writes) off the event loop."""

    @abc.abstractmethod
    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, T]], *, hold: bool = True
    ) -> T:
        """Run ``work`` to its end even if the caller is cancelled meanwhile (a
        token refresh: once its request went out, the answer must be adopted).

        Without ``hold`` a cancelled caller must leave at once, the work going on
        in a task of its own (a refresh takes up to ``timeout`` per attempt, and
        the caller's deadline must fire). With it, a transport that can may keep
        the caller until the work is done (trio's shielded scope: a close)."""

    @abc.abstractmethod
    async def _close_transport(self) -> None:
        """Release the HTTP client if the client owns it."""

    @abc.abstractmethod
    def _event_loop(self) -> object:
        """What identifies the event loop running the caller (asyncio's loop, trio's
        run): a client's connections, tasks and timers belong to one."""

    @abc.abstractmethod
    def _http_client_closed(self) -> bool:
        """Whether the HTTP client the transport sends with has been closed (one
        passed in, closed by its owner while this client still uses it)."""

    def _trim_cookies(self, recent: Container[str]) -> None:
        """Let a cookie jar the client owns go of the cookies
        :func:`~flowith_proto.state.excess_cookies` names (``recent``: the names
        the server set lately). A replay has no jar: no-op."""

    # -- the driver ----------------------------------------------------------

    async def _open_channel(self, channel: str, deadline: float | None) -> ByteStream:
        # _open_event_stream() checks the client is open (a generation that waited for
        # another's connect, say) and in its own event loop.
        return await self._open_live(functools.partial(self._live_request, channel), deadline)

    def _live_request(self, channel: str) -> Request:
        """The request for ``channel``, signed with the tokens held now."""
        endpoints = self._state.endpoints
        return endpoints.user_stream() if channel == "stream" else endpoints.user_sse()

    async def _open_live(
        self, build: Callable[[], Request], deadline: float | None, *, media_type: str | None = None
    ) -> ByteStream:
        """Open one of the user's event streams; a token found expired there is
        renewed and the stream opened again, once, as a request would be."""
        token = self._state.credentials.access_token
        try:
            return await self._open_event_stream(
                build(), deadline, media_type=media_type, live=True
            )
        except APIError as exc:
            if not (self._state.credentials.refresh_token and is_expired_token_error(exc)):
                raise
        await self._refresh_once(token, deadline)
        return await self._open_event_stream(build(), deadline, media_type=media_type, live=True)

    async def _open_retried(
        self,
        open_once: Callable[[], Awaitable[ByteStream]],
        request: Request,
        deadline: float | None,
    ) -> ByteStream:
        """``open_once()``, tried again after a failure the retry policy retries a
        request for (a 503, a 429, a connection that failed), within ``deadline``, as
        any other ``request`` is. For a download or a listener: the shared stream
        reconnects by its own rules. (A ``Retry-After`` given as a date is not read
        here, which needs the time of day: the policy's backoff applies.)"""
        policy = self._state.retry
        attempt = 0
        while True:
            try:
                return await open_once()
            except (APIError, ConnectionFailedError, TimeoutError) as error:
                if isinstance(error, ResponseDecodeError):  # it would come again
                    raise
                if isinstance(error, APIError):
                    status, asked = error.status_code, error.retry_after_s
                    if status is None:
                        raise
                    again = policy.next_try(request, attempt, status, asked)
                else:
                    again = policy.next_try(request, attempt, error)
                if again is None:
                    raise
                wait = again.seconds
                if wait is None:  # the jitter is recorded, as an operation's draw is
                    wait = policy.backoff(attempt, self._drawn("jitter", self._jitter(""), ""))
                until = self._now() + wait
                if deadline is not None and until >= deadline:
                    raise
                _http_log.debug("%s: trying again in %.3gs", request.endpoint, wait)
            await self._sleep_until(until)
            attempt += 1

    async def _open_event_stream(
        self,
        request: Request,
        deadline: float | None,
        *,
        media_type: str | None = None,
        live: bool = False,
    ) -> ByteStream:
        """Open a stream and judge its status like any other answer; with
        ``media_type``, a successful answer of another declared content type
        (an HTML page from a proxy, say) is a :class:`ResponseDecodeError`.
        A ``live`` stream (one of the user's event streams) is watched for
        silence, under the recorder so that a cassette holds the break."""
        self._check_open()
        recorder = self._recorder
        # A shared stream is no one operation's: recorded under no name.
        number = 0 if recorder is None else recorder.request(request, "")
        # Opening is bounded as a request is (see _exchange): by the caller's deadline
        # when that comes first, which a timeout then says.
        cut = deadline is not None and deadline - self._now() < self._own_limit(None)
        try:
            with self._transport_failures(number, cut=cut):
                status, headers, body = await self._open_stream(request, deadline)
        except FlowithError as exc:
            # Its text, not the error: a handler that keeps records (pytest's caplog, a
            # buffer) would keep the error's traceback, and with it the client, alive.
            _http_log.debug("%s (streamed): %s", request.endpoint, str(exc))
            raise
        _http_log.debug("%s (streamed): %d", request.endpoint, status)
        self._learn_cookies(headers)
        if live and self.stream_idle_timeout is not None:
            body = SilenceWatchdog(body, self._now, self.stream_idle_timeout)
        if recorder is not None:
            body = recorder.stream(number, status, headers, body, self._now)
        if 200 <= status < 300:
            declared = (first_header(headers, "content-type") or "").split(";")[0].strip().lower()
            if media_type is not None and declared and declared != media_type:
                await body.aclose()
                refused = ResponseDecodeError(
                    f"expected {media_type} from {request.endpoint}, got {declared}", status
                )
                refused.endpoint = request.endpoint  # as every error of an answer names it
                raise refused
            return body
        chunks: list[bytes] = []
        size = 0
        # Read within the client's timeout too: a call without a deadline (a save(), a
        # listener) would otherwise wait for ever on an error body that stalls. What
        # came by then is enough to say what went wrong.
        read_by = self._now() + self.timeout
        if deadline is not None:
            read_by = min(read_by, deadline)
        try:
            while size < _STREAM_ERROR_BODY_LIMIT:
                chunk = await body.read(read_by)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except ConnectionFailedError as exc:
            if not isinstance(exc.__cause__, ContentDecodingError):
                raise
            # An answer came, whose body cannot be decoded: as a request's would be,
            # it is that (not retried: it would come again), and keeps its status.
            raise undecodable_body(exc.__cause__, status, request.endpoint) from exc
        finally:
            await body.aclose()
        error = error_from_response(
            status,
            headers,
            b"".join(chunks),
            secrets=[*self._secrets, *url_secrets(request.url)],  # a download's signature
            endpoint=request.endpoint,
        )
        assert error is not None
        raise error

    def _own_limit(self, timeout: float | None) -> float:
        """Seconds one exchange may take before any deadline: ``timeout``, else the
        client's."""
        return self.timeout if timeout is None else timeout

    def _request_limit(self, timeout: float | None, deadline: float | None) -> float:
        """Seconds one exchange may take: the per-request ``timeout`` (else the
        client's), cut short by the caller's ``deadline``."""
        check_seconds("timeout", timeout)
        limit = self._own_limit(timeout)
        if deadline is not None:
            limit = min(limit, deadline - self._now())
        if limit <= 0:
            raise TimeoutError(
                "the deadline passed before the request could be sent",
                request_sent=False,
                deadline_passed=True,
            )
        return limit

    def _wire_body(
        self, request: Request
    ) -> tuple[bytes | AsyncIterator[bytes] | None, WireHeaders]:
        """The body as a transport sends it, and the headers it implies.

        A multipart form becomes a stream whose files are read in chunks off
        the event loop, so an upload never sits in memory whole; its exact
        length is announced so the server needs no chunked encoding. Every
        request asks for the codings :mod:`~flowith_proto.codings` undoes, which
        is where a transport's answers are decoded.
        """
        body = request.body
        headers = (*request.headers, ("Accept-Encoding", ACCEPT_ENCODING))
        if not isinstance(body, MultipartForm):
            return body, WireHeaders(headers)
        length = ("Content-Length", str(body.length))
        return self._stream_form(body), WireHeaders((*headers, length))

    async def _open_file(
        self, opener: Callable[[Any], BinaryIO], path: Any, *, created: bool = False
    ) -> BinaryIO:
        """``opener(path)`` off the event loop. A cancellation cannot stop the thread
        (asyncio's executor leaves it running, anyio's drops what it returns): the
        file it opens for a caller gone is closed, and one it ``created`` removed,
        rather than left to the collector and on disk.

        No lock: the thread notes the file, then looks whether the caller left; the
        caller notes that it left, then looks for a file. Whichever looks last sees
        the other's note (list appends are atomic), so one of them, or both (closing
        twice is harmless), lets the file go."""
        opened: list[BinaryIO] = []
        left: list[bool] = []

        def let_go(handle: BinaryIO) -> None:
            handle.close()
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(path)

        def open_it() -> BinaryIO:
            handle = opener(path)
            opened.append(handle)
            if left:
                let_go(handle)
            return handle

        try:
            return await self._to_thread(open_it)
        except BaseException:
            left.append(True)
            for handle in list(opened):  # opened, then its caller was cancelled
                let_go(handle)
            raise

    async def _stream_form(self, form: MultipartForm) -> AsyncIterator[bytes]:
        for segment in form.segments():
            if isinstance(segment, bytes):
                yield segment
            elif segment.data is not None:
                yield segment.data
            elif segment.path is not None:
                handle = await self._open_file(_open_binary, segment.path)
                try:
                    # The size announced, exactly: a file another process writes or
                    # truncates meanwhile made httpx fail with h11's own error, and
                    # aiohttp wait for an answer to a body that never ended.
                    left = segment.size
                    while left and (
                        chunk := await self._to_thread(handle.read, min(left, _UPLOAD_CHUNK))
                    ):
                        left -= len(chunk)
                        yield chunk
                    more = b"" if left else await self._to_thread(handle.read, 1)
                    if left or more:
                        ended = f"{segment.size - left}" if left else "more"
                        raise FileUploadError(
                            f"{segment.path!r} changed while it was being uploaded: it "
                            f"held {segment.size} bytes when the upload began, {ended} "
                            "when it ended",
                            status_code=None,
                        )
                finally:
                    # Not in a thread: closing must also work in a cancelled scope,
                    # and closing a file that was only read does not block.
                    handle.close()

    @contextlib.asynccontextmanager
    async def _wired(
        self, request: Request
    ) -> AsyncIterator[tuple[bytes | AsyncIterator[bytes] | None, WireHeaders]]:
        """:meth:`_wire_body` for one exchange: a file being uploaded is closed
        when the exchange ends, however it ends (not when the collector finds
        the abandoned stream, and without trio's warning about it)."""
        body, headers = self._wire_body(request)
        try:
            yield body, headers
        finally:
            # Still running means a task of the transport's own is sending it
            # (aiohttp's body writer): that task's cancellation closes it.
            if isinstance(body, types.AsyncGeneratorType) and not body.ag_running:
                await body.aclose()

    @property
    def _secrets(self) -> tuple[str, ...]:
        return self._state.secrets

    def _learn_cookies(self, headers: Sequence[tuple[str, str]]) -> None:
        """Hide the values of the cookies an answer sets, from now on and in this
        answer's own record (the transport keeps them and sends them back)."""
        new = self._state.learn_cookies(headers)
        if new and self._recorder is not None:
            self._recorder.learn(new)
        if any(name.lower() == "set-cookie" for name, _ in headers):
            self._trim_cookies(self._state.cookie_names)

    async def _perform(self, effect: Effect, run: OperationRun[Any]) -> Any:
        # Checked at every step, not only the first: an operation still running
        # when the client closes stops at its next step instead of going on alone.
        self._check_open()
        if isinstance(effect, NextEvent):
            return await self._hub.next_event(effect.node_id, effect.deadline)
        if isinstance(effect, Send):
            return await self._exchange(effect.request, effect.timeout, effect.deadline, run._name)
        if isinstance(effect, Now):
            return self._drawn("clock", self._operation_clock(run._name), run._name)
        if isinstance(effect, WallClock):
            return self._drawn("wallclock", self._wall_clock(run._name), run._name)
        if isinstance(effect, NewId):
            return self._drawn("id", self._new_id(run._name), run._name)
        if isinstance(effect, Jitter):
            return self._drawn("jitter", self._jitter(run._name), run._name)
        if isinstance(effect, RefreshToken):
            await self._refresh_once(effect.seen_token, effect.deadline)
            return None
        if isinstance(effect, Subscribe):
            run._subscribed.append(effect.node_id)
            await self._hub.subscribe(effect.node_id, effect.channels, effect.deadline)
            return None
        if isinstance(effect, Alias):
            self._hub.alias(effect.other_id, effect.node_id)
            return None
        if isinstance(effect, Sleep):
            await self._sleep_until(effect.until)
            return None
        raise TypeError(f"effect {effect!r} cannot be performed here")

    def _check_open(self, cause: BaseException | None = None) -> None:
        """Raise "the client is closed" once :meth:`aclose` ran (from ``cause``:
        a transport error that the closing itself brought about), and refuse a
        call from another event loop than the client's (see :meth:`_other_loop`)."""
        if self._closed:
            raise ClientStateError("the client is closed") from cause
        other = self._other_loop()
        if other is not None:
            raise other

    def _other_loop(self) -> ClientStateError | None:
        """The error of a call from another event loop than the one the client
        first ran in, else ``None``. Its connections, tasks and timers belong to that
        loop: from another one each library fails in its own way, deep inside
        (``Event loop is closed``, a lock bound to another loop), or worse, works once
        and then breaks the client for its own loop."""
        loop = self._event_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            return ClientStateError(
                "this client belongs to the event loop it first ran in (an asyncio.run() "
                "or trio.run() that has ended, or another thread's): make a client in each "
                "event loop, and close it there"
            )
        return None

    # -- what operations draw: overridable so a replay can hand back a recording --
    # ``operation`` is the drawing operation's name (see _operation_name).

    def _operation_name(self, operation: Operation[Any]) -> str:
        """The name a recording keeps ``operation``'s draws under ("" unrecorded)."""
        return "" if self._recorder is None else self._recorder.name(operation)

    def _operation_clock(self, operation: str) -> float:
        return self._now()

    def _wall_clock(self, operation: str) -> float:
        return time.time()

    def _new_id(self, operation: str) -> str:
        return str(uuid.uuid4())

    def _jitter(self, operation: str) -> float:
        return random.random()

    def _drawn(self, kind: str, value: T, operation: str) -> T:
        if self._recorder is not None:
            self._recorder.value(kind, value, operation)
        return value

    async def _exchange(
        self, request: Request, timeout: float | None, deadline: float | None, operation: str
    ) -> Response:
        """:meth:`_send`, recorded when the client records."""
        recorder = self._recorder
        number = recorder.request(request, operation) if recorder is not None else 0
        sent_at = self._now()
        cut = deadline is not None and deadline - sent_at < self._own_limit(timeout)
        try:
            with self._transport_failures(number, cut=cut):
                response = await self._send(request, timeout, deadline, operation)
        except FlowithError as exc:
            if isinstance(exc, APIError) and exc.endpoint is None:  # a replayed undecodable answer
                exc.endpoint = request.endpoint
            _http_log.debug("%s: %s", request.endpoint, str(exc))  # (see _open_event_stream)
            raise
        _http_log.debug(
            "%s: %d in %.0f ms", request.endpoint, response.status, (self._now() - sent_at) * 1000
        )
        self._learn_cookies(response.headers)
        if recorder is not None:
            recorder.response(number, response)
        return response

    @contextlib.contextmanager
    def _transport_failures(self, number: int, *, cut: bool = False) -> Iterator[None]:
        """Around request ``number``: its transport failure is recorded, and one
        that :meth:`aclose` brought about says "the client is closed". ``cut``: the
        caller's deadline set the request's limit, which its timeout then says."""
        try:
            yield
        except (ConnectionFailedError, TimeoutError, ResponseDecodeError) as exc:
            if isinstance(exc, TimeoutError):
                exc.deadline_passed = exc.deadline_passed or cut
            # (A transport's ResponseDecodeError: an answer whose body it could not decode.)
            # What a transport refused may echo a cookie the client holds: masked here,
            # as a download's or a stream's error is scrubbed by no operation.
            scrub(exc, self._state.secrets)
            if self._recorder is not None:
                self._recorder.error(number, exc)
            self._check_open(exc)  # cut short by aclose(), not by the network
            raise
        except RuntimeError as exc:  # httpx's and aiohttp's word for a closed client
            self._check_open(exc)
            if isinstance(exc, FlowithError) or not self._http_client_closed():
                raise
            # This client is open: the HTTP client it was given was closed under it.
            raise ClientStateError(
                f"the HTTP client cannot send ({exc}): an http_client passed in must stay "
                "open while this client uses it"
            ) from exc

    async def _refresh_once(self, seen_token: str, deadline: float | None = None) -> None:
        """Renew the tokens, unless that happened since ``seen_token`` was used;
        wait no later than ``deadline`` (the refresh goes on without this caller).

        Concurrent callers share one refresh: a refresh token works once, so
        a second refresh with it would fail and sign the user out. A refresh under
        way with another token (one passed to :meth:`refresh_access_token`) is
        waited for; if it fails, its failure is not this caller's, which renews
        with the client's own.
        """
        while (flight := self._refreshing) is not None:
            if self._state.credentials.access_token != seen_token:
                return
            await self._landed(flight, deadline)  # a refresh under way renews this token too
            # (Its own flag, not the token held now: a failed answer may have brought a
            # new refresh token, and every waiter would then refresh again, one by one.)
            if flight.error is not None and flight.own:
                raise _fresh(flight.error)
        if self._state.credentials.access_token != seen_token:
            return
        refresh_token = SecretText(self._state.credentials.refresh_token)
        if not refresh_token:
            raise AuthenticationError("the access token expired and there is no refresh token")
        if self._refused is not None and self._refused[0] == refresh_token:
            # The auth server said it will never renew this refresh token (spent,
            # revoked): sent again, it is refused again. A call whose 401 came after
            # that refresh ended gets its refusal, as the calls that waited for it did;
            # new tokens (or refresh_access_token(), which tries again) end this.
            raise _fresh(self._refused[1])
        await self._renew(refresh_token, deadline=deadline)

    def _window_end(self, timeout: float | None) -> float | None:
        """When a listening window of ``timeout`` seconds opened now ends (``None``:
        never). A replay, whose clock is the recorded operations', ends it where
        the recording shows it ended instead."""
        return None if timeout is None else self._now() + timeout

    async def _refreshes_settled(self, until: float | None = None) -> None:
        """Wait until every refresh under way has its outcome (its tokens adopted, or
        its failure) and has handed its tokens to ``on_token_refresh``, so that no
        callback stores tokens after a logout returned. From that callback, only
        for the outcome: its own end, and the next refresh's hand-on, which waits for
        it, would never come. The hand-on is waited for until ``until`` (the
        client's ``timeout`` from now, by default), as :meth:`aclose` waits: a
        callback that hangs must not hang the logout too."""
        while (flight := self._refreshing) is not None:
            await flight.done.wait(None)
        if _in_token_callback():
            return
        if until is None:
            until = self._now() + self.timeout
        for flight in list(self._flying):
            if not await flight.finished.wait(until):
                log.warning("on_token_refresh still runs: the logout goes on without it")
                return

    async def _landed(self, flight: _Flight, deadline: float | None) -> None:
        """Wait for ``flight``'s outcome, no later than ``deadline``."""
        if not await flight.done.wait(deadline):
            raise TimeoutError(
                "the call's deadline passed while the token was being refreshed (the "
                "refresh goes on, and its tokens are adopted when it ends)",
                request_sent=False,
                deadline_passed=True,
            )

    async def _renew(
        self, refresh_token: str, timeout: float | None = None, *, deadline: float | None = None
    ) -> AuthSession:
        """Trade ``refresh_token`` for new tokens, adopt them and hand them to
        ``on_token_refresh``; other callers wait for this one refresh.

        A refresh already in flight with the same token is joined rather than
        repeated (the token works once: a second use is refused, and may end
        the session); one with another token is waited for first. The refresh
        runs shielded, each attempt within ``timeout`` (the client's by default)
        and the waits between them too: the server spends the token when it
        answers, so a caller cancelled meanwhile, or whose ``deadline`` passes,
        must not leave the client holding the spent one.
        """
        check_seconds("timeout", timeout)
        if refresh_token not in self._state.credentials.secrets:
            # One passed to this call: hidden like a held one, in the cassette too
            # (its request and any error answer quoting it), and afterwards.
            self._state.retire([refresh_token])
            if self._recorder is not None:
                self._recorder.learn([refresh_token])
        while (flight := self._refreshing) is not None:
            await self._landed(flight, deadline)
            if flight.refresh_token == refresh_token:
                break
        else:
            flight = self._refreshing = _Flight(
                self._new_signal(),
                self._new_signal(),
                refresh_token,
                self._last_flight,
                own=refresh_token == self._state.credentials.refresh_token,
            )
            self._last_flight = flight
            self._flying.add(flight)
            work = functools.partial(self._refresh_tokens, flight, timeout)
            flight.caller_waiting = True
            try:
                # From on_token_refresh (a call of it that found the token expired), the
                # new tokens are handed on only after that callback returns: waiting for
                # that here would wait for ever. This call goes on once they are adopted.
                if deadline is None and not _in_token_callback():
                    await self._shielded(work, hold=False)
                else:  # whichever ends first: the refresh, or this caller's wait for it
                    await self._race(
                        [
                            functools.partial(self._shielded, work, hold=False),
                            functools.partial(self._landed, flight, deadline),
                        ]
                    )
            except BaseException:
                # Cancelled, or its deadline passed: the refresh goes on, and tells the
                # transport (which logs it) how it failed, if it does.
                flight.caller_waiting = False
                raise
            if isinstance(flight.interruption, Exception):  # the wait for it won the race
                raise flight.interruption
        if flight.error is not None:
            raise _fresh(flight.error)
        assert flight.session is not None  # _fly() leaves one or the other
        return flight.session

    async def _refresh_tokens(self, flight: _Flight, timeout: float | None) -> None:
        """:meth:`_fly`; if the refresh failed and the caller who started it left
        (cancelled, or its deadline passed), its failure is raised to the transport,
        which logs it: the server may have spent the refresh token, and that must not
        pass unsaid. A caller still waiting raises it itself."""
        await self._fly(flight, timeout)
        if flight.error is not None and not flight.caller_waiting:
            raise flight.error

    async def _fly(self, flight: _Flight, timeout: float | None) -> None:
        """One refresh, from its request to the new tokens adopted and handed
        to ``on_token_refresh``; the outcome goes in ``flight``. Its waits
        between attempts end within ``timeout`` (the client's by default)."""
        budget = self.timeout if timeout is None else timeout
        held = self._state.credentials.refresh_token  # (a refresh token passed in may differ)
        try:
            try:
                flight.session = await self._run(
                    queries.refresh(
                        self._state, flight.refresh_token, timeout=timeout, budget=budget
                    )
                )
            except FlowithError as exc:
                flight.error = exc
                if (
                    flight.own
                    and isinstance(exc, AuthenticationError)
                    and queries.refresh_token_refused(exc)
                ):
                    self._refused = (flight.refresh_token, exc)
            except BaseException as exc:
                # Interrupted (or a bug): whoever waits learns it, and nobody sends
                # this refresh token again (the server may have spent it).
                flight.error = FlowithError(
                    f"the token refresh was interrupted ({type(exc).__name__}); its refresh "
                    "token may be spent"
                )
                flight.error.__cause__ = exc
                flight.interruption = exc
                raise
            finally:
                self._refreshing = None
                flight.done.set()
            if flight.session is not None:
                self._adopted(flight.session)
                handed = flight.session
            else:
                # A failed answer may still have brought a new refresh token (see
                # queries.refresh): the one sent is spent, so it must be saved.
                kept = self._state.credentials
                if kept.refresh_token in ("", held, flight.refresh_token):
                    return
                handed = AuthSession(
                    access_token=kept.access_token, refresh_token=kept.refresh_token
                )
                log.warning("the token refresh failed; the new refresh token it brought is kept")
                if self._recorder is not None:
                    self._recorder.learn(self._state.secrets)
            if self._on_token_refresh is not None:
                if flight.previous is not None:  # its tokens go first: these replace them
                    await flight.previous.finished.wait(None)
                await self._hand_on(handed)
        finally:
            flight.previous = None  # no chain of every flight
            self._flying.discard(flight)
            flight.finished.set()

    def _adopted(self, session: AuthSession) -> None:
        log.info("access token refreshed")
        if self._recorder is not None:
            self._recorder.learn(self._state.secrets)

    async def _hand_on(self, session: AuthSession) -> None:
        """Give the new tokens to ``on_token_refresh``; its failure is logged."""
        assert self._on_token_refresh is not None
        callback = _TokenCallback()
        handing_on = _HANDING_ON_TOKENS.set(callback)
        try:
            outcome = self._on_token_refresh(session.access_token, session.refresh_token)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:
            # Not log.exception: the error's message, repeated in its traceback,
            # may quote the tokens the callback was handed.
            log.error(
                "on_token_refresh failed (%s: %s); the new tokens are in use anyway",
                type(error).__name__,
                redact(str(error), self._state.secrets),
            )
        finally:
            callback.running = False
            _HANDING_ON_TOKENS.reset(handing_on)

    async def _run(self, operation: Operation[T]) -> T:
        """Run an operation that emits nothing; return its result."""
        # Never handed out, so never closed by another task: its steps need no stop.
        run: OperationRun[T] = OperationRun(self, operation, stoppable=False)
        try:
            return await run.result()
        finally:
            run.close()

    # -- lifecycle -------------------------------------------------------------

    def __del__(self, _warn: Callable[..., object] = warnings.warn) -> None:
        # A client dropped without aclose() leaves its streams open: a task of the
        # event loop (or the loop itself) holds them, not the client. Say so, as
        # aiohttp does of a session left open.
        if getattr(self, "_closed", True) or not hasattr(self, "_open_bodies"):
            return  # closed, or its constructor failed
        if self._open_bodies or self._hub.holds_connections():
            _warn(
                f"unclosed {type(self).__name__} with open streams: close it with "
                "aclose(), or use it in 'async with'",
                ResourceWarning,
                source=self,
            )

    async def __aenter__(self: _Self) -> _Self:
        # As httpx: leaving the block closes the client, so a second block (or one
        # nested in the first, which would close it under the outer one) is a mistake.
        if self._closed:
            raise ClientStateError("the client is closed, and a closed client is not reopened")
        if self._entered:
            raise ClientStateError("the client is already open in an 'async with' block")
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._session_failed = True
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared stream and, if the client created it, the HTTP client.

        A second call (from another task, say) returns once the first one's closing
        is done: every connection is then closed, whichever call returned first."""
        if self._closed:
            # Not from on_token_refresh, which the first close may be waiting for, nor
            # from another event loop, whose wait the signal cannot be.
            if (
                self._closing_done is not None
                and not _in_token_callback()
                and self._other_loop() is None
            ):
                await self._closing_done.wait(None)
            return
        other = self._other_loop()
        if other is not None:  # its connections are its loop's: close it there
            raise other
        self._closed = True  # from here no new request, and no second close
        self._closing_done = self._new_signal()
        try:
            # A refresh whose caller left (cancelled) still has the server's answer
            # to adopt and hand on: the server spent the old token. (A closer
            # cancelled meanwhile closes at once: the finally clause.)
            until = self._now() + self.timeout
            # From on_token_refresh, the refreshes' outcomes only (see _refreshes_settled).
            handing_on = _in_token_callback()
            for flight in list(self._flying):
                if not await (flight.done if handing_on else flight.finished).wait(until):
                    log.warning(
                        "closing the client with a token refresh still in progress after "
                        "%g s: the server may have spent the refresh token, and the new "
                        "tokens may never reach on_token_refresh",
                        self.timeout,
                    )
                    break
        finally:
            # Shielded, so that a closer cancelled while it waited still closes every
            # stream and connection, and with them ends the calls still reading.
            await self._shielded(self._close_connections)

    async def _close_bodies(self) -> None:
        """Close every open body, the others too if closing one fails."""
        while self._open_bodies:
            body = self._open_bodies.pop()
            try:
                await body.aclose()
            except BaseException:
                await self._close_bodies()
                raise

    async def _close_connections(self) -> None:
        try:
            try:
                await self._hub.aclose()
            finally:
                # A transport need not wake a read when its client closes (aiohttp
                # does not): closing each body does, on every transport.
                for stop in list(self._reopen_waits):
                    stop()
                await self._close_bodies()
        finally:
            try:
                await self._close_transport()
            finally:
                try:
                    self._end_recording()
                finally:
                    if self._closing_done is not None:
                        self._closing_done.set()

    def _end_recording(self) -> None:
        """Make the recording the cassette, unless an error left the ``async with``
        block: then the cassette there was is kept, and the recording kept beside it."""
        if not self._session_failed:
            if self._recorder is not None:  # opened now if no call did: an empty session
                self._recorder.close()
        elif self._recording is not None:
            self._recording.close(complete=False)
            if self._recording.partial_path == self._recording.path:
                return  # (written straight to a device or a pipe: nothing was kept back)
            log.warning(
                "an error ended the recorded session: %s is left as it was, and what was "
                "recorded is in %s",
                self._recording.path,
                self._recording.partial_path,
            )

    async def close(self) -> None:
        """Alias of :meth:`aclose`, as in the old client."""
        await self.aclose()

    # -- public state ----------------------------------------------------------

    @property
    def user_id(self) -> str:
        """The signed-in user's id (the token's ``sub`` unless given)."""
        return self._state.credentials.user_id

    @property
    def stream_connections(self) -> int:
        """How many times the shared ``/user_stream/stream`` connection was opened."""
        return self._hub.connections_opened("stream")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(user_id={self.user_id!r}, "
            f"edge_url={self._state.config.edge_url!r})"
        )

    # -- text generation ---------------------------------------------------------

    async def generate(
        self,
        prompt: str,
        *,
        conv_id: str | None = None,
        model: str | None = None,
        images: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> GenerationOutput:
        """Generate a reply to ``prompt`` and wait for all of it.

        A new conversation is created unless ``conv_id`` is given. ``timeout``
        bounds the whole call (default: the client's ``result_timeout``);
        ``images`` are URLs sent alongside the prompt.
        """
        return await self._run(
            generate_op(
                self._state, prompt, conv_id=conv_id, model=model, images=images, timeout=timeout
            )
        )

    def generate_stream(
        self,
        prompt: str,
        *,
        conv_id: str | None = None,
        model: str | None = None,
        images: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> OperationRun[GenerationOutput]:
        """Generate a reply to ``prompt``, yielding it as it is written:
        ``async for step in client.generate_stream(...)``.

        Each step's ``text_delta`` / ``reasoning_delta`` is new text; the last
        step holds the final ``text`` and whatever part of it had not been
        delivered. ``aclose()`` (or ``async with`` around the run) releases everything
        the generation held; leaving the loop early does too once the run is collected,
        at once on CPython when it is not kept in a variable.
        """
        operation = generate_op(
            self._state,
            prompt,
            conv_id=conv_id,
            model=model,
            images=images,
            timeout=timeout,
            stream=True,
        )
        return OperationRun(self, operation)

    def start_conversation(
        self, *, conv_id: str | None = None, model: str | None = None
    ) -> ConversationSession:
        """A multi-turn conversation; it is created on the first ``send``
        unless ``conv_id`` continues an existing one.

        Continuing one, the first turn reads its canvas: the thread that ends
        at its newest answer gives the messages sent with the next prompt, the
        node it hangs under and the turn count (``session.turn``). Sessions of
        one client on one conversation take turns: one sent while another's
        runs raises :class:`ConversationBusyError`, and a session reads the
        canvas again before its turn when another one wrote since."""
        return ConversationSession(self, conv_id=conv_id, model=model)

    async def delete_conversation(self, conv_id: str, *, timeout: float | None = None) -> None:
        """Soft-delete a conversation (it disappears from listings)."""
        from flowith_proto import conversations

        await self._run(conversations.delete(self._state, conv_id, timeout=timeout))
        for walk in list(self._walks):  # a walk of iter_conversations reads on from earlier
            walk.deleted(require_uuid(conv_id, "conv_id"))

    # -- images, videos, titles ------------------------------------------------------

    def _attach(self, result: R) -> R:
        """Give media results this client as their downloader, so ``save()``
        goes through the client's transport, proxy and timeouts."""
        if isinstance(result, ImageOutput):
            images = tuple(attrs.evolve(image, downloader=self) for image in result.images)
            return attrs.evolve(result, images=images)
        if isinstance(result, VideoOutput):
            return attrs.evolve(result, downloader=self)
        return result

    async def generate_image(
        self,
        prompt: str,
        *,
        conv_id: str | None = None,
        model: ImageModel | str | None = None,
        aspect_ratio: AspectRatio | str = AspectRatio.SQUARE,
        image_size: str = "512",
        agent: bool = True,
        timeout: float | None = None,
    ) -> ImageOutput:
        """Generate an image; ``result.images[0].url`` is where it is, and
        ``await result.images[0].save(folder)`` downloads it (``result.image`` is
        the same image, typed optional for an output built without one).

        The result is accepted from either live stream (the image service
        reports on ``/user_stream/sse``); a failed job raises
        :class:`GenerationError` instead of returning its error text as a URL.
        """
        operation = media_ops.generate_image(
            self._state,
            Conversation(conv_id=conv_id),
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            agent=agent,
            timeout=timeout,
        )
        return self._attach(await self._run(operation))

    async def generate_video(
        self,
        prompt: str,
        *,
        conv_id: str | None = None,
        model: VideoModel | str | None = None,
        image_url: str = "",
        aspect_ratio: AspectRatio | str = AspectRatio.LANDSCAPE,
        resolution: str = "480p",
        audio: bool = True,
        timeout: float | None = None,
    ) -> VideoOutput:
        """Generate a video (``image_url``: an optional first frame); waits up
        to five minutes unless ``timeout`` says otherwise."""
        operation = media_ops.generate_video(
            self._state,
            Conversation(conv_id=conv_id),
            prompt,
            model=model,
            image_url=image_url,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            audio=audio,
            timeout=timeout,
        )
        return self._attach(await self._run(operation))

    async def generate_title(
        self, messages: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> str:
        """A short title for a conversation given as ``[{"role", "content"}, ...]``."""
        return await self._run(
            media_ops.generate_title(self._state, messages, timeout=timeout)
        )

    # -- files -------------------------------------------------------------------------

    @overload
    async def upload_file(
        self,
        file_path: str | os.PathLike[str],
        *,
        filename: str = "file",
        mime_type: str | None = None,
        file_type: str | None = None,
        timeout: float | None = None,
    ) -> FileRecord: ...

    @overload
    async def upload_file(
        self,
        file_path: None = None,
        *,
        data: bytes | bytearray | memoryview,
        filename: str = "file",
        mime_type: str | None = None,
        file_type: str | None = None,
        timeout: float | None = None,
    ) -> FileRecord: ...

    async def upload_file(
        self,
        file_path: str | os.PathLike[str] | None = None,
        *,
        data: bytes | bytearray | memoryview | None = None,
        filename: str = "file",
        mime_type: str | None = None,
        file_type: str | None = None,
        timeout: float | None = None,
    ) -> FileRecord:
        """Upload a file (from ``file_path``, streamed from disk, or from
        ``data``) to Flowith's CDN; ``record.url`` is its public URL.

        Exactly one of ``file_path`` and ``data`` (the type checker says so too).
        A path that is not a readable file is the :class:`OSError` of reading it
        (``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``), raised
        before anything is sent.
        Without ``timeout``, an upload may take the client's ``timeout`` or 120 s,
        whichever is longer: a large file needs longer than a request. Pass
        ``timeout`` for a shorter bound.
        """
        path = None if file_path is None else os.fspath(file_path)
        payload = bytes(data) if isinstance(data, (bytearray, memoryview)) else data
        upload_ops.require_one_source(path, payload)
        if path is not None:
            size = await self._to_thread(_upload_size, path)
        else:
            size = len(payload) if isinstance(payload, bytes) else 0  # upload() refuses the rest
        if timeout is None:
            timeout = max(self.timeout, _UPLOAD_TIMEOUT)
        return await self._run(
            upload_ops.upload(
                self._state,
                size=size,
                file_path=path,
                data=payload,
                filename=filename,
                mime_type=mime_type,
                file_type=file_type,
                timeout=timeout,
            )
        )

    async def download(
        self,
        url: str,
        path: str | os.PathLike[str] = ".",
        *,
        filename: str | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        default_name: str = "download",
    ) -> Path:
        """Download ``url`` into the folder ``path`` and return the file's absolute path.

        The body is streamed to a temporary file in that folder and renamed
        when complete, so a failed download leaves nothing behind. An existing
        file is never replaced unless ``overwrite``: a name drawn from the URL,
        when taken, gives way to the first free ``name-1.ext``, ``name-2.ext``...;
        a ``filename`` given that is taken is :class:`FileExistsError`. The name
        is always one plain name inside ``path``. ``timeout`` bounds the whole download; each read
        is also bounded by the client's ``timeout``.
        """
        if self._closed:
            raise ClientStateError(
                "the client is closed: a result's save() downloads through the client that "
                "returned it, so save before closing it (or use an open client's download(url))"
            )
        self._check_open()  # from another event loop, say
        # Absolute, so that the caller gets an absolute path back.
        request = download_request(self._state.config, url)  # checks the URL first
        check_seconds("timeout", timeout, endless=True)
        folder = Path(await self._to_thread(os.path.abspath, path))
        name = safe_filename(url, filename, default_name)
        target = Path(target_inside(folder, name))
        deadline = None if timeout is None else self._now() + timeout
        try:
            await self._to_thread(functools.partial(folder.mkdir, parents=True, exist_ok=True))
        except FileExistsError:  # a file, not a folder: overwrite= is no cure for that
            raise NotADirectoryError(
                f"cannot save into {os.fspath(folder)!r}: it is a file, not a folder"
            ) from None
        # A name the caller chose is theirs to keep; one drawn from the URL (the CDN may
        # name every image alike) gives way to a free numbered one when taken.
        numbered = filename is None
        if not (overwrite or numbered) and await self._to_thread(os.path.lexists, target):
            raise _exists(target)
        body = await self._open_retried(
            functools.partial(self._open_event_stream, request, deadline), request, deadline
        )
        self._open_bodies.add(body)
        partial = folder / f".{name}.{uuid.uuid4().hex[:12]}.part"
        publishing = _Publishing(partial, target, overwrite=overwrite, numbered=numbered)
        try:
            try:
                handle = await self._open_file(_create_binary, partial, created=True)
                try:
                    await self._write_body(body, handle, url, deadline)
                finally:
                    # Closed here, not in a thread: a cancelled download must not
                    # leave the handle open (closing a local file does not block).
                    handle.close()
                target = await self._to_thread(publishing.publish)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
            finally:
                self._open_bodies.discard(body)
                await body.aclose()
        except BaseException:
            # Moved into place, then cancelled (at the body's close, say): a caller
            # told the download failed finds no new file.
            publishing.abandon()
            raise
        return target

    async def _read_body(self, body: ByteStream, until: float | None) -> bytes | None:
        """One read of a download's or a listener's body. A broken connection's error
        holds no cookie the client keeps (a body may echo one), and says so when
        aclose() broke it."""
        try:
            return await body.read(until)
        except ConnectionFailedError as exc:
            scrub(exc, self._state.secrets)
            self._check_open()
            raise

    async def _write_body(
        self, body: ByteStream, handle: BinaryIO, url: str, deadline: float | None
    ) -> None:
        """Write a download's whole body to ``handle``: :class:`TimeoutError` if it
        stalls for the client's ``timeout`` or outlives ``deadline``."""
        while True:
            step = self._now() + self.timeout
            until = step if deadline is None else min(step, deadline)
            chunk = await self._read_body(body, until)
            if chunk is None:
                if until == deadline:
                    raise TimeoutError(
                        f"downloading {url} outlived its timeout", deadline_passed=True
                    )
                raise TimeoutError(
                    f"downloading {url} stalled: nothing came for {self.timeout:g} s"
                )
            if not chunk:
                self._check_open()  # ended by aclose(), not complete
                return
            await self._to_thread(handle.write, chunk)

    # -- live streams --------------------------------------------------------------

    async def stream_user_stream(
        self, *, timeout: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every generation event of the user, unwrapped, heartbeats dropped.

        ``timeout`` is a listening window: when it has passed the iteration
        simply ends, also when the stream had not even opened by then. Within
        it, a stream the server ends, or that breaks, is opened again (see
        :meth:`_listen`). Without it, the iteration ends when the server closes
        the stream, and a broken one raises :class:`ConnectionFailedError`.
        """
        listening = self._listen("stream", raw=False, timeout=timeout)
        async with contextlib.aclosing(listening):  # so that closing this closes the stream
            async for payload in listening:
                yield payload

    async def stream_user_sse(
        self, *, timeout: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The ``/user_stream/sse`` frames as sent, heartbeats included; ``timeout``
        as for :meth:`stream_user_stream`."""
        listening = self._listen("sse", raw=True, timeout=timeout)
        async with contextlib.aclosing(listening):
            async for payload in listening:
                yield payload

    async def _listen(
        self, channel: str, *, raw: bool, timeout: float | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Listen to ``channel`` until the window ``timeout`` ends.

        Within a window, a connection that ends or breaks is opened again, as an
        ``EventSource`` does: after the server's ``retry:`` delay, else
        :data:`LISTENER_RECONNECT` seconds (doubled after each connection that
        brought no event, up to :data:`LISTENER_RECONNECT_MAX`), with
        ``Last-Event-ID`` once the server numbered its events. An event cut short
        by the break is lost, as the spec has it. Refusals and failures to open
        are raised, as for the first connection, and so is a body that cannot be
        decoded, which would come again.
        """
        self._check_open()
        check_seconds("timeout", timeout, endless=True)
        deadline = self._window_end(timeout)
        decoder = SSEDecoder()
        quiet = 0  # connections in a row that brought no event
        while True:
            stream = await self._open_listener(channel, deadline, decoder.last_event_id)
            if stream is None:
                return  # the window closed while the stream was opening
            heard = False
            self._open_bodies.add(stream)
            try:
                while True:
                    if deadline is not None and self._now() >= deadline:
                        return  # the listening window is over (a slow consumer outlived it)
                    try:
                        data = await self._read_body(stream, deadline)
                    except ConnectionFailedError as exc:
                        # An undecodable body (corrupt gzip) would come again: raised.
                        if deadline is None or isinstance(exc.__cause__, ContentDecodingError):
                            raise
                        log.info("listened /user_stream/%s broke (%s); reopening", channel, exc)
                        break
                    if data is None:  # the window closed
                        self._check_open()  # ended by aclose() rather
                        return
                    if not data:  # the server ended the stream
                        self._check_open()
                        if deadline is None:
                            return
                        log.info("the server ended listened /user_stream/%s; reopening", channel)
                        break
                    events = decoder.feed(data)
                    heard = heard or bool(events)  # a heartbeat too: the stream worked
                    for error in decoder.take_errors():
                        log.warning("skipping an oversized event on a listened stream: %s", error)
                    for payload in listener_payloads(events, raw=raw):
                        yield payload
            finally:
                self._open_bodies.discard(stream)
                await stream.aclose()
            decoder.close()  # keeps the last event id and the retry delay
            quiet = 0 if heard else quiet + 1
            if not await self._reconnect_wait(decoder.retry, quiet, deadline):
                return

    async def _open_listener(
        self, channel: str, deadline: float | None, last_event_id: str
    ) -> ByteStream | None:
        """A listener's connection, or ``None`` if the window closed while it opened."""

        def build() -> Request:
            request = self._live_request(channel)
            # An id a header cannot carry (not ASCII, or a control character) is not
            # sent: the server then resumes as for a new listener.
            sendable = last_event_id.isascii() and last_event_id.isprintable()
            if not sendable or not last_event_id or last_event_id.strip() != last_event_id:
                return request
            headers = (*request.headers, ("Last-Event-ID", last_event_id))
            return attrs.evolve(request, headers=headers)

        try:
            return await self._open_retried(
                functools.partial(self._open_live, build, deadline, media_type="text/event-stream"),
                build(),
                deadline,
            )
        except TimeoutError as exc:
            if not exc.deadline_passed:  # the stream's own limit: it did not open
                raise
            self._check_open()
            return None

    async def _reconnect_wait(
        self, retry_ms: int | None, quiet: int, deadline: float | None
    ) -> bool:
        """Wait before a listener opens its stream again; ``False`` if the window
        ends first."""
        # (retry: takes any run of digits; past 2**53 ms a float cannot hold them all.)
        delay = LISTENER_RECONNECT if retry_ms is None else min(retry_ms, 2**53) / 1000
        if quiet > 1:  # the stream keeps ending without a word: back off
            delay = max(delay, doubled(LISTENER_RECONNECT, quiet - 1, LISTENER_RECONNECT_MAX))
        until = self._now() + delay
        if deadline is not None and until >= deadline:
            return False
        with self._cancellable() as stop:  # aclose() ends the wait, as it ends a read
            self._reopen_waits.add(stop)
            try:
                self._check_open()  # a close begun meanwhile pressed the stops already
                await self._sleep_until(until)
            finally:
                self._reopen_waits.discard(stop)
        self._check_open()
        return True


#: Seconds before a listener opens a stream that ended again, unless the server said
#: otherwise (``retry:``); doubled after each connection that brought no event, up to
#: :data:`LISTENER_RECONNECT_MAX`.
LISTENER_RECONNECT = 1.0
LISTENER_RECONNECT_MAX = 30.0


_Self = TypeVar("_Self", bound=FlowithClientBase)
#: The effects a run's close() from another task cancels (see OperationRun._step).
_STOPPABLE = (Send, Sleep, RefreshToken, Subscribe, NextEvent)


class OperationRun(Generic[T]):
    """One run of an operation: an async iterator over what it emits and,
    last, what it returns.

    A plain class rather than an async generator, so that leaving a loop
    early is clean on every event loop (trio warns about async generators
    left unfinished): its :meth:`aclose` (also ``async with``, or garbage
    collection) closes the operation and releases its stream subscriptions.
    Cancellation does the same.
    """

    def __init__(
        self, client: FlowithClientBase, operation: Operation[T], *, stoppable: bool = True
    ) -> None:
        self._client = client
        self._operation = operation
        # Whether close() from another task cancels its requests and sleeps (see
        # _step): a run only the client itself drives is never closed that way.
        self._stoppable = stoppable
        # Before anything that may raise (opening a cassette): __del__ reads them.
        self._done = False
        # Called by close() to end at once a request or a wait under way (see _step).
        self._stop: Callable[[], None] | None = None
        # The nodes it subscribed to, unsubscribed when it ends.
        self._subscribed: list[str] = []
        # What the operation's draws are recorded (and replayed) under.
        self._name = client._operation_name(operation)
        self._started = False
        # The operation's result, kept for result() once the run has reached its end,
        # or the error it ended with.
        self._finished = False
        self._outcome: Any = None
        self._failure: FlowithError | None = None
        self._busy = False  # a step is under way (see __anext__)

    def __repr__(self) -> str:
        state = "ended" if self._done else ("running" if self._started else "not started")
        what = getattr(self._operation, "__qualname__", type(self._operation).__name__)
        return f"<OperationRun {what} ({state})>"

    def __aiter__(self) -> OperationRun[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        if self._busy:  # a second task would send its None into the first one's step
            raise ClientStateError("this run is already being iterated by another task")
        if not self._started:
            self._started = True
            self._client._check_open()
        result: Any = None
        error: BaseException | None = None
        self._busy = True
        try:
            while True:
                try:
                    if error is not None:
                        effect = self._operation.throw(error)
                    else:
                        effect = self._operation.send(result)
                except StopIteration as stop:
                    self._finished, self._outcome = True, stop.value
                    self.close()
                    return stop.value  # type: ignore[no-any-return]
                result, error = None, None
                if isinstance(effect, Emit):
                    return effect.value  # type: ignore[no-any-return]
                try:
                    result = await self._step(effect)
                except FlowithError as exc:
                    error = exc
                if self._done:  # closed by another task meanwhile: its operation is gone
                    raise StopAsyncIteration
        except BaseException as exc:
            self.close()
            if isinstance(exc, FlowithError):
                scrub(exc, self._client._state.secrets)
                self._failure = exc
            raise
        finally:
            self._busy = False

    async def _step(self, effect: Effect) -> Any:
        """Perform ``effect``. :meth:`close` from another task (a stop button)
        cancels a request, a sleep, a wait for a token refresh, for the event
        streams to connect or for the next event: a request may take up to the
        client's ``timeout`` for each of its tries, a retry's wait as long, and the
        next frame of a stream the run's task reads for every generation up to a
        heartbeat (5 s from the real service). (A refresh goes on in a task of its
        own, and its tokens are kept.) Cancelled, it returns ``None``, which no one
        reads: the run is done. An event already routed to the run is taken as it
        is: a cancel scope costs a few microseconds, and there is nothing to wait for."""
        client = self._client
        if not (self._stoppable and isinstance(effect, _STOPPABLE)) or (
            isinstance(effect, NextEvent) and client._hub.demux.pending(effect.node_id)
        ):
            return await client._perform(effect, self)
        result = None
        with client._cancellable() as cancel:
            self._stop = cancel
            try:
                result = await client._perform(effect, self)
            finally:
                self._stop = None
        return result

    async def result(self) -> T:
        """Run to the end and return the operation's result (what it emits is
        dropped). After the run reached its end (iterated, or a first call), it
        returns that result again, or raises (a copy of) the error it failed with;
        a run closed before its end raises :class:`ClientStateError`."""
        async for _ in self:
            pass
        if self._failure is not None:
            raise _fresh(self._failure)
        if not self._finished:
            raise ClientStateError("this run was closed before its end: it has no result")
        return self._outcome  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the run and release what it holds (idempotent). A task iterating it
        meanwhile ends its loop at once: a request or a wait under way is cancelled
        (a request already sent may still have taken effect on the server)."""
        if self._done:
            return
        self._done = True
        if self._stop is not None:
            self._stop()
        self._operation.close()
        for node_id in self._subscribed:
            self._client._hub.unsubscribe(node_id)

    async def aclose(self) -> None:
        """Stop the run and release what it holds, as async generators do."""
        self.close()

    async def __aenter__(self) -> OperationRun[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class ConversationSession:
    """A conversation that remembers its thread across turns.

    Each turn sends the earlier messages and hangs its nodes under the
    previous answer on the canvas, so the web app shows one thread.
    """

    def __init__(
        self,
        client: FlowithClientBase,
        conversation: Conversation | None = None,
        *,
        conv_id: str | None = None,
        model: str | None = None,
    ) -> None:
        """Made by :meth:`FlowithClientBase.start_conversation`, whose arguments
        ``ConversationSession(client, conv_id=..., model=...)`` takes too, as the
        original client's did."""
        if conversation is None:
            if model is not None:
                model = require_option(model, "model")  # before its first turn makes rows
            conversation = Conversation(
                conv_id=conv_id, model=model, resume=conv_id is not None, in_session=True
            )
        elif conv_id is not None or model is not None:
            raise TypeError("pass a conversation, or conv_id and model, not both")
        self._client = client
        self._conversation = conversation

    @property
    def conv_id(self) -> str | None:
        """The conversation's id; ``None`` until the first turn creates it."""
        return self._conversation.conv_id

    @property
    def model(self) -> str | None:
        """The session's model (``None``: the client's default)."""
        return self._conversation.model

    @property
    def turn(self) -> int:
        """How many turns completed (failed or abandoned ones do not count)."""
        return self._conversation.turn

    async def send(
        self,
        prompt: str,
        *,
        images: Sequence[str] | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> GenerationOutput:
        """Send the next message and wait for the whole reply.

        ``timeout`` bounds the whole turn; ``None`` means the client's
        ``result_timeout``, as for :meth:`FlowithClientBase.generate`.
        """
        return await self._client._run(
            send_op(
                self._client._state,
                self._conversation,
                prompt,
                model=model,
                images=images,
                timeout=timeout,
            )
        )

    def send_stream(
        self,
        prompt: str,
        *,
        images: Sequence[str] | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> OperationRun[GenerationOutput]:
        """Send the next message and yield the reply as it is written
        (``timeout`` as in :meth:`send`)."""
        operation = send_op(
            self._client._state,
            self._conversation,
            prompt,
            model=model,
            images=images,
            timeout=timeout,
            stream=True,
        )
        return OperationRun(self._client, operation)

    async def generate_image(
        self,
        prompt: str,
        *,
        model: ImageModel | str | None = None,
        aspect_ratio: AspectRatio | str = AspectRatio.SQUARE,
        image_size: str = "512",
        agent: bool = True,
        timeout: float | None = None,
    ) -> ImageOutput:
        """Generate an image in this conversation, under its last answer."""
        operation = media_ops.generate_image(
            self._client._state,
            self._conversation,
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            agent=agent,
            timeout=timeout,
        )
        return self._client._attach(await self._client._run(operation))

    async def generate_video(
        self,
        prompt: str,
        *,
        model: VideoModel | str | None = None,
        image_url: str = "",
        aspect_ratio: AspectRatio | str = AspectRatio.LANDSCAPE,
        resolution: str = "480p",
        audio: bool = True,
        timeout: float | None = None,
    ) -> VideoOutput:
        """Generate a video in this conversation, under its last answer."""
        operation = media_ops.generate_video(
            self._client._state,
            self._conversation,
            prompt,
            model=model,
            image_url=image_url,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            audio=audio,
            timeout=timeout,
        )
        return self._client._attach(await self._client._run(operation))

    async def delete(self, *, timeout: float | None = None) -> None:
        """Delete the conversation on the server and start afresh locally."""
        if self._conversation.conv_id is not None:
            await self._client.delete_conversation(self._conversation.conv_id, timeout=timeout)
        model = self._conversation.model
        self._conversation = Conversation(model=model, in_session=True)

    def __repr__(self) -> str:
        return (
            f"ConversationSession(conv_id={self.conv_id!r}, model={self.model!r}, turn={self.turn})"
        )
