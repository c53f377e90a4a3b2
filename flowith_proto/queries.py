"""Every read and small write of the web app as a sans-I/O operation.

Most are one request and one conversion; what they add over the old client is
that an answer of the wrong shape is a :class:`ResponseDecodeError` and a
missing row a :class:`NotFoundError`, never an empty record (D22), and that
updates ask for the updated row so a silent no-op shows (D18, D21).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, TypeVar, overload

import attrs

from flowith_proto.auth import header_safe
from flowith_proto.calls import call
from flowith_proto.convert import (
    LARGEST_WHOLE,
    read_number,
    structure_credits,
    structure_models,
    structure_row,
    structure_rows,
)
from flowith_proto.effects import Operation, WallClock
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    FlowithError,
    NotFoundError,
    ResponseDecodeError,
    Secrets,
    ValidationError,
    rewrap,
    scrub,
)
from flowith_proto.isodates import parse_iso8601
from flowith_proto.models import (
    AuthSession,
    ConversationRecord,
    ConvNovelEditor,
    MigrationInfo,
    ModelInfo,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
)
from flowith_proto.request import Request, Response, require_uuid
from flowith_proto.state import ClientState

__all__ = [
    "first_row",
    "json_body",
    "list_models",
    "list_templates",
    "rows",
    "string_field",
    "subscriptions",
    "unseen_rows",
]

T = TypeVar("T")
Build = Callable[[Endpoints], Request]


def unseen_rows(page: Iterable[T], seen: set[str], key: Callable[[T], str]) -> tuple[list[T], bool]:
    """The rows of ``page`` not met before (their keys are added to ``seen``), and
    whether any was new. A server ignoring ``offset`` answers the same page forever:
    a full page with nothing new ends the paging. A row without a key (no id: a
    malformed row) is told from the others by all it holds: taken for never new,
    a second page of such rows ended the paging before it was yielded."""
    kept: list[T] = []
    fresh = False
    for row in page:
        row_key = key(row) or _content_key(row)
        if row_key in seen:
            continue
        seen.add(row_key)
        fresh = True
        kept.append(row)
    return kept, fresh


def _content_key(row: object) -> str:
    """A key for a row without an id: all its fields, as the server sent them."""
    metadata: Mapping[str, Any] = getattr(row, "metadata", {})
    try:
        return "row " + repr(sorted(metadata.items()))
    except RecursionError:  # JSON read whole, nested past what repr() reaches from here
        return f"row at {id(row)}"  # (new each time)


class _AsIs:
    """What :func:`json_body` makes of the JSON by default: nothing."""

    def __call__(self, body: Any) -> Any:
        return body

    def __repr__(self) -> str:  # shown as the default in the reference
        return "as_is"


# Not None: a version 1 cassette names json_body by its plain arguments, and a None
# would be one more (a function, or this, is none).
_AS_IS = _AsIs()


@overload
def json_body(
    state: ClientState, build: Build, *, timeout: float | None = None
) -> Operation[Any]: ...


@overload
def json_body(
    state: ClientState,
    build: Build,
    *,
    timeout: float | None = None,
    read: Callable[[Any], T],
) -> Operation[T]: ...


def json_body(
    state: ClientState,
    build: Build,
    *,
    timeout: float | None = None,
    read: Callable[[Any], Any] = _AS_IS,
) -> Operation[Any]:
    """The answer's JSON as it is (the endpoints whose shape nobody has pinned down),
    or what ``read`` makes of it: a :class:`ResponseDecodeError` it raises (a body of
    the wrong shape) names the answer's status and endpoint (see
    :meth:`Response.decoding`)."""
    response = yield from call(state, build, timeout=timeout)
    with response.decoding():
        return read(response.json())


def rows(
    state: ClientState,
    build: Build,
    cls: type[T],
    context: str,
    *,
    timeout: float | None = None,
    table: bool = True,
) -> Operation[list[T]]:
    """A listing: every row as a ``cls``. A PostgREST ``table`` read answers an
    array: a lone object is refused (see :func:`structure_rows`)."""
    return (
        yield from json_body(
            state,
            build,
            # Fresh from json.loads: the rows are the records' own.
            read=lambda body: structure_rows(
                body, cls, context=context, owned=True, lone_object=not table
            ),
            timeout=timeout,
        )
    )


def first_row(
    state: ClientState,
    build: Build,
    cls: type[T],
    context: str,
    missing: str,
    *,
    timeout: float | None = None,
    identity: tuple[str, str] | None = None,
) -> Operation[T]:
    """The one row a lookup by id returns; :class:`NotFoundError` when there
    is none (the old client returned an empty record: D22).

    With ``identity`` (a field and the id looked up), a row naming another id is a
    :class:`ResponseDecodeError`, and so is one naming none unless the field is
    ``user_id`` (a profile row may leave it out: protocol.md 2.3).
    """

    def pick(body: Any) -> T:
        found = structure_rows(body, cls, context=context, owned=True)
        if not found:
            raise NotFoundError(missing)
        row = found[0]
        if identity is not None:
            field, wanted = identity
            named = getattr(row, field)
            if named.lower() != wanted.lower() and (named or field != "user_id"):
                said = f"{field} {named!r}" if named else f"no {field}"
                raise ResponseDecodeError(
                    f"{context}: asked for {wanted}, the answer's row has {said}",
                    body=getattr(row, "metadata", None),
                )
        return row

    return (yield from json_body(state, build, read=pick, timeout=timeout))


def string_field(
    state: ClientState, build: Build, key: str, context: str, *, timeout: float | None = None
) -> Operation[str]:
    """One string field of a JSON object answer (``credit_type``, ``link``)."""

    def field(body: Any) -> str:
        value = body.get(key) if isinstance(body, Mapping) else None
        if not isinstance(value, str):
            raise ResponseDecodeError(
                f"{context}: expected a JSON object with a string {key!r}", body=body
            )
        return value

    return (yield from json_body(state, build, read=field, timeout=timeout))


def credits(state: ClientState, *, timeout: float | None = None) -> Operation[list[UserCredits]]:
    return (
        yield from json_body(state, lambda e: e.credits(), read=structure_credits, timeout=timeout)
    )


def list_models(
    state: ClientState, *, logo: bool, desc: bool, timeout: float | None = None
) -> Operation[list[ModelInfo]]:
    """The models the web app offers (``logo`` and ``desc`` add their logos and
    descriptions)."""
    return (
        yield from json_body(
            state, lambda e: e.models(logo=logo, desc=desc), read=structure_models, timeout=timeout
        )
    )


def list_templates(
    state: ClientState,
    *,
    template_type: str | None,
    page_size: int,
    timeout: float | None = None,
) -> Operation[list[TemplateRecord]]:
    """One page of the web app's templates, of one type or all."""

    def templates(body: Any) -> list[TemplateRecord]:
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            raise ResponseDecodeError(
                "list_templates: expected a JSON object with a 'data' array", body=body
            )
        return structure_rows(data, TemplateRecord, context="list_templates", owned=True)

    return (
        yield from json_body(
            state,
            lambda e: e.templates(template_type=template_type, page_size=page_size),
            read=templates,
            timeout=timeout,
        )
    )


