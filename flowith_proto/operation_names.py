"""Names that tell a session's operations apart in a recording and its replay.

Operations running at once draw ids and times in whatever order their event
loop schedules them, and that order differs between runs (trio shuffles it on
purpose, and asyncio and trio differ). So a recording keeps what each
operation drew under the operation's name, and a replay hands every operation
its own values back, whatever the order.

A name is the operation's function (or the method that built its request, see
below), a digest of its plain arguments
(strings, numbers, ``None``, and lists and mappings of them: the prompt, model,
ids, a profile's fields), scrubbed of secrets before hashing, then how many
operations of that name started before it: ``get_flow_nodes:1f0c9a2e#2``. Calls
that differ in their arguments are told apart whatever their order; identical
calls running at once are told apart by the order they started in. A local file
counts by its name, not its folder (a test's temporary folder differs per run).

Many methods run one generic operation (a listing, a JSON answer) with a
function that builds their request; such an operation is named after the
method that defined the function, and the plain values the function closes
over (the ids, the paging) count as arguments. A conversation counts by its id
and turn, so the same prompt sent in two conversations makes two names.
Cassettes of version 1 named operations by their generator and its plain
arguments only: :class:`OperationNames` still makes those names to replay them.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from collections import Counter
from collections.abc import Mapping
from typing import Any

from flowith_proto.cassette import CASSETTE_VERSION, Scrubber
from flowith_proto.effects import Operation
from flowith_proto.generation import Conversation

__all__ = ["OperationNames"]

_PLAIN = (str, int, float, bool, type(None))


class OperationNames:
    """Hands out the names of the operations of one session, in start order.

    ``version`` is the cassette version whose names to make (see the module's
    docstring).
    """

    def __init__(self, scrubber: Scrubber, *, version: int = CASSETTE_VERSION) -> None:
        self._scrubber = scrubber
        self._by_method = version >= 2
        self._started: Counter[str] = Counter()

    def name(self, operation: Operation[Any]) -> str:
        """The name of ``operation``, which has not started yet."""
        base = self.kind(operation)
        self._started[base] += 1
        return f"{base}#{self._started[base]}"

    def kind(self, operation: Operation[Any]) -> str:
        """The method and plain arguments of ``operation``: the name less its count."""
        function = getattr(operation, "__qualname__", type(operation).__name__)
        frame = getattr(operation, "gi_frame", None)
        arguments: dict[str, Any] = {} if frame is None else frame.f_locals
        if not self._by_method:
            plain = [(key, repr(value)) for key, value in arguments.items() if _is_plain(value)]
        else:
            plain = []
            methods = []
            for key, value in arguments.items():
                if isinstance(value, types.FunctionType):
                    methods.append(_defining_method(value))
                    plain += _closed_over(key, value)
                elif isinstance(value, Conversation):
                    plain.append((f"{key}.conv_id", repr(value.conv_id)))
                    plain.append((f"{key}.turn", repr(value.turn)))
                elif key == "file_path" and isinstance(value, str):
                    plain.append((key, repr(os.path.basename(value))))
                elif (shown := _shown(value)) is not None:
                    plain.append((key, shown))
            function = next((method for method in methods if method), function)
        text = self._scrubber.text(repr(sorted(plain)))
        return f"{function}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _is_plain(value: object) -> bool:
    """A plain value, as version 1 names count them."""
    if isinstance(value, (tuple, list, frozenset)):
        return all(isinstance(item, _PLAIN) for item in value)
    return isinstance(value, _PLAIN)


def _shown(value: object) -> str | None:
    """A plain value, or lists and mappings of them (a request's body, a profile's
    fields, a conversation's messages), as text that is the same in every run; ``None``
    for anything else (the client's state, a file's bytes)."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if not isinstance(value, (list, tuple, Mapping)):
        return None
    try:
        return json.dumps(value, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # holds something else
        return None


def _defining_method(function: types.FunctionType) -> str | None:
    """The name of the function ``function`` was defined in, if any: for a request
    builder ``lambda e: e.flow_nodes(conv)`` written in ``get_flow_nodes``, that."""
    scope, local, _ = function.__qualname__.rpartition(".<locals>.")
    return scope.rsplit(".", 1)[-1] if local else None


def _closed_over(key: str, function: types.FunctionType) -> list[tuple[str, str]]:
    """The plain values ``function`` closes over, as named arguments."""
    described = []
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=True):
        try:
            value = cell.cell_contents
        except ValueError:  # a variable not yet bound
            continue
        shown = _shown(value)
        if shown is not None:
            described.append((f"{key}.{name}", shown))
    return described
