"""GoTrue (``/auth/v1``): the signed-in user, refresh-token rotation, logout.

Sessions are modeled as GoTrue keeps them: a session has refresh tokens, each
usable once (using one rotates it to a new one); a logout deletes sessions,
after which their refresh tokens are unknown and GoTrue refuses their access
tokens (``session_not_found``). Access tokens are stateless JWTs: the edge and
PostgREST keep accepting them until ``exp`` unless the fake's
``revoke_access_on_logout`` knob says otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from flowith_proto.fake.routing import Call, Result, route
from flowith_proto.fake.seed import OTHER_USER_ID
from flowith_proto.fake.wire import FakeResponse, Reject, gotrue_error, json_response

if TYPE_CHECKING:
    from flowith_proto.fake.model import FakeFlowith

__all__ = ["RefreshToken", "user_object"]


@attrs.define
class RefreshToken:
    """A refresh token's session and user, and whether it was used (rotated)."""

    session_id: str
    user_id: str
    used: bool = False


_CREATED = "2025-09-01T10:00:00.000000Z"
_SIGNED_IN = "2026-05-18T08:00:00.000000Z"
_KNOWN_NAMES = {OTHER_USER_ID: ("Olga Other", "olga.other@example.com")}


def user_object(fake: FakeFlowith, user: str) -> dict[str, Any]:
    """The GoTrue user of ``user`` (a Google sign-in); any id the fake signed
    a token for is a user."""
    if user == fake.user_id:
        name, email = "Fake User", "fake.user@example.com"
    else:
        name, email = _KNOWN_NAMES.get(user, (f"User {user[:8]}", f"user-{user[:8]}@example.com"))
    avatar = f"https://lh3.googleusercontent.com/a/{user[:8]}=s96-c"
    provider_id = str(int(user.replace("-", "")[:16], 16))
    metadata = {
        "avatar_url": avatar,
        "email": email,
        "email_verified": True,
        "full_name": name,
        "iss": "https://accounts.google.com",
        "name": name,
        "phone_verified": False,
        "picture": avatar,
        "preferred_username": email.split("@")[0],
        "provider_id": provider_id,
        "sub": provider_id,
    }
    return {
        "id": user,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "email_confirmed_at": _CREATED,
        "phone": "",
        "confirmed_at": _CREATED,
        "last_sign_in_at": _SIGNED_IN,
        "app_metadata": {"provider": "google", "providers": ["google"]},
        "user_metadata": metadata,
        "identities": [
            {
                "identity_id": user,
                "id": provider_id,
                "user_id": user,
                "identity_data": metadata,
                "provider": "google",
                "last_sign_in_at": _SIGNED_IN,
                "created_at": _CREATED,
                "updated_at": _SIGNED_IN,
                "email": email,
            }
        ],
        "created_at": _CREATED,
        "updated_at": _SIGNED_IN,
        "is_anonymous": False,
    }


@route("GET", "/auth/v1/user", auth="gotrue")
def _user(fake: FakeFlowith, call: Call) -> Result:
    return json_response(200, user_object(fake, call.user))


def _oauth_error(error: str, description: str) -> Reject:
    return Reject(json_response(400, {"error": error, "error_description": description}))


@route("POST", "/auth/v1/token", auth="apikey")
def _token(fake: FakeFlowith, call: Call) -> Result:
    """``grant_type=refresh_token``: rotate the refresh token, issue a new
    access token. Only the ``apikey`` is needed; an ``Authorization`` header
    is ignored (even an expired one)."""
    request = call.request
    grant = request.param("grant_type")
    try:
        body = json.loads(request.body) if request.body.strip() else {}
    except ValueError:
        raise Reject(
            gotrue_error(request, 400, "bad_json", "Could not parse request body as JSON")
        ) from None
    if grant == "password":
        return gotrue_error(request, 400, "invalid_credentials", "Invalid login credentials")
    if grant != "refresh_token":
        raise _oauth_error("unsupported_grant_type", "")
    presented = body.get("refresh_token") if isinstance(body, dict) else None
    if not isinstance(presented, str) or not presented:
        raise _oauth_error("invalid_request", "refresh_token required")
    state = fake._refresh_tokens.get(presented)
    if state is None or state.session_id not in fake._sessions:
        return gotrue_error(
            request,
            400,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    if state.used:
        return gotrue_error(
            request, 400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
        )
    state.used = True
    expires_at = int(call.now) + fake.access_token_ttl
    access = fake.issue_token(
        state.user_id,
        expires_at=expires_at,
        issued_at=call.now,
        session_id=state.session_id,
        token_id=str(next(fake._refreshes)),
    )
    return json_response(
        200,
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": fake.access_token_ttl,
            "expires_at": expires_at,
            "refresh_token": fake._new_refresh_token(state.session_id, state.user_id),
            "user": user_object(fake, state.user_id),
        },
    )


@route("POST", "/auth/v1/logout", auth="gotrue")
def _logout(fake: FakeFlowith, call: Call) -> Result:
    """``?scope=global|local|others`` (default global); the body is ignored."""
    request = call.request
    scope = request.param("scope") or "global"
    if scope not in ("global", "local", "others"):
        return gotrue_error(
            request, 400, "validation_failed", f'Unsupported logout scope "{scope}"'
        )
    session = fake._claims(call.token).get("session_id")
    mine = [sid for sid, owner in fake._sessions.items() if owner == call.user]
    if not isinstance(session, str) or session not in fake._sessions:
        doomed = mine  # a token of no session: GoTrue revokes all the user's refresh tokens
    elif scope == "local":
        doomed = [session]
    elif scope == "others":
        doomed = [sid for sid in mine if sid != session]
    else:
        doomed = mine
    for sid in doomed:
        del fake._sessions[sid]
    return FakeResponse(204)