def rename_conversation(
    state: ClientState, conv_id: str, title: str, *, timeout: float | None = None
) -> Operation[ConversationRecord]:
    """Update the title of an existing row (the old client inserted: D18)."""
    conv = require_uuid(conv_id, "conv_id")
    return (
        yield from first_row(
            state,
            lambda e: e.rename_conversation(conv, title),
            ConversationRecord,
            "rename_conversation",
            f"conversation {conv} does not exist",
            timeout=timeout,
            identity=("conv_id", conv),
        )
    )


def get_user_profile(
    state: ClientState, user_id: str | None, *, timeout: float | None = None
) -> Operation[UserProfile]:
    profile = yield from first_row(
        state,
        lambda e: e.user_profile(user_id),
        UserProfile,
        "get_user_profile",
        f"no profile for user {user_id or state.credentials.user_id}",
        timeout=timeout,
        identity=("user_id", user_id or state.credentials.user_id),
    )
    return _owned_by(profile, user_id or state.credentials.user_id)


def _owned_by(profile: UserProfile, user_id: str) -> UserProfile:
    """``profile`` with the id it was looked up by when its row has none
    (protocol.md 2.3: ``user_id=row.id|uid``)."""
    return profile if profile.user_id else attrs.evolve(profile, user_id=user_id)


def update_user_profile(
    state: ClientState,
    fields: Mapping[str, Any],
    user_id: str | None,
    *,
    timeout: float | None = None,
) -> Operation[UserProfile]:
    """Change profile fields and return the updated row; with no fields, the
    current profile."""
    if not fields:
        return (yield from get_user_profile(state, user_id, timeout=timeout))
    profile = yield from first_row(
        state,
        lambda e: e.update_user_profile(fields, user_id),
        UserProfile,
        "update_user_profile",
        f"no profile for user {user_id or state.credentials.user_id}",
        timeout=timeout,
        identity=("user_id", user_id or state.credentials.user_id),
    )
    return _owned_by(profile, user_id or state.credentials.user_id)


