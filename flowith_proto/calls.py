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

from flowith_proto.effects import Jitter, Now, Operation, RefreshToken, Send, Sleep, WallClock
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import (
    ConnectionFailedError,
    ResponseDecodeError,
    TimeoutError,
    error_from_response,
    is_token_expired,
    retry_after_seconds,
)
from flowith_proto.request import Request, Response
from flowith_proto.state import ClientState

__all__ = ["call"]

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
            if credentials.needs_refresh(unix_now):
                yield RefreshToken(credentials.access_token)
        request = build(state.endpoints)
        try:
            response: Response = yield Send(request, deadline, timeout)
        except (ConnectionFailedError, TimeoutError) as exc:
            if attempt < policy.max_retries and policy.may_resend(request, exc):
                jitter: float = yield Jitter()
                backoff = policy.backoff(attempt, jitter)
                slept, deadline = yield from _wait(backoff, deadline, budget)
                if slept:
                    attempt += 1
                    continue
            raise
        # The request's own credentials and the current ones (a refresh may
        # have come in between): both are still valid, so both are hidden.
        secrets = (*credentials.secrets, *state.secrets, *extra_secrets)
        status = response.status
        if status < 300:
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
            yield RefreshToken(credentials.access_token)
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
        if attempt < policy.max_retries and policy.may_repeat(request, status):
            wait: float | None = None
            asked = (
                retry_after_seconds(retry_after, now=now)
                if status in _RETRY_AFTER_STATUSES
                else None
            )
            if asked is not None:
                # The server said when; a wait longer than the policy allows is the
                # caller's to decide (the error carries it on a 429).
                if asked <= policy.max_retry_after:
                    wait = asked
            else:
                jitter = yield Jitter()
                wait = policy.backoff(attempt, jitter)
            if wait is not None:
                slept, deadline = yield from _wait(wait, deadline, budget)
                if slept:
                    attempt += 1
                    continue
        raise error
