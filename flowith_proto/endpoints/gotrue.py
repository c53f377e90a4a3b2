"""Supabase GoTrue (``SB/auth/v1``): the user, token refresh, logout, OAuth.

protocol.md 2.6 and 2.7, with the differences ``docs/protocol-decisions.md``
lists: ``x-supabase-api-version`` as supabase-js sends it (1.4), a refresh that
needs no access token (D14), the logout scope in the query (D19), and OAuth
options as top-level parameters (D20).
"""

from __future__ import annotations

from collections.abc import Mapping

from flowith_proto.arguments import require_text
from flowith_proto.endpoints._core import ACCEPT_JSON, JSON, EndpointsCore
from flowith_proto.errors import AuthenticationError, ValidationError
from flowith_proto.request import Request, dump_json, percent_encode

__all__ = ["AuthEndpoints"]

_API_VERSION = "2024-01-01"
_LOGOUT_SCOPES = ("global", "local", "others")
# What JavaScript's encodeURIComponent leaves alone besides letters and digits.
_URI_COMPONENT_SAFE = "-_.!~*'()"
# The parameters oauth_url sets itself; an option of the same name would
# duplicate (and, depending on the server, override) one of them.
_OAUTH_OWN = frozenset({"provider", "redirect_to", "scopes"})


def _uri_component(text: str) -> str:
    return percent_encode(text, _URI_COMPONENT_SAFE)


class AuthEndpoints(EndpointsCore):
    """The builders of Supabase's GoTrue."""

    __slots__ = ()

    def _auth_headers(self, *, with_token: bool, content_type: bool) -> tuple[tuple[str, str], ...]:
        """GoTrue's headers in this order: the default ``Accept`` (the old client's
        session sent it on every request), ``apikey``, ``authorization``
        (``Bearer``, when ``with_token``), ``Content-Type`` (JSON, when the
        request has a body), ``x-supabase-api-version``, then the browser's
        ``User-Agent``, ``Origin`` and ``Referer``. No ``accept-profile`` or
        ``x-client-info``: those are PostgREST's (protocol.md 1.4)."""
        headers = [("Accept", ACCEPT_JSON), ("apikey", self.config.supabase_key)]
        if with_token:
            headers.append(("authorization", f"Bearer {self._token()}"))
        if content_type:
            headers.append(("Content-Type", JSON))
        headers.append(("x-supabase-api-version", _API_VERSION))
        headers.extend(self._browser())
        return tuple(headers)

    def auth_user(self) -> Request:
        """The GoTrue user behind the access token."""
        return Request(
            "GET",
            self._auth("/user"),
            self._auth_headers(with_token=True, content_type=False),
            idempotent=True,
        )

    def refresh_session(self, refresh_token: str) -> Request:
        """Trade a refresh token for a new session.

        Only ``apikey`` authenticates it: the old client required an access
        token and sent the stale one along (D14), which made a refresh
        impossible exactly when it is needed. Not idempotent: the refresh
        token rotates, and replaying a used one fails.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            raise AuthenticationError("No refresh token set: pass refresh_token=... to the client.")
        return Request(
            "POST",
            self._auth("/token", [("grant_type", "refresh_token")]),
            self._auth_headers(with_token=False, content_type=True),
            dump_json({"refresh_token": refresh_token}),
            grants_tokens=True,
        )

    def logout(self, scope: str = "global") -> Request:
        """End sessions: ``global`` (all), ``local`` (this one) or ``others``.
        The scope is a query parameter as GoTrue reads it; the old client put
        it in a body the server ignores (D19)."""
        if scope not in _LOGOUT_SCOPES:
            raise ValidationError(
                f"scope must be one of {', '.join(_LOGOUT_SCOPES)}, got {scope!r}",
                status_code=None,
                details=[{"field": "scope", "reason": "unknown scope"}],
            )
        return Request(
            "POST",
            self._auth("/logout", [("scope", scope)]),
            self._auth_headers(with_token=True, content_type=False),
        )

    def oauth_url(
        self,
        *,
        provider: str = "google",
        redirect_to: str = "https://flowith.io",
        scopes: str | None = None,
        query_params: Mapping[str, str] | None = None,
    ) -> str:
        """The URL that starts a browser sign-in, as supabase-js builds it.

        ``provider``, ``redirect_to`` (left out when empty), ``scopes`` (when
        given), then each of ``query_params`` (``access_type``, ``prompt``, ...)
        as its own parameter, everything encoded like ``encodeURIComponent``.
        The old client wrapped the options in one ``query_params`` parameter
        Google never reads (D20). An option named like one of the first three
        parameters is refused rather than sent twice.
        """
        params = [f"provider={_uri_component(require_text(provider, 'provider'))}"]
        if redirect_to:
            params.append(f"redirect_to={_uri_component(require_text(redirect_to, 'redirect_to'))}")
        if scopes:
            params.append(f"scopes={_uri_component(require_text(scopes, 'scopes'))}")
        for key, value in (query_params or {}).items():
            if isinstance(key, str) and key and key not in _OAUTH_OWN:
                value = require_text(value, key)
            if not key or key in _OAUTH_OWN:
                raise ValidationError(
                    f"query_params may not name {key!r}: pass it as its own argument",
                    status_code=None,
                    details=[{"field": "query_params", "reason": "reserved name"}],
                )
            params.append(f"{_uri_component(key)}={_uri_component(value)}")
        return f"{self._auth('/authorize')}?{'&'.join(params)}"
