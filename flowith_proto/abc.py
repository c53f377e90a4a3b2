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
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

from flowith_proto.auth import Credentials
from flowith_proto.config import (
    DEFAULT_EDGE_URL,
    DEFAULT_SUPABASE_KEY,
    DEFAULT_SUPABASE_URL,
    FlowithConfig,
)
from flowith_proto.demux import Delivery, StreamEnded
from flowith_proto.effects import (
    DEADLINE,
    DeadlineReached,
    Effect,
    Emit,
    NewId,
    NextEvent,
    Now,
    Operation,
    Send,
    Sleep,
    Subscribe,
    WallClock,
)
from flowith_proto.errors import (
    AuthenticationError,
    ConnectionFailedError,
    FlowithError,
    TimeoutError,
    error_from_response,
)
from flowith_proto.generation import Conversation
from flowith_proto.generation import generate as generate_op
from flowith_proto.generation import send as send_op
from flowith_proto.models import GenerationOutput
from flowith_proto.request import Request, Response
from flowith_proto.sse import SSEDecoder
from flowith_proto.state import ClientState
from flowith_proto.stream import StreamRouter, listener_payloads

__all__ = ["ByteStream", "ConversationSession", "FlowithClientBase", "Signal"]

log = logging.getLogger("flowith.client")

T = TypeVar("T")

#: Bytes of an error answer on a stream request read before giving up on it.
_STREAM_ERROR_BODY_LIMIT = 64 * 1024


class Signal(Protocol):
    """A one-shot wake-up (anyio/asyncio ``Event`` with a deadline-aware wait)."""

    def set(self) -> None: ...

    async def wait(self, deadline: float | None) -> bool:
        """``True`` once set; ``False`` when ``deadline`` (monotonic) passed first."""
        ...


class ByteStream(Protocol):
    """The body of a streaming response, chunk by chunk."""

    async def read(self, deadline: float | None) -> bytes | None:
        """The next chunk; ``b""`` at the end; ``None`` if ``deadline`` passed
        first. Raises :class:`ConnectionFailedError` when the connection breaks.
        After ``None`` the transport may have closed the stream."""
        ...

    async def aclose(self) -> None: ...


