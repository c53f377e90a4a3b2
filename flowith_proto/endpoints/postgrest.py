"""Supabase PostgREST (``SB/rest/v1``): tables and RPCs.

protocol.md 2.4 and 2.5, parameter order as the web app sends it. Every id is
validated as a UUID and every other caller value percent-encoded, so nothing a
caller passes can add a filter or a parameter (D13). Writes name the schema
in ``Content-Profile``; updates ask for the changed rows back so that "no such
row" is visible (D18, D21; see ``docs/protocol-decisions.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flowith_proto.arguments import (
    require_count,
    require_flag,
    require_identifier,
    require_mapping,
)
from flowith_proto.endpoints._core import NODE_TYPE_AI, NODE_TYPE_USER, EndpointsCore, Position
from flowith_proto.errors import ValidationError
from flowith_proto.request import Request, dump_json, literal, quote_value, require_uuid

__all__ = ["RestEndpoints"]

_USER_NODE_COLUMNS = '"id","position","type","conv_id","p_id","c_ids","data"'
_AI_NODE_COLUMNS = '"id","conv_id","type","position","data","p_id","c_ids"'
_UPLOAD_COLUMNS = "id,user_id,conv_id,value,name,type,created_at"
_SUBSCRIPTION_COLUMNS = "id,months,from_date,to_date,remain_quota,subscription_type(id,quota)"
_ORACLE_COLUMNS = "id,requirement,workflow,no_need_replan,is_stop,is_public,user_confirm,is_delete"
_RETURN_ROWS = "return=representation"
# The IMF-fixdate of RFC 9110 (what email.utils.formatdate(usegmt=True) writes).
_HTTP_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT",
    re.ASCII,  # its digits only: \d alone takes those of every script
)

Query = list[tuple[str, str]]


def _eq(value: str, name: str) -> str:
    return "eq." + require_uuid(value, name)


class RestEndpoints(EndpointsCore):
    """The builders of Supabase's PostgREST."""

    __slots__ = ()

    def _read(self, table: str, query: Sequence[tuple[str, str]]) -> Request:
        return Request("GET", self._rest(f"/{table}", query), self.rest_headers(), idempotent=True)

    # -- the generation path -------------------------------------------------

    def create_conversation(self) -> Request:
        """Insert a conversation row; the answer carries its ``id``."""
        return Request(
            "POST",
            self._rest("/conversation", [("select", "id")]),
            self.rest_headers(write=True, prefer=_RETURN_ROWS),
            dump_json({"project_id": None, "is_absolute_mode": True, "user_id": self._user_id()}),
        )

    def create_user_node(
        self,
        *,
        node_id: str,
        conv_id: str,
        parent_id: str,
        prompt: str,
        timestamp: str,
        position: Position,
        children: Sequence[str] = (),
    ) -> Request:
        """Insert the user's node (type ``"1"``) under ``parent_id``.

        The old client always hung it under the conversation root with no
        children (D6); a session passes the previous AI node as parent and
        the new AI node as child, so the canvas shows one thread.
        """
        row = {
            "id": require_uuid(node_id, "node_id"),
            "position": position.as_json(),
            "type": NODE_TYPE_USER,
            "conv_id": require_uuid(conv_id, "conv_id"),
            "p_id": require_uuid(parent_id, "parent_id"),
            "c_ids": [require_uuid(c, "child id") for c in children],
            "data": {"timestamp": timestamp, "value": prompt},
        }
        return Request(
            "POST",
            self._rest("/flow_node", [("columns", literal(_USER_NODE_COLUMNS))]),
            self.rest_headers(write=True, prefer="return=minimal"),
            dump_json([row]),
            # The node's id is ours: if a retry finds it taken, the first try landed.
            conflict_means_done=True,
        )

    def create_ai_node(
        self,
        *,
        node_id: str,
        conv_id: str,
        parent_id: str,
        data: dict[str, Any],
        position: Position,
    ) -> Request:
        """Insert the node (type ``"2"``) that the server fills with the answer."""
        row = {
            "id": require_uuid(node_id, "node_id"),
            "conv_id": require_uuid(conv_id, "conv_id"),
            "type": NODE_TYPE_AI,
            "position": position.as_json(),
            "data": data,
            "p_id": require_uuid(parent_id, "parent_id"),
            "c_ids": [],
        }
        return Request(
            "POST",
            self._rest("/flow_node", [("columns", literal(_AI_NODE_COLUMNS))]),
            self.rest_headers(write=True, prefer="return=minimal"),
            dump_json([row]),
            # The node's id is ours: if a retry finds it taken, the first try landed.
            conflict_means_done=True,
        )

    def clear_children(self, node_id: str) -> Request:
        """Empty a node's ``c_ids``: a user node names its answer before the answer's
        insert is sent, and takes the name back when that insert is refused."""
        query = [("id", _eq(node_id, "node_id"))]
        return Request(
            "PATCH",
            self._rest("/flow_node", query),
            self.rest_headers(write=True, prefer="return=minimal"),
            dump_json({"c_ids": []}),
            idempotent=True,
        )

    def poll_node(self, node_id: str) -> Request:
        """Read a node's ``data`` and ``type``: the authoritative result."""
        return self._read("flow_node", [("id", _eq(node_id, "node_id")), ("select", "data,type")])

    # -- conversations -------------------------------------------------------

    def list_conversations(
        self, *, limit: int = 20, offset: int = 0, project_id: str | None = None
    ) -> Request:
        """The user's live conversations, most recently updated first; outside any project
        unless ``project_id`` is given."""
        project = "is.null" if project_id is None else _eq(project_id, "project_id")
        query = [
            ("select", "*"),
            ("user_id", "eq." + self._user_id()),
            ("is_delete", "neq.true"),
            ("project_id", project),
            ("order", "updated_at.desc"),
            ("offset", require_count(offset, "offset")),
            ("limit", require_count(limit, "limit")),
        ]
        return self._read("conversation", query)

    def get_conversation(self, conv_id: str) -> Request:
        """One conversation row (none back is a NotFoundError for the op, D22)."""
        return self._read("conversation", [("select", "*"), ("id", _eq(conv_id, "conv_id"))])

    def rename_conversation(self, conv_id: str, title: str) -> Request:
        """Update the title in place. The old client POSTed an insert that
        collides with the existing row (D18); this PATCH returns the updated
        row, so no row back means no such conversation."""
        query = [("id", _eq(conv_id, "conv_id")), ("select", "*")]
        if not isinstance(title, str):  # None would clear it, bytes fail in json
            raise ValidationError(
                f"title must be a string, not {type(title).__name__}", status_code=None
            )
        return Request(
            "PATCH",
            self._rest("/conversation", query),
            self.rest_headers(write=True, prefer=_RETURN_ROWS),
            dump_json({"title": title}),
        )

    def delete_conversation(self, conv_id: str) -> Request:
        """Soft-delete: mark the row ``is_delete``. The old client sent no
        ``Prefer`` and so could not tell a deleted row from no row at all
        (D21); asking for the updated ids makes a no-op visible."""
        query = [("id", _eq(conv_id, "conv_id")), ("select", "id")]
        return Request(
            "PATCH",
            self._rest("/conversation", query),
            self.rest_headers(write=True, prefer=_RETURN_ROWS),
            dump_json({"is_delete": True}),
        )

    def flow_nodes(self, conv_id: str, *, offset: int = 0, limit: int | None = None) -> Request:
        """A conversation's live nodes in creation order; from ``offset``, at most
        ``limit`` of them (a later page of a canvas longer than the server's cap).

        A page is ordered by ``id`` too: PostgreSQL gives rows of the same
        ``created_at`` in any order, which may differ from one read to the next, so
        pages cut from an order by ``created_at`` alone could skip a node at their
        boundary. (The first read keeps the original order: recordings of it replay.)
        """
        query = [
            ("select", "*"),
            ("conv_id", _eq(conv_id, "conv_id")),
            ("is_delete", "neq.true"),
            ("order", "created_at.asc" if limit is None else "created_at.asc,id.asc"),
        ]
        if limit is not None:
            query += [("offset", str(offset)), ("limit", str(limit))]
        return self._read("flow_node", query)

    def cooperate_rows(
        self, *, user_id: str | None = None, conv_id: str | None = None, top_only: bool = True
    ) -> Request:
        """Sharing rows with their conversation embedded.

        ``user_id=None`` means the signed-in user; when the credentials carry
        no user id the filter is left out, as the old client did with an
        empty id (row-level security still scopes the rows).
        """
        query: Query = [("select", literal("*,conv_id(*)"))]
        if user_id is not None:
            query.append(("user_id", _eq(user_id, "user_id")))
        elif self.credentials.user_id:
            query.append(("user_id", "eq." + self._user_id()))
        if conv_id is not None:
            query.append(("conv_id", _eq(conv_id, "conv_id")))
        else:
            query.append(("conv_id", "not.is.null"))
            query.append(("conv_id.is_delete", "not.eq.true"))
        if require_flag(top_only, "top_only"):
            query.append(("top", "not.eq.true"))
            query.append((literal("conv_id.metadata->>member_count"), "not.eq.1"))
        return self._read("cooperate", query)

    # -- the user --------------------------------------------------------------

    def user_profile(self, user_id: str | None = None) -> Request:
        """A profile row; ``None`` reads the signed-in user's."""
        return self._read(
            "user_profile", [("select", "*"), ("id", "eq." + self._user_or_own(user_id))]
        )

    def update_user_profile(self, fields: Mapping[str, Any], user_id: str | None = None) -> Request:
        """Change profile columns and get the row back (D21: the old client's
        bare PATCH could not tell an update from a no-op). Column names must
        be plain identifiers, so no key can reach an operator or a JSON path."""
        body = {require_identifier(name, "field name"): value for name, value in fields.items()}
        query = [("id", "eq." + self._user_or_own(user_id)), ("select", "*")]
        return Request(
            "PATCH",
            self._rest("/user_profile", query),
            self.rest_headers(write=True, prefer=_RETURN_ROWS),
            dump_json(body),
        )

    def user_upload_records(
        self, *, user_id: str | None = None, limit: int = 12, offset: int = 0
    ) -> Request:
        """The user's uploads, newest first (``id`` breaks ties, so pages are stable)."""
        query = [
            ("select", _UPLOAD_COLUMNS),
            ("user_id", "eq." + self._user_or_own(user_id)),
            ("order", "created_at.desc,id.desc"),
            ("offset", require_count(offset, "offset")),
            ("limit", require_count(limit, "limit")),
        ]
        return self._read("user_upload_records", query)

    def subscriptions(self, at: str) -> Request:
        """Subscriptions running at ``at``, an RFC 1123 date such as
        ``"Mon, 18 May 2026 18:04:25 GMT"``. No user filter: row-level
        security scopes the rows (protocol.md 2.4)."""
        if not isinstance(at, str) or not _HTTP_DATE.fullmatch(at):
            raise ValidationError(
                f"at must be an RFC 1123 date like 'Mon, 18 May 2026 18:04:25 GMT', got {at!r}",
                status_code=None,
                details=[{"field": "at", "reason": "not an RFC 1123 date"}],
            )
        moment = quote_value(at)
        query = [
            ("select", literal(_SUBSCRIPTION_COLUMNS)),
            ("order", "to_date.desc"),
            ("from_date", "lt." + moment),
            ("to_date", "gt." + moment),
        ]
        return self._read("subscription_user_own", query)

    # -- other tables ----------------------------------------------------------

    def public_notices(self) -> Request:
        return self._read("public_notice", [("select", "*")])

    def flow_projects(self) -> Request:
        """The user's projects, most recently changed first."""
        return self._read("flow_project", [("select", "*"), ("order", "updated_at.desc")])

    def conv_novel_editor(self, conv_id: str) -> Request:
        return self._read(
            "conv_novel_editor", [("select", "*"), ("conv_id", _eq(conv_id, "conv_id"))]
        )

    def discuss(self, conv_id: str) -> Request:
        return self._read("discuss", [("select", "*"), ("conv_id", _eq(conv_id, "conv_id"))])

    def oracle_stream(self, conv_id: str) -> Request:
        return self._read(
            "oracle_stream", [("select", _ORACLE_COLUMNS), ("conv_id", _eq(conv_id, "conv_id"))]
        )

    def migration(self) -> Request:
        return self._read("migration", [("select", "version")])

    # -- RPC (2.5) ---------------------------------------------------------------

    def rpc(self, function: str, body: Mapping[str, Any], *, reads: bool = False) -> Request:
        """Call a database function. Its name goes into the path, so only an
        identifier is accepted; the write schema header is ``Content-Profile``
        (D26). One that only ``reads`` is safe to send again (and retried)."""
        name = require_identifier(function, "function")
        return Request(
            "POST",
            self._rest(f"/rpc/{name}"),
            self.rest_headers(write=True),
            dump_json(dict(require_mapping(body, "payload"))),
            idempotent=reads,
        )
