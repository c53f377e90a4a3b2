"""Lanes: the small httpx clients a client's short requests go out on.

httpcore's connection pool walks all its connections each time a request starts
or ends, asking each idle one whether it expired (a socket poll, and on asyncio a
``getpeername`` through anyio) and, for each idle one, counting them all again. With
many requests at once the pool holds many connections, so each request costs in
proportion to the crowd: through one pool, even with at most 16 requests in it, a
thousand concurrent generations cost every streamed chunk about 1.5 times what one
does, nearly all of it in that bookkeeping; through lanes, no more than one does.

A lane is an ``httpx.AsyncClient`` that carries one request at a time, so its
pool holds at most one connection per host and its upkeep stays the same at any
concurrency. At most :data:`LANES` requests are out at once; more wait their turn
in order. The lane used last is reused first, so a quiet client keeps sending on
one warm connection, and lanes are made only when that many requests overlap; a
lane left idle past :data:`IDLE_LIMIT` is closed with its connections, as httpx
lets a kept-alive connection go.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import anyio
import httpx

from flowith_httpx.in_flight import InFlight
from flowith_proto.config import REQUESTS_AT_ONCE
from flowith_proto.errors import ClientStateError

__all__ = ["IDLE_LIMIT", "LANES", "Lanes"]

#: The most requests out at once, each on a lane of its own.
LANES = REQUESTS_AT_ONCE
#: Seconds a lane may stay idle before it is closed: httpx's keep-alive expiry.
IDLE_LIMIT = 5.0


class Lanes:
    """Up to :data:`LANES` httpx clients made by ``make``, handed out one request at a time."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._idle_limit = IDLE_LIMIT
        self._all: list[httpx.AsyncClient] = []
        # (idle since, lane): the one used last, last, so the longest idle come first.
        self._idle: list[tuple[float, httpx.AsyncClient]] = []
        self._turns: anyio.Semaphore | None = None  # made in the event loop, on first use
        self._closed = False
        self._in_flight = InFlight()  # aclose() cancels them (see flowith_httpx.in_flight)

    @property
    def crowded(self) -> bool:
        """Every turn is taken: a request now waits for one."""
        return self._turns is not None and self._turns.value == 0

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[httpx.AsyncClient]:
        """Wait for a turn, then lend a lane for one request."""
        if self._turns is None:
            self._turns = anyio.Semaphore(LANES)
        async with self._turns:
            if self._closed:  # a request that waited its turn while the client closed
                raise ClientStateError("the client is closed")
            # Out from here: a close while stale lanes are closed below cancels this
            # request too, and the lane it then takes is closed on the way out.
            with self._in_flight.request():
                if self._idle:
                    await self._close_stale()
                if self._idle:
                    lane = self._idle.pop()[1]
                else:
                    lane = self._make()
                    self._all.append(lane)
                cut_short = True
                try:
                    yield lane
                    cut_short = False
                finally:
                    await self._give_back(lane, cut_short)

    async def _give_back(self, lane: httpx.AsyncClient, cut_short: bool) -> None:
        """Keep a lane for the next request, or close it: when the client closed while
        its request was out (no lane may outlive it), or when the request was cut short
        (cancelled, timed out, broken), since httpcore may then count its connection
        busy for good (asyncio's ``task.cancel()`` can leave it so) and keep it open
        and unused until the client closes. A fresh lane costs one connect."""
        if self._closed or cut_short:
            if lane in self._all:
                self._all.remove(lane)
            with anyio.CancelScope(shield=True):
                await lane.aclose()
        else:
            self._idle.append((anyio.current_time(), lane))

    async def _close_stale(self) -> None:
        """Close the lanes idle for longer than the limit, and their connections."""
        idle = self._idle
        since = anyio.current_time() - self._idle_limit
        stale = 0
        while stale < len(idle) and idle[stale][0] < since:
            stale += 1
        if stale:
            lanes = [lane for _, lane in idle[:stale]]
            del idle[:stale]
            with anyio.CancelScope(shield=True):  # a lane half closed would leak its sockets
                for lane in lanes:
                    self._all.remove(lane)
                    await lane.aclose()

    async def aclose(self) -> None:
        """Close every lane (a request still out on one fails, as on a closed client);
        a request waiting for its turn fails too."""
        self._closed = True
        self._in_flight.cancel()
        lanes, self._all, self._idle = self._all, [], []
        for lane in lanes:
            await lane.aclose()
