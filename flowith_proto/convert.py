"""Build the typed records of :mod:`flowith_proto.models` from the web app's JSON rows.

The rows come from PostgREST tables and edge endpoints that the web app owns
and changes without notice, so decoding is tolerant field by field and strict
only about what cannot be understood at all:

- a missing key or a JSON ``null`` gives the field's default (never ``None``,
  unlike the old client, defect D24), except for the fields typed ``| None``,
  whose default is ``None``: ``ConversationRecord.preview``, and
  ``AuthSession.expires_in`` and ``expires_at`` (a token answer without them
  says nothing of its lifetime);
- unknown keys are ignored; ``metadata`` is always the whole row as received
  (:class:`GeneratedImage`, which has no ``metadata``, just drops them);
- numeric fields accept numbers sent as strings (``"12.5"``, ``"1,234.5"``,
  ``"1_000"``, ``" 7 "``); a value that is not a finite number (a boolean, an
  object, ``"abc"``, ``NaN``) or, for an integer field, not a whole number,
  gives the default and a warning on the ``flowith.convert`` logger;
- boolean fields accept PostgreSQL's spellings (``"true"``/``"false"``,
  ``"t"``/``"f"``, ``"yes"``/``"no"``, ``"on"``/``"off"``, ``"1"``/``"0"``,
  case-insensitive); anything else is read with ``bool()``, as the old client
  did;
- text fields turn numbers into their text, booleans into ``"true"`` /
  ``"false"``, and objects or arrays into their compact JSON text (as
  ``JSON.stringify`` writes it): ``workflow``, ``content`` or ``value`` may be
  stored as JSON, and the text keeps all of it while the field stays a ``str``;
- ``FlowNode.data`` / ``position`` (and the other object fields) sent as JSON
  strings are parsed (protocol.md 3.4); a string that is not a JSON object gives
  ``{}`` and a warning (a blank string or ``"null"`` gives ``{}`` silently);
  ``c_ids`` may be ``null`` or a JSON string holding the list.

A row that is not a JSON object, or whose id (``id``, or ``conv_id`` for
:class:`ConvNovelEditor`) is an object or an array, raises
:class:`~flowith_proto.errors.ResponseDecodeError`: such a row names no record
the caller could act on, and hiding it would return a listing with holes. So
does a lone object (an answer that is no array) with none of the row's keys: an
error envelope answered with 200 would otherwise read as a record of defaults.

The per-class structure functions are built once at import and registered on
one :class:`cattrs.Converter`; decoding a row is then a handful of calls, with
no reflection per row.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs

from flowith_proto import logs
from flowith_proto.errors import ResponseDecodeError, excerpt, rewrap
from flowith_proto.models import (
    AuthSession,
    ConversationRecord,
    ConvNovelEditor,
    CooperatorRecord,
    DiscussRecord,
    FileRecord,
    FlowNode,
    FlowProject,
    GeneratedImage,
    GenerationOutput,
    ImageOutput,
    MigrationInfo,
    ModelInfo,
    OracleStreamRecord,
    PublicNotice,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
    UserUploadRecord,
    VideoOutput,
)

__all__ = [
    "ROW_TYPES",
    "read_flag",
    "read_number",
    "structure_credits",
    "structure_models",
    "structure_row",
    "structure_rows",
]

T = TypeVar("T")
_Hook = Callable[[Any], Any]

_log = logs.logger("flowith.convert")

#: Where a field's value comes from when the row key differs from the field
#: name (protocol.md section 2); every other field reads the key of its name.
_RENAMES: dict[type, dict[str, str]] = {
    ConversationRecord: {"conv_id": "id"},
    FlowNode: {"node_id": "id", "node_type": "type"},
    TemplateRecord: {"template_id": "id", "template_type": "type"},
    UserProfile: {"user_id": "id"},
    UserUploadRecord: {"record_id": "id", "file_type": "type"},
    SubscriptionUserOwn: {"record_id": "id"},
    OracleStreamRecord: {"record_id": "id"},
    PublicNotice: {"notice_id": "id"},
    FlowProject: {"project_id": "id"},
    DiscussRecord: {"discuss_id": "id"},
}

#: The row key naming the record, when it is not ``id``.
_IDENTITY_KEYS: dict[type, str] = {ConvNovelEditor: "conv_id"}

#: Every type :func:`structure_row` and :func:`structure_rows` can build.
ROW_TYPES: tuple[type, ...] = (
    AuthSession,
    ConvNovelEditor,
    ConversationRecord,
    CooperatorRecord,
    DiscussRecord,
    FileRecord,
    FlowNode,
    FlowProject,
    GeneratedImage,
    GenerationOutput,
    ImageOutput,
    MigrationInfo,
    ModelInfo,
    OracleStreamRecord,
    PublicNotice,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
    UserUploadRecord,
    VideoOutput,
)

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
_MAX_INT_TEXT = 64  # longer digit strings go through float(): int() is quadratic on 3.10


# --- messages --------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__




def _unusable(owner: str, expected: str, value: Any, default: Any) -> Any:
    """Log why ``value`` was not used, and return the field's default instead."""
    _log.warning(
        "%s: expected %s, got %s (a JSON %s); using %r",
        owner,
        expected,
        excerpt(value),
        _json_kind(value),
        default,
    )
    return default


