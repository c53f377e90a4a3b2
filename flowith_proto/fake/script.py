"""Scripted generations: what the fake service does after a generation POST.

A script is a list of steps played in order on a timeline that starts at the
POST. Most steps put one frame on the user's open streams; ``pause`` moves the
timeline forward; ``row`` changes the AI node's row without any stream event
(what a client's poll fallback sees); ``close_stream``, ``drop`` and ``hang``
are the faults a stream can have. Steps are plain values: the model
(:mod:`flowith_proto.fake.model`) interprets them, so a script can be built,
compared and reused freely.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from flowith_proto.fake.frames import LINE_ENDINGS, LineEnding

__all__ = [
    "STEP_TYPES",
    "Channel",
    "ChunkStep",
    "CloseStep",
    "CommentStep",
    "CompleteStep",
    "DropStep",
    "FailStep",
    "HangStep",
    "HeartbeatStep",
    "OtherNodeStep",
    "PauseStep",
    "RawStep",
    "Responder",
    "RowStep",
    "Script",
    "Step",
    "Turn",
    "TurnKind",
    "WorkflowStep",
    "chunk",
    "close_stream",
    "comment",
    "complete",
    "default_media_responder",
    "default_responder",
    "drop",
    "fail",
    "hang",
    "heartbeat",
    "other_node",
    "pause",
    "raw",
    "row",
    "workflow_complete",
]

#: Which of the user's streams a step acts on: ``/user_stream/stream`` carries
#: text generation events, ``/user_stream/sse`` the ``workflow_complete`` ones.
Channel = Literal["stream", "sse"]
CHANNELS: tuple[Channel, ...] = ("stream", "sse")

# A step with a wrong argument is refused when the script is written: played, it
# would only break the fake's stream (logged) or do nothing, and the test would
# not test the fault it meant to.
_text = attrs.validators.instance_of(str)
_channel = attrs.validators.in_(CHANNELS)


def _text_field(default: Any = attrs.NOTHING) -> Any:
    return attrs.field(default=default, validator=_text)


@attrs.frozen
class ChunkStep:
    """A ``chunks`` event with one text fragment for the AI node."""

    text: str = _text_field()


@attrs.frozen
class CompleteStep:
    """The ``complete`` event; the row becomes ``done`` with the result."""

    #: ``None``: the concatenation of the node's chunks so far.
    result: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_text)
    )
    reasoning: str = _text_field("")


@attrs.frozen
class FailStep:
    """A ``status`` event reporting a failure; the row becomes failed too."""

    error: str = _text_field("the model provider returned an error")
    error_type: str = _text_field("provider_error")
    status: str = _text_field("failed")


@attrs.frozen
class OtherNodeStep:
    """A ``chunks`` event for a node of someone else's generation."""

    text: str = _text_field()


@attrs.frozen
class HeartbeatStep:
    """A ``{"heartbeat": <ms>}`` frame at this point of the timeline."""

    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class CommentStep:
    """An SSE comment line (``: text``), which decoders must skip."""

    text: str = _text_field()
    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class RawStep:
    """Exact bytes on the wire, for odd framing."""

    data: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class PauseStep:
    """Nothing happens for ``seconds``: later steps are due that much later."""

    seconds: float = attrs.field()

    @seconds.validator
    def _non_negative(self, _attribute: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"a pause takes a number of seconds, not {type(value).__name__}")
        if not value >= 0:
            raise ValueError(f"a pause must be >= 0 seconds, got {value!r}")


@attrs.frozen
class CloseStep:
    """The server ends the stream cleanly (the chunked body's last chunk)."""

    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class DropStep:
    """The connection breaks: the socket closes without ending the body."""

    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class HangStep:
    """The server goes silent (no heartbeats either) but keeps the socket open."""

    channel: Channel = attrs.field(default="stream", validator=_channel)


@attrs.frozen
class RowStep:
    """The AI node's row changes, with no event on any stream."""

    status: str = _text_field()
    value: str = _text_field()
    data: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class WorkflowStep:
    """A bare ``workflow_complete`` event on ``/user_stream/sse`` (protocol.md
    4.3); the row becomes ``done`` with the result, or failed. ``task_type``
    ``None`` is the generation's kind (``"image"`` for a text turn)."""

    result: str = _text_field("")
    status: str = _text_field("completed")
    task_type: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_text)
    )
    error: str = _text_field("")
    error_type: str = _text_field("")
    is_paid: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


