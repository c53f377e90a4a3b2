"""The client's shared event streams, read in turns by the generations waiting on them.

The web app keeps one connection per stream per user, and so does a client:
``/user_stream/stream`` carries text generation events, ``/user_stream/sse``
the ``workflow_complete`` of images and videos. Every generation subscribes
its node on the channels its result may arrive on, *before* it starts, and
then waits for its node's events.

A shared stream needs a reader, yet a client may live without ``async with``
(and so without a task group) on trio. So there is no background task: a
generation that waits while nobody reads a channel becomes that channel's
reader, routes every event to its node's queue, wakes the nodes that got one,
and hands the role over when it leaves. Each event costs O(1) wake-ups.

This module performs I/O only through the callables the client passes in
(open a stream, make a wake-up signal, race reads); it imports no event loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from flowith_proto import logs
from flowith_proto.demux import Delivery, Demultiplexer, StreamEnded
from flowith_proto.effects import DEADLINE, DeadlineReached
from flowith_proto.errors import (
    APIError,
    ClientStateError,
    ConnectionFailedError,
    TimeoutError,
)
from flowith_proto.retry import RETRY_STATUSES, doubled
from flowith_proto.stream import StreamRouter

__all__ = ["CHANNELS", "IDLE_LOOK", "LONGEST_RECONNECT_WAIT", "ByteStream", "Signal", "StreamHub"]

log = logs.logger("flowith.stream")

#: The user's two event streams, by the name operations use for them.
CHANNELS = ("stream", "sse")

#: The longest a stream's ``Retry-After`` keeps it closed, in seconds (not errors'
#: LONGEST_RETRY_AFTER, past which a call's ``Retry-After`` is no advice at all): a
#: server that asks for a day would otherwise leave every generation polling for a day.
LONGEST_RECONNECT_WAIT = 300.0


class Signal(Protocol):
    """A one-shot wake-up (an ``Event`` with a deadline-aware wait)."""

    def set(self) -> None: ...

    async def wait(self, deadline: float | None) -> bool:
        """``True`` once set; ``False`` when ``deadline`` (monotonic) passed first."""
        ...


#: The deadline of the hub's look at a stream nobody has been reading: like any
#: deadline already past, it takes only what has arrived; a wrapper may tell it
#: from a reader's deadline that merely passed (see :mod:`flowith_proto.silence`).
IDLE_LOOK = -math.inf


class ByteStream(Protocol):
    """The body of a streaming response, chunk by chunk."""

    async def read(self, deadline: float | None) -> bytes | None:
        """The next chunk; ``b""`` at the end; ``None`` if ``deadline`` passed
        first. Raises :class:`ConnectionFailedError` when the connection breaks.

        A read that returns ``None`` or is cancelled consumes nothing: the
        stream stays usable, and the next read (by any task) gets the next
        chunk. The reader role moves between generations on that promise.
        A deadline already past (:data:`IDLE_LOOK` included) takes only what
        has arrived, without waiting."""
        ...

    async def aclose(self) -> None: ...


Opener = Callable[[str, "float | None"], Awaitable[ByteStream]]
#: Runs reads at once and returns the first one's result, cancelling the others.
Racer = Callable[[Sequence[Callable[[], Awaitable[bool]]]], Awaitable[bool]]


class _Channel:
    """One of the user's streams: its connection, decoder and reader flag."""

    __slots__ = (
        "connecting",
        "connection",
        "failures",
        "name",
        "opened",
        "reading",
        "retry_at",
        "router",
        "seen_at_open",
        "subscribers",
    )

    def __init__(self, name: str, demux: Demultiplexer) -> None:
        self.name = name
        self.router = StreamRouter(demux)
        self.connection: ByteStream | None = None
        self.connecting = False
        self.reading = False
        self.subscribers: set[str] = set()
        self.opened = 0
        #: Consecutive failed connections, and when the next try is allowed.
        self.failures = 0
        self.retry_at = 0.0
        self.seen_at_open = 0

    @property
    def readable(self) -> bool:
        return self.connection is not None and not self.reading


