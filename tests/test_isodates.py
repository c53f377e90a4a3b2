"""ISO 8601 text reads the same on Python 3.10 as on 3.11 and later."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from flowith_proto import isodates
from flowith_proto.isodates import parse_iso8601

UTC = timezone.utc

#: What Python 3.10's ``datetime.fromisoformat`` reads: the forms ``isoformat()`` writes.
_READ_BY_310 = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:.\d{2}(?::\d{2}(?::\d{2}(?:\.\d{3}|\.\d{6})?)?)?"
    r"(?:[+-]\d{2}:\d{2}(?::\d{2}(?:\.\d{6})?)?)?)?"
)


class _Datetime310(datetime):
    """``datetime`` whose ``fromisoformat`` refuses what 3.10's refuses, so that
    these tests show on any Python what 3.10 users get."""

    @classmethod
    def fromisoformat(cls, date_string: str) -> _Datetime310:
        if not _READ_BY_310.fullmatch(date_string):
            raise ValueError(f"Invalid isoformat string: {date_string!r}")
        return super().fromisoformat(date_string)


@pytest.fixture(autouse=True)
def as_on_python_310(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isodates, "datetime", _Datetime310)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-15T12:30:45Z", datetime(2026, 5, 15, 12, 30, 45, tzinfo=UTC)),
        ("2026-05-15 12:30:45z", datetime(2026, 5, 15, 12, 30, 45, tzinfo=UTC)),
        ("2026-05-15T12:30Z", datetime(2026, 5, 15, 12, 30, tzinfo=UTC)),
        ("2026-05-15T12:30:45.12+00", datetime(2026, 5, 15, 12, 30, 45, 120000, tzinfo=UTC)),
        ("2026-05-15T12:30:45,5Z", datetime(2026, 5, 15, 12, 30, 45, 500000, tzinfo=UTC)),
        (
            "2026-05-15T12:30:45.123456789+0200",
            datetime(2026, 5, 15, 12, 30, 45, 123456, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "  2026-05-15T12:30:45-05:30 ",
            datetime(2026, 5, 15, 12, 30, 45, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2026-05-15T12:30:45", datetime(2026, 5, 15, 12, 30, 45)),
        ("2026-05-15", datetime(2026, 5, 15)),
    ],
)
def test_extended_forms_read_as_on_311(text: str, expected: datetime) -> None:
    moment = parse_iso8601(text)
    assert moment == expected
    assert moment.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-05-15T25:00Z"])
def test_what_is_not_a_moment_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"isoformat|must be in"):
        parse_iso8601(text)
