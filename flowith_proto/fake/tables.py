"""The PostgREST tables of the fake: schemas, defaults, constraints and row-level security.

Each table is one :class:`TableSpec`. ``visible`` is the policy for writes
(which rows a PATCH may touch, and the ``WITH CHECK`` of an update);
``readable`` the policy for reads, when it is wider (a member of a shared
conversation reads it but cannot rename it); ``check`` runs an insert's
constraints. Tables the web app only reads are not ``writable``: a write is
``403 42501 permission denied``, as the real grants would answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from flowith_proto.fake import postgrest as pg
from flowith_proto.fake.postgrest import iso_time
from flowith_proto.fake.wire import FakeResponse, Reject, pg_error

if TYPE_CHECKING:
    from flowith_proto.fake.model import FakeFlowith

__all__ = ["TABLES", "TableSpec", "check_not_null", "is_member", "rls_violation"]

Policy = Callable[["FakeFlowith", Mapping[str, Any], str], bool]
Defaults = Callable[["FakeFlowith", str, float], dict[str, Any]]
Check = Callable[["FakeFlowith", dict[str, Any], str, Mapping[str, dict[str, Any]]], None]


@attrs.frozen
class TableSpec:
    """A PostgREST table: its schema and the rules the database enforces.

    ``defaults`` gives a new row's column defaults; ``visible`` is the
    row-level security policy for writes (who may update a row) and, unless
    ``readable`` is given, for reads; ``check`` runs the constraints of an
    insert (``staged`` holds the batch's earlier rows) and raises
    :class:`Reject`. ``writable`` false refuses every insert and update.
    """

    table: pg.Table
    defaults: Defaults
    visible: Policy
    check: Check
    readable: Policy | None = None
    writable: bool = True

    def can_read(self, fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
        return (self.readable or self.visible)(fake, row, user)


def check_not_null(table: pg.Table, row: Mapping[str, Any]) -> None:
    for column in table.columns:
        if column in table.not_null and row.get(column) is None:
            raise Reject(
                pg_error(
                    400,
                    "23502",
                    f'null value in column "{column}" of relation "{table.name}" '
                    "violates not-null constraint",
                )
            )


def rls_violation(table: str) -> FakeResponse:
    return pg_error(403, "42501", f'new row violates row-level security policy for table "{table}"')


def _fk_violation(table: str, constraint: str, column: str, value: Any, target: str) -> Reject:
    return Reject(
        pg_error(
            409,
            "23503",
            f'insert or update on table "{table}" violates foreign key constraint "{constraint}"',
            details=f'Key ({column})=({value}) is not present in table "{target}".',
        )
    )


def is_member(fake: FakeFlowith, conv_id: Any, user: str) -> bool:
    """Whether ``user`` owns conversation ``conv_id`` or cooperates on it."""
    conversation = fake._rows["conversation"].get(conv_id or "")
    if conversation is None:
        return False
    if conversation["user_id"] == user:
        return True
    return any(
        row["conv_id"] == conv_id and row["user_id"] == user
        for row in fake._rows["cooperate"].values()
    )


def _defaults(**fixed: Any) -> Defaults:
    """Defaults: a random uuid ``id``, ``user_id`` = the caller, timestamps =
    now, every other column NULL unless ``fixed`` says otherwise (copied)."""

    def make(fake: FakeFlowith, user: str, now: float, /) -> dict[str, Any]:
        row: dict[str, Any] = {"id": fake._new_id(), "user_id": user}
        row.update({k: (v.copy() if isinstance(v, (dict, list)) else v) for k, v in fixed.items()})
        row["created_at"] = row["updated_at"] = iso_time(now)
        return row

    return make


def _owner(column: str = "user_id") -> Policy:
    return lambda fake, row, user: row.get(column) == user


def _everyone(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    return True


def _conversation_owner(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    conversation = fake._rows["conversation"].get(row.get("conv_id") or "")
    return conversation is not None and conversation["user_id"] == user


def _conversation_member(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    return is_member(fake, row.get("conv_id"), user)


def _member_of_it(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    """A conversation is readable by its owner and its cooperators."""
    return row.get("user_id") == user or is_member(fake, row.get("id"), user)


def _cooperate_visible(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    return row.get("user_id") == user or is_member(fake, row.get("conv_id"), user)


def _no_insert(
    fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
) -> None:  # pragma: no cover - not writable tables never reach their check
    raise Reject(pg_error(403, "42501", "permission denied"))


def _owner_check(table: str, column: str = "user_id") -> Check:
    def check(
        fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
    ) -> None:
        if row.get(column) != user:
            raise Reject(rls_violation(table))

    return check


# -- conversation and flow_node --------------------------------------------------


def _conversation_check(
    fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
) -> None:
    if row["user_id"] != user:
        raise Reject(rls_violation("conversation"))
    project = row["project_id"]
    if project is not None and project not in fake._rows["flow_project"]:
        raise _fk_violation(
            "conversation", "conversation_project_id_fkey", "project_id", project, "flow_project"
        )


def _node_defaults(fake: FakeFlowith, user: str, now: float) -> dict[str, Any]:
    return {
        "id": None,
        "conv_id": None,
        "type": None,
        "p_id": None,
        "c_ids": [],
        "data": {},
        "position": {},
        "is_delete": False,
        "created_at": iso_time(now),
        "updated_at": iso_time(now),
    }


def _node_check(
    fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
) -> None:
    if row["type"] not in ("1", "2"):
        raise Reject(
            pg_error(
                400,
                "23514",
                'new row for relation "flow_node" violates check constraint "flow_node_type_check"',
            )
        )
    conv_id = row["conv_id"]
    conversation = fake._rows["conversation"].get(conv_id)
    if conversation is None or conversation["is_delete"]:
        raise _fk_violation(
            "flow_node", "flow_node_conv_id_fkey", "conv_id", conv_id, "conversation"
        )
    if conversation["user_id"] != user:
        raise Reject(rls_violation("flow_node"))
    parent = row["p_id"]
    if parent is not None and parent != conv_id:
        node = staged.get(parent) or fake._rows["flow_node"].get(parent)
        if node is None or node["conv_id"] != conv_id:
            raise _fk_violation("flow_node", "flow_node_p_id_fkey", "p_id", parent, "flow_node")


def _table(
    name: str, columns: Mapping[str, pg.ColumnType], *not_null: str, **relations: pg.Relation
) -> pg.Table:
    return pg.Table(name, columns, frozenset(not_null), relations)


_STAMPS: dict[str, pg.ColumnType] = {"created_at": "timestamptz", "updated_at": "timestamptz"}

#: The PostgREST tables the fake serves, by name.
TABLES: dict[str, TableSpec] = {
    spec.table.name: spec
    for spec in (
        TableSpec(
            _table(
                "conversation",
                {
                    "id": "uuid",
                    "user_id": "uuid",
                    "title": "text",
                    "project_id": "uuid",
                    "is_absolute_mode": "bool",
                    "preview": "text",
                    "is_delete": "bool",
                    "metadata": "json",
                    **_STAMPS,
                },
                "id",
                "user_id",
            ),
            _defaults(
                title=None,
                project_id=None,
                is_absolute_mode=True,
                preview=None,
                is_delete=False,
                metadata={},
            ),
            _owner(),
            _conversation_check,
            readable=_member_of_it,
        ),
        TableSpec(
            _table(
                "flow_node",
                {
                    "id": "uuid",
                    "conv_id": "uuid",
                    "type": "text",
                    "p_id": "uuid",
                    "c_ids": "uuid[]",
                    "data": "json",
                    "position": "json",
                    "is_delete": "bool",
                    **_STAMPS,
                },
                "id",
                "conv_id",
                "type",
            ),
            _node_defaults,
            _conversation_owner,
            _node_check,
            readable=_conversation_member,
        ),
        TableSpec(
            _table(
                "cooperate",
                {
                    "id": "uuid",
                    "conv_id": "uuid",
                    "user_id": "uuid",
                    "role": "int",
                    "top": "bool",
                    "user_name": "text",
                    "user_avatar": "text",
                    "created_at": "timestamptz",
                },
                "id",
                "conv_id",
                "user_id",
                conv_id=pg.Relation("conv_id", "conv_id", "conversation"),
            ),
            _defaults(top=False, role=2),
            _cooperate_visible,
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "user_profile",
                {
                    "id": "uuid",
                    "language": "text",
                    "name": "text",
                    "avatar_url": "text",
                    "metadata": "json",
                    **_STAMPS,
                },
                "id",
            ),
            lambda fake, user, now: {
                "id": user,
                "language": None,
                "name": None,
                "avatar_url": None,
                "metadata": {},
                "created_at": iso_time(now),
                "updated_at": iso_time(now),
            },
            _owner("id"),
            _owner_check("user_profile", "id"),
        ),
        TableSpec(
            _table(
                "user_upload_records",
                {
                    "id": "uuid",
                    "user_id": "uuid",
                    "conv_id": "uuid",
                    "value": "text",
                    "name": "text",
                    "type": "text",
                    "size": "int",
                    "created_at": "timestamptz",
                },
                "id",
                "user_id",
            ),
            _defaults(),
            _owner(),
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "subscription_type",
                {
                    "id": "int",
                    "name": "text",
                    "quota": "numeric",
                    "months": "int",
                    "price": "numeric",
                },
                "id",
            ),
            _defaults(),
            _everyone,
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "subscription_user_own",
                {
                    "id": "uuid",
                    "user_id": "uuid",
                    "subscription_type_id": "int",
                    "months": "int",
                    "from_date": "timestamptz",
                    "to_date": "timestamptz",
                    "remain_quota": "numeric",
                    "created_at": "timestamptz",
                },
                "id",
                "user_id",
                subscription_type=pg.Relation(
                    "subscription_type", "subscription_type_id", "subscription_type"
                ),
            ),
            _defaults(),
            _owner(),
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "public_notice",
                {
                    "id": "uuid",
                    "title": "text",
                    "content": "text",
                    "is_active": "bool",
                    "created_at": "timestamptz",
                },
                "id",
            ),
            _defaults(),
            _everyone,
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "flow_project",
                {"id": "uuid", "user_id": "uuid", "title": "text", **_STAMPS},
                "id",
                "user_id",
            ),
            _defaults(title=None),
            _owner(),
            _owner_check("flow_project"),
        ),
        TableSpec(
            _table(
                "conv_novel_editor",
                {"id": "uuid", "conv_id": "uuid", "content": "text", **_STAMPS},
                "id",
                "conv_id",
            ),
            _defaults(),
            _conversation_owner,
            _no_insert,
            readable=_conversation_member,
            writable=False,
        ),
        TableSpec(
            _table(
                "discuss",
                {
                    "id": "uuid",
                    "conv_id": "uuid",
                    "user_id": "uuid",
                    "content": "text",
                    "created_at": "timestamptz",
                },
                "id",
                "conv_id",
            ),
            _defaults(),
            _conversation_member,
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "oracle_stream",
                {
                    "id": "uuid",
                    "conv_id": "uuid",
                    "requirement": "text",
                    "workflow": "text",
                    "no_need_replan": "bool",
                    "is_stop": "bool",
                    "is_public": "bool",
                    "user_confirm": "bool",
                    "is_delete": "bool",
                    "created_at": "timestamptz",
                },
                "id",
                "conv_id",
            ),
            _defaults(),
            _conversation_owner,
            _no_insert,
            writable=False,
        ),
        TableSpec(
            _table(
                "migration",
                {"id": "int", "version": "text", "applied_at": "timestamptz"},
                "id",
            ),
            _defaults(),
            _everyone,
            _no_insert,
            writable=False,
        ),
    )
}
