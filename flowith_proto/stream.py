"""The user's shared event stream, minus the socket: bytes in, routed events out.

A transport feeds whatever bytes the connection delivers; :class:`StreamRouter`
decodes server-sent events, parses Flowith's payloads and queues each event for
the node it names. Bad input is normal input here: an oversized event, a frame
that is not JSON or a payload of the wrong shape is logged and skipped, and the
stream keeps serving every other generation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from flowith_proto import logs
from flowith_proto.demux import Demultiplexer
from flowith_proto.events import MalformedEvent, decode_event, unwrap
from flowith_proto.sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecoder

__all__ = ["StreamRouter", "listener_payloads"]

log = logs.logger("flowith.stream")


class StreamRouter:
    """Decoder plus routing for one connection, across reconnects.

    Several routers may share one :class:`Demultiplexer`: a generation whose
    result can arrive on either of the user's two streams reads one queue.
    """

    __slots__ = ("_decoder", "_max_event_size", "demux", "events_seen")

    def __init__(
        self, demux: Demultiplexer | None = None, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        self._max_event_size = max_event_size
        self._decoder = SSEDecoder(max_event_size=max_event_size)
        self.demux = demux if demux is not None else Demultiplexer()
        #: Events decoded so far, heartbeats included (a liveness measure).
        self.events_seen = 0

    def feed(self, data: bytes) -> set[str]:
        """Route the events completed by ``data``; return the nodes that got one."""
        woken: set[str] = set()
        for sse in self._decoder.feed(data):
            self.events_seen += 1
            event = decode_event(sse.data)
            if isinstance(event, MalformedEvent):
                log.warning(
                    "skipping a malformed stream event%s: %s",
                    f" for node {event.node_id}" if event.node_id else "",
                    event.reason,
                )
                continue
            subscriber = self.demux.route(event)
            if subscriber is not None:
                woken.add(subscriber)
        for error in self._decoder.take_errors():
            log.warning("skipping an oversized stream event: %s", error)
        return woken

    def reset(self) -> None:
        """A new connection starts: half-received events of the old one are gone."""
        self._decoder = SSEDecoder(max_event_size=self._max_event_size)


def listener_payloads(events: Iterable[ServerSentEvent], *, raw: bool) -> list[dict[str, Any]]:
    """What ``stream_user_stream`` (``raw=False``: unwrapped, no heartbeats)
    and ``stream_user_sse`` (``raw=True``: as sent, heartbeats kept) yield."""
    payloads: list[dict[str, Any]] = []
    for sse in events:
        try:
            payload = json.loads(sse.data)
        except (ValueError, RecursionError):
            log.debug("skipping a non-JSON frame on a listened stream")
            continue
        if not isinstance(payload, Mapping):
            log.debug("skipping a non-object frame on a listened stream")
            continue
        if raw:
            payloads.append(dict(payload))
            continue
        inner = unwrap(payload)
        if "heartbeat" in inner and len(inner) == 1:
            continue
        payloads.append(dict(inner))
    return payloads
