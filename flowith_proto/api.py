"""The web app's reads and small writes as client methods, written once.

Each method forwards to an operation of :mod:`flowith_proto.queries` (or a
one-request read) and is shared by every transport through
:class:`~flowith_proto.abc.FlowithClientBase`. ``timeout`` on these methods is
the per-request limit (the client's ``timeout`` when not given).
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from flowith_proto import canvas, queries
from flowith_proto.arguments import require_count, require_text
from flowith_proto.canvas import POSTGREST_MAX_ROWS
from flowith_proto.config import check_seconds
from flowith_proto.effects import Operation
from flowith_proto.errors import (
    AuthenticationError,
    ResponseDecodeError,
    SecretText,
    ValidationError,
)
from flowith_proto.models import (
    AuthSession,
    ConversationRecord,
    ConvNovelEditor,
    CooperatorRecord,
    DiscussRecord,
    FlowNode,
    FlowProject,
    MigrationInfo,
    ModelInfo,
    OracleStreamRecord,
    PublicNotice,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
    UserUploadRecord,
)
from flowith_proto.request import require_uuid
from flowith_proto.state import ClientState

__all__ = ["WebAppMethods"]

T = TypeVar("T")


class WebAppMethods(abc.ABC):
    """Conversations, canvas, account, catalogue and Supabase content."""

    _state: ClientState
    #: The iter_conversations walks under way, told of each conversation deleted.
    _walks: weakref.WeakSet[_Walk]
    #: Seconds one request may take, by default.
    timeout: float

    @abc.abstractmethod
    async def _run(self, operation: Operation[T]) -> T: ...

    @abc.abstractmethod
    def _now(self) -> float:
        """The monotonic clock the client's deadlines are on."""

    @abc.abstractmethod
    async def _renew(
        self, refresh_token: str, timeout: float | None = None, *, deadline: float | None = None
    ) -> AuthSession: ...

    @abc.abstractmethod
    async def _refreshes_settled(self, until: float | None = None) -> None:
        """Return once no token refresh is under way (its tokens adopted, or failed)
        and handed to ``on_token_refresh``, which is waited for until ``until``."""

    # -- conversations and canvas ----------------------------------------------------

    async def list_conversations(
        self,
        limit: int = 20,
        offset: int = 0,
        project_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> list[ConversationRecord]:
        """The user's conversations, most recently updated first (outside any project unless
        ``project_id`` is given)."""
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.list_conversations(limit=limit, offset=offset, project_id=project_id),
                ConversationRecord,
                "list_conversations",
                timeout=timeout,
            )
        )

    async def iter_conversations(
        self, *, page_size: int = 50, project_id: str | None = None, timeout: float | None = None
    ) -> AsyncGenerator[ConversationRecord, None]:
        """Every conversation :meth:`list_conversations` lists (those outside any
        project, or those of ``project_id``), most recently updated first, fetched
        ``page_size`` at a time (at most 1,000: Supabase answers no more rows at
        once, silently, and a page cut short would look like the last).

        Each is yielded once: one updated or created meanwhile moves the others down,
        and they may come back on a later page. Two full pages in a row without a
        conversation not seen yet end the walk (a server ignoring ``offset`` would
        otherwise repeat one page forever; one such page can be new conversations
        pushing the old down); a row without an id is told from the others by all
        its fields.

        Pages are read by offset. A conversation yielded and then deleted through this
        client moves the ones after it up, and the next page starts that much
        earlier: deleting each as it comes deletes them all. Other changes meanwhile
        (a conversation deleted by another client, or one not reached yet renamed,
        which moves it up) may skip one not reached yet.
        """
        require_count(page_size, "page_size", minimum=1)
        page_size = min(page_size, POSTGREST_MAX_ROWS)
        offset = 0
        stale = 0  # full pages in a row with nothing new
        walk = _Walk()
        self._walks.add(walk)
        try:
            while True:
                page = await self.list_conversations(
                    page_size, offset, project_id, timeout=timeout
                )
                new, fresh = queries.unseen_rows(page, walk.seen, _conv_id)
                stale = 0 if fresh else stale + 1
                if stale == 2:
                    return
                for record in new:
                    yield record
                if len(page) < page_size:
                    return
                offset += len(page) - walk.take_deleted()
        finally:
            self._walks.discard(walk)

    async def get_conversation(
        self, conv_id: str, *, timeout: float | None = None
    ) -> ConversationRecord:
        """One conversation; :class:`NotFoundError` if it does not exist."""
        return await self._run(queries.get_conversation(self._state, conv_id, timeout=timeout))

    async def rename_conversation(
        self, conv_id: str, title: str, *, timeout: float | None = None
    ) -> ConversationRecord:
        """Give a conversation a new title; returns the updated record.

        An update of the existing row (the old client sent an insert, which
        the database refuses for an existing id: defect D18).
        """
        return await self._run(
            queries.rename_conversation(self._state, conv_id, title, timeout=timeout)
        )

    async def get_flow_nodes(self, conv_id: str, *, timeout: float | None = None) -> list[FlowNode]:
        """The conversation's canvas: its nodes in creation order (all of them,
        past the server's cap on rows per answer: :mod:`flowith_proto.canvas`)."""
        conv = require_uuid(conv_id, "conv_id")
        nodes = await self._run(
            queries.rows(
                self._state,
                lambda e: e.flow_nodes(conv),
                FlowNode,
                "get_flow_nodes",
                timeout=timeout,
            )
        )
        if len(nodes) >= canvas.POSTGREST_MAX_ROWS:  # the answer may have been cut
            nodes += await self._run(
                canvas.later_pages(
                    self._state, conv, nodes, context="get_flow_nodes", timeout=timeout
                )
            )
        return nodes

    async def get_cooperators(
        self, conv_id: str, *, timeout: float | None = None
    ) -> list[CooperatorRecord]:
        """The people the conversation is shared with."""
        conv = require_uuid(conv_id, "conv_id")
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.cooperators(conv),
                CooperatorRecord,
                "get_cooperators",
                timeout=timeout,
                table=False,  # the edge's: it may answer one object
            )
        )

    async def list_cooperate_rows(
        self,
        user_id: str | None = None,
        conv_id: str | None = None,
        top_only: bool = True,
        *,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """The raw ``cooperate`` rows (shared conversations, with the
        conversation embedded)."""
        return await self._run(
            queries.json_body(
                self._state,
                lambda e: e.cooperate_rows(user_id=user_id, conv_id=conv_id, top_only=top_only),
                read=lambda body: _object_list(body, "list_cooperate_rows"),
                timeout=timeout,
            )
        )

    async def get_conv_novel_editor(
        self, conv_id: str, *, timeout: float | None = None
    ) -> ConvNovelEditor:
        """The novel-editor document of a conversation; :class:`NotFoundError` if it
        has none."""
        return await self._run(queries.get_conv_novel_editor(self._state, conv_id, timeout=timeout))

    async def list_discuss(
        self, conv_id: str, *, timeout: float | None = None
    ) -> list[DiscussRecord]:
        """The discussion entries of a conversation."""
        conv = require_uuid(conv_id, "conv_id")
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.discuss(conv),
                DiscussRecord,
                "list_discuss",
                timeout=timeout,
            )
        )

    async def get_oracle_stream(
        self, conv_id: str, *, timeout: float | None = None
    ) -> list[OracleStreamRecord]:
        """The oracle (agent) workflow entries of a conversation."""
        conv = require_uuid(conv_id, "conv_id")
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.oracle_stream(conv),
                OracleStreamRecord,
                "get_oracle_stream",
                timeout=timeout,
            )
        )

    # -- account -----------------------------------------------------------------------

    async def get_credits(self, *, timeout: float | None = None) -> list[UserCredits]:
        """The credit grants; ``sum(c.remain_quota for c in credits)`` is the balance."""
        return await self._run(queries.credits(self._state, timeout=timeout))

    async def get_credit_type(self, *, timeout: float | None = None) -> str:
        """The account's credit type."""
        return await self._run(
            queries.string_field(
                self._state,
                lambda e: e.credit_type(),
                "credit_type",
                "get_credit_type",
                timeout=timeout,
            )
        )

    async def get_auth_user(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The Supabase auth user (id, email, metadata) as a dict."""
        return await self._run(
            queries.json_body(
                self._state,
                lambda e: e.auth_user(),
                read=lambda body: _object(body, "get_auth_user"),
                timeout=timeout,
            )
        )

    def get_oauth_url(
        self,
        provider: str = "google",
        redirect_to: str = "https://flowith.io",
        access_type: str | None = "offline",
        prompt: str | None = "consent",
        include_granted_scopes: bool | None = None,
        scopes: str | None = None,
    ) -> str:
        """The URL that starts a sign-in with ``provider`` (no request is made).

        Provider options are top-level query parameters, as supabase-js
        builds them (the old client wrapped them in one parameter that the
        provider never saw: defect D20). Supabase puts its own refresh token
        in the redirect whatever ``access_type`` says.
        """
        options: dict[str, str] = {}
        if access_type:
            options["access_type"] = access_type
        if prompt:
            options["prompt"] = prompt
        if include_granted_scopes is not None:
            options["include_granted_scopes"] = "true" if include_granted_scopes else "false"
        return self._state.endpoints.oauth_url(
            provider=provider, redirect_to=redirect_to, scopes=scopes, query_params=options
        )

    async def refresh_access_token(
        self, refresh_token: str | None = None, *, timeout: float | None = None
    ) -> AuthSession:
        """Trade the (given or stored) refresh token for new tokens, adopt
        them, and return the session (its repr hides the tokens).

        Refresh tokens are single-use: keep the new ``refresh_token``. A given one is
        trimmed, as the constructor trims it.
        """
        if refresh_token is not None:
            if not isinstance(refresh_token, str):
                raise ValidationError(
                    f"refresh_token must be a string, not {type(refresh_token).__name__}",
                    status_code=None,
                )
            refresh_token = SecretText(refresh_token.strip())
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in refresh_token):
                # Never quoted: it is a secret.
                raise ValidationError("refresh_token holds a control character", status_code=None)
        token = SecretText(refresh_token or self._state.credentials.refresh_token)
        if not token:
            raise AuthenticationError("No refresh token: pass refresh_token=... to the client.")
        return await self._renew(token, timeout)

    def get_refresh_token(self) -> str:
        """The refresh token the client holds now (it changes on every refresh)."""
        return self._state.credentials.refresh_token

    async def logout(self, scope: str = "global", *, timeout: float | None = None) -> None:
        """End the session on the server: ``global`` (every device), ``local``
        or ``others``. The scope goes in the query, where the server reads it
        (the old client put it in the body: defect D19). A token refresh under way
        ends first, before the logout (which may need its token), and so does one
        begun meanwhile: its tokens never outlive the logout, and reach
        ``on_token_refresh`` before it returns (a callback still running after
        ``timeout``, the client's by default, is no longer waited for)."""
        check_seconds("timeout", timeout)
        # One bound for both waits: a hung callback holds the logout ``timeout`` at most.
        until = self._now() + (self.timeout if timeout is None else timeout)
        await self._refreshes_settled(until)
        await self._run(queries.json_body(self._state, lambda e: e.logout(scope), timeout=timeout))
        if scope in ("global", "local"):
            await self._refreshes_settled(until)
            self._state.credentials = self._state.credentials.signed_out()

    async def get_user_profile(
        self, user_id: str | None = None, *, timeout: float | None = None
    ) -> UserProfile:
        """A profile (the signed-in user's by default)."""
        return await self._run(queries.get_user_profile(self._state, user_id, timeout=timeout))

    async def update_user_profile(
        self, user_id: str | None = None, *, timeout: float | None = None, **fields: Any
    ) -> UserProfile:
        """Change profile fields (``language="en"``...) and return the updated profile."""
        return await self._run(
            queries.update_user_profile(self._state, fields, user_id, timeout=timeout)
        )

    async def list_user_upload_records(
        self,
        user_id: str | None = None,
        limit: int = 12,
        offset: int = 0,
        *,
        timeout: float | None = None,
    ) -> list[UserUploadRecord]:
        """The files the user uploaded, newest first."""
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.user_upload_records(user_id=user_id, limit=limit, offset=offset),
                UserUploadRecord,
                "list_user_upload_records",
                timeout=timeout,
            )
        )

    async def list_subscription_user_own(
        self, at_time: datetime | float | str | None = None, *, timeout: float | None = None
    ) -> list[SubscriptionUserOwn]:
        """The subscription grants active at ``at_time`` (default: now): a
        datetime (naive means UTC), unix seconds, or a date string, RFC 1123 as
        the original client took (``"Mon, 18 May 2026 18:04:25 GMT"``) or ISO
        8601; anything else is a :class:`ValidationError`."""
        return await self._run(queries.subscriptions(self._state, at_time, timeout=timeout))

    # -- content, catalogue, sessions -------------------------------------------------------

    async def list_public_notices(self, *, timeout: float | None = None) -> list[PublicNotice]:
        """The notices the web app shows everyone."""
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.public_notices(),
                PublicNotice,
                "list_public_notices",
                timeout=timeout,
            )
        )

    async def list_flow_projects(self, *, timeout: float | None = None) -> list[FlowProject]:
        """The user's projects, most recently updated first."""
        return await self._run(
            queries.rows(
                self._state,
                lambda e: e.flow_projects(),
                FlowProject,
                "list_flow_projects",
                timeout=timeout,
            )
        )

    async def get_migration_info(self, *, timeout: float | None = None) -> MigrationInfo:
        """The web app's data migration version; :class:`NotFoundError` if no row
        says it."""
        return await self._run(queries.get_migration_info(self._state, timeout=timeout))

    async def list_models(
        self, logo: bool = True, desc: bool = True, *, timeout: float | None = None
    ) -> list[ModelInfo]:
        """The model catalogue (ids to pass as ``model=``)."""
        return await self._run(
            queries.list_models(self._state, logo=logo, desc=desc, timeout=timeout)
        )

    async def list_templates(
        self,
        template_type: str | None = None,
        page_size: int = 1000,
        *,
        timeout: float | None = None,
    ) -> list[TemplateRecord]:
        """Prompt templates, optionally of one type."""
        return await self._run(
            queries.list_templates(
                self._state, template_type=template_type, page_size=page_size, timeout=timeout
            )
        )

    async def get_discord_invite(self, *, timeout: float | None = None) -> str:
        """The community Discord's invite link."""
        return await self._run(
            queries.string_field(
                self._state,
                lambda e: e.discord_invite(),
                "link",
                "get_discord_invite",
                timeout=timeout,
            )
        )

    async def get_featurebase_status(self, *, timeout: float | None = None) -> Any:
        """The changelog (Featurebase) status, as the server sends it."""
        return await self._json(lambda e: e.featurebase_status(), timeout)

    async def get_daily_rewards_status(self, *, timeout: float | None = None) -> Any:
        """Whether today's reward is claimed, and the streak, as sent."""
        return await self._json(lambda e: e.daily_rewards_status(), timeout)

    async def claim_daily_reward(self, *, timeout: float | None = None) -> Any:
        """Claim today's reward; the server's answer (``{}`` if it sends none)."""
        body = await self._json(lambda e: e.claim_daily_reward(), timeout)
        return {} if body is None else body

    async def check_campaign(self, model_id: str, *, timeout: float | None = None) -> Any:
        """Whether a campaign applies to ``model_id`` now."""
        return await self._json(lambda e: e.campaign_status(model_id), timeout)

    async def check_banana_campaign(self, *, timeout: float | None = None) -> Any:
        """The "banana 2025" campaign status."""
        return await self._json(lambda e: e.banana_campaign(), timeout)

    async def check_new_version_access(self, *, timeout: float | None = None) -> Any:
        """Whether the account may use the new web app version."""
        return await self._json(lambda e: e.new_version_access(), timeout)

    async def get_enterprise_dashboard(self, *, timeout: float | None = None) -> Any:
        """The enterprise dashboard of the account."""
        return await self._json(lambda e: e.enterprise_dashboard(), timeout)

    async def upsert_online_session(
        self, payload: Mapping[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Report this session as online (``p_session_id``, ``p_is_idle``...)."""
        return await self._json(lambda e: e.rpc("upsert_online_session", payload), timeout)

    async def remove_online_session(self, session_id: str, *, timeout: float | None = None) -> Any:
        """Report this session as gone."""
        body = {"p_session_id": require_text(session_id, "session_id")}
        return await self._json(lambda e: e.rpc("remove_online_session", body), timeout)

    async def get_online_count(self, *, timeout: float | None = None) -> int:
        """How many people are online."""
        return await self._run(queries.online_count(self._state, timeout=timeout))

    async def _json(self, build: queries.Build, timeout: float | None) -> Any:
        return await self._run(queries.json_body(self._state, build, timeout=timeout))


# Raised inside the run (queries.json_body), these errors name the answer and are
# scrubbed of the client's secrets as every error of a run is.
def _object(body: Any, context: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ResponseDecodeError(f"{context}: expected a JSON object", body=body)
    return body


def _object_list(body: Any, context: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        raise ResponseDecodeError(f"{context}: expected a JSON array of objects", body=body)
    return body


def _conv_id(record: ConversationRecord) -> str:
    return record.conv_id


class _Walk:
    """One walk of :meth:`WebAppMethods.iter_conversations`: the conversations it
    yielded, and how many of them were deleted through the client since its last
    page was read (each moved the rows after it up by one)."""

    __slots__ = ("__weakref__", "_deleted", "_gone", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._gone: set[str] = set()
        self._deleted = 0

    def deleted(self, conv_id: str) -> None:
        """``conv_id`` was deleted; counted if the walk yielded it (once)."""
        if conv_id in self.seen and conv_id not in self._gone:
            self._gone.add(conv_id)
            self._deleted += 1

    def take_deleted(self) -> int:
        taken, self._deleted = self._deleted, 0
        return taken