def _moment(at_time: datetime | float | str) -> datetime:
    """``at_time`` in UTC: a datetime (naive means UTC), unix seconds, or text as
    the original client took it (an RFC 1123 date such as
    ``"Mon, 18 May 2026 18:04:25 GMT"``) or in ISO 8601. A moment UTC cannot
    hold (the first day of year 1 east of Greenwich) is no usable one either."""
    try:
        if isinstance(at_time, datetime):
            return _in_utc(at_time)
        if isinstance(at_time, str):
            try:
                moment = parsedate_to_datetime(at_time)
            except (TypeError, ValueError):
                moment = parse_iso8601(at_time)
            return _in_utc(moment)
        if isinstance(at_time, (int, float)) and not isinstance(at_time, bool):
            return datetime.fromtimestamp(at_time, tz=timezone.utc)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValidationError(
            f"at_time: not a usable moment: {at_time!r} ({exc})", status_code=None
        ) from exc
    raise ValidationError(
        f"at_time must be a datetime, unix seconds or a date string, not {type(at_time).__name__}",
        status_code=None,
    )


def _in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive means UTC already)."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def subscriptions(
    state: ClientState, at_time: datetime | float | str | None, *, timeout: float | None = None
) -> Operation[list[SubscriptionUserOwn]]:
    """The grants active at ``at_time`` (see :func:`_moment`; default: now)."""
    if at_time is None:
        at_time = yield WallClock()
    moment = _moment(at_time)
    stamp = format_datetime(moment.replace(microsecond=0), usegmt=True)
    return (
        yield from rows(
            state,
            lambda e: e.subscriptions(stamp),
            SubscriptionUserOwn,
            "list_subscription_user_own",
            timeout=timeout,
        )
    )


def online_count(state: ClientState, *, timeout: float | None = None) -> Operation[int]:
    return (
        yield from json_body(
            state,
            lambda e: e.rpc("get_online_count", {}, reads=True),
            read=_count,
            timeout=timeout,
        )
    )


def _count(body: Any) -> int:
    """The count as sent. A fraction (truncated: 12.9 became 12), or a count past
    :data:`~flowith_proto.convert.LARGEST_WHOLE` (rounded by a float), is no count of
    people: a :class:`ResponseDecodeError`."""
    if body is None:
        return 0
    number = read_number(body)
    if (
        number is None
        or not -LARGEST_WHOLE <= number <= LARGEST_WHOLE
        or (isinstance(number, float) and not number.is_integer())
    ):
        raise ResponseDecodeError("get_online_count: expected a whole number", body=body)
    return int(number)


#: What GoTrue answers a refresh token it will not renew (spent, revoked, malformed).
_REFUSALS = frozenset({400, 401, 403, 422})
#: GoTrue's own words for a refresh token it will never renew: its ``error_code`` (or,
#: from API version 2024-01-01, ``code``), or the older ``error`` of an OAuth answer.
_TOKEN_REFUSED = frozenset(
    {
        "refresh_token_not_found",
        "refresh_token_already_used",
        "session_not_found",
        "session_expired",
        "invalid_grant",
    }
)


def refresh_token_refused(error: APIError) -> bool:
    """Whether the auth server itself said it will never renew the refresh token, so
    that sending it again is pointless. A refusal from something in front of it (a
    proxy's 400, a firewall's 403 page) says nothing of the token: it may work next time.
    """
    body = error.body
    if not isinstance(body, dict):
        return False
    for key in ("error_code", "code", "error"):
        value = body.get(key)
        if isinstance(value, str) and value in _TOKEN_REFUSED:
            return True
    said = body.get("msg") or body.get("message") or body.get("error_description")
    return isinstance(said, str) and "invalid refresh token" in said.lower()