def _dropped(owner: str, expected: str, item: Any) -> None:
    _log.warning(
        "%s: expected %s, got %s (a JSON %s); the item is dropped",
        owner,
        expected,
        excerpt(item),
        _json_kind(item),
    )


# --- value coercions -------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    """Compact JSON text, as the web app's ``JSON.stringify`` would write it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_text(value: Any, owner: str, default: Any) -> Any:
    """A non-``str``, non-``None`` value as text (the slow path of a text field)."""
    try:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, (Mapping, list, tuple)):
            return _json_text(value)
        return str(value)
    except (TypeError, ValueError, RecursionError):
        return _unusable(owner, "text", value, default)


def read_number(value: Any) -> int | float | None:
    """A finite number from a number or numeric text, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip().replace(",", "").replace("_", "")
    if len(text) <= _MAX_INT_TEXT:
        try:
            return int(text)
        except ValueError:
            pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_json_text(value: str) -> Any:
    """``value`` decoded as JSON; ``None`` for blank text; a sentinel when invalid."""
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return _INVALID


_INVALID = object()


# --- field hooks: one closure per field, knowing its default ----------------------------------


def _text_hook(owner: str, default: str | None) -> _Hook:
    def hook(value: Any) -> Any:
        if type(value) is str:
            return value
        if value is None:
            return default
        return _as_text(value, owner, default)

    return hook


def _identity_hook(owner: str, key: str) -> _Hook:
    """A text field that names the record: an object or array there is an error."""

    def hook(value: Any) -> Any:
        if type(value) is str:
            return value
        if value is None:
            return ""
        if isinstance(value, (Mapping, list, tuple)):
            raise ResponseDecodeError(
                f"{owner}: the row's {key!r} must be a string or a number, "
                f"got a JSON {_json_kind(value)}",
                body=value,
            )
        return _as_text(value, owner, "")

    return hook


#: A whole number past this is no count or duration (a float cannot hold it exactly,
#: and ``time.time() + expires_in`` would overflow): as unusable as text.
LARGEST_WHOLE = 2**53


def _int_hook(owner: str, default: int | None) -> _Hook:
    def hook(value: Any) -> Any:
        if type(value) is int and -LARGEST_WHOLE <= value <= LARGEST_WHOLE:
            return value
        if value is None:
            return default
        number = read_number(value)
        if number is None or not -LARGEST_WHOLE <= number <= LARGEST_WHOLE:
            return _unusable(owner, "a whole number", value, default)
        if isinstance(number, float):
            if not number.is_integer():
                return _unusable(owner, "a whole number", value, default)
            return int(number)
        return number

    return hook


def _float_hook(owner: str, default: float | None) -> _Hook:
    def hook(value: Any) -> Any:
        if type(value) is float and math.isfinite(value):
            return value
        if value is None:
            return default
        number = read_number(value)
        if number is None:
            return _unusable(owner, "a number", value, default)
        try:
            return float(number)
        except OverflowError:
            return _unusable(owner, "a number", value, default)

    return hook


def read_flag(value: Any, default: bool = False) -> bool:
    """A boolean from JSON's ``true``/``false`` or PostgreSQL's spellings of them as
    text (``"false"`` is false); ``None`` gives ``default``, anything else its truth."""
    if value is True or value is False:
        return value
    if value is None:
        return default
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return bool(value)


def _bool_hook(owner: str, default: bool) -> _Hook:
    """Never warns: every JSON value has a truth value, as the old client read it."""
    return functools.partial(read_flag, default=default)


def _mapping_hook(owner: str) -> _Hook:
    def hook(value: Any) -> Any:
        if type(value) is dict:
            return value
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        if isinstance(value, str):
            parsed = _parse_json_text(value)
            if parsed is None:
                return {}
            if isinstance(parsed, dict):
                return parsed
        return _unusable(owner, "a JSON object (or its JSON text)", value, {})

    return hook


def _text_tuple_hook(owner: str) -> _Hook:
    """A list of ids: ``null`` is empty, a JSON string holding the list is parsed,
    numbers become text, and ``null`` or non-scalar items are dropped."""

    def hook(value: Any) -> Any:
        if value is None:
            return ()
        listed = _parse_json_text(value) if isinstance(value, str) else value
        if listed is None:
            return ()
        if not isinstance(listed, (list, tuple)):
            return _unusable(owner, "a JSON array (or its JSON text)", value, ())
        items: list[str] = []
        for item in listed:
            if type(item) is str:
                items.append(item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                text = _as_text(item, owner, None)
                if text is not None:
                    items.append(text)
            elif item is not None:
                _dropped(owner, "a string or a number", item)
        return tuple(items)

    return hook


def _images_hook(owner: str) -> _Hook:
    """Images given as objects (``{url, model}``) or as bare URL strings."""

    def hook(value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            return _unusable(owner, "a JSON array", value, ())
        images: list[GeneratedImage] = []
        for item in value:
            if isinstance(item, str):
                images.append(GeneratedImage(url=item))
            elif isinstance(item, Mapping):
                images.append(_converter.structure(item, GeneratedImage))
            elif item is not None:
                _dropped(owner, "an object or a URL string", item)
        return tuple(images)

    return hook


# --- per-class structure functions ------------------------------------------------------------

_SCALAR_HOOKS: dict[Any, Callable[[str, Any], _Hook]] = {
    str: _text_hook,
    str | None: _text_hook,
    int: _int_hook,
    int | None: _int_hook,
    float: _float_hook,
    float | None: _float_hook,
    bool: _bool_hook,
}


#: Field types whose hook returns a value of exactly this type unchanged (its first test).
#: Not ``int``: a whole number is also checked for size (see LARGEST_WHOLE).
_EXACT_TYPES: dict[Any, type] = {str: str, str | None: str, bool: bool}


def _field_hook(cls: type, field: attrs.Attribute[Any], key: str) -> _Hook:
    owner = f"{cls.__name__}.{field.name}"
    ftype = field.type
    if key == _IDENTITY_KEYS.get(cls, "id") and ftype is str:
        return _identity_hook(owner, key)
    scalar = _SCALAR_HOOKS.get(ftype)
    if scalar is not None:
        return scalar(owner, field.default)
    if ftype == Mapping[str, Any]:
        return _mapping_hook(owner)
    if ftype == tuple[str, ...]:
        return _text_tuple_hook(owner)
    if ftype == tuple[GeneratedImage, ...]:
        return _images_hook(owner)
    raise TypeError(f"no row hook for {owner}: {ftype!r}")  # a model change this module missed


def _not_an_object(name: str, row: Any) -> ResponseDecodeError:
    return ResponseDecodeError(
        f"expected a JSON object for {name}, got a JSON {_json_kind(row)}", body=row
    )


#: attrs' converter objects (attrs 24.1+), which may need the instance: not supported.
_CONVERTER_OBJECT: type | None = getattr(attrs, "Converter", None)


def _unfrozen_twin(cls: type) -> type:
    """A class with ``cls``'s slots and no ``__setattr__`` of its own, whose instances
    can become ``cls`` instances by ``__class__`` assignment.

    A record is built as a twin, with plain attribute stores (specialized by the
    interpreter), then turned into ``cls``: about 40 % less time a row than
    calling each slot's ``__set__``, and less than half of ``__init__``'s (a
    frozen class's ``__init__`` goes through ``object.__setattr__``). CPython
    allows the assignment only between classes of the same memory layout, which
    it checks here once. A ``__weakref__`` slot makes two such layouts differ
    in its check, hence the models' ``weakref_slot=False``.
    """
    slots = cls.__dict__.get("__slots__")
    if cls.__bases__ != (object,) or slots is None:
        raise TypeError(f"{cls.__name__}: row types must be slotted, with no base class")
    twin = type(f"_Building{cls.__name__}", (object,), {"__slots__": slots})
    try:
        instance: Any = object.__new__(twin)
        instance.__class__ = cls
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: row types need weakref_slot=False ({exc})") from None
    return twin


def _make_structure_fn(cls: type[Any]) -> Callable[..., Any]:
    """The structure function of one class, generated once with its field hooks bound.

    It is generated as source (as cattrs and attrs do) so that a row costs one
    call per field, with no loop or kwargs dict. It also fills the instance's
    slots itself (see :func:`_unfrozen_twin`) rather than calling the frozen
    class's ``__init__``: the values are the same (each field's hook, then its
    converter, as ``__init__`` would apply it; a private field gets its
    default), and the models have no validators or ``__attrs_post_init__``
    (checked here).
    """
    attrs.resolve_types(cls)
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        raise TypeError(f"{cls.__name__}: a row type may not have init hooks")
    renames = _RENAMES.get(cls, {})
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_twin": _unfrozen_twin(cls),
        "_new": object.__new__,
        "_Mapping": Mapping,
        "_not_an_object": _not_an_object,
    }
    name = cls.__name__
    lines = [
        f"def structure_{name}(row, _type=None, owned=False):",
        "    if type(row) is not dict and not isinstance(row, _Mapping):",
        f"        raise _not_an_object({name!r}, row)",
        "    get = row.get",
        "    record = _new(_twin)",
    ]
    for field in attrs.fields(cls):
        if field.validator is not None:
            raise TypeError(f"{name}.{field.name}: a row type may not have validators")
        if _CONVERTER_OBJECT is not None and isinstance(field.converter, _CONVERTER_OBJECT):
            raise TypeError(f"{name}.{field.name}: only plain converter functions are supported")
        if field.name == "metadata":
            # The whole row as received: a copy, unless the caller gives its dicts away.
            namespace["_copy_row"] = field.converter
            lines.append(
                "    record.metadata = row if owned and type(row) is dict else _copy_row(row)"
            )
            continue
        if field.name.startswith("_"):
            # Private fields are the client's (GeneratedImage's downloader): their default.
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                if default.takes_self:
                    raise TypeError(f"{name}.{field.name}: a factory taking self is unsupported")
                namespace[f"_default_{field.name}"] = default.factory
                value = f"_default_{field.name}()"
            else:
                namespace[f"_default_{field.name}"] = default
                value = f"_default_{field.name}"
        else:
            key = renames.get(field.name, field.name)
            namespace[f"_hook_{field.name}"] = _field_hook(cls, field, key)
            value = f"_hook_{field.name}(value)"
            lines.append(f"    value = get({key!r})")
            exact = _EXACT_TYPES.get(field.type)
            if exact is not None:  # the hook's own first test, without the call
                namespace[f"_{exact.__name__}"] = exact
                value = f"value if type(value) is _{exact.__name__} else {value}"
        if field.converter is not None:
            namespace[f"_convert_{field.name}"] = field.converter
            value = f"_convert_{field.name}({value})"
        lines.append(f"    record.{field.name} = {value}")
    lines += ["    record.__class__ = _cls", "    return record"]
    exec(compile("\n".join(lines), f"<flowith_proto.convert structure_{name}>", "exec"), namespace)
    structure: Callable[..., Any] = namespace[f"structure_{name}"]
    return structure


def _row_keys(cls: type) -> frozenset[str]:
    """The row keys ``cls`` reads a field from."""
    renames = _RENAMES.get(cls, {})
    return frozenset(
        renames.get(field.name, field.name)
        for field in attrs.fields(cls)
        if field.name != "metadata" and not field.name.startswith("_")
    )


_converter = cattrs.Converter(detailed_validation=False)
for _cls in ROW_TYPES:
    _converter.register_structure_hook(_cls, _make_structure_fn(_cls))
del _cls
_ROW_TYPE_SET = frozenset(ROW_TYPES)
_ROW_KEYS = {cls: _row_keys(cls) for cls in ROW_TYPES}


def _hook_for(cls: type[T]) -> Callable[..., T]:
    """The generated ``structure_<name>(row, type, owned=False)`` of a row type."""
    if cls not in _ROW_TYPE_SET:
        raise TypeError(f"{cls!r} is not a row type of flowith_proto.models")
    return cast("Callable[..., T]", _converter.get_structure_hook(cls))


def _prefixed(context: str, where: str, exc: ResponseDecodeError) -> ResponseDecodeError:
    parts = [part for part in (context, where) if part]
    prefix = ": ".join(parts)
    message = f"{prefix}: {exc}" if prefix else str(exc)
    return rewrap(exc, ResponseDecodeError, message)


# --- public API -------------------------------------------------------------------------------


def structure_row(row: Any, cls: type[T], *, context: str = "") -> T:
    """One ``cls`` from one decoded JSON row.

    Raises :class:`ResponseDecodeError` (its message starting with ``context``)
    when ``row`` is not a JSON object or its id is an object or an array.
    """
    hook = _hook_for(cls)
    try:
        return hook(row, cls)
    except ResponseDecodeError as exc:
        raise _prefixed(context, "", exc) from exc


def structure_rows(
    rows: Any, cls: type[T], *, context: str = "", owned: bool = False, lone_object: bool = True
) -> list[T]:
    """A list of ``cls`` from a decoded JSON array of rows.

    A single object counts as a list of one (some endpoints answer a lone
    object), unless ``lone_object`` is false: a PostgREST table read always
    answers an array, and an object there is a wrapper or an error envelope that
    may share a field's name (``{"data": [...]}`` read as one node). Any other
    body, or any row :func:`structure_row` refuses, raises
    :class:`ResponseDecodeError` naming ``context`` and the row's index.

    Each record's ``metadata`` is a copy of its row, so that later changes to
    ``rows`` cannot reach it; with ``owned=True`` (rows fresh from
    ``json.loads`` that the caller hands over) the row dicts themselves are used.
    """
    hook = _hook_for(cls)
    if isinstance(rows, Mapping):
        if not lone_object:
            message = (
                f"expected a JSON array of {cls.__name__} objects, got an object "
                f"(keys: {excerpt(sorted(map(str, rows)))})"
            )
            raise ResponseDecodeError(f"{context}: {message}" if context else message, body=rows)
        if not _ROW_KEYS[cls].intersection(rows):
            # An error envelope answered with 200 ({"code": ..., "message": ...}), say:
            # read as a row, it would be a record of defaults (a balance of 0).
            message = (
                f"expected a JSON array of {cls.__name__} objects (or one object), got an "
                f"object with none of its fields (keys: {excerpt(sorted(map(str, rows)))})"
            )
            raise ResponseDecodeError(f"{context}: {message}" if context else message, body=rows)
        rows = [rows]
    elif not isinstance(rows, (list, tuple)):
        message = (
            f"expected a JSON array of {cls.__name__} objects (or one object), "
            f"got a JSON {_json_kind(rows)}"
        )
        raise ResponseDecodeError(f"{context}: {message}" if context else message, body=rows)
    result: list[T] = []
    append = result.append
    try:
        for row in rows:
            append(hook(row, cls, owned))
    except ResponseDecodeError as exc:  # the bad row is the next one: its index is len(result)
        raise _prefixed(context, f"row {len(result)}", exc) from exc
    return result


def structure_credits(body: Any, *, context: str = "get_credits") -> list[UserCredits]:
    """The entries of ``/user/credits``: a JSON array, or one object counted as one entry."""
    return structure_rows(body, UserCredits, context=context)


#: Keys of an error envelope, which no model entry holds without a model's fields.
_ERROR_KEYS = frozenset({"code", "error", "error_code", "message", "msg"})


def _has_fields(entry: Any, fields: frozenset[str]) -> bool:
    return isinstance(entry, Mapping) and not fields.isdisjoint(entry)


def _wraps_or_fails(entry: Any, fields: frozenset[str]) -> bool:
    """Whether a catalogue entry with none of a model's ``fields`` is a wrapper of
    the catalogue (each of its values an object: models by id) or an error
    envelope. Any other such entry is a model whose fields were renamed: kept, its
    fields in ``metadata`` (``flowith doctor`` reports the renaming). Only asked
    of a body where no entry has a model's fields: beside models, an entry is one
    more model, whatever its keys (``code``, nested ``limits``)."""
    if not isinstance(entry, Mapping) or not entry or _has_fields(entry, fields):
        return False
    return _ERROR_KEYS.intersection(entry) != set() or all(
        isinstance(value, Mapping) for value in entry.values()
    )


def structure_models(body: Any, *, context: str = "list_models") -> list[ModelInfo]:
    """The ``/models`` catalogue, a JSON object keyed by model id.

    ``model_id`` is the key; ``title`` defaults to the key when the entry has
    none. Each entry must be an object; any other body raises
    :class:`ResponseDecodeError` (the old client returned ``[]``, defect D22).
    """
    if not isinstance(body, Mapping):
        message = f"expected a JSON object keyed by model id, got a JSON {_json_kind(body)}"
        raise ResponseDecodeError(f"{context}: {message}" if context else message, body=body)
    hook = _hook_for(ModelInfo)
    fields = _ROW_KEYS[ModelInfo]
    models: list[ModelInfo] = []
    suspect = not any(_has_fields(entry, fields) for entry in body.values())
    for key, entry in body.items():
        model_id = str(key)
        try:
            if suspect and _wraps_or_fails(entry, fields):
                # A wrapper ({"data": {id: ...}}) or an error envelope ({"error":
                # {"code": ...}}): read as a model, its key became the only model.
                raise ResponseDecodeError(
                    "expected a model's fields (title, media, tier), got an object with "
                    f"none of them (keys: {excerpt(sorted(map(str, entry)))})",
                    body=entry,
                )
            info = hook(entry, ModelInfo)
        except ResponseDecodeError as exc:
            raise _prefixed(context, f"model {model_id!r}", exc) from exc
        title = info.title if entry.get("title") is not None else model_id
        models.append(attrs.evolve(info, model_id=model_id, title=title))
    return models
