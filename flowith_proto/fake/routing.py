"""The fake's routing table: one handler per method and path, and how each is authenticated.

Handlers live in several modules (the model's own methods, :mod:`.edge`,
:mod:`.gotrue`, :mod:`.rpc`); each registers itself here with :func:`route`
when its module is imported, and :class:`~flowith_proto.fake.FakeFlowith`
dispatches on :data:`ROUTES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import attrs

from flowith_proto.fake.stream import FakeStream
from flowith_proto.fake.wire import FakeResponse, RecordedRequest

if TYPE_CHECKING:
    from flowith_proto.fake.model import FakeFlowith

__all__ = ["ROUTES", "AuthKind", "Call", "Handler", "Result", "Route", "route"]

#: Who checks a request before its handler runs:
#:
#: - ``"edge"``: the edge's ``authorization`` (bare or ``Bearer``, per the fake's
#:   ``edge_auth``);
#: - ``"rest"``: PostgREST's ``apikey`` plus ``Authorization: Bearer <JWT>``;
#: - ``"gotrue"``: GoTrue's ``apikey`` plus ``Bearer``, with GoTrue's error bodies;
#: - ``"apikey"``: only the ``apikey`` (GoTrue's token endpoint);
#: - ``"public"``: nobody (the CDN).
AuthKind = Literal["edge", "rest", "gotrue", "apikey", "public"]


@attrs.frozen
class Call:
    """A request that passed authentication: who sent it (``""`` on routes
    without a user), the token they sent (or ``""``), and when."""

    request: RecordedRequest
    user: str
    now: float
    token: str = ""


Result = FakeResponse | FakeStream
Handler = Callable[["FakeFlowith", Call], Result]
_H = TypeVar("_H", bound=Callable[..., Result])


@attrs.frozen
class Route:
    """One endpoint: ``auth`` says which host's rules check the request."""

    method: str
    path: str
    auth: AuthKind
    handler: Callable[..., Result]


#: path -> method -> route. All hosts share it: Supabase paths start with
#: ``/rest/v1/`` or ``/auth/v1/``, CDN files with ``/f/``, every other path is
#: the edge's.
ROUTES: dict[str, dict[str, Route]] = {}


def route(method: str, path: str, *, auth: AuthKind) -> Callable[[_H], _H]:
    """Register the decorated handler (a ``FakeFlowith`` method or a function
    taking the fake and a :class:`Call`) for ``method path``."""

    def register(handler: _H) -> _H:
        ROUTES.setdefault(path, {})[method] = Route(method, path, auth, handler)
        return handler

    return register
