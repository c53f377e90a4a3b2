"""Checks of a caller's arguments, made before anything is sent.

Each refuses a shape the API cannot take with a
:class:`~flowith_proto.errors.ValidationError` (``status_code`` ``None``) that
names the argument. A generation makes them before its first request: it creates
rows before it starts the model, and an argument the server then refused left a
conversation and nodes behind. The values themselves (which sizes or ratios a
model takes) are the server's to judge: they are not known to this client. Counts,
identifiers and header text are checked as requests are built, where ids and
filters go into a path or a query.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flowith_proto.errors import ValidationError, excerpt

__all__ = [
    "require_callable",
    "require_count",
    "require_flag",
    "require_identifier",
    "require_mapping",
    "require_messages",
    "require_option",
    "require_path",
    "require_prompt",
    "require_setting",
    "require_text",
    "require_urls",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _refuse(name: str, wanted: str, value: object) -> ValidationError:
    return ValidationError(
        f"{name} must be {wanted}, not {type(value).__name__} {excerpt(value)}",
        status_code=None,
        details=[{"field": name, "reason": f"not {wanted}"}],
    )


def require_option(value: object, name: str) -> str:
    """An option the API takes as text: a ``str``, or an enum member whose value is one."""
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str):
        raise _refuse(name, "a str", value)
    return value


def require_setting(value: object, name: str) -> str:
    """:func:`require_option`, not empty: an empty ratio or size is refused by the
    server, after the turn's conversation and rows were made."""
    text = require_option(value, name)
    if not text.strip():
        raise _refuse(name, "a non-empty str", value)
    return text


def require_flag(value: object, name: str) -> bool:
    """A ``bool``: ``1`` or ``"yes"`` would reach the server as a number or text."""
    if not isinstance(value, bool):
        raise _refuse(name, "a bool", value)
    return value


def require_mapping(value: object, name: str) -> Mapping[str, Any]:
    """A JSON object's worth of keys and values (``None`` would be no body at all)."""
    if not isinstance(value, Mapping):
        raise _refuse(name, "a mapping", value)
    return value


def require_callable(value: object, name: str) -> None:
    """A function to call back (plain or ``async``)."""
    if not callable(value):
        raise _refuse(name, "callable", value)


def require_path(value: object, name: str) -> None:
    """A file path: a ``str`` or an ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)):
        raise _refuse(name, "a path", value)


def require_prompt(value: object, alternative: str = "", *, given: bool = False) -> str:
    """A prompt: text with something in it, or any text when the ``alternative``
    that can carry the request without text (images, a first frame) is ``given``."""
    if isinstance(value, str) and (value.strip() or given):
        return value
    wanted = "text with something in it" + (f" (or {alternative})" if alternative else "")
    raise _refuse("prompt", wanted, value)


def _items(value: object) -> list[Any] | None:
    """The items of a list, tuple, generator or other iterable; ``None`` for text (as
    a sequence it would give one item per character) and for mappings (their keys)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        return None
    return list(value)


def require_urls(value: object, name: str) -> tuple[str, ...]:
    """URLs, from any iterable. One ``str`` is refused: it would send each of its
    characters as a URL."""
    if value is None:
        return ()
    urls = _items(value)
    if urls is None:
        raise _refuse(name, "a list of URL strings", value)
    for index, url in enumerate(urls):
        if not isinstance(url, str) or not url:
            raise _refuse(f"{name}[{index}]", "a non-empty URL string", url)
    return tuple(urls)


def require_messages(value: object, name: str) -> list[dict[str, Any]]:
    """Chat messages, from any iterable: ``[{"role": ..., "content": ...}, ...]``, each
    a mapping with a ``str`` role and a content."""
    items = _items(value)
    if items is None:
        raise _refuse(name, 'a list of {"role", "content"} mappings', value)
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(items):
        if (
            not isinstance(message, Mapping)
            or not isinstance(message.get("role"), str)
            or "content" not in message
        ):
            wanted = 'a mapping with a str "role" and a "content"'
            raise _refuse(f"{name}[{index}]", wanted, message)
        messages.append(dict(message))
    return messages


def require_count(value: object, name: str, *, minimum: int = 0) -> str:
    """A limit, offset or page size as its decimal text, or a ValidationError.

    Booleans are refused although Python counts them as ints: ``limit=True``
    is a mistake, not ``limit=1``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(
            f"{name} must be an int >= {minimum}, got {excerpt(value)}",
            status_code=None,
            details=[{"field": name, "reason": "not a count"}],
        )
    return str(value)


def require_identifier(value: object, name: str) -> str:
    """A SQL-style name (``[A-Za-z_][A-Za-z0-9_]*``), or a ValidationError.

    Used for names that go into a path or become JSON keys of a PATCH, so no
    caller string can reach another function, column or operator.
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValidationError(
            f"{name} must be a simple identifier like 'get_online_count', got {excerpt(value)}",
            status_code=None,
            details=[{"field": name, "reason": "not an identifier"}],
        )
    return value


def require_text(value: object, name: str) -> str:
    """A non-empty string without control characters (they could end a header)."""
    if (
        not isinstance(value, str)
        or not value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise ValidationError(
            f"{name} must be a non-empty string without control characters, "
            f"got {excerpt(value)}",
            status_code=None,
            details=[{"field": name, "reason": "not a plain string"}],
        )
    return value
