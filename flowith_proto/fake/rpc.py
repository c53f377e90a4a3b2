"""PostgREST RPCs (``POST /rest/v1/rpc/<function>``): the online-presence functions.

PostgREST picks a function by its name and the set of argument names in the
body, so an unknown argument (or a missing one without a default) makes the
call name a function that does not exist: ``404 PGRST202``. The functions
returning ``void`` answer ``204``; ``get_online_count`` answers a JSON integer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from flowith_proto.fake.routing import Call, Result, route
from flowith_proto.fake.wire import FakeResponse, Reject, json_response, pg_error

if TYPE_CHECKING:
    from flowith_proto.fake.model import FakeFlowith

__all__ = ["FUNCTIONS", "Function", "OnlineSession"]


@attrs.define
class OnlineSession:
    """One presence row: whose it is, when it was last upserted, and its details."""

    user_id: str
    last_seen: float
    details: dict[str, Any]


@attrs.frozen
class Function:
    """A SQL function's arguments: name -> type (``text`` or ``boolean``);
    ``required`` are those without a default."""

    name: str
    arguments: Mapping[str, str]
    required: frozenset[str]


_SESSION_ARGUMENTS = {
    "p_browser": "text",
    "p_current_path": "text",
    "p_device_type": "text",
    "p_is_idle": "boolean",
    "p_locale": "text",
    "p_platform": "text",
    "p_session_id": "text",
    "p_subscription_tier": "text",
}

#: The functions the fake serves, by name.
FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("upsert_online_session", _SESSION_ARGUMENTS, frozenset({"p_session_id"})),
        Function("remove_online_session", {"p_session_id": "text"}, frozenset({"p_session_id"})),
        Function("get_online_count", {}, frozenset()),
    )
}


def _arguments(fake: FakeFlowith, call: Call, function: Function) -> dict[str, Any]:
    """The body's arguments, matched against ``function`` as PostgREST would."""
    body = fake._json_body(call.request, rest=True)
    if not isinstance(body, dict):
        raise Reject(pg_error(400, "PGRST102", "Empty or invalid json"))
    names = set(body)
    if not names <= set(function.arguments) or not function.required <= names:
        shown = ", ".join(sorted(names))
        signature = f"({shown})" if names else " without parameters"
        raise Reject(
            pg_error(
                404,
                "PGRST202",
                f"Could not find the function public.{function.name}{signature} "
                "in the schema cache",
                details=f"Searched for the function public.{function.name} with parameters "
                f"{shown or 'none'} or with a single unnamed json/jsonb parameter, but no "
                "matches were found in the schema cache.",
                hint=f"Perhaps you meant to call the function public.{function.name}",
            )
        )
    arguments: dict[str, Any] = {}
    for name, value in body.items():
        kind = function.arguments[name]
        if value is None:
            arguments[name] = None
        elif kind == "boolean":
            if isinstance(value, bool):
                arguments[name] = value
            elif isinstance(value, str) and value.lower() in ("true", "false", "t", "f"):
                arguments[name] = value.lower() in ("true", "t")
            else:
                raise Reject(
                    pg_error(400, "22P02", f'invalid input syntax for type boolean: "{value}"')
                )
        else:
            arguments[name] = value if isinstance(value, str) else str(value)
    return arguments


def _session_id(arguments: Mapping[str, Any]) -> str:
    session = arguments.get("p_session_id")
    if session is None or session == "":
        raise Reject(
            pg_error(
                400,
                "23502",
                'null value in column "session_id" of relation "online_session" '
                "violates not-null constraint",
            )
        )
    return str(session)


@route("POST", "/rest/v1/rpc/upsert_online_session", auth="rest")
def _upsert_online_session(fake: FakeFlowith, call: Call) -> Result:
    """Insert or refresh the caller's presence row; ``204``."""
    arguments = _arguments(fake, call, FUNCTIONS["upsert_online_session"])
    session = _session_id(arguments)
    existing = fake._online.get(session)
    if existing is not None and existing.user_id != call.user:
        raise Reject(
            pg_error(
                403,
                "42501",
                'new row violates row-level security policy for table "online_session"',
            )
        )
    fake._online[session] = OnlineSession(call.user, call.now, arguments)
    return FakeResponse(204)


@route("POST", "/rest/v1/rpc/remove_online_session", auth="rest")
def _remove_online_session(fake: FakeFlowith, call: Call) -> Result:
    """Forget one of the caller's presence rows (an unknown id is no error); ``204``."""
    session = _session_id(_arguments(fake, call, FUNCTIONS["remove_online_session"]))
    existing = fake._online.get(session)
    if existing is not None and existing.user_id == call.user:
        del fake._online[session]
    return FakeResponse(204)


@route("POST", "/rest/v1/rpc/get_online_count", auth="rest")
def _get_online_count(fake: FakeFlowith, call: Call) -> Result:
    """How many presence rows (of all users) are fresh: a JSON integer."""
    _arguments(fake, call, FUNCTIONS["get_online_count"])
    return json_response(200, fake.online_count(now=call.now))
