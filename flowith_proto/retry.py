"""When a failed request may be sent again, and after how long.

The policy lives here, once, so that every transport retries the same way:
only requests that are safe to repeat are repeated (reads; anything that
provably never reached the server; row inserts whose client-chosen id makes a
duplicate detectable), on the failures that are worth it, with jittered
exponential backoff under a cap, and never past the caller's deadline.
"""

from __future__ import annotations

import attrs

from flowith_proto.errors import ConnectionFailedError, TimeoutError
from flowith_proto.request import Request

__all__ = ["RETRY_STATUSES", "RetryPolicy", "Wait", "doubled"]

#: Answers that say "try again": timeouts, throttling and passing server trouble.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def doubled(first: float, times: int, ceiling: float) -> float:
    """``first`` doubled ``times`` times, at most ``ceiling``: the backoffs' growth.

    Any count will do: ``first * 2 ** times`` overflowed a float from 1,024 doublings
    on, and a stream that keeps failing for hours counts that many.
    """
    return min(ceiling, first * 2.0 ** min(times, 64))


@attrs.frozen
class Wait:
    """A retry allowed, after ``seconds`` (the server's ``Retry-After``), or after the
    policy's backoff when ``None``."""

    seconds: float | None = None


@attrs.frozen
class RetryPolicy:
    """How many times, and how far apart, a request is retried."""

    #: Retries after the first attempt (so at most ``max_retries + 1`` sends).
    max_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    #: The first backoff, doubled after each attempt...
    base_delay: float = 0.5
    #: ...up to this cap.
    max_delay: float = 8.0
    #: A server asking to wait longer than this is not waited for: the error
    #: goes to the caller, who can decide.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int, jitter: float) -> float:
        """The wait before retry number ``attempt`` (0-based); ``jitter`` in
        [0, 1) spreads clients apart while keeping at least half the wait."""
        return doubled(self.base_delay, attempt, self.max_delay) * (0.5 + jitter / 2)

    def may_resend(self, request: Request, error: Exception) -> bool:
        """Whether a request that failed in transit may go out again."""
        if isinstance(error, (ConnectionFailedError, TimeoutError)):
            return request.idempotent or request.conflict_means_done or not error.request_sent
        return False

    def may_repeat(self, request: Request, status: int) -> bool:
        """Whether a request answered with ``status`` may be sent again.

        A 429 means the request was turned away unprocessed, so even a write
        may repeat it; other statuses only for requests safe to repeat.
        """
        if status not in RETRY_STATUSES:
            return False
        return status == 429 or request.idempotent or request.conflict_means_done

    def next_try(
        self,
        request: Request,
        attempt: int,
        failure: int | Exception,
        asked: float | None = None,
    ) -> Wait | None:
        """Whether attempt ``attempt`` (0-based) of ``request``, which ``failure``
        ended (an answer's status, or an error in transit), may be followed by
        another, and when: ``None`` if not. ``asked`` is the wait the answer's
        ``Retry-After`` asked for, however long: one longer than
        :attr:`max_retry_after` is the caller's to decide, so no retry."""
        if attempt >= self.max_retries:
            return None
        if isinstance(failure, int):
            if not self.may_repeat(request, failure):
                return None
            if asked is not None:
                return Wait(asked) if asked <= self.max_retry_after else None
            return Wait()
        return Wait() if self.may_resend(request, failure) else None
