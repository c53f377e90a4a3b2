"""Deterministic Flowith event streams: the inputs of the decoding benchmarks.

A generation streams ``chunks`` events wrapped in the ``/user_stream/stream``
envelope, one ``data:`` line each, with a ``{"heartbeat": <ms>}`` frame now
and then::

    data: {"data":{"type":"chunks","nodeId":"<uuid>","convId":"<uuid>","seq":7,
           "timestamp":1767225600259,"chunks":["über café 日本語 🙂 the "]},"id":"8"}

Every byte comes from a seeded generator, so every run measures the same input.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence

__all__ = [
    "HEARTBEAT_EVERY",
    "LATIN1_WORDS",
    "WORDS",
    "big_event",
    "by_events",
    "by_size",
    "chunks_stream",
    "node_ids",
]

#: Words of the streamed text: mostly ASCII, some 2-, 3- and 4-byte UTF-8.
WORDS = (
    "the", "stream", "model", "token", "answer", "is", "a", "of", "and", "data",
    "café", "naïve", "über", "Zürich", "généré", "ß", "—", "日本語", "テスト", "🙂",
)  # fmt: skip
#: Words whose text is a one-byte-per-character ``str`` (Latin-1), multi-byte in UTF-8.
LATIN1_WORDS = (
    "the", "stream", "model", "token", "answer", "is", "a", "of", "and", "data",
    "café", "naïve", "über", "Zürich", "généré", "ß", "déjà", "façade",
)  # fmt: skip
#: A heartbeat frame follows every this many ``chunks`` frames.
HEARTBEAT_EVERY = 50
_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_TEXT_BYTES = 38  # with the envelope, a frame is about 230 bytes


def node_ids(count: int, *, seed: int = 8) -> list[str]:
    """``count`` distinct, deterministic UUIDs."""
    rng = random.Random(f"nodes-{seed}")
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _fragment(rng: random.Random, words: Sequence[str] = WORDS) -> str:
    picked: list[str] = []
    size = 0
    while size < _TEXT_BYTES:
        word = rng.choice(words)
        picked.append(word)
        size += len(word.encode()) + 1
    return " ".join(picked) + " "


def _frame(payload: object) -> bytes:
    return (
        b"data: "
        + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        + (b"\n\n")
    )


def chunks_stream(
    frames: int, *, nodes: int = 1, think: bool = False, seed: int = 8
) -> tuple[bytes, dict[str, list[str]]]:
    """``frames`` ``chunks`` events (plus heartbeats), the nodes interleaved round robin.

    Returns the body and, per node, its fragments in order (what a client
    must reassemble). With ``think``, each node's text opens with a
    ``<think>`` block that a closing tag split across two fragments ends
    about a third of the way in, so a think splitter has real work.
    """
    rng = random.Random(f"stream-{seed}")
    ids = node_ids(nodes, seed=seed)
    conv_id = node_ids(1, seed=seed + 1)[0]
    per_node = -(-frames // nodes)
    close_at = max(1, per_node // 3)
    fragments: dict[str, list[str]] = {node: [] for node in ids}
    parts: list[bytes] = []
    timestamp = _START_MS
    for index in range(frames):
        node = ids[index % nodes]
        seq = index // nodes
        text = _fragment(rng)
        if think and seq == 0:
            text = "<think>" + text
        elif think and seq == close_at:
            text += "</th"
        elif think and seq == close_at + 1:
            text = "ink>" + text
        fragments[node].append(text)
        event = {
            "type": "chunks",
            "nodeId": node,
            "convId": conv_id,
            "seq": seq,
            "timestamp": timestamp,
            "chunks": [text],
        }
        parts.append(_frame({"data": event, "id": str(index + 1)}))
        timestamp += 37
        if (index + 1) % HEARTBEAT_EVERY == 0:
            parts.append(f'data: {{"heartbeat": {timestamp}}}\n\n'.encode())
    return b"".join(parts), fragments


def big_event(size: int, *, words: Sequence[str] = LATIN1_WORDS, seed: int = 5) -> bytes:
    """One ``chunks`` event of about ``size`` bytes (one huge fragment)."""
    rng = random.Random(f"big-{seed}")
    node, conv = node_ids(2, seed=seed)
    head = _frame(
        {
            "data": {
                "type": "chunks",
                "nodeId": node,
                "convId": conv,
                "seq": 0,
                "timestamp": _START_MS,
                "chunks": [""],
            },
            "id": "1",
        }
    )
    # The text goes between the quotes of "chunks":[""]: split the frame there.
    before, after = head.split(b'"chunks":[""]')
    before += b'"chunks":["'
    after = b'"]' + after
    budget = size - len(before) - len(after)
    pieces: list[str] = []
    used = 0
    while used < budget:
        word = rng.choice(words) + " "
        pieces.append(word)
        used += len(word.encode())
    text = "".join(pieces).encode()
    # Trim to the budget on a character boundary.
    text = text[:budget].decode("utf-8", "ignore").encode()
    return before + text + after


def by_size(body: bytes, size: int | None) -> list[bytes]:
    """``body`` in chunks of ``size`` bytes (``None``: the whole body at once)."""
    if size is None:
        return [body]
    return [body[i : i + size] for i in range(0, len(body), size)]


def by_events(body: bytes, events: int) -> list[bytes]:
    """``body`` in chunks of ``events`` whole events each (cut after blank lines)."""
    chunks: list[bytes] = []
    start = 0
    position = 0
    count = 0
    while True:
        end = body.find(b"\n\n", position)
        if end < 0:
            break
        position = end + 2
        count += 1
        if count == events:
            chunks.append(body[start:position])
            start = position
            count = 0
    if start < len(body):
        chunks.append(body[start:])
    return chunks
