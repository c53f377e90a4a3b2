"""One open event-stream connection, as the model sees it.

The model puts items on a connection's timeline with the unix time they are
due; the server pulls what is due and is told how long to wait for the rest.
That keeps the model free of clocks and lets several generations' frames
interleave on one connection by time, as they do on the real shared stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs

from flowith_proto.fake.frames import heartbeat_frame
from flowith_proto.fake.script import Channel

__all__ = [
    "CloseStream",
    "DropStream",
    "FakeStream",
    "Hang",
    "Pause",
    "SendBytes",
    "StreamItem",
]


@attrs.frozen
class SendBytes:
    """Write these bytes now (one chunk of the chunked body)."""

    data: bytes


@attrs.frozen
class Pause:
    """Nothing more is due for ``seconds``: wait, then pull again."""

    seconds: float


@attrs.frozen
class CloseStream:
    """End the body cleanly with the final zero-length chunk."""


@attrs.frozen
class DropStream:
    """Close the socket at once, without ending the body: a broken connection."""


@attrs.frozen
class Hang:
    """Send nothing more, not even heartbeats, but keep the socket open."""


StreamItem = SendBytes | Pause | CloseStream | DropStream | Hang

_CHANNELS: dict[str, Channel] = {"/user_stream/stream": "stream", "/user_stream/sse": "sse"}


class FakeStream:
    """The server side of one ``/user_stream/*`` connection.

    ``closed`` becomes true once a close or drop has been pulled, or when the
    server reports with :meth:`close` that the connection ended; the model
    queues nothing more on it. ``hung`` becomes true once a hang is pulled.
    """

    status = 200
    headers: tuple[tuple[str, str], ...] = (
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
    )

    def __init__(self, *, path: str, user_id: str, opened_at: float) -> None:
        self.path = path
        self.channel: Channel = _CHANNELS[path]
        self.user_id = user_id
        self.opened_at = opened_at
        self.closed = False
        self.hung = False
        self.heartbeats_sent = 0
        #: Set by the server; called whenever the model queues items here.
        self.on_activity: Callable[[], None] | None = None
        self._timeline: list[tuple[float, int, StreamItem]] = []

    @property
    def accepting(self) -> bool:
        """Whether items queued now could still reach the client."""
        return not (self.closed or self.hung)

    def schedule(self, due: float, order: int, item: StreamItem) -> None:
        """Queue ``item`` for unix time ``due``; ``order`` breaks ties (the model's
        global counter, so one event keeps its place on every connection)."""
        if self.accepting:
            heapq.heappush(self._timeline, (due, order, item))

    def wake(self) -> None:
        """Tell the server that new items are queued."""
        if self.on_activity is not None and self.accepting:
            self.on_activity()

    def pull(self, *, now: float) -> list[StreamItem]:
        """Everything due by ``now`` (and removed from the queue); a trailing
        :class:`Pause` says when the next item is due, if one is queued."""
        if not self.accepting:
            return []
        items: list[StreamItem] = []
        timeline = self._timeline
        while timeline and timeline[0][0] <= now:
            item = heapq.heappop(timeline)[2]
            items.append(item)
            if isinstance(item, (CloseStream, DropStream, Hang)):
                self.closed = not isinstance(item, Hang)
                self.hung = isinstance(item, Hang)
                timeline.clear()
                return items
        if timeline:
            items.append(Pause(timeline[0][0] - now))
        return items

    def heartbeat(self, *, now: float) -> bytes:
        """The keep-alive frame the server writes after an idle interval."""
        self.heartbeats_sent += 1
        return heartbeat_frame(now)

    def close(self) -> None:
        """The connection is gone (client left, or the server stopped)."""
        self.closed = True
        self._timeline.clear()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "hung" if self.hung else "open"
        return f"<FakeStream {self.path} user={self.user_id} {state}>"
