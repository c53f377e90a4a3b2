"""Routing the user's one event stream to the generations waiting on it.

The web app keeps a single ``/user_stream/stream`` connection per user and every
generation's events arrive on it, interleaved. The :class:`Demultiplexer`
hands each event to the node it names, buffering what arrives before the
waiting generation reads it (a generation subscribes *before* it starts, so its
first chunk is never lost: defect D1). Events for nodes nobody waits on are
dropped, which bounds memory by the number of live subscriptions.
"""

from __future__ import annotations

from collections import deque

import attrs

from flowith_proto import logs
from flowith_proto.events import FlowithEvent, Heartbeat

__all__ = ["Demultiplexer", "StreamEnded"]

log = logs.logger("flowith.stream")


@attrs.frozen
class StreamEnded:
    """Delivered to every subscriber when the shared connection ends or fails
    before their node finished: the cue to recover the result by polling.

    ``partial``: only one of the node's streams ended, and another still
    carries its events (a media job on both): a cue to read the row sooner,
    not to stop listening.
    """

    reason: str
    partial: bool = False


Delivery = FlowithEvent | StreamEnded


class Demultiplexer:
    """Per-node queues of events; a pure data structure, no waiting."""

    __slots__ = ("_aliases", "_queues", "_recent")

    #: Unrouted events remembered while a generation is under way, in case their node
    #: is aliased a moment later (the server may pick a video job's node id).
    RECENT = 256

    def __init__(self) -> None:
        self._queues: dict[str, deque[Delivery]] = {}
        self._aliases: dict[str, str] = {}
        self._recent: deque[FlowithEvent] = deque(maxlen=self.RECENT)

    def subscribe(self, node_id: str) -> None:
        """Start keeping ``node_id``'s events (idempotent)."""
        self._queues.setdefault(node_id, deque())

    def unsubscribe(self, node_id: str) -> None:
        """Stop keeping ``node_id``'s events and forget what was buffered."""
        self._queues.pop(node_id, None)
        for alias in [a for a, target in self._aliases.items() if target == node_id]:
            del self._aliases[alias]
        if not self._queues:
            # No generation is left to alias them: a late answer of one that timed
            # out (its text whole, perhaps) is no longer kept while the client idles.
            self._recent.clear()

    def alias(self, other_id: str, node_id: str) -> None:
        """Route ``other_id``'s events to ``node_id``'s subscriber too (the
        server may pick a video's node id itself). Events for ``other_id``
        that arrived just before the alias was known are delivered as well."""
        if other_id == node_id:
            return
        self._aliases[other_id] = node_id
        queue = self._queues.get(node_id)
        if queue is not None:
            early = [e for e in self._recent if getattr(e, "node_id", "") == other_id]
            if early:
                self._recent = deque(
                    (e for e in self._recent if getattr(e, "node_id", "") != other_id),
                    maxlen=self.RECENT,
                )
                queue.extend(early)

    def is_subscribed(self, node_id: str) -> bool:
        return node_id in self._queues

    @property
    def subscriptions(self) -> int:
        return len(self._queues)

    def route(self, event: FlowithEvent) -> str | None:
        """Queue ``event`` for the node it names (or aliases); return that
        subscriber's node id, or ``None`` when nobody waits on it."""
        if isinstance(event, Heartbeat):
            return None
        node_id = getattr(event, "node_id", "")
        if not node_id:
            return None
        queue = self._queues.get(node_id)
        if queue is None:
            target = self._aliases.get(node_id)
            if target is None or (queue := self._queues.get(target)) is None:
                if self._queues:  # only a generation under way can alias it
                    self._recent.append(event)
                return None
            node_id = target
        queue.append(event)
        return node_id

    def pending(self, node_id: str) -> bool:
        """Whether ``node_id`` has something to read."""
        queue = self._queues.get(node_id)
        return bool(queue)

    def pop(self, node_id: str) -> Delivery | None:
        """The oldest undelivered event of ``node_id``, or ``None``."""
        queue = self._queues.get(node_id)
        if not queue:
            return None
        return queue.popleft()

    def end(self, node_id: str, reason: str) -> None:
        """Tell one subscriber its events will not come (it could not connect),
        unless the last thing it has to read already says so."""
        self._end(node_id, StreamEnded(reason))

    def end_partly(self, node_id: str, reason: str) -> None:
        """Tell one subscriber that one of its streams ended (see :class:`StreamEnded`)."""
        self._end(node_id, StreamEnded(reason, partial=True))

    def _end(self, node_id: str, marker: StreamEnded) -> None:
        queue = self._queues.get(node_id)
        if queue is None:
            return
        last = queue[-1] if queue else None
        if not (isinstance(last, StreamEnded) and not last.partial):  # said already
            queue.append(marker)

    def end_all(self, reason: str) -> None:
        """The connection is gone: tell every subscriber, after what they
        already have buffered."""
        if self._queues:
            log.debug("stream ended (%s) with %d subscriber(s)", reason, len(self._queues))
        marker = StreamEnded(reason)
        for queue in self._queues.values():
            queue.append(marker)
