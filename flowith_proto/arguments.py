"""Checks of a generation's arguments, made before its first request.

A generation creates rows before it starts the model; an argument the server
then refuses leaves a conversation and nodes behind. Shapes the API cannot take
are refused here instead, with a :class:`~flowith_proto.errors.ValidationError`
that names the argument. The values themselves (which sizes or ratios a model
takes) are the server's to judge: they are not known to this client.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from flowith_proto.errors import ValidationError

__all__ = ["require_flag", "require_messages", "require_option", "require_urls"]


def _refuse(name: str, wanted: str, value: object) -> ValidationError:
    return ValidationError(
        f"{name} must be {wanted}, not {type(value).__name__} {value!r}",
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


def require_flag(value: object, name: str) -> bool:
    """A ``bool``: ``1`` or ``"yes"`` would reach the server as a number or text."""
    if not isinstance(value, bool):
        raise _refuse(name, "a bool", value)
    return value


def require_urls(value: object, name: str) -> tuple[str, ...]:
    """A list of URLs. One ``str`` is refused: as a sequence it would send each of its
    characters as a URL."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _refuse(name, "a list of URL strings", value)
    for index, url in enumerate(value):
        if not isinstance(url, str) or not url:
            raise _refuse(f"{name}[{index}]", "a non-empty URL string", url)
    return tuple(value)


def require_messages(value: object, name: str) -> list[dict[str, Any]]:
    """Chat messages: ``[{"role": ..., "content": ...}, ...]``, each a mapping with a
    ``str`` role and a content."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise _refuse(name, 'a list of {"role", "content"} mappings', value)
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        if (
            not isinstance(message, Mapping)
            or not isinstance(message.get("role"), str)
            or "content" not in message
        ):
            wanted = 'a mapping with a str "role" and a "content"'
            raise _refuse(f"{name}[{index}]", wanted, message)
        messages.append(dict(message))
    return messages
