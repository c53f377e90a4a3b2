"""Conversation management operations (listing and canvas reads come with #4)."""

from __future__ import annotations

from collections.abc import Mapping

from flowith_proto.calls import call
from flowith_proto.effects import Operation
from flowith_proto.errors import NotFoundError, ResponseDecodeError
from flowith_proto.request import require_uuid
from flowith_proto.state import ClientState

__all__ = ["delete"]


def delete(state: ClientState, conv_id: str, *, timeout: float | None = None) -> Operation[None]:
    """Soft-delete ``conv_id``; :class:`NotFoundError` when no row of the
    user's matched (already gone, or someone else's)."""
    conv = require_uuid(conv_id, "conv_id")
    response = yield from call(state, lambda e: e.delete_conversation(conv), timeout=timeout)
    with response.decoding():
        rows = response.json()
        if isinstance(rows, list) and not rows:
            raise NotFoundError(f"conversation {conv} does not exist")
        # return=representation: the deleted row comes back, or deleting nothing could
        # not be told from deleting it (D21).
        if not (isinstance(rows, list) and all(isinstance(row, Mapping) for row in rows)):
            raise ResponseDecodeError(
                "delete_conversation: expected the deleted row back, a JSON array of objects",
                body=rows,
            )