STEP_TYPES = (
    ChunkStep,
    CompleteStep,
    FailStep,
    OtherNodeStep,
    HeartbeatStep,
    CommentStep,
    RawStep,
    PauseStep,
    CloseStep,
    DropStep,
    HangStep,
    RowStep,
    WorkflowStep,
)

Step = (
    ChunkStep
    | CompleteStep
    | FailStep
    | OtherNodeStep
    | HeartbeatStep
    | CommentStep
    | RawStep
    | PauseStep
    | CloseStep
    | DropStep
    | HangStep
    | RowStep
    | WorkflowStep
)


def _line_ending(_instance: object, _attribute: object, value: str) -> None:
    if value not in LINE_ENDINGS:
        raise ValueError(f"line_ending must be one of {LINE_ENDINGS!r}, got {value!r}")


@attrs.frozen
class Script:
    """The steps of one generation and how its frames are written."""

    steps: tuple[Step, ...]
    line_ending: LineEnding = attrs.field(default="\n", validator=_line_ending)
    #: Spread each JSON payload over several ``data:`` lines.
    multiline: bool = False


TurnKind = Literal["text", "image", "video"]


@attrs.frozen
class Turn:
    """What a generation POST asked for; a responder answers it with steps."""

    #: The text of the last user message (its text parts joined), or the video prompt.
    prompt: str
    messages: tuple[Mapping[str, Any], ...]
    model: str
    conv_id: str
    node_id: str
    user_id: str
    #: ``/completion/async``, ``/image_gen/async`` or ``/video/async``.
    kind: TurnKind = "text"
    #: Where the fake serves this generation's default result (media only).
    result_url: str = ""
    #: The media options of the request (``aspect_ratio``, ``image_size``, ...).
    options: Mapping[str, Any] = attrs.field(factory=dict)


Responder = Callable[[Turn], Sequence[Step]]


def chunk(text: str) -> ChunkStep:
    if not isinstance(text, str):
        raise TypeError(f"chunk() takes text, not {type(text).__name__}")
    return ChunkStep(text)


def complete(result: str | None = None, reasoning: str = "") -> CompleteStep:
    return CompleteStep(result, reasoning)


def fail(
    error: str = "the model provider returned an error",
    error_type: str = "provider_error",
    status: str = "failed",
) -> FailStep:
    return FailStep(error, error_type, status)


def other_node(text: str) -> OtherNodeStep:
    return OtherNodeStep(text)


def heartbeat(*, channel: Channel = "stream") -> HeartbeatStep:
    return HeartbeatStep(channel)


def comment(text: str, *, channel: Channel = "stream") -> CommentStep:
    return CommentStep(text, channel)


def raw(data: bytes, *, channel: Channel = "stream") -> RawStep:
    if not isinstance(data, bytes):
        raise TypeError(f"raw() takes bytes, not {type(data).__name__}")
    return RawStep(data, channel)


def pause(seconds: float) -> PauseStep:
    return PauseStep(seconds)


def close_stream(*, channel: Channel = "stream") -> CloseStep:
    return CloseStep(channel)


def drop(*, channel: Channel = "stream") -> DropStep:
    return DropStep(channel)


def hang(*, channel: Channel = "stream") -> HangStep:
    return HangStep(channel)


def row(status: str, value: str = "", **data: Any) -> RowStep:
    return RowStep(status, value, data)


def workflow_complete(
    result: str = "",
    *,
    status: str = "completed",
    task_type: str | None = None,
    error: str = "",
    error_type: str = "",
    is_paid: bool = False,
) -> WorkflowStep:
    return WorkflowStep(result, status, task_type, error, error_type, is_paid)


def default_responder(turn: Turn) -> list[Step]:
    """Echo the prompt as ``You said: <prompt>``, one word per chunk, then complete."""
    words = re.findall(r"\S+\s*", f"You said: {turn.prompt}")
    return [*(chunk(word) for word in words), complete()]


def default_media_responder(turn: Turn) -> list[Step]:
    """An image or video is ready at once: ``workflow_complete`` on ``/sse``
    with the URL where the fake serves the file it generated."""
    return [workflow_complete(turn.result_url, task_type=turn.kind)]
