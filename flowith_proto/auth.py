"""Tokens: what a Supabase access token says about its user, and when to renew it.

The client never verifies the token's signature (it cannot: the key is
Supabase's); it only reads the claims the server will check anyway. ``sub`` is
the user id every stream and filter needs; ``exp`` tells when to refresh.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import attrs
from jwt.utils import base64url_decode

from flowith_proto.convert import LARGEST_WHOLE

__all__ = ["Credentials", "TokenClaims", "credential_field", "header_safe", "read_claims"]

#: Refresh this many seconds before ``exp`` (other clients use five minutes), or a
#: quarter of the token's lifetime when that is shorter: a token that lives five minutes
#: or less would otherwise be refreshed before every call.
REFRESH_MARGIN_S = 300.0


@attrs.frozen
class TokenClaims:
    """The claims of an access token that the client uses."""

    sub: str = ""
    exp: int | None = None
    iat: int | None = None


def read_claims(token: str) -> TokenClaims:
    """The ``sub``, ``exp`` and ``iat`` of a JWT, without verifying its signature.

    Anything that is not a readable JWT gives empty claims rather than an
    error: the server is the judge of a token, and an opaque one may still work.
    Only the payload is read (protocol.md 1.3): ``jwt.decode`` also decodes the
    header and the signature, and lost the user of a token whose signature is not
    base64url or whose header has a ``kid`` that is not text.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        return TokenClaims()  # not text: refused by Credentials, which say so
    try:
        claims = json.loads(base64url_decode(token.split(".")[1]))
    except (ValueError, binascii.Error, RecursionError):  # not base64url, not JSON
        return TokenClaims()
    if not isinstance(claims, dict):
        return TokenClaims()
    sub = claims.get("sub")
    return TokenClaims(
        sub=sub if isinstance(sub, str) else "",
        exp=_seconds(claims.get("exp")),
        iat=_seconds(claims.get("iat")),
    )




def _seconds(exp: Any) -> int | None:
    """An ``exp`` (or ``iat``) claim as whole unix seconds, or ``None`` if it is not a
    usable one."""
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    # Beyond LARGEST_WHOLE an exp is no moment (1e400 reads as infinity, a 400-digit
    # integer overflows a float): the token's lifetime is then unknown, as without one.
    if not -LARGEST_WHOLE <= exp <= LARGEST_WHOLE:  # also false for NaN
        return None
    return int(exp)


def _hidden(value: str) -> str:
    return "''" if not value else "'***'"


def header_safe(text: str) -> bool:
    """Whether ``text`` can travel in an HTTP header as a credential: visible
    ASCII only (a JWT, an opaque refresh token)."""
    return text.isascii() and text.isprintable() and " " not in text


def _token(value: str | None) -> str:
    """A token as given, minus the whitespace around it (a token read from a
    file keeps its newline, which no header can carry); ``None`` (an unset
    ``os.environ.get(...)``) is no token."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else value


def _header_safe(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # The message never quotes the value: it is a secret, however malformed.
    if not isinstance(value, str):
        raise ValueError(f"{attribute.name} must be a string, not {type(value).__name__}")
    if not header_safe(value):
        where = next(i for i, c in enumerate(value) if not header_safe(c))
        raise ValueError(
            f"{attribute.name} holds a character no HTTP header can carry "
            f"(at position {where}); is it the whole token, and only the token?"
        )


def credential_field(default: str = "") -> Any:
    """An attrs field for a credential: stripped, then refused (``ValueError``)
    unless an HTTP header can carry it."""
    return attrs.field(default=default, converter=_token, validator=_header_safe)


@attrs.frozen(repr=False)
class Credentials:
    """The secrets of one signed-in user. Its repr never shows a token."""

    access_token: str = credential_field()
    refresh_token: str = credential_field()
    user_id: str = ""
    #: Unix seconds after which ``access_token`` is no longer accepted, if known.
    expires_at: float | None = None
    #: Unix seconds when ``access_token`` was issued (its ``iat``), if known.
    issued_at: float | None = None
    #: ``user_id`` was given by the caller rather than read from the token: a refresh
    #: keeps it.
    user_id_given: bool = False

    @classmethod
    def from_tokens(
        cls, access_token: str = "", *, refresh_token: str | None = "", user_id: str = ""
    ) -> Credentials:
        """Credentials whose ``user_id`` and ``expires_at`` come from the JWT
        unless ``user_id`` is given explicitly."""
        claims = read_claims(_token(access_token))
        return cls(
            access_token=access_token,
            refresh_token=_token(refresh_token),
            user_id=user_id or claims.sub,
            expires_at=None if claims.exp is None else float(claims.exp),
            issued_at=None if claims.iat is None else float(claims.iat),
            user_id_given=bool(user_id),
        )

    def with_tokens(self, access_token: str, refresh_token: str = "") -> Credentials:
        """These credentials after a refresh: new tokens, the user id re-read
        from the new token (kept when it was given explicitly, or when the new
        token carries none)."""
        claims = read_claims(access_token)
        return Credentials(
            access_token=access_token,
            refresh_token=refresh_token or self.refresh_token,
            user_id=self.user_id if self.user_id_given else (claims.sub or self.user_id),
            expires_at=None if claims.exp is None else float(claims.exp),
            issued_at=None if claims.iat is None else float(claims.iat),
            user_id_given=self.user_id_given,
        )

    def signed_out(self) -> Credentials:
        """These credentials after a logout: the refresh token is gone."""
        return attrs.evolve(self, refresh_token="")

    def needs_refresh(self, now: float, *, margin: float = REFRESH_MARGIN_S) -> bool:
        """True when the access token expires within ``margin`` seconds of
        ``now`` (unix seconds), or a quarter of its lifetime if that is shorter, and
        a refresh token is there to renew it."""
        if not self.refresh_token or self.expires_at is None:
            return False
        if self.issued_at is not None and self.expires_at > self.issued_at:
            margin = min(margin, (self.expires_at - self.issued_at) / 4)
        return now >= self.expires_at - margin

    @property
    def secrets(self) -> tuple[str, ...]:
        """The strings that must never appear in logs, reprs or recordings."""
        return tuple(s for s in (self.access_token, self.refresh_token) if s)

    def __repr__(self) -> str:
        return (
            f"Credentials(access_token={_hidden(self.access_token)}, "
            f"refresh_token={_hidden(self.refresh_token)}, user_id={self.user_id!r}, "
            f"expires_at={self.expires_at!r}, issued_at={self.issued_at!r})"
        )
