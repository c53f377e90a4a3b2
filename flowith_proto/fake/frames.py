"""Server-sent event frames as the fake Flowith writes them.

Framing knobs exist so tests can prove a client decodes every form the SSE
specification allows, not only the one the real service happens to use today:
any of the three line endings, and one JSON payload spread over several
``data:`` lines (which the specification joins with ``\\n``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from flowith_proto.request import escape_surrogates

__all__ = ["LINE_ENDINGS", "LineEnding", "comment_frame", "data_frame", "heartbeat_frame"]

LineEnding = Literal["\n", "\r\n", "\r"]
LINE_ENDINGS: tuple[LineEnding, ...] = ("\n", "\r\n", "\r")


def _json_lines(payload: Any, multiline: bool) -> list[str]:
    if not multiline:
        return [json.dumps(payload, ensure_ascii=False, separators=(",", ":"))]
    # indent=0 breaks the text only between tokens (after "{", "[" and ",", before
    # "}" and "]"), never inside a string: strings cannot hold a raw newline. The
    # decoder's "\n" join therefore gives back valid JSON with the same value.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), indent=0).split("\n")


def data_frame(payload: Any, *, line_ending: LineEnding = "\n", multiline: bool = False) -> bytes:
    """One event whose ``data`` is ``payload`` as JSON, ended by a blank line."""
    lines = "".join(f"data: {line}{line_ending}" for line in _json_lines(payload, multiline))
    try:
        return (lines + line_ending).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, as JSON.stringify writes it
        return escape_surrogates(lines + line_ending).encode("utf-8")


def comment_frame(text: str, *, line_ending: LineEnding = "\n") -> bytes:
    """A comment line (ignored by decoders), ended by a blank line."""
    return f": {text}{line_ending}{line_ending}".encode()


def heartbeat_frame(now: float, *, line_ending: LineEnding = "\n") -> bytes:
    """``{"heartbeat": <ms>}``, the keep-alive both streams send when idle."""
    return data_frame({"heartbeat": int(now * 1000)}, line_ending=line_ending)
