"""Names that tell a session's operations apart in a recording and its replay.

Operations running at once draw ids and times in whatever order their event
loop schedules them, and that order differs between runs (trio shuffles it on
purpose, and asyncio and trio differ). So a recording keeps what each
operation drew under the operation's name, and a replay hands every operation
its own values back, whatever the order.

A name is the operation's function and a digest of its plain arguments
(strings, numbers, ``None`` and sequences of them: the prompt, model, ids),
scrubbed of secrets before hashing, then how many operations of that name
started before it: ``generate:1f0c9a2e#2``. Calls that differ in their
arguments are told apart whatever their order; identical calls running at once
are told apart by the order they started in.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from flowith_proto.cassette import Scrubber
from flowith_proto.effects import Operation

__all__ = ["OperationNames"]

_PLAIN = (str, int, float, bool, type(None))


class OperationNames:
    """Hands out the names of the operations of one session, in start order."""

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._started: Counter[str] = Counter()

    def name(self, operation: Operation[Any]) -> str:
        """The name of ``operation``, which has not started yet."""
        base = self.kind(operation)
        self._started[base] += 1
        return f"{base}#{self._started[base]}"

    def kind(self, operation: Operation[Any]) -> str:
        """The function and plain arguments of ``operation``: the name less its count."""
        function = getattr(operation, "__qualname__", type(operation).__name__)
        frame = getattr(operation, "gi_frame", None)
        arguments = {} if frame is None else frame.f_locals
        plain = sorted(
            (key, repr(value)) for key, value in arguments.items() if _is_plain(value)
        )
        text = self._scrubber.text(repr(plain))
        return f"{function}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _is_plain(value: object) -> bool:
    if isinstance(value, (tuple, list, frozenset)):
        return all(isinstance(item, _PLAIN) for item in value)
    return isinstance(value, _PLAIN)
