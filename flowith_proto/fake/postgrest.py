"""The slice of PostgREST the fake needs: tables, query parameters, values.

It reads ``select``, filters, ``order``, ``limit``, ``offset``, ``columns`` and
``Prefer`` the way PostgREST does, with SQL's NULL rules, and rejects what a
real server would reject with the same status and error code. Features the
client never uses (embedding, renames, casts, JSON paths) are refused with a
message that says the fake does not model them, so a test never passes by
accident on something the fake silently ignored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

import attrs

from flowith_proto.fake.wire import Reject, header, pg_error

__all__ = [
    "RESERVED",
    "Filter",
    "Table",
    "coerce",
    "content_type_is_json",
    "invalid_input",
    "order_rows",
    "parse_columns",
    "parse_count",
    "parse_filter",
    "parse_select",
    "prefer",
    "project",
]

ColumnType = Literal["uuid", "text", "bool", "json", "timestamptz", "uuid[]"]

#: Query parameters that are not filters.
RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict"})
_OPERATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "is", "in"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRUE = frozenset({"true", "t"})
_FALSE = frozenset({"false", "f"})


@attrs.frozen
class Table:
    """A table's columns (in order, with their types) and its NOT NULL columns,
    checked after the defaults are filled in."""

    name: str
    columns: Mapping[str, ColumnType]
    not_null: frozenset[str] = frozenset()

    def column(self, name: str) -> ColumnType:
        try:
            return self.columns[name]
        except KeyError:
            raise Reject(
                pg_error(400, "42703", f"column {self.name}.{name} does not exist")
            ) from None

    def body_column(self, name: str) -> ColumnType:
        """A column named in a request body or ``columns``: PostgREST's schema-cache error."""
        try:
            return self.columns[name]
        except KeyError:
            raise Reject(
                pg_error(
                    400,
                    "PGRST204",
                    f"Could not find the '{name}' column of '{self.name}' in the schema cache",
                )
            ) from None


def not_modeled(what: str) -> Reject:
    return Reject(pg_error(400, "PGRST100", f"fake Flowith: {what} is not modeled"))


def invalid_input(type_name: str, value: Any) -> Reject:
    shown = value if isinstance(value, str) else json.dumps(value)
    return Reject(pg_error(400, "22P02", f'invalid input syntax for type {type_name}: "{shown}"'))


def _uuid(value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise invalid_input("uuid", value)


def coerce(table: Table, column: str, value: Any) -> Any:
    """A JSON value stored into ``column`` as PostgreSQL's ``json_populate_recordset``
    would: UUIDs canonical, scalars turned to text, wrong types refused."""
    kind = table.body_column(column)
    if value is None:
        return None
    if kind == "uuid":
        return _uuid(value)
    if kind == "uuid[]":
        if not isinstance(value, list):
            raise invalid_input("uuid[]", value)
        return [_uuid(item) for item in value]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise invalid_input("boolean", value)
    if kind in ("text", "timestamptz"):
        if isinstance(value, str):
            return value
        if kind == "text":
            return json.dumps(value, ensure_ascii=False)
        raise invalid_input("timestamp with time zone", value)
    return json.loads(json.dumps(value))  # json: a private copy


def _literal(table: Table, column: str, text: str) -> Any:
    """A filter operand as a value of ``column``'s type."""
    kind = table.column(column)
    if kind == "uuid":
        return _uuid(text)
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise invalid_input("boolean", text)
    if kind in ("json", "uuid[]"):
        raise not_modeled(f"filtering on the {kind} column {column!r}")
    return text


def _like(pattern: str, flags: int) -> re.Pattern[str]:
    parts = [".*" if c in "*%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", flags | re.DOTALL)


@attrs.frozen
class Filter:
    """One ``column=[not.]op.operand`` condition, evaluated with SQL's NULL rules."""

    column: str
    negate: bool
    test: Callable[[Any], bool | None]

    def matches(self, row: Mapping[str, Any]) -> bool:
        outcome = self.test(row.get(self.column))
        if outcome is None:  # SQL's unknown: neither the condition nor its negation holds
            return False
        return outcome != self.negate


def _compare(operator: str, operand: Any) -> Callable[[Any], bool | None]:
    checks: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: bool(a == b),
        "neq": lambda a, b: bool(a != b),
        "gt": lambda a, b: bool(a > b),
        "gte": lambda a, b: bool(a >= b),
        "lt": lambda a, b: bool(a < b),
        "lte": lambda a, b: bool(a <= b),
    }
    check = checks[operator]
    return lambda value: None if value is None else check(value, operand)


def _split_list(text: str) -> list[str]:
    """The items of ``(a,b,"c,d")``."""
    if not (text.startswith("(") and text.endswith(")")):
        raise Reject(pg_error(400, "PGRST100", f"failed to parse filter (in.{text})"))
    items = re.findall(r'\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|\Z)', text[1:-1])
    return [item[1:-1] if item.startswith('"') else item for item in items if item != ""]


