"""What every host's builders share: the headers and the URL helpers.

protocol.md 1.4 gives the header sets; where the old client differs (section
7) these helpers follow ``docs/protocol-decisions.md``: no JSON content type on
bodiless requests and ``Content-Profile`` on PostgREST writes (D26).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import SUPABASE_CLIENT_INFO, EdgeAuth, FlowithConfig
from flowith_proto.errors import AuthenticationError
from flowith_proto.request import encode_query, require_uuid

__all__ = ["NODE_TYPE_AI", "NODE_TYPE_USER", "Position"]

NODE_TYPE_USER = "1"
NODE_TYPE_AI = "2"

ACCEPT_JSON = "application/json, text/plain, */*"
JSON = "application/json"

@attrs.frozen
class Position:
    """A node's place on the flow canvas, in the web app's pixels."""

    x: int = 0
    y: int = 0

    def as_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y}


class EndpointsCore:
    """The helpers of :class:`~flowith_proto.endpoints.Endpoints`; the host
    mixins build on them. ``config`` and ``credentials`` are its fields."""

    __slots__ = ()

    config: FlowithConfig
    credentials: Credentials

    # -- headers -----------------------------------------------------------

    def _token(self) -> str:
        token = self.credentials.access_token
        if not token:
            raise AuthenticationError(
                "No access token set: give the client one (token=..., or --token on the "
                "command line)."
            )
        return token

    def _edge_authorization(self) -> str:
        token = self._token()
        return f"Bearer {token}" if self.config.edge_auth is EdgeAuth.BEARER else token

    def _browser(self) -> list[tuple[str, str]]:
        return [
            ("User-Agent", self.config.user_agent),
            ("Origin", self.config.origin),
            ("Referer", self.config.referer),
        ]

    def edge_headers(self, content_type: str | None = None) -> tuple[tuple[str, str], ...]:
        """The edge's JSON calls: the token bare (or ``Bearer``, if configured)."""
        headers = [("Accept", ACCEPT_JSON)]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        headers.append(("authorization", self._edge_authorization()))
        headers.extend(self._browser())
        return tuple(headers)

    def sse_headers(self, *, pragma: bool) -> tuple[tuple[str, str], ...]:
        """The event streams: ``/stream`` adds ``pragma``, ``/sse`` does not."""
        headers = [
            ("authorization", self._edge_authorization()),
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ]
        if pragma:
            headers.append(("pragma", "no-cache"))
        headers.extend(self._browser())
        return tuple(headers)

    def rest_headers(
        self, *, write: bool = False, prefer: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        """PostgREST: ``apikey`` plus ``Bearer``; reads name the schema in
        ``accept-profile``, writes in ``Content-Profile`` as supabase-js does."""
        headers = [("Accept", ACCEPT_JSON), *self._browser()]
        headers.append(("apikey", self.config.supabase_key))
        headers.append(("authorization", f"Bearer {self._token()}"))
        if write:
            headers.append(("Content-Profile", "public"))
            headers.append(("Content-Type", JSON))
            if prefer is not None:
                headers.append(("Prefer", prefer))
        else:
            headers.append(("accept-profile", "public"))
        headers.append(("x-client-info", SUPABASE_CLIENT_INFO))
        return tuple(headers)

    # -- URLs --------------------------------------------------------------

    def _edge(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = self.config.edge_url + path
        return f"{url}?{encode_query(query)}" if query else url

    def _rest(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = self.config.rest_url + path
        return f"{url}?{encode_query(query)}" if query else url

    def _auth(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = self.config.auth_url + path
        return f"{url}?{encode_query(query)}" if query else url

    def _user_id(self) -> str:
        if not self.credentials.user_id:
            raise AuthenticationError(
                "No user id: the token has no 'sub' claim; give the client one (user_id=..., "
                "or --user-id on the command line)."
            )
        return require_uuid(self.credentials.user_id, "user_id")

    def _user_or_own(self, user_id: str | None) -> str:
        """``user_id`` validated, or the signed-in user's id when it is ``None``."""
        return self._user_id() if user_id is None else require_uuid(user_id, "user_id")
