"""How far a request got before it failed: whether a retry could repeat it.

A write may be sent again only if no byte of it can have reached the server.
A connection error before connecting says so by its type; a timeout does not
(was it connecting, or waiting for the answer?). So a transport notes what its
HTTP library reports while the request runs, and asks here afterwards.
"""

from __future__ import annotations

from flowith_proto.errors import TimeoutError

__all__ = ["RequestProgress"]


class RequestProgress:
    """What a transport's tracing saw of one request.

    Unsent is only claimed on evidence: a new connection was being made and the
    request's headers never started out. A request that saw no tracing at all
    (a transport or client that does not report it) counts as sent.
    """

    __slots__ = ("_connecting", "_sending")

    def __init__(self) -> None:
        self._connecting = False
        self._sending = False

    def connecting(self) -> None:
        """A new connection for the request is being opened."""
        self._connecting = True

    def sending(self) -> None:
        """The request's headers started out on a connection."""
        self._sending = True

    @property
    def sent(self) -> bool:
        """Whether any byte of the request may have reached the server."""
        return self._sending or not self._connecting

    def timed_out(self, limit: float) -> TimeoutError:
        """The error for a request that outlived ``limit`` seconds, saying
        whether it ever left (then even a write may be retried)."""
        if not self.sent:
            return TimeoutError(
                f"request was not sent: connecting took longer than {limit:.3g}s",
                request_sent=False,
            )
        return TimeoutError(f"request took longer than {limit:.3g}s")