class _SharedStream:
    """The client's one ``/user_stream/stream`` connection, read in turns."""

    def __init__(self, client: FlowithClientBase) -> None:
        self._client = client
        self.router = StreamRouter()
        self._connection: ByteStream | None = None
        self._connecting = False
        self._reading = False
        self._waiters: dict[str, Signal] = {}
        self._connect_waiters: list[Signal] = []
        self._broken: list[ByteStream] = []
        #: Connections opened over the client's life (one, unless it dropped).
        self.connections_opened = 0

    # -- wake-ups ----------------------------------------------------------

    def _wake(self, nodes: set[str]) -> None:
        for node in nodes:
            signal = self._waiters.pop(node, None)
            if signal is not None:
                signal.set()

    def _wake_one_reader(self) -> None:
        """Hand the reader role to some waiting generation."""
        for node in list(self._waiters):
            self._waiters.pop(node).set()
            return

    def _wake_connect_waiters(self) -> None:
        waiters, self._connect_waiters = self._connect_waiters, []
        for signal in waiters:
            signal.set()

    # -- connection --------------------------------------------------------

    async def subscribe(self, node_id: str, deadline: float | None) -> None:
        """Keep ``node_id``'s events, and make sure the stream is connected
        before returning, so nothing emitted afterwards can be missed."""
        self.router.subscribe(node_id)
        await self._close_broken()
        while self._connection is None:
            if self._connecting:
                signal = self._client._new_signal()
                self._connect_waiters.append(signal)
                if not await signal.wait(deadline):
                    return
                continue
            self._connecting = True
            try:
                self._connection = await self._client._open_event_stream(
                    self._client._state.endpoints.user_stream(), deadline
                )
                self.connections_opened += 1
            except (ConnectionFailedError, TimeoutError) as exc:
                # The generation can still finish through its row: let it poll.
                log.warning("could not open the event stream: %s", exc)
                self.router.demux.end(node_id, f"could not connect: {exc}")
                return
            finally:
                self._connecting = False
                self._wake_connect_waiters()

    def unsubscribe(self, node_id: str) -> None:
        self.router.unsubscribe(node_id)
        if self._waiters.pop(node_id, None) is not None and not self._reading:
            self._wake_one_reader()

    def _lose(self, reason: str) -> None:
        """Forget a connection that ended or broke; subscribers fall back to
        polling, and the next subscription reconnects."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._broken.append(connection)
        self.router.connection_lost(reason)
        self._wake(set(self._waiters))

    async def _close_broken(self) -> None:
        while self._broken:
            await self._broken.pop().aclose()

    # -- reading -----------------------------------------------------------

    async def next_event(self, node_id: str, deadline: float) -> Delivery | DeadlineReached:
        """``node_id``'s next event, reading the stream for everyone if nobody
        else is; :data:`DEADLINE` when ``deadline`` passes first."""
        try:
            while True:
                item = self.router.pop(node_id)
                if item is not None:
                    return item
                if self._connection is None:
                    if not self._connecting:
                        return StreamEnded("not connected")
                elif not self._reading:
                    if not await self._read_once(deadline):
                        return DEADLINE
                    continue
                signal = self._client._new_signal()
                self._waiters[node_id] = signal
                if not await signal.wait(deadline):
                    self._waiters.pop(node_id, None)
                    return DEADLINE
        finally:
            # Whoever leaves while nobody reads lets a waiting generation take over.
            if not self._reading:
                self._wake_one_reader()

    async def _read_once(self, deadline: float) -> bool:
        """Read one chunk as the reader and route it; ``False`` at ``deadline``."""
        connection = self._connection
        assert connection is not None
        self._reading = True
        finished = False
        try:
            data = await connection.read(deadline)
            finished = True
        except ConnectionFailedError as exc:
            finished = True
            self._lose(f"connection failed: {exc}")
            return True
        finally:
            self._reading = False
            if not finished:
                # Cancelled in the middle of a read: the connection's state is
                # unknown, so it is dropped (the others recover by polling).
                self._lose("reader cancelled")
        if data is None:
            return False
        if not data:
            self._lose("closed by the server")
            return True
        self._wake(self.router.feed(data))
        return True

    async def aclose(self) -> None:
        if self._connection is not None:
            self._lose("client closed")
        await self._close_broken()


class FlowithClientBase(abc.ABC):
    """What every transport's ``FlowithClient`` is: the public API, once.

    A transport subclasses it and implements the abstract hooks; see
    ``flowith_httpx.FlowithClient`` and ``flowith_aiohttp.FlowithClient``.
    """

    def __init__(
        self,
        token: str = "",
        *,
        user_id: str = "",
        refresh_token: str = "",
        edge_url: str = DEFAULT_EDGE_URL,
        supabase_url: str = DEFAULT_SUPABASE_URL,
        supabase_key: str = DEFAULT_SUPABASE_KEY,
        timeout: float = 30.0,
        result_timeout: float = 120.0,
        poll_interval: float = 2.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._state = ClientState(
            config=FlowithConfig(
                edge_url=edge_url, supabase_url=supabase_url, supabase_key=supabase_key
            ),
            credentials=Credentials.from_tokens(
                token, refresh_token=refresh_token, user_id=user_id
            ),
            result_timeout=result_timeout,
            poll_interval=poll_interval,
        )
        #: Seconds one HTTP request may take (connect, read and total).
        self.timeout = timeout
        self._stream = _SharedStream(self)
        self._closed = False

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
        self, request: Request, timeout: float | None, deadline: float | None
    ) -> Response:
        """Send ``request`` as it is and return the whole answer.

        The exchange is bounded by ``timeout`` (else :attr:`timeout`) and by
        ``deadline``;
        transport failures become :class:`ConnectionFailedError` or
        :class:`TimeoutError`."""

    @abc.abstractmethod
    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        """Send a streaming request; return status, headers and the body stream
        once the headers have arrived."""

    @abc.abstractmethod
    async def _close_transport(self) -> None:
        """Release the HTTP client if the client owns it."""

    # -- the driver ----------------------------------------------------------

    async def _open_event_stream(self, request: Request, deadline: float | None) -> ByteStream:
        """Open a stream and judge its status like any other answer."""
        status, headers, body = await self._open_stream(request, deadline)
        if status < 400:
            return body
        chunks: list[bytes] = []
        size = 0
        try:
            while size < _STREAM_ERROR_BODY_LIMIT:
                chunk = await body.read(deadline)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            await body.aclose()
        error = error_from_response(status, headers, b"".join(chunks), secrets=self._secrets)
        assert error is not None
        raise error

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (*self._state.credentials.secrets, self._state.config.supabase_key)

    async def _perform(self, effect: Effect, subscribed: list[str]) -> Any:
        if isinstance(effect, NextEvent):
            return await self._stream.next_event(effect.node_id, effect.deadline)
        if isinstance(effect, Send):
            return await self._send(effect.request, effect.timeout, effect.deadline)
        if isinstance(effect, Now):
            return self._now()
        if isinstance(effect, WallClock):
            return time.time()
        if isinstance(effect, NewId):
            return str(uuid.uuid4())
        if isinstance(effect, Subscribe):
            subscribed.append(effect.node_id)
            await self._stream.subscribe(effect.node_id, None)
            return None
        if isinstance(effect, Sleep):
            await self._sleep_until(effect.until)
            return None
        raise TypeError(f"effect {effect!r} cannot be performed here")

    def _check_open(self) -> None:
        if self._closed:
            raise FlowithError("the client is closed")
        if not self._state.credentials.access_token:
            raise AuthenticationError("No access token set: pass token=... to the client.")

    async def _iterate(self, operation: Operation[T]) -> AsyncGenerator[Any, None]:
        """Run ``operation``, yielding what it emits and, last, what it returns.

        However the run ends (result, error, cancellation, or the caller
        leaving the loop early), the operation is closed and its stream
        subscriptions are released.
        """
        self._check_open()
        subscribed: list[str] = []
        result: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = operation.throw(error) if error is not None else operation.send(result)
                except StopIteration as stop:
                    yield stop.value
                    return
                result, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    result = await self._perform(effect, subscribed)
                except FlowithError as exc:
                    error = exc
        finally:
            operation.close()
            for node_id in subscribed:
                self._stream.unsubscribe(node_id)

    async def _run(self, operation: Operation[T]) -> T:
        """Run an operation that emits nothing; return its result."""
        iterator = self._iterate(operation)
        try:
            async for value in iterator:
                last = value
            return last  # type: ignore[no-any-return]
        finally:
            await iterator.aclose()

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared stream and, if the client created it, the HTTP client."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            await self._close_transport()

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
        """How many times the shared event stream was opened."""
        return self._stream.connections_opened

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

    async def generate_stream(
        self,
        prompt: str,
        *,
        conv_id: str | None = None,
        model: str | None = None,
        images: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[GenerationOutput]:
        """Generate a reply to ``prompt``, yielding it as it is written.

        Each item's ``text_delta`` / ``reasoning_delta`` is new text; the last
        item holds the final ``text`` and whatever part of it had not been
        delivered. Leaving the loop early releases everything it held.
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
        iterator = self._iterate(operation)
        try:
            async for output in iterator:
                yield output
        finally:
            await iterator.aclose()

    def start_conversation(
        self, *, conv_id: str | None = None, model: str | None = None
    ) -> ConversationSession:
        """A multi-turn conversation; it is created on the first ``send``
        unless ``conv_id`` continues an existing one."""
        return ConversationSession(self, Conversation(conv_id=conv_id, model=model))

    async def delete_conversation(self, conv_id: str, *, timeout: float | None = None) -> None:
        """Soft-delete a conversation (it disappears from listings)."""
        from flowith_proto import conversations

        await self._run(conversations.delete(self._state, conv_id, timeout=timeout))

    # -- live streams --------------------------------------------------------------

    async def stream_user_stream(
        self, *, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every generation event of the user, unwrapped, heartbeats dropped.

        ``timeout`` is a listening window: when it has passed the iteration
        simply ends. Without it, it ends when the server closes the stream.
        """
        async for payload in self._listen(
            self._state.endpoints.user_stream, raw=False, timeout=timeout
        ):
            yield payload

    async def stream_user_sse(
        self, *, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The ``/user_stream/sse`` frames as sent, heartbeats included."""
        async for payload in self._listen(
            self._state.endpoints.user_sse, raw=True, timeout=timeout
        ):
            yield payload

    async def _listen(
        self, build: Callable[[], Request], *, raw: bool, timeout: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        self._check_open()
        deadline = None if timeout is None else self._now() + timeout
        stream = await self._open_event_stream(build(), deadline)
        decoder = SSEDecoder()
        try:
            while True:
                data = await stream.read(deadline)
                if not data:  # the window closed (None) or the server ended (b"")
                    return
                for payload in listener_payloads(decoder.feed(data), raw=raw):
                    yield payload
        finally:
            await stream.aclose()


_Self = TypeVar("_Self", bound=FlowithClientBase)


class ConversationSession:
    """A conversation that remembers its thread across turns.

    Each turn sends the earlier messages and hangs its nodes under the
    previous answer on the canvas, so the web app shows one thread.
    """

    def __init__(self, client: FlowithClientBase, conversation: Conversation) -> None:
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
        timeout: float = 120.0,
    ) -> GenerationOutput:
        """Send the next message and wait for the whole reply."""
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

    async def send_stream(
        self,
        prompt: str,
        *,
        images: Sequence[str] | None = None,
        model: str | None = None,
        timeout: float = 120.0,
    ) -> AsyncIterator[GenerationOutput]:
        """Send the next message and yield the reply as it is written."""
        iterator = self._client._iterate(
            send_op(
                self._client._state,
                self._conversation,
                prompt,
                model=model,
                images=images,
                timeout=timeout,
                stream=True,
            )
        )
        try:
            async for output in iterator:
                yield output
        finally:
            await iterator.aclose()

    async def delete(self, *, timeout: float | None = None) -> None:
        """Delete the conversation on the server and start afresh locally."""
        if self._conversation.conv_id is not None:
            await self._client.delete_conversation(self._conversation.conv_id, timeout=timeout)
        model = self._conversation.model
        self._conversation = Conversation(model=model)

    def __repr__(self) -> str:
        return (
            f"ConversationSession(conv_id={self.conv_id!r}, model={self.model!r}, turn={self.turn})"
        )