def refresh(
    state: ClientState,
    refresh_token: str,
    *,
    timeout: float | None = None,
    budget: float | None = None,
) -> Operation[AuthSession]:
    """Trade a refresh token for a new session and adopt its tokens.

    Needs only the refresh token and the project key (the old client required
    a live access token and sent it along: D14). A refusal (400, 401, 403, 422:
    the token is spent or invalid) is an :class:`AuthenticationError`; a rate
    limit or a server error keeps its own type, since the tokens may still be
    good (GoTrue rate-limits ``/token``). An answer without a new refresh token
    leaves the old one in use, and the session returned names the one kept.
    """
    try:
        response = yield from call(
            state,
            lambda e: e.refresh_session(refresh_token),
            timeout=timeout,
            budget=budget,
            renew_token=False,
            extra_secrets=Secrets((refresh_token,)),
        )
    except APIError as exc:
        if isinstance(exc, AuthenticationError) or exc.status_code not in _REFUSALS:
            raise
        raise rewrap(exc, AuthenticationError, f"refreshing the session failed: {exc}") from exc
    try:
        with response.decoding():
            session = _refreshed_session(response)
        if not session.access_token:
            raise AuthenticationError("refreshing the session returned no access_token")
    except FlowithError as exc:  # the refresh token passed in is no token the state holds
        _keep_new_refresh_token(state, response, refresh_token, exc)
        scrub(exc, (*response.secrets, *state.secrets))
        raise
    state.credentials = state.credentials.with_tokens(session.access_token, session.refresh_token)
    if not session.refresh_token:  # the old one stays in use: say so, so it is persisted
        session = attrs.evolve(session, refresh_token=state.credentials.refresh_token)
    return session


def _keep_new_refresh_token(
    state: ClientState, response: Response, sent: str, failure: FlowithError
) -> None:
    """Keep the new refresh token of an answer that is unusable otherwise (no usable
    access token): the server rotated the one sent, which is spent now, and losing
    the new one signed the client out for good. ``failure`` then says so."""
    try:
        payload = response.json()
    except FlowithError:
        return
    token = payload.get("refresh_token") if isinstance(payload, Mapping) else None
    if not isinstance(token, str) or not header_safe(token.strip()):
        return
    token = token.strip()
    if token and token != sent:
        credentials = state.credentials
        state.credentials = credentials.with_tokens(credentials.access_token, token)
        if failure.args and isinstance(failure.args[0], str):
            failure.args = (
                f"{failure.args[0]} (the new refresh token it sent is kept, and handed to "
                "on_token_refresh)",
                *failure.args[1:],
            )


def _refreshed_session(response: Response) -> AuthSession:
    """The session a refresh answered, or :class:`ResponseDecodeError`."""
    try:
        payload = response.json()
        readable = True
    except ResponseDecodeError:
        readable = False
    if not readable:
        # Its excerpt is not quoted (nor kept as this error's context): a page or a
        # form may hold the new tokens, which no rule tells from other text until
        # they are read (an opaque refresh token is just a word).
        media_type = (response.header("content-type") or "").split(";")[0].strip()[:80]
        raise ResponseDecodeError(
            f"refresh_access_token: the answer is not JSON ({len(response.body)} bytes of "
            f"{media_type or 'no stated type'}; not quoted, as it may hold new tokens)",
            status_code=response.status,
        )
    if isinstance(payload, Mapping):
        # JSON null is no token, as an absent field (D24).
        tokens = {name: payload.get(name) or "" for name in ("access_token", "refresh_token")}
        if not all(isinstance(t, str) and header_safe(t.strip()) for t in tokens.values()):
            # Adopted as text, {"x": 1} would become the bearer of every later request.
            raise ResponseDecodeError(
                "refresh_access_token: access_token and refresh_token must be strings "
                "an HTTP header can carry",
                status_code=response.status,
            )
        # Stripped as the client holds them, so that a blank one is no token: adopted,
        # "   " would sign the client out, and hand on_token_refresh a token to save.
        payload = {**payload, **{name: token.strip() for name, token in tokens.items()}}
    return structure_row(payload, AuthSession, context="refresh_access_token")


def get_conversation(
    state: ClientState, conv_id: str, *, timeout: float | None = None
) -> Operation[ConversationRecord]:
    conv = require_uuid(conv_id, "conv_id")
    return (
        yield from first_row(
            state,
            lambda e: e.get_conversation(conv),
            ConversationRecord,
            "get_conversation",
            f"conversation {conv} does not exist",
            timeout=timeout,
            identity=("conv_id", conv),
        )
    )


def get_conv_novel_editor(
    state: ClientState, conv_id: str, *, timeout: float | None = None
) -> Operation[ConvNovelEditor]:
    conv = require_uuid(conv_id, "conv_id")
    return (
        yield from first_row(
            state,
            lambda e: e.conv_novel_editor(conv),
            ConvNovelEditor,
            "get_conv_novel_editor",
            f"conversation {conv} has no novel editor content",
            timeout=timeout,
            identity=("conv_id", conv),
        )
    )


def get_migration_info(
    state: ClientState, *, timeout: float | None = None
) -> Operation[MigrationInfo]:
    return (
        yield from first_row(
            state,
            lambda e: e.migration(),
            MigrationInfo,
            "get_migration_info",
            "no migration row",
            timeout=timeout,
        )
    )
