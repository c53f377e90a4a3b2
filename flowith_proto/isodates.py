"""ISO 8601 date-times read alike on Python 3.10 and later.

``datetime.fromisoformat`` reads ``Z``, fractions of any length and offsets
without a colon only from Python 3.11 on; 3.10 refuses them, although servers
and users write them (PostgreSQL trims a fraction's trailing zeros:
``12:30:45.12+00``). These extended date-times (a date, then hours and minutes
at least) are rewritten into the form 3.10 reads before parsing, so they mean
the same on every version. The rarer forms 3.11 also reads (basic
``20260515T123045Z``, week dates, an hour alone) still depend on the version.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["parse_iso8601"]

_EXTENDED = re.compile(
    r"(?P<clock>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<fraction>\d+))?"
    r"(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def parse_iso8601(text: str) -> datetime:
    """``text`` (surrounding spaces ignored) as a datetime, naive if it names no
    zone; ``ValueError`` if it is not ISO 8601.

    Beyond what 3.10's ``fromisoformat`` reads: ``Z`` for UTC, a fraction of any
    length (cut to microseconds, as 3.11 does), a comma before it, and offsets
    written ``+HHMM`` or ``+HH``.
    """
    text = text.strip()
    match = _EXTENDED.fullmatch(text)
    if match is not None:
        text = match["clock"]
        fraction = match["fraction"]
        if fraction is not None:
            text += "." + fraction[:6].ljust(6, "0")
        zone = match["zone"]
        if zone in ("Z", "z"):
            text += "+00:00"
        elif zone is not None:
            digits = zone[1:].replace(":", "")
            text += f"{zone[0]}{digits[:2]}:{digits[2:4] or '00'}"
    return datetime.fromisoformat(text)
