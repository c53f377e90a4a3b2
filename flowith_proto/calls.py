"""Sending one request and judging its answer: the step every operation shares.

:func:`call` is where the client's resilience lives, decided here once for
every transport: a request is rebuilt from the current credentials for each
attempt; a token about to expire is renewed first and an expired one renewed
once and the request replayed (D14); failures worth retrying are retried per
:class:`~flowith_proto.retry.RetryPolicy`, within the caller's deadline.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from flowith_proto import logs
from flowith_proto.effects import Jitter, Now, Operation, RefreshToken, Send, Sleep, WallClock
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    ResponseDecodeError,
    Secrets,
    TimeoutError,
    error_from_response,
    is_token_expired,
    retry_after_seconds,
)
from flowith_proto.request import Request, Response
from flowith_proto.state import ClientState

__all__ = ["call"]

log = logs.logger("flowith.client")

#: Seconds an early refresh rests after it failed with the token still good, unless
#: the server said how long (``Retry-After``): every call would try it again, and a
#: rate-limited ``/token`` would be hit harder.
EARLY_REFRESH_PAUSE = 30.0

#: Answers whose ``Retry-After`` says when to try again (RFC 9110 §10.2.3): a 429
#: turned the request away, a 503 is down for that long.
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def _wait(
    seconds: float, deadline: float | None, budget: float | None
) -> Operation[tuple[bool, float | None]]:
    """Sleep ``seconds`` unless that would pass the deadline; whether it slept,
    and the deadline in force: ``deadline``, else ``budget`` seconds from this
    first wait (read on the operation's own clock, so that a replay agrees)."""
    now: float = yield Now()
    if deadline is None and budget is not None:
        deadline = now + budget
    if deadline is not None and now + seconds >= deadline:
        return False, deadline
    yield Sleep(now + seconds)
    return True, deadline


def _duplicate(response: Response) -> bool:
    """PostgREST's unique-violation answer (SQLSTATE 23505)."""
    try:
        body = response.json()
    except ResponseDecodeError:
        return False
    return isinstance(body, dict) and body.get("code") == "23505"


def _refresh_early(
    state: ClientState, access_token: str, unix_now: float, deadline: float | None
) -> Operation[None]:
    """Renew a token about to expire; if that fails while it is still good (the server
    busy or rate-limiting, the network down), go on with it, and rest a while before
    trying again. A refused refresh token still raises: the session has ended."""
    try:
        yield RefreshToken(access_token, deadline)
    except (APIError, ConnectionFailedError, TimeoutError) as error:
        expires_at = state.credentials.expires_at
        still_good = expires_at is not None and unix_now < expires_at
        if isinstance(error, (AuthenticationError, ResponseDecodeError)) or not still_good:
            raise
        if isinstance(error, TimeoutError) and error.deadline_passed:
            raise  # the call's own deadline: nothing left to go on with
        pause = error.retry_after_s if isinstance(error, APIError) else None
        state.early_refresh_after = unix_now + (EARLY_REFRESH_PAUSE if pause is None else pause)
        log.warning(
            "an early token refresh failed (%s); going on with the current token, "
            "good for %.0fs more",
            error,
            (expires_at or unix_now) - unix_now,
        )


def call(
    state: ClientState,
    build: Callable[[Endpoints], Request],
    *,
    deadline: float | None = None,
    timeout: float | None = None,
    renew_token: bool = True,
    extra_secrets: tuple[str, ...] = (),
    budget: float | None = None,
) -> Operation[Response]:
    """Send the request ``build`` makes and return its successful answer, or
    raise the exception its status maps to.

    ``timeout`` overrides the client's per-request limit; ``deadline`` bounds
    the call as a whole, retries included. ``renew_token=False`` is for the
    refresh request itself. ``extra_secrets`` are credentials the request carries that
    the client does not hold (a refresh token passed in): errors never quote them.
    ``budget``, without a ``deadline``, bounds the waits between attempts: they
    end within that many seconds of the first.
    """
    policy = state.retry
    attempt = 0
    renewed = False
    while True:
        credentials = state.credentials
        if renew_token and credentials.refresh_token and credentials.expires_at is not None:
            unix_now: float = yield WallClock()
            if credentials.needs_refresh(unix_now) and unix_now >= state.early_refresh_after:
                yield from _refresh_early(state, credentials.access_token, unix_now, deadline)
                credentials = state.credentials  # what the request carries: maybe renewed
        request = build(state.endpoints)
        try:
            response: Response = yield Send(request, deadline, timeout)
        except (ConnectionFailedError, TimeoutError) as exc:
            if policy.next_try(request, attempt, exc) is not None:
                jitter: float = yield Jitter()
                backoff = policy.backoff(attempt, jitter)
                slept, deadline = yield from _wait(backoff, deadline, budget)
                if slept:
                    attempt += 1
                    continue
            raise
        # The request's own credentials and the current ones (a refresh may
        # have come in between): both are still valid, so both are hidden.
        secrets = Secrets((*credentials.secrets, *state.secrets, *extra_secrets))
        status = response.status
        if 200 <= status < 300:  # (a transport may pass on an interim 1xx: no success)
            return attrs.evolve(response, secrets=secrets, endpoint=request.endpoint)
        if attempt and status == 409 and request.conflict_means_done and _duplicate(response):
            return response  # an earlier attempt created the row after all
        if (
            renew_token
            and not renewed
            and state.credentials.refresh_token
            and is_token_expired(status, response.body)
        ):
            renewed = True
            yield RefreshToken(credentials.access_token, deadline)
            continue
        now: float | None = None
        retry_after = response.header("retry-after")
        if status in _RETRY_AFTER_STATUSES and retry_after is not None:
            now = yield WallClock()
        error = error_from_response(
            status,
            response.headers,
            response.body,
            now=now,
            secrets=secrets,
            endpoint=request.endpoint,
        )
        assert error is not None
        asked = (
            retry_after_seconds(retry_after, now=now) if status in _RETRY_AFTER_STATUSES else None
        )
        # The server said when; a wait longer than the policy allows is the caller's
        # to decide (the error carries it on a 429).
        again = policy.next_try(request, attempt, status, asked)
        if again is not None:
            wait = again.seconds
            if wait is None:
                jitter = yield Jitter()
                wait = policy.backoff(attempt, jitter)
            slept, deadline = yield from _wait(wait, deadline, budget)
            if slept:
                attempt += 1
                continue
        raise error
