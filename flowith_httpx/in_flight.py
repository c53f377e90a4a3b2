"""The requests a close must cancel itself.

Closing an ``httpx.AsyncClient`` closes the connections in its pool, but not one
still being set up: the request it carries goes on after the close, over a socket
nobody closes. So each request on a client of ours runs in a cancel scope that
the close cancels; the request then fails as any call on a closed client does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio

from flowith_proto.errors import ClientStateError

__all__ = ["InFlight"]


class InFlight:
    """The requests out on clients that :meth:`cancel` is about to close."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._cancelled = False

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Carry one request: :class:`ClientStateError` if the clients closed before
        or while it was out."""
        if self._cancelled:  # it waited (its turn, a thread) while the client closed
            raise ClientStateError("the client is closed")
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught:
            raise ClientStateError("the client is closed")

    def cancel(self) -> None:
        """Cancel every request out, and refuse those to come."""
        self._cancelled = True
        for scope in self._scopes:
            scope.cancel()
