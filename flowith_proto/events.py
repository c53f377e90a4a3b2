"""Flowith's events, on top of server-sent events.

A frame's ``data`` is JSON. On ``/user_stream/stream`` it arrives wrapped as
``{"data": {...}, "id": ...}``; on ``/user_stream/sse`` it is bare
(protocol.md 4.1-4.3). :func:`parse_event` unwraps the envelope only when it is
there and turns the payload into one small, typed event. Shapes the client does
not know are kept as :class:`UnknownEvent`, not dropped, and shapes that are
wrong for a known type become :class:`MalformedEvent`, so one odd frame never
breaks the stream for every other generation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "Chunks",
    "Complete",
    "Connected",
    "FlowithEvent",
    "Heartbeat",
    "MalformedEvent",
    "NodeFailed",
    "UnknownEvent",
    "WorkflowComplete",
    "decode_event",
    "is_failure",
    "node_data",
    "parse_event",
    "unwrap",
]

_TERMINAL_TYPES = frozenset({"complete", "result"})
_SUCCESS_STATUSES = frozenset({"completed", "done", "success"})
#: Statuses that end a node without a result (``failed`` is seen in the wild; the
#: others are the usual words for a job that ends badly, never a result).
_FAILURE_STATUSES = frozenset(
    {"failed", "failure", "error", "cancelled", "canceled", "timeout", "timed_out", "rejected"}
)


@attrs.frozen
class Heartbeat:
    """``{"heartbeat": <ms>}``: the connection is alive, nothing happened."""

    timestamp: int | None
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class Connected:
    """``{"status": "connected"}``: the server acknowledged the stream."""

    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class Chunks:
    """Fragments of a node's text, in order."""

    node_id: str
    conv_id: str
    seq: int | None
    chunks: tuple[str, ...]
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class Complete:
    """A node finished. ``result`` is the full text (``<think>`` tags kept) or
    the media URL; ``reasoning`` is the separate reasoning field, if any."""

    node_id: str
    conv_id: str
    result: str
    reasoning: str
    model: str
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class WorkflowComplete:
    """An image or video job finished successfully (``/user_stream/sse``)."""

    node_id: str
    conv_id: str
    task_type: str
    result: str
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class NodeFailed:
    """A node's generation failed: ``status`` failed/error, or an ``error``."""

    node_id: str
    conv_id: str
    status: str
    error: str
    error_type: str
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class UnknownEvent:
    """A well-formed payload of a type this client does not know yet."""

    node_id: str
    raw: Mapping[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class MalformedEvent:
    """A payload that is not JSON, not an object, or has wrong field types.

    ``node_id`` is set when the payload still names a node, so the generation
    it concerns can be told; ``reason`` says what was wrong.
    """

    node_id: str
    reason: str
    raw: str = attrs.field(eq=False, repr=False)


FlowithEvent = (
    Heartbeat
    | Connected
    | Chunks
    | Complete
    | WorkflowComplete
    | NodeFailed
    | UnknownEvent
    | MalformedEvent
)


def unwrap(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The event inside ``{"data": {...}, "id": ...}``, or ``payload`` itself.

    A payload that already names its own ``type`` or node is never unwrapped,
    even when it carries a ``data`` object (a node's data rides along in some
    terminal events).
    """
    inner = payload.get("data")
    if (
        isinstance(inner, Mapping)
        and "type" not in payload
        and "nodeId" not in payload
        and "node_id" not in payload
    ):
        return inner
    return payload


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _node_id(event: Mapping[str, Any]) -> Any:
    """The event's node id as sent (``nodeId``, else ``node_id``; a null one is none)."""
    value = event.get("nodeId")
    return event.get("node_id") if value is None else value


def is_failure(status: Any, error: Any, error_type: Any) -> bool:
    """The one rule for a failed node, shared by events and polled rows.

    An ``error`` (or ``error_type``) that JSON holds as empty or false
    (``null``, ``false``, ``0``, ``""``, ``[]``, ``{}``) says there is none:
    ``"error": false`` beside a result is a success.
    """
    return (
        (isinstance(status, str) and status.lower() in _FAILURE_STATUSES)
        or bool(error)
        or bool(error_type)
    )


def node_data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``nodeData or data or {}``: an empty or null ``nodeData`` falls back to ``data``."""
    data = event.get("nodeData") or event.get("data")
    return data if isinstance(data, Mapping) else {}


#: Where a terminal event may carry its text or media URL, in the order they are read.
_RESULT_KEYS = ("result", "resultUrl", "imageUrl", "videoUrl")


def _non_text_result(event: Mapping[str, Any]) -> str | None:
    """The result field of a terminal event that holds something else than text
    (a number, an object...), if any: such an event is malformed, not empty."""
    for key in _RESULT_KEYS:
        if event.get(key) is not None and not isinstance(event.get(key), str):
            return key
    value = node_data(event).get("value")
    if value is not None and not isinstance(value, str):
        return "nodeData.value"
    return None


def _has_text_result(event: Mapping[str, Any]) -> bool:
    """Whether a result field of a terminal event holds text to read the result from."""
    return any(isinstance(event.get(key), str) and event.get(key) for key in _RESULT_KEYS)


def _terminal_result(event: Mapping[str, Any]) -> str:
    """The full text or media URL of a terminal event, from the first field
    that has one."""
    for key in _RESULT_KEYS:
        value = event.get(key)
        if isinstance(value, str) and value:
            return value
    return _text(node_data(event).get("value"))


def parse_event(payload: Any) -> FlowithEvent:
    """One decoded JSON payload as a typed event (envelope unwrapped)."""
    if not isinstance(payload, Mapping):
        return MalformedEvent(
            "", f"expected a JSON object, got {type(payload).__name__}", _text(payload)
        )
    event = unwrap(payload)
    if "heartbeat" in event and len(event) == 1:
        beat = event["heartbeat"]
        stamp = beat if isinstance(beat, int) and not isinstance(beat, bool) else None
        return Heartbeat(stamp, event)
    node_id = _node_id(event)
    kind = event.get("type")
    status = event.get("status")
    if node_id is not None and not isinstance(node_id, str):
        return MalformedEvent("", f"'nodeId' is not a string: {_text(node_id)}", _text(event))
    if not node_id:
        if status == "connected" and kind is None:
            return Connected(event)
        return UnknownEvent("", event)
    if kind is not None and not isinstance(kind, str):
        return MalformedEvent(node_id, f"'type' is not a string: {_text(kind)}", _text(event))
    conv_id = _text(event.get("convId", event.get("conv_id")))
    if kind == "chunks":
        chunks = event.get("chunks")
        if isinstance(chunks, str):
            chunks = [chunks]
        if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
            return MalformedEvent(node_id, "'chunks' is not a list of strings", _text(event))
        seq = event.get("seq")
        return Chunks(
            node_id,
            conv_id,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            tuple(chunks),
            event,
        )
    error, error_type = event.get("error"), event.get("error_type")
    if kind == "workflow_complete":
        raw_result = event.get("result")
        if status == "completed" and raw_result is not None and not isinstance(raw_result, str):
            # A job that says it completed with an object for a URL is malformed, not
            # an empty success (the result is the field this event's URL comes from).
            return MalformedEvent(node_id, "'result' of a terminal event is not text", _text(event))
        result = _text(raw_result)
        if status == "completed" and result:
            # protocol.md 4.3: a completed job with a result is a success, whatever its
            # error fields say (they are read on failure only: error_type "unknown"
            # beside a finished image's URL took it for a failed one).
            return WorkflowComplete(node_id, conv_id, _text(event.get("taskType")), result, event)
        # Anything else is a failure: its own reason if it gives one.
        if is_failure(status, error, error_type):
            return NodeFailed(
                node_id, conv_id, _text(status) or "failed", _text(error), _text(error_type), event
            )
        status_text = _text(status) or "failed"
        return NodeFailed(node_id, conv_id, status_text, "no result", "unknown", event)
    if is_failure(status, error, error_type):
        return NodeFailed(node_id, conv_id, _text(status), _text(error), _text(error_type), event)
    if (
        kind in _TERMINAL_TYPES
        or (isinstance(status, str) and status.lower() in _SUCCESS_STATUSES)
        or "resultUrl" in event
    ):
        wrong = _non_text_result(event)
        if wrong is not None and not _has_text_result(event):
            # Malformed only when no field gives the result: an object beside the text
            # the result is read from changes nothing.
            reason = f"{wrong!r} of a terminal event is not text"
            return MalformedEvent(node_id, reason, _text(event))
        model = node_data(event).get("model")
        return Complete(
            node_id,
            conv_id,
            _terminal_result(event),
            _text(event.get("reasoning")),
            model if isinstance(model, str) else "",
            event,
        )
    return UnknownEvent(node_id, event)


def decode_event(data: str) -> FlowithEvent:
    """An SSE ``data`` field (JSON text) as a typed event."""
    try:
        payload = json.loads(data)
    except ValueError:
        return MalformedEvent("", "not JSON", data)
    except RecursionError:  # nested deeper than Python's recursion limit
        return MalformedEvent("", "JSON nested too deeply", data)
    try:
        return parse_event(payload)
    except RecursionError:  # a value quoted in the event's description, nested as deep
        return MalformedEvent("", "JSON nested too deeply", data)