class StreamHub:
    """Subscriptions, connections and turn-taking for the client's streams."""

    def __init__(
        self,
        open_stream: Opener,
        new_signal: Callable[[], Signal],
        now: Callable[[], float],
        race: Racer,
        *,
        backoff: Callable[[int], float] = lambda failures: doubled(0.5, failures - 1, 30.0),
    ) -> None:
        self._open_stream = open_stream
        self._new_signal = new_signal
        self._race = race
        self._now = now
        self._backoff = backoff
        self.demux = Demultiplexer()
        self._channels = {name: _Channel(name, self.demux) for name in CHANNELS}
        self._waiters: dict[str, Signal] = {}
        self._connect_waiters: list[Signal] = []
        self._broken: list[ByteStream] = []
        self._closed = False

    def connections_opened(self, channel: str = "stream") -> int:
        """How many times ``channel`` was connected (one, unless it dropped)."""
        return self._channels[channel].opened

    # -- wake-ups ----------------------------------------------------------------

    def _wake(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            signal = self._waiters.pop(node, None)
            if signal is not None:
                signal.set()

    def _hand_over(self, channel: _Channel) -> None:
        """Wake one generation waiting on ``channel`` so it takes the reader role."""
        if not channel.readable:
            return
        for node in self._waiters:
            if node in channel.subscribers:
                self._waiters.pop(node).set()
                return

    # -- subscriptions -------------------------------------------------------------

    async def subscribe(
        self, node_id: str, channels: Iterable[str], deadline: float | None
    ) -> None:
        """Keep ``node_id``'s events from ``channels``, connecting them first,
        so nothing the server emits afterwards can be missed.

        A refusal (401, 403, 404...) of the only channel, or of every one, is
        raised: the generation cannot go on. One of several refused is only missing,
        as a stream that failed is: the others may still tell the generation.
        """
        wanted = [self._channels[name] for name in channels]
        for channel in wanted:  # before subscribing: a stream found closed ends no news of ours
            await self._check_idle(channel)
        self.demux.subscribe(node_id)
        for channel in wanted:
            channel.subscribers.add(node_id)
        await self._close_broken()
        missing: list[str] = []
        refused: list[tuple[_Channel, APIError]] = []
        for channel in wanted:
            try:
                reason = await self._connect(channel, deadline)
            except APIError as refusal:
                if len(wanted) == 1:
                    raise
                refused.append((channel, refusal))
                reason = f"{channel.name} refused: {refusal}"
            if reason is not None:
                missing.append(reason)
        if refused and len(refused) == len(wanted):
            raise refused[0][1]
        for channel, error in refused:
            self._failed(channel, error)  # not asked again at once by every generation
            log.warning("could not open the %s event stream: %s", channel.name, error)
        if missing and not self._alive_for(node_id):
            # The generation can still finish through its row: let it poll.
            self.demux.end(node_id, "; ".join(missing))

    async def _check_idle(self, channel: _Channel) -> None:
        """Read what an unread connection holds, without waiting: a stream the
        server closed while nobody read it is then found closed (and replaced)
        before a generation counts on it, rather than after its first events
        went nowhere."""
        while channel.readable and await self._read_once(channel, IDLE_LOOK, look=True):
            pass
        # The look held the reader role for a moment: a generation that found the
        # channel taken meanwhile waits to be handed it.
        self._hand_over(channel)

    def _alive_for(self, node_id: str, *, but: _Channel | None = None) -> bool:
        """Whether a channel ``node_id`` reads (other than ``but``) is connected
        or connecting: its events may still come, so it is not told they won't."""
        return any(
            channel is not but
            and node_id in channel.subscribers
            and (channel.connection is not None or channel.connecting)
            for channel in self._channels.values()
        )

    def _failed(self, channel: _Channel, error: Exception | None = None) -> None:
        """Count a failed connection; the next try waits the backoff, or what the
        server asked for (a 429's or 503's ``Retry-After``) if longer, up to
        :data:`LONGEST_RECONNECT_WAIT`: meanwhile generations poll their rows."""
        channel.failures += 1
        wait = self._backoff(channel.failures)
        asked = error.retry_after_s if isinstance(error, APIError) else None
        if asked is not None:
            wait = max(wait, min(asked, LONGEST_RECONNECT_WAIT))
        channel.retry_at = self._now() + wait

    async def _connect(self, channel: _Channel, deadline: float | None) -> str | None:
        """Connect ``channel`` unless it is; why it could not be, or ``None``."""
        while channel.connection is None:
            if not channel.connecting and self._now() < channel.retry_at:
                # The stream keeps failing: do not hammer it. This generation
                # recovers its result from the row; a later one reconnects.
                return f"{channel.name} unavailable, reconnecting later"
            if channel.connecting:
                signal = self._new_signal()
                self._connect_waiters.append(signal)
                if not await signal.wait(deadline):
                    return None
                continue
            channel.connecting = True
            try:
                connection = await self._open_stream(channel.name, deadline)
                if self._closed:  # opened as the client closed: nobody may read it
                    await connection.aclose()
                    raise ClientStateError("the client is closed")
                channel.connection = connection
                channel.router.reset()
                channel.opened += 1
                channel.seen_at_open = channel.router.events_seen
                log.debug("/user_stream/%s is open (connection %d)", channel.name, channel.opened)
            except (ConnectionFailedError, TimeoutError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status_code not in RETRY_STATUSES:
                    raise  # refused for good (401, 403...): the generation cannot go on
                self._failed(channel, exc)
                log.warning("could not open the %s event stream: %s", channel.name, exc)
                channel.connecting = False
                self._not_connected(channel)
                return f"could not connect: {exc}"
            finally:
                channel.connecting = False
                waiters, self._connect_waiters = self._connect_waiters, []
                for signal in waiters:
                    signal.set()
                if channel.connection is not None:  # whoever waits for it may read it now
                    self._hand_over(channel)
        return None

    def _not_connected(self, channel: _Channel) -> None:
        """A connection attempt failed: the generations waiting for ``channel``
        with no other stream learn that their events will not come by it.
        (Not when it was cancelled: another waiter connects instead.)"""
        for node in channel.subscribers:
            if not self._alive_for(node):
                self.demux.end(node, f"{channel.name} could not be connected")
        self._wake(list(channel.subscribers))

    def alias(self, other_id: str, node_id: str) -> None:
        """Deliver ``other_id``'s events to ``node_id``'s subscriber too."""
        self.demux.alias(other_id, node_id)

    def unsubscribe(self, node_id: str) -> None:
        self.demux.unsubscribe(node_id)
        signal = self._waiters.pop(node_id, None)
        if signal is not None:  # a run closed by another task: its reader stops waiting
            signal.set()
        for channel in self._channels.values():
            channel.subscribers.discard(node_id)

    def holds_connections(self) -> bool:
        """Whether a stream is connected (or being connected)."""
        return any(c.connection is not None or c.connecting for c in self._channels.values())

    # -- losing connections ----------------------------------------------------------

    def _lose(self, channel: _Channel, reason: str, *, failed: bool = False) -> None:
        """Forget a connection that ended or broke. Its subscribers learn that
        their events may not come (they recover by polling); the next
        subscription reconnects, after a backoff when connections keep
        failing before they deliver anything."""
        if channel.router.events_seen != channel.seen_at_open:
            # It worked (whether it broke, ended or was found dead by a look): earlier
            # failures are history, and the next outage backs off from the start.
            channel.failures = 0
        elif failed:
            self._failed(channel)
        connection, channel.connection = channel.connection, None
        if connection is not None:
            self._broken.append(connection)
            log.debug("/user_stream/%s %s", channel.name, reason)
        for node in channel.subscribers:
            if self._alive_for(node, but=channel):  # its other stream may still tell it
                self.demux.end_partly(node, f"{channel.name} {reason}")
            else:
                self.demux.end(node, f"{channel.name} {reason}")
        self._wake(list(channel.subscribers))

    async def _close_broken(self) -> None:
        while self._broken:
            await self._broken.pop().aclose()

    # -- reading ------------------------------------------------------------------

    async def next_event(self, node_id: str, deadline: float) -> Delivery | DeadlineReached:
        """``node_id``'s next event, reading a channel for everyone if nobody
        else is; :data:`DEADLINE` when ``deadline`` passes first."""
        mine = [c for c in self._channels.values() if node_id in c.subscribers]
        try:
            while True:
                item = self.demux.pop(node_id)
                if item is not None:
                    return item
                if mine and not any(node_id in c.subscribers for c in mine):
                    return StreamEnded("unsubscribed")  # its run was closed meanwhile
                if not any(c.connection is not None or c.connecting for c in mine):
                    return StreamEnded("not connected")
                readable = [c for c in mine if c.readable]
                if readable:
                    if len(mine) == 1:
                        read = await self._read_once(readable[0], deadline)
                    else:
                        read = await self._read_any(node_id, readable, deadline)
                    if not read:
                        return DEADLINE
                    continue
                signal = self._new_signal()
                self._waiters[node_id] = signal
                if not await signal.wait(deadline):
                    self._waiters.pop(node_id, None)
                    return DEADLINE
        finally:
            # Whoever leaves lets a waiting generation take over what nobody reads.
            for channel in mine:
                self._hand_over(channel)

    async def _read_any(self, node_id: str, channels: list[_Channel], deadline: float) -> bool:
        """Read whichever of ``channels`` sends first, as their reader, until
        then also woken like a waiting node; ``False`` once ``deadline`` passed.

        A media job's result may come on either stream (``workflow_complete`` on
        ``sse``, or on ``stream`` as the old client expected), so a node on both
        reads both, or, while another generation reads one of them, reads the
        other and is woken when that reader routes it an event (or hands it the
        role). The reads and the wake-up race; the losers are cancelled, which
        costs nothing since a cancelled read consumes nothing (see :class:`ByteStream`).
        """
        signal = self._new_signal()
        self._waiters[node_id] = signal
        jobs = [functools.partial(self._read_claimed, c, deadline) for c in channels]
        jobs.append(functools.partial(signal.wait, deadline))
        # Claimed now, not when the race's tasks first run: in between, another
        # generation would find them free and read too (aiohttp refuses a second
        # reader with a RuntimeError; a memory stream would split the chunks).
        for channel in channels:
            channel.reading = True
        try:
            return await self._race(jobs)
        finally:
            for channel in channels:
                channel.reading = False
            if self._waiters.get(node_id) is signal:
                del self._waiters[node_id]

    async def _read_once(self, channel: _Channel, deadline: float, *, look: bool = False) -> bool:
        """Read one chunk of ``channel`` as its reader and route it; ``False``
        once ``deadline`` passed."""
        channel.reading = True
        try:
            return await self._read_claimed(channel, deadline, look=look)
        finally:
            channel.reading = False

    async def _read_claimed(
        self, channel: _Channel, deadline: float, *, look: bool = False
    ) -> bool:
        """:meth:`_read_once` for a channel whose reader role the caller holds.

        A look (at an idle stream) that finds it closed, broken or silent is no
        failure to back off from: servers and NATs end connections nobody reads."""
        connection = channel.connection
        if connection is None:  # lost before this read began (a race's task starts late)
            return True
        try:
            # Cancelled, the read leaves the connection as it was: the generation
            # leaving hands the reader role over (see next_event).
            data = await connection.read(deadline)
        except ConnectionFailedError as exc:
            if channel.connection is connection:
                self._lose(channel, f"connection failed: {exc}", failed=not look)
                await self._close_broken()  # not held open until the next generation
            return True
        if channel.connection is not connection:
            return True  # lost while this read waited (the client closed, say)
        if data is None:
            return False
        if not data:
            self._lose(channel, "closed by the server", failed=not look)
            await self._close_broken()
            return True
        self._wake(channel.router.feed(data))
        return True

    async def aclose(self) -> None:
        self._closed = True
        for channel in self._channels.values():
            if channel.connection is not None:
                self._lose(channel, "closed by the client")
        await self._close_broken()
