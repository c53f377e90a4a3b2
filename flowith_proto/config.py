"""Where the service lives and how it wants to be spoken to.

Every value has the web app's default and can be overridden, because a
reverse-engineered API moves: the edge host has had three names, and the edge
has accepted both a bare and a ``Bearer`` token (protocol.md 1.1, 1.4).
"""

from __future__ import annotations

import enum
import math
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs

from flowith_proto.auth import credential_field
from flowith_proto.errors import ValidationError, excerpt, mask_url
from flowith_proto.urls import ascii_url

__all__ = [
    "DEFAULT_EDGE_URL",
    "DEFAULT_SUPABASE_KEY",
    "DEFAULT_SUPABASE_URL",
    "DEFAULT_TIMEOUT",
    "LEGACY_SUPABASE_ANON_KEY",
    "LONG_REQUESTS_AT_ONCE",
    "REQUESTS_AT_ONCE",
    "EdgeAuth",
    "FlowithConfig",
    "check_seconds",
]

#: The most short requests a client has out at once on connections of its own, on
#: either transport (more wait their turn, within their timeout): as many as would
#: cost each request what one does on httpx (see ``flowith_httpx.lanes``), and the
#: same on aiohttp, so that swapping transports changes nothing. Event streams,
#: downloads and uploads hold a connection for long: they take turns of their own.
REQUESTS_AT_ONCE = 16

#: The most long requests (event streams, downloads, uploads) a client has out at once
#: on connections of its own, on either transport; more wait their turn, within the
#: client's timeout. With the short ones, fewer than a connection pool's 100: none
#: ever waits inside the pool, where a short request would wait behind them (aiohttp)
#: or a wait cut short could leave its slot taken for good (httpcore#1093).
LONG_REQUESTS_AT_ONCE = 64

#: Seconds one HTTP request may take unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 30.0

DEFAULT_EDGE_URL = "https://edge.flowith.io"
DEFAULT_SUPABASE_URL = "https://aibdxsebwhalbnugsqel.supabase.co"
#: The publishable key the web app ships; it is not a JWT and goes only in ``apikey``.
DEFAULT_SUPABASE_KEY = "sb_publishable_qPCinc8LE8ChpdT7Pf79tQ_eryz5udr"
#: The project's older anon JWT, kept as a fallback a user can pass as ``supabase_key``.
LEGACY_SUPABASE_ANON_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6ImFpYmR4c2Vid2hhbG"
    "JudWdzcWVsIiwicm9sZSI6ImFub24iLCJpYXQiOjE3MDQ0Mjk4NDksImV4cCI6MjAyMDAwNTg0OX0.FZz_aYXHu7"
    "YA_TljWyvSylrqaMBF1dGhkV-ZD01QyYI"
)

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/148.0.0.0 Safari/537.36"
)
DEFAULT_ORIGIN = "https://flowith.io"
SUPABASE_CLIENT_INFO = "supabase-js-web/2.91.0"


class EdgeAuth(str, enum.Enum):
    """How the access token goes in the edge host's ``authorization`` header."""

    #: The JWT alone, as the web app sends it (the default).
    BARE = "bare"
    #: ``Bearer <JWT>``, which other clients use successfully.
    BEARER = "bearer"


def check_seconds(name: str, value: float | None, *, endless: bool = False) -> None:
    """Refuse a duration that no clock can wait: not a number, not positive, NaN
    (a deadline that never passes, and never says so), or infinite unless
    ``endless`` (a whole call's or a listening window's limit, where infinity means
    none; never for one request's, which each transport cannot wait without a
    limit: httpx hung, aiohttp could not round it)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"{name} must be a number of seconds, not {value!r}", status_code=None
        )
    try:
        float(value)  # what the deadlines are computed in
    except OverflowError:
        raise ValidationError(
            f"{name} is too many seconds to compute with: {excerpt(value)}", status_code=None
        ) from None
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not endless):
        what = "positive number" if endless else "positive, finite number"
        raise ValidationError(
            f"{name} must be a {what} of seconds, got {value!r}", status_code=None
        )


def _base_url(name: str) -> Callable[[Any, Any, str], None]:
    def check(_instance: object, _attribute: object, value: str) -> None:
        problem = _base_url_problem(value)
        if problem is not None:
            raise ValidationError(
                f"{name} must be an http(s) URL of a host, without a trailing slash: "
                f"{problem}, got {mask_url(str(value))!r}",
                status_code=None,
            )

    return check


def _base_url_problem(value: object) -> str | None:
    """Why ``value`` cannot be a base URL, or ``None``: checked when the client
    is made, since each HTTP library fails on a bad one in its own way (and only
    at the first request)."""
    if not isinstance(value, str):
        return "not a string"
    if any(character.isspace() or ord(character) < 32 for character in value):
        return "it holds whitespace or a control character"
    if any("\ud800" <= character <= "\udfff" for character in value):
        return "it holds a lone surrogate (a byte that could not be decoded)"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not value.startswith(parts.scheme + "://"):
        return "the scheme must be http or https"
    if value.endswith("/"):
        return "it ends with a slash"
    if parts.username is not None or parts.password is not None:
        return "it holds a user name or password (requests are signed with the tokens)"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "it holds a query or a fragment"
    if not parts.hostname:
        return "it names no host"
    try:
        port = parts.port  # the property parses the port, and refuses a bad one
    except ValueError as exc:
        return f"its port is not usable ({exc})"
    if port == 0:
        return "its port is not usable (0)"
    if not value.isascii():  # _ascii_form() could not write it in ASCII: say why
        try:
            ascii_url(value)
        except ValueError as exc:
            return str(exc)
    return None


def _ascii_form(value: str) -> str:
    """A base URL without its trailing slash, and in ASCII (see
    :mod:`flowith_proto.urls`): aiohttp sends a host as it is given, so
    ``http://bücher.example`` went out in UTF-8, and past a proxy ``NO_PROXY``
    names by its ASCII name. One that cannot be is left for the check to refuse."""
    if not isinstance(value, str):  # for the check to refuse
        return value  # type: ignore[unreachable]  # typed str, given anything
    value = value.rstrip("/")
    if value.isascii():
        return value
    try:
        return ascii_url(value)
    except ValueError:
        return value


@attrs.frozen(repr=False)
class FlowithConfig:
    """Hosts, keys and header values of one client. Immutable; derive with
    :func:`attrs.evolve`."""

    edge_url: str = attrs.field(
        default=DEFAULT_EDGE_URL, converter=_ascii_form, validator=_base_url("edge_url")
    )
    supabase_url: str = attrs.field(
        default=DEFAULT_SUPABASE_URL, converter=_ascii_form, validator=_base_url("supabase_url")
    )
    supabase_key: str = credential_field(DEFAULT_SUPABASE_KEY)
    edge_auth: EdgeAuth = attrs.field(default=EdgeAuth.BARE, converter=EdgeAuth)
    user_agent: str = DEFAULT_USER_AGENT
    origin: str = DEFAULT_ORIGIN

    @property
    def referer(self) -> str:
        return self.origin + "/"

    @property
    def rest_url(self) -> str:
        """PostgREST's base: tables and RPCs."""
        return self.supabase_url + "/rest/v1"

    @property
    def auth_url(self) -> str:
        """GoTrue's base: sessions and users."""
        return self.supabase_url + "/auth/v1"

    def __repr__(self) -> str:
        return (
            f"FlowithConfig(edge_url={self.edge_url!r}, supabase_url={self.supabase_url!r}, "
            f"supabase_key='***', edge_auth={self.edge_auth.value!r})"
        )
