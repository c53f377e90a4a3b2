"""The end-to-end workload, shared by the fake's process and the clients' processes.

Each generation streams :data:`CHUNKS` fragments of about 20 characters
derived from its prompt, then completes; a client's result is exact when the
text deltas it yielded join to :func:`expected_text` of its prompt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from flowith_proto.config import DEFAULT_SUPABASE_KEY
from flowith_proto.fake import FakeFlowith, FakeStream, Script, Step, Turn, chunk, complete
from flowith_proto.fake.routing import Call

__all__ = [
    "CHUNKS",
    "GatedFlowith",
    "expected_text",
    "fragments",
    "make_fake",
    "prompt",
    "seed_conversations",
]

#: Fragments per generation.
CHUNKS = 20


def prompt(round_index: int, index: int) -> str:
    return f"r{round_index}g{index:04d}"


def fragments(prompt: str, count: int = CHUNKS) -> list[str]:
    """The fragments the fake streams for ``prompt``: ~20 characters, some non-ASCII."""
    return [f"{prompt}.{k:02d} café ü " for k in range(count)]


def expected_text(prompt: str, count: int = CHUNKS) -> str:
    return "".join(fragments(prompt, count))


class _Responder:
    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, turn: Turn) -> Sequence[Step]:
        return [*(chunk(text) for text in fragments(turn.prompt, self.count)), complete()]


class GatedFlowith(FakeFlowith):
    """The fake, for a client that connects its stream only *after* the POST.

    The fake puts a generation's events on the streams open when it is
    POSTed, as if the model answered instantly; the old client opens its
    stream after the POST, so it would miss every event and wait for its
    timeout. Here a generation starts once every generation POSTed so far
    has opened its stream (as many stream connections as generations): the
    model's first token comes after the client is listening, as it does
    with the real service, whose model takes far longer than a connection.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._deferred: list[tuple[Script, Turn]] = []

    def _start(self, turn: Turn, now: float, responder: Any) -> None:
        self.turns.append(turn)
        self._deferred.append((Script(tuple(responder(turn))), turn))
        self._release(now)

    def _open_stream(self, call: Call) -> FakeStream:
        stream = super()._open_stream(call)
        self._release(call.now)
        return stream

    def _release(self, now: float) -> None:
        if self._deferred and self.stream_connections >= len(self.turns):
            deferred, self._deferred = self._deferred, []
            for script, turn in deferred:
                self._play(script, turn, now)


def make_fake(*, gated: bool, chunks: int = CHUNKS, seed_rows: bool = True) -> FakeFlowith:
    options: dict[str, Any] = {
        "responder": _Responder(chunks),
        "heartbeat_interval": 5.0,
        "seed_rows": seed_rows,
    }
    fake = GatedFlowith(**options) if gated else FakeFlowith(**options)
    fake.generation_cost = 0.0  # thousands of generations, whatever the credits
    return fake


def seed_conversations(fake: FakeFlowith, count: int) -> None:
    """Give the fake's user ``count`` live conversations outside any project,
    inserted through the fake's own PostgREST endpoint."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = []
    for index in range(count):
        stamp = start + timedelta(minutes=7 * index)
        rows.append(
            {
                "id": str(uuid.UUID(int=0x5EED_0000_0000_4000_8000_0000_0000_0000 + index)),
                "user_id": fake.user_id,
                "title": f"Conversation {index}: trip planning, café list & notes",
                "project_id": None,
                "is_absolute_mode": True,
                "preview": f"Preview of conversation {index} — what was said last, in brief.",
                "is_delete": False,
                "metadata": {"member_count": 1 + index % 3},
                "created_at": stamp.isoformat(),
                "updated_at": (stamp + timedelta(minutes=3)).isoformat(),
            }
        )
    response = fake.handle(
        "POST",
        "/rest/v1/conversation",
        [
            ("apikey", DEFAULT_SUPABASE_KEY),
            ("authorization", f"Bearer {fake.token}"),
            ("content-type", "application/json"),
            ("prefer", "return=minimal"),
        ],
        json.dumps(rows).encode(),
        now=start.timestamp(),
    )
    status = getattr(response, "status", None)
    if status != 201:
        raise RuntimeError(f"seeding conversations failed: {status} {response!r}")
