"""What every host's builders share: the headers, the URL helpers, the checks.

protocol.md 1.4 gives the header sets; where the old client differs (section
7) these helpers follow ``docs/protocol-decisions.md``: no JSON content type on
bodiless requests and ``Content-Profile`` on PostgREST writes (D26).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import SUPABASE_CLIENT_INFO, EdgeAuth, FlowithConfig
from flowith_proto.errors import AuthenticationError, ValidationError
from flowith_proto.request import encode_query, require_uuid

__all__ = ["NODE_TYPE_AI", "NODE_TYPE_USER", "Position"]

NODE_TYPE_USER = "1"
NODE_TYPE_AI = "2"

ACCEPT_JSON = "application/json, text/plain, */*"
JSON = "application/json"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Position:
    """A node's place on the flow canvas, in the web app's pixels."""

    x: int = 0
    y: int = 0

    def as_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y}


def require_count(value: object, name: str, *, minimum: int = 0) -> str:
    """A limit, offset or page size as its decimal text, or a ValidationError.

    Booleans are refused although Python counts them as ints: ``limit=True``
    is a mistake, not ``limit=1``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(
            f"{name} must be an int >= {minimum}, got {value!r}",
            status_code=None,
            details=[{"field": name, "reason": "not a count"}],
        )
    return str(value)


def require_identifier(value: object, name: str) -> str:
    """A SQL-style name (``[A-Za-z_][A-Za-z0-9_]*``), or a ValidationError.

    Used for names that go into a path or become JSON keys of a PATCH, so no
    caller string can reach another function, column or operator.
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValidationError(
            f"{name} must be a simple identifier like 'get_online_count', got {value!r}",
            status_code=None,
            details=[{"field": name, "reason": "not an identifier"}],
        )
    return value


def require_text(value: object, name: str) -> str:
    """A non-empty string without control characters (they could end a header)."""
    if (
        not isinstance(value, str)
        or not value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise ValidationError(
            f"{name} must be a non-empty string without control characters, got {value!r}",
            status_code=None,
            details=[{"field": name, "reason": "not a plain string"}],
        )
    return value


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
            raise AuthenticationError("No access token set: pass token=... to the client.")
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
                "No user id: the token has no 'sub' claim; pass user_id=... to the client."
            )
        return require_uuid(self.credentials.user_id, "user_id")

    def _user_or_own(self, user_id: str | None) -> str:
        """``user_id`` validated, or the signed-in user's id when it is ``None``."""
        return self._user_id() if user_id is None else require_uuid(user_id, "user_id")
