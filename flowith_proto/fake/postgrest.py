"""The slice of PostgREST the fake needs: tables, query parameters, values.

It reads ``select``, filters, ``order``, ``limit``, ``offset``, ``columns`` and
``Prefer`` the way PostgREST does, with SQL's NULL rules, and rejects what a
real server would reject with the same status and error code. Embedding is
modeled for the many-to-one relations a table declares (``conv_id(*)``,
``subscription_type(id,quota)``), with filters on the embedded table
(``conv_id.is_delete=not.eq.true``, ``conv_id.metadata->>member_count=not.eq.1``)
and null filters on the embedding itself (``conv_id=not.is.null``). Features the
client never uses (other embeddings, renames, casts, JSON paths on the top
table) are refused with a message that says the fake does not model them, so a
test never passes by accident on something the fake silently ignored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Literal

import attrs

from flowith_proto.fake.wire import Reject, header, pg_error
from flowith_proto.isodates import parse_iso8601

__all__ = [
    "RESERVED",
    "Embed",
    "Filter",
    "Relation",
    "Selection",
    "Table",
    "coerce",
    "content_type_is_json",
    "invalid_input",
    "iso_time",
    "order_rows",
    "parse_columns",
    "parse_count",
    "parse_filter",
    "parse_read_select",
    "parse_select",
    "parse_timestamp",
    "prefer",
    "project",
]

ColumnType = Literal["uuid", "text", "bool", "int", "numeric", "json", "timestamptz", "uuid[]"]

#: Query parameters that are not filters.
RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict"})
_OPERATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "is", "in"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRUE = frozenset({"true", "t"})
_FALSE = frozenset({"false", "f"})
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_NUMERIC = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def iso_time(now: float) -> str:
    """A ``timestamptz`` as PostgREST renders it (fixed width, so text order is time order)."""
    return datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="microseconds")


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_HTTP_DATE = re.compile(
    r"(?:[A-Za-z]{3},?\s+)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
    r"(\d{2}):(\d{2})(?::(\d{2}))?\s*(GMT|UTC|Z|[+-]0000)?\Z"
)


def _http_date(text: str) -> datetime | None:
    """``Mon, 18 May 2026 18:04:25 GMT`` (RFC 1123), in UTC."""
    match = _HTTP_DATE.match(text)
    if match is None or match.group(2).lower() not in _MONTHS:
        return None
    day, month, year, hour, minute, second = (
        int(match.group(1)),
        _MONTHS.index(match.group(2).lower()) + 1,
        int(match.group(3)),
        int(match.group(4)),
        int(match.group(5)),
        int(match.group(6) or 0),
    )
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_timestamp(text: str) -> datetime | None:
    """A ``timestamptz`` literal as PostgreSQL reads the forms clients send:
    ISO 8601 (``T`` or a space, ``Z`` or an offset, or a bare date) and
    RFC 1123 (``Mon, 18 May 2026 18:04:25 GMT``). ``None`` if it is neither.
    A value without a zone is UTC (the server's zone)."""
    value = text.strip()
    parsed: datetime | None = None
    try:
        parsed = parse_iso8601(value)
    except ValueError:
        parsed = _http_date(value)
        if parsed is None:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


@attrs.frozen
class Relation:
    """A many-to-one foreign key that ``select`` can embed: this table's
    ``column`` references the ``id`` of ``target``. ``name`` is how a select
    names it (PostgREST takes the column or the target table's name)."""

    name: str
    column: str
    target: str


@attrs.frozen
class Table:
    """A table's columns (in order, with their types), its NOT NULL columns
    (checked after the defaults are filled in) and the relations a read may embed."""

    name: str
    columns: Mapping[str, ColumnType]
    not_null: frozenset[str] = frozenset()
    relations: Mapping[str, Relation] = attrs.field(factory=dict)

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
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INTEGER.match(value.strip()):
            return int(value)
        raise invalid_input("integer", value)
    if kind == "numeric":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _NUMERIC.match(value.strip()):
            number = float(value)
            return int(number) if _INTEGER.match(value.strip()) else number
        raise invalid_input("numeric", value)
    if kind in ("text", "timestamptz"):
        if isinstance(value, str):
            return value
        if kind == "text":
            return json.dumps(value, ensure_ascii=False)
        raise invalid_input("timestamp with time zone", value)
    return json.loads(json.dumps(value))  # json: a private copy


def _literal(kind: ColumnType, column: str, text: str) -> Any:
    """A filter operand as a value of a column of type ``kind``."""
    if kind == "uuid":
        return _uuid(text)
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise invalid_input("boolean", text)
    if kind == "int":
        if _INTEGER.match(text.strip()):
            return int(text)
        raise invalid_input("integer", text)
    if kind == "numeric":
        if _NUMERIC.match(text.strip()):
            return float(text)
        raise invalid_input("numeric", text)
    if kind == "timestamptz":
        moment = parse_timestamp(text)
        if moment is None:
            raise invalid_input("timestamp with time zone", text)
        return moment
    if kind in ("json", "uuid[]"):
        raise not_modeled(f"filtering on the {kind} column {column!r}")
    return text


def _row_value(kind: ColumnType) -> Callable[[Any], Any]:
    """How a stored value compares with a literal of its column: timestamps as
    instants (a stored text that is not one compares as unknown)."""
    if kind == "timestamptz":
        return lambda value: parse_timestamp(value) if isinstance(value, str) else None
    return lambda value: value


def _member(value: Any, options: Sequence[Any]) -> bool | None:
    return None if value is None else value in options


def _json_text(value: Any, key: str) -> str | None:
    """``value->>key``: the member as text (JSON text for non-strings), or NULL."""
    if not isinstance(value, dict):
        return None
    member = value.get(key)
    if member is None:
        return None
    if isinstance(member, str):
        return member
    return json.dumps(member, ensure_ascii=False, separators=(", ", ": "))


def _like(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    """SQL's LIKE as PostgREST takes it (``*`` or ``%``: any run; ``_``: one
    character) for a text. The fixed pieces between wildcards are found in turn,
    each leftmost, in time linear in the text for each piece: a regular expression
    of ``.*``s tried every split (a title of 4,000 "a" against ``*a*a*b``: 9 s)."""
    pieces = re.split(r"[*%]", pattern)
    found = [
        re.compile("".join("." if c == "_" else re.escape(c) for c in piece), flags | re.DOTALL)
        for piece in pieces
    ]
    if len(found) == 1:
        return lambda value: found[0].fullmatch(value) is not None
    first, *middle, last = found
    width = len(pieces[-1])  # each character of a piece matches one

    def matches(value: str) -> bool:
        end = len(value) - width  # where the last piece must start
        if end < 0 or first.match(value, 0, end) is None:
            return False
        position = len(pieces[0])
        for piece in middle:
            at = piece.search(value, position, end)
            if at is None:
                return False
            position = at.end()
        return last.fullmatch(value, end) is not None

    return matches


@attrs.frozen
class Filter:
    """One ``column[->>key]=[not.]op.operand`` condition, evaluated with SQL's NULL rules."""

    column: str
    negate: bool
    test: Callable[[Any], bool | None]
    #: The JSON member of ``column->>path``, if the filter names one.
    path: str | None = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.column)
        if self.path is not None:
            value = _json_text(value, self.path)
        outcome = self.test(value)
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


def parse_filter(table: Table, key: str, expression: str, *, json_paths: bool = False) -> Filter:
    """``key=expression`` from the query string; ``key`` is a column, or with
    ``json_paths`` also ``column->>member`` of a JSON column."""
    column, path = key, None
    if json_paths and "->>" in key:
        column, _, path = key.partition("->>")
        if not _IDENTIFIER.match(column) or not _IDENTIFIER.match(path):
            raise not_modeled(f"the JSON path {key!r} (only column->>member is)")
        kind = table.column(column)
        if kind != "json":
            raise Reject(pg_error(400, "42883", f"operator does not exist: {kind} ->> unknown"))
    elif not _IDENTIFIER.match(column):
        raise not_modeled(f"the filter key {column!r} (embedded or JSON path filters)")
    kind = "text" if path is not None else table.column(column)
    convert = _row_value(kind)
    negate = expression.startswith("not.")
    rest = expression[4:] if negate else expression
    operator, dot, operand = rest.partition(".")
    if not dot or operator not in _OPERATORS:
        raise Reject(pg_error(400, "PGRST100", f"failed to parse filter ({expression})"))
    test: Callable[[Any], bool | None]
    if operator == "is":
        wanted: dict[str, bool | None] = {"null": None, "true": True, "false": False}
        name = operand.lower()
        if name == "unknown":
            name = "null"
        if name not in wanted:
            raise Reject(pg_error(400, "PGRST100", f"failed to parse filter ({expression})"))
        target = wanted[name]
        test = lambda value: value is target  # noqa: E731
    elif operator == "in":
        options = [_literal(kind, column, item) for item in _split_list(operand)]
        test = lambda value: _member(convert(value), options)  # noqa: E731
    elif operator in ("like", "ilike"):
        if kind not in ("text", "uuid", "timestamptz"):
            raise Reject(pg_error(400, "42883", f"operator does not exist: {column} ~~ text"))
        pattern = _like(operand, re.IGNORECASE if operator == "ilike" else 0)
        test = lambda value: None if value is None else pattern(value)  # noqa: E731
    else:
        compare = _compare(operator, _literal(kind, column, operand))
        test = lambda value: compare(convert(value))  # noqa: E731
    return Filter(column, negate, test, path)


def _split_top(text: str) -> list[str]:
    """``a,b(c,d),e`` split at the commas outside parentheses."""
    items: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                break
        elif char == "," and depth == 0:
            items.append(text[start:index].strip())
            start = index + 1
    if depth != 0:
        raise Reject(pg_error(400, "PGRST100", f"failed to parse select parameter ({text})"))
    items.append(text[start:].strip())
    return items


def _plain_columns(table: Table, items: Iterable[str]) -> list[str]:
    columns: list[str] = []
    for item in items:
        if item == "*":
            columns.extend(table.columns)
        elif _IDENTIFIER.match(item):
            table.column(item)
            columns.append(item)
        else:
            raise not_modeled(f"the select item {item!r} (embedding, renames, casts)")
    return list(dict.fromkeys(columns))


def parse_select(table: Table, text: str | None) -> list[str]:
    """The columns of ``select=`` (``*`` expands to all, in table order); no embedding."""
    if text is None or text.strip() == "":
        return list(table.columns)
    return _plain_columns(table, _split_top(text))


@attrs.frozen
class Embed:
    """``name(columns)`` in a read's ``select``: the related row, or null."""

    name: str
    relation: Relation
    columns: tuple[str, ...]


@attrs.frozen
class Selection:
    """What a read returns: columns and embeddings, in ``select`` order."""

    items: tuple[str | Embed, ...]

    @property
    def embeds(self) -> dict[str, Embed]:
        return {item.name: item for item in self.items if isinstance(item, Embed)}


_EMBED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\Z", re.DOTALL)


def parse_read_select(table: Table, text: str | None, tables: Mapping[str, Table]) -> Selection:
    """``select=`` of a read: columns, ``*``, and ``relation(columns)`` for
    the relations ``table`` declares (``tables`` resolves their targets)."""
    if text is None or text.strip() == "":
        return Selection(tuple(table.columns))
    items: list[str | Embed] = []
    for item in _split_top(text):
        match = _EMBED.match(item)
        if match is None:
            for column in _plain_columns(table, [item]):
                if column not in items:
                    items.append(column)
            continue
        name, inner = match.groups()
        relation = table.relations.get(name)
        if relation is None:
            raise not_modeled(f"the embedding {item!r} (only {sorted(table.relations)} are)")
        target = tables[relation.target]
        inner_items = _split_top(inner)
        if any(_EMBED.match(part) for part in inner_items):
            raise not_modeled(f"the nested embedding in {item!r}")
        columns = _plain_columns(target, inner_items) if inner.strip() else []
        items = [i for i in items if not (isinstance(i, Embed) and i.name == name)]
        items.append(Embed(name, relation, tuple(columns)))
    return Selection(tuple(items))


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
