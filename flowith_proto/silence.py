"""Taking an event stream that has gone silent for a dead one.

A connection can die without closing: a NAT or proxy forgets it, a laptop
sleeps, the peer vanishes. No byte comes then, not even the end of the body,
and a reader would wait for ever, while every later generation counted on the
dead stream. The user streams send heartbeats (about every 5 s on ``/sse``,
protocol.md 4.1), so a long silence means the connection is gone: the watchdog
turns it into a :class:`ConnectionFailedError`, which the hub and the listeners
already handle (generations read their row, the next one reconnects; a
listener's caller sees the error).

It wraps the transport's body under the cassette recorder, so a recording holds
the break where it happened and a replay repeats it without a clock.
"""

from __future__ import annotations

from collections.abc import Callable

from flowith_proto.errors import ConnectionFailedError
from flowith_proto.hub import ByteStream

__all__ = ["DEFAULT_STREAM_IDLE_TIMEOUT", "SilenceWatchdog"]

#: Seconds of silence after which a live stream counts as dead by default: twelve
#: of ``/sse``'s heartbeats missed (the ``/stream`` interval is unverified).
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0


class SilenceWatchdog:
    """A stream body whose connection counts as broken once nothing has come
    for ``limit`` seconds (heartbeats count: they are bytes)."""

    __slots__ = ("_body", "_heard_at", "_limit", "_now")

    def __init__(self, body: ByteStream, now: Callable[[], float], limit: float) -> None:
        self._body = body
        self._now = now
        self._limit = limit
        self._heard_at = now()

    async def read(self, deadline: float | None) -> bytes | None:
        silent_at = self._heard_at + self._limit
        if deadline is not None and deadline <= silent_at:
            data = await self._body.read(deadline)
        else:
            # Past silent_at this is a look: what has arrived, else the verdict.
            data = await self._body.read(silent_at)
            if data is None:
                raise ConnectionFailedError(
                    f"the event stream sent nothing for {self._limit:g} s, not even a "
                    "heartbeat: the connection is taken for dead"
                )
        if data:
            self._heard_at = self._now()
        return data

    async def aclose(self) -> None:
        await self._body.aclose()
