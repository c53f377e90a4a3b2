"""What an operation asks of the outside world.

Operations are generators: they yield an effect, the driver performs it and
sends the result back. Nothing else reaches them, so the same operation runs on
asyncio, trio, aiohttp, httpx or a plain synchronous replay, and a test can
drive it by hand and see every step. Ids and times are effects too, so a
recorded run replays exactly.

=================  =====================================  ==========================
effect             the driver does                        and sends back
=================  =====================================  ==========================
``Now``            reads its monotonic clock              ``float`` seconds
``WallClock``      reads the time of day                  ``float`` unix seconds
``NewId``          draws a random UUID4                   ``str``
``Jitter``         draws a uniform random number          ``float`` in [0, 1)
``Send``           sends the request, reads the answer    :class:`Response`
``RefreshToken``   renews the tokens, once for everyone   ``None``
``Subscribe``      opens the shared streams if needed     ``None``, once the streams'
                   and keeps the node's events            headers have arrived
``Alias``          routes another node id's events too    ``None``
``NextEvent``      waits for the node's next event        an event, ``StreamEnded``
                                                          or ``DEADLINE``
``Sleep``          waits until a monotonic time           ``None``
``Emit``           hands a partial result to the caller   ``None``
=================  =====================================  ==========================

A failed ``Send`` is thrown into the operation as :class:`ConnectionFailedError`
or :class:`TimeoutError`. The driver unsubscribes every node an operation
subscribed when the operation ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import attrs

from flowith_proto.request import Request

__all__ = [
    "DEADLINE",
    "Alias",
    "DeadlineReached",
    "Effect",
    "Emit",
    "Jitter",
    "NewId",
    "NextEvent",
    "Now",
    "Operation",
    "RefreshToken",
    "Send",
    "Sleep",
    "Subscribe",
    "WallClock",
]

T = TypeVar("T")


@attrs.frozen
class Now:
    """The driver's monotonic clock, in seconds (deadlines are on this clock)."""


@attrs.frozen
class WallClock:
    """The time of day, in unix seconds (for timestamps the server stores)."""


@attrs.frozen
class NewId:
    """A fresh random UUID4, as a string."""


@attrs.frozen
class Jitter:
    """A uniform random float in [0, 1), to spread retries apart."""


@attrs.frozen
class RefreshToken:
    """Renew the access token with the refresh token, unless that already
    happened since ``seen_token`` was used: concurrent callers share one
    refresh, because a refresh token works only once. A caller with a
    ``deadline`` (monotonic) stops waiting for the refresh then (it goes on
    without it: :class:`~flowith_proto.errors.TimeoutError`)."""

    seen_token: str = attrs.field(repr=False)
    deadline: float | None = None


@attrs.frozen
class Send:
    """Send ``request`` and return the complete answer, whatever its status.

    ``timeout`` overrides the client's per-request timeout; ``deadline``
    (monotonic) bounds the exchange on top of it.
    """

    request: Request
    deadline: float | None = None
    timeout: float | None = None


@attrs.frozen
class Subscribe:
    """Keep ``node_id``'s events from the user's shared streams ``channels``
    (``"stream"``, ``"sse"``), opening them first if needed. Returns once the
    connections are established, so a request sent afterwards cannot produce
    an event that is missed. Waiting for a connection ends at ``deadline`` (the
    operation's): the operation then recovers its result by polling."""

    node_id: str
    channels: tuple[str, ...] = ("stream",)
    deadline: float | None = None


@attrs.frozen
class Alias:
    """Deliver events naming ``other_id`` to ``node_id``'s subscription too
    (the server may choose a node's id itself)."""

    other_id: str
    node_id: str


@attrs.frozen
class NextEvent:
    """The next event for ``node_id``, or :data:`DEADLINE` once ``deadline``
    (monotonic) has passed with nothing new."""

    node_id: str
    deadline: float


@attrs.frozen
class Sleep:
    """Wait until the monotonic time ``until``."""

    until: float


@attrs.frozen
class Emit:
    """Hand ``value`` to a streaming caller."""

    value: Any


@attrs.frozen
class DeadlineReached:
    """What :class:`NextEvent` returns when its deadline passed."""


DEADLINE = DeadlineReached()

Effect = (
    Now
    | WallClock
    | NewId
    | Jitter
    | Send
    | RefreshToken
    | Subscribe
    | Alias
    | NextEvent
    | Sleep
    | Emit
)

#: An operation yields effects, receives their results, and returns a ``T``.
Operation = Generator[Effect, Any, T]
