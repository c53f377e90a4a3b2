"""Taking an event stream that has gone silent for a dead one.

A connection can die without closing: a NAT or proxy forgets it, a laptop
sleeps, the peer vanishes. No byte comes then, not even the end of the body,
and a reader would wait for ever, while every later generation counted on the
dead stream. The user streams send heartbeats (about every 5 s on ``/sse``,
protocol.md 4.1), so a long silence means the connection is gone: the watchdog
turns it into a :class:`ConnectionFailedError`, which the hub and the listeners
already handle (generations read their row, the next one reconnects; a
listener's caller sees the error).

Bytes a stream buffered while nobody read it say little: heartbeats that came
before the connection died wait there as well as fresh ones. So what the hub's
look at an idle stream (:data:`~flowith_proto.hub.IDLE_LOOK`) finds counts as
heard when the stream was last read, the earliest it can have come; and that
look at a stream nobody read for longer than the limit gives the verdict at
once, whatever it holds: a replaced healthy stream costs a reconnection before
the generation starts, a dead one would cost the whole turn. A reader that is
merely slow (a listener's caller taking its time) is no idle stream: what it
gets counts as heard when it gets it.

It wraps the transport's body under the cassette recorder, so a recording holds
the break where it happened and a replay repeats it without a clock.
"""

from __future__ import annotations

from collections.abc import Callable

from flowith_proto.errors import ConnectionFailedError
from flowith_proto.hub import IDLE_LOOK, ByteStream

__all__ = ["DEFAULT_STREAM_IDLE_TIMEOUT", "SilenceWatchdog"]

#: Seconds of silence after which a live stream counts as dead by default: twelve
#: of ``/sse``'s heartbeats missed (the ``/stream`` interval is unverified).
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0


class SilenceWatchdog:
    """A stream body whose connection counts as broken once nothing has come
    for ``limit`` seconds (heartbeats count: they are bytes)."""

    __slots__ = ("_body", "_heard_at", "_limit", "_now", "_read_at")

    def __init__(self, body: ByteStream, now: Callable[[], float], limit: float) -> None:
        self._body = body
        self._now = now
        self._limit = limit
        self._heard_at = self._read_at = now()

    async def read(self, deadline: float | None) -> bytes | None:
        now = self._now()
        if deadline == IDLE_LOOK and now - self._read_at > self._limit:
            raise ConnectionFailedError(
                f"the event stream was not read for over {self._limit:g} s: what it holds "
                "cannot tell whether the connection still lives, so it is taken for dead"
            )
        silent_at = self._heard_at + self._limit
        data = await self._body.read(silent_at if deadline is None else min(deadline, silent_at))
        read_before, self._read_at = self._read_at, self._now()
        if data is None:
            # The watchdog's own deadline, or a look after it: the verdict.
            if deadline is None or silent_at <= deadline or self._read_at >= silent_at:
                raise ConnectionFailedError(
                    f"the event stream sent nothing for {self._limit:g} s, not even a "
                    "heartbeat: the connection is taken for dead"
                )
        elif data:
            # What the idle look finds may have waited since the last read; what a
            # reader gets came while it waited, or while it was busy: fresh enough.
            self._heard_at = max(
                self._heard_at, read_before if deadline == IDLE_LOOK else self._read_at
            )
        return data

    async def aclose(self) -> None:
        await self._body.aclose()
