"""Sending one request and judging its answer: the step every operation shares."""

from __future__ import annotations

from collections.abc import Callable

from flowith_proto.effects import Operation, Send, WallClock
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import error_from_response
from flowith_proto.request import Request, Response
from flowith_proto.state import ClientState

__all__ = ["call"]


def call(
    state: ClientState,
    build: Callable[[Endpoints], Request],
    *,
    deadline: float | None = None,
    timeout: float | None = None,
) -> Operation[Response]:
    """Send the request ``build`` makes and return its successful answer, or
    raise the exception its status maps to.

    The request is built from the current credentials at the moment it is
    sent, so it is always signed with the newest token. ``timeout`` overrides
    the client's per-request limit; ``deadline`` bounds the call as a whole.
    """
    request = build(state.endpoints)
    response: Response = yield Send(request, deadline, timeout)
    if response.status < 400:
        return response
    now: float | None = None
    if response.status == 429 and response.header("retry-after") is not None:
        now = yield WallClock()
    error = error_from_response(
        response.status,
        response.headers,
        response.body,
        now=now,
        secrets=(*state.credentials.secrets, state.config.supabase_key),
    )
    assert error is not None
    raise error