def parse_filter(table: Table, column: str, expression: str) -> Filter:
    """``column=expression`` from the query string."""
    if not _IDENTIFIER.match(column):
        raise not_modeled(f"the filter key {column!r} (embedded or JSON path filters)")
    table.column(column)
    negate = expression.startswith("not.")
    rest = expression[4:] if negate else expression
    operator, dot, operand = rest.partition(".")
    if not dot or operator not in _OPERATORS:
        raise Reject(pg_error(400, "PGRST100", f"failed to parse filter ({expression})"))
    test: Callable[[Any], bool | None]
    if operator == "is":
        wanted: dict[str, bool | None] = {"null": None, "true": True, "false": False}
        key = operand.lower()
        if key == "unknown":
            key = "null"
        if key not in wanted:
            raise Reject(pg_error(400, "PGRST100", f"failed to parse filter ({expression})"))
        target = wanted[key]
        test = lambda value: value is target  # noqa: E731
    elif operator == "in":
        options = [_literal(table, column, item) for item in _split_list(operand)]
        test = lambda value: None if value is None else value in options  # noqa: E731
    elif operator in ("like", "ilike"):
        if table.column(column) not in ("text", "uuid", "timestamptz"):
            raise Reject(pg_error(400, "42883", f"operator does not exist: {column} ~~ text"))
        pattern = _like(operand, re.IGNORECASE if operator == "ilike" else 0)
        test = lambda value: None if value is None else bool(pattern.match(value))  # noqa: E731
    else:
        test = _compare(operator, _literal(table, column, operand))
    return Filter(column, negate, test)


def parse_select(table: Table, text: str | None) -> list[str]:
    """The columns of ``select=`` (``*`` expands to all, in table order)."""
    if text is None or text.strip() == "":
        return list(table.columns)
    columns: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item == "*":
            columns.extend(table.columns)
        elif _IDENTIFIER.match(item):
            table.column(item)
            columns.append(item)
        else:
            raise not_modeled(f"the select item {item!r} (embedding, renames, casts)")
    return list(dict.fromkeys(columns))


def parse_columns(table: Table, text: str) -> list[str]:
    """``columns="a","b"``: the body keys an insert uses.

    Stricter than PostgREST, which also takes bare names: the fake demands the
    quoted form supabase-js sends, so a test proves the client sends it too.
    """
    names: list[str] = []
    for item in text.split(","):
        match = re.fullmatch(r'"([^"]+)"', item.strip())
        if match is None:
            raise Reject(
                pg_error(
                    400,
                    "PGRST100",
                    f"failed to parse columns parameter ({text})",
                    details=f'expected a quoted column name like "id", got {item!r}',
                )
            )
        table.body_column(match.group(1))
        names.append(match.group(1))
    return names


def order_rows(
    table: Table, rows: Sequence[dict[str, Any]], text: str | None
) -> list[dict[str, Any]]:
    """Rows sorted by ``order=col.asc|desc[.nullsfirst|.nullslast],...``.

    NULLs sort last ascending and first descending unless told otherwise, as in
    PostgreSQL; equal keys keep insertion order.
    """
    ordered = list(rows)
    if not text:
        return ordered
    terms = []
    for term in text.split(","):
        column, *modifiers = term.strip().split(".")
        if table.column(column) in ("json", "uuid[]"):
            raise not_modeled(f"ordering by the {table.columns[column]} column {column!r}")
        descending = False
        nulls_first: bool | None = None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls_first = modifier == "nullsfirst"
            else:
                raise Reject(pg_error(400, "PGRST100", f"failed to parse order ({text})"))
        terms.append((column, descending, descending if nulls_first is None else nulls_first))
    for column, descending, nulls_first in reversed(terms):
        present = [r for r in ordered if r.get(column) is not None]
        missing = [r for r in ordered if r.get(column) is None]
        # sort(reverse=True) is stable too: equal keys keep their order.
        present.sort(key=itemgetter(column), reverse=descending)
        ordered = missing + present if nulls_first else present + missing
    return ordered


def parse_count(name: str, text: str | None) -> int | None:
    """``limit`` / ``offset``: a non-negative integer."""
    if text is None:
        return None
    if not text.isdigit():
        raise Reject(pg_error(400, "PGRST100", f'failed to parse {name} parameter ("{text}")'))
    return int(text)


def prefer(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``Prefer`` header's ``key=value`` preferences (all its occurrences)."""
    preferences: dict[str, str] = {}
    for key, value in headers:
        if key.lower() == "prefer":
            for item in value.split(","):
                name, _, setting = item.strip().partition("=")
                if name:
                    preferences[name.strip().lower()] = setting.strip()
    return preferences


def project(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Copies of ``rows`` with only ``columns``, in that order."""
    return [json.loads(json.dumps({c: row.get(c) for c in columns})) for row in rows]


def content_type_is_json(headers: Sequence[tuple[str, str]]) -> bool:
    value = header(headers, "content-type")
    return value is not None and value.split(";")[0].strip().lower() == "application/json"
