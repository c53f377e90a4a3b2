"""Image and video generation as sans-I/O operations (protocol.md 3.2, 3.3).

They follow the text turn (rows first, subscribe, then start), with three
differences. The result may arrive as ``workflow_complete`` on
``/user_stream/sse`` as well as on ``/user_stream/stream`` (protocol.md 4.3,
defect D5), so the node is subscribed on both. A media job runs for minutes,
so while the streams say nothing about the node its row is read now and
then (:mod:`flowith_proto.row_checks`): a terminal event that slipped past (or went to a
node id the server chose itself) is still found. And a failed job raises
:class:`GenerationError` with the server's reason instead of returning its
error text as a URL (D4).
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from flowith_proto import logs
from flowith_proto.arguments import (
    require_flag,
    require_messages,
    require_option,
    require_prompt,
    require_setting,
)
from flowith_proto.calls import call
from flowith_proto.config import check_seconds
from flowith_proto.demux import StreamEnded
from flowith_proto.effects import (
    Alias,
    DeadlineReached,
    NextEvent,
    Now,
    Operation,
    Sleep,
    Subscribe,
)
from flowith_proto.endpoints import Position
from flowith_proto.errors import (
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
    mask_url,
    rewrap,
)
from flowith_proto.events import Chunks, Complete, NodeFailed, WorkflowComplete, node_data
from flowith_proto.files import url_problem
from flowith_proto.generation import (
    Conversation,
    NodeDone,
    NodePending,
    begin_turn,
    failure,
    next_read_wait,
    one_turn,
    poll_row,
    read_failure,
    refuse_failed_start,
    row_if_readable,
    start_answer,
)
from flowith_proto.models import GeneratedImage, ImageOutput, VideoOutput
from flowith_proto.request import Response, require_uuid
from flowith_proto.row_checks import RowChecks
from flowith_proto.state import ClientState

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "DEFAULT_VIDEO_TIMEOUT",
    "generate_image",
    "generate_title",
    "generate_video",
]

log = logs.logger("flowith.generation")

DEFAULT_IMAGE_MODEL = "gemini-3.1-flash-image"
DEFAULT_VIDEO_MODEL = "seedance-2.0-fast"
#: Videos take minutes; without a ``timeout`` a video call waits this long.
DEFAULT_VIDEO_TIMEOUT = 300.0
#: The video node sits this far below its user node, as in the web app (130 → 310).
VIDEO_OFFSET = 180

_MEDIA_CHANNELS = ("stream", "sse")


@attrs.frozen
class _MediaResult:
    url: str
    model: str
    metadata: Mapping[str, Any]


def _url_from_event(raw: Mapping[str, Any], kind: str) -> str:
    """The result URL of a terminal event, in the web app's order of fields."""
    keys = (
        ("resultUrl", "imageUrl", "result")
        if kind == "image"
        else ("resultUrl", "videoUrl", "result")
    )
    for key in keys:
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    value = node_data(raw).get("value")  # an empty or null nodeData falls back to data
    return value if isinstance(value, str) else ""


def _checked_url(result: str, node_id: str, kind: str) -> str:
    """A media result is a URL: any other text is the reason the job failed
    (defect D4 returned "Request blocked by content policy" as the image's URL),
    so it is raised as such, and a job done without one failed too (it would
    pass for a success with nothing to show or save)."""
    result = result.strip()
    if not result:
        raise failure(node_id, "completed", f"the job ended without its {kind}'s URL", "")
    if result.startswith(("http://", "https://", "/")):
        # A URL the client cannot fetch (no host, relative: no base is known to
        # resolve it against) is the job's result all the same, not a failure's text.
        problem = url_problem(result) if result[0] != "/" else "it is relative"
        if problem is None:
            return result
        raise failure(
            node_id, "completed", f"the result {result!r} is no usable URL: {problem}", ""
        )
    kind = "provider_error" if "provider_error" in result else ""
    raise failure(node_id, "failed", result, kind)


#: Seconds a job that said it finished without its URL is given for the URL to come on
#: its other stream (or in its row) before that counts as its failure.
_URL_GRACE = 3.0


def _from_media_row(row: NodeDone, node_id: str, model: str, kind: str) -> _MediaResult:
    """The result a finished row holds (its URL checked, as an event's)."""
    row_model = row.data.get("model")
    metadata = {
        "type": "complete",
        "nodeId": node_id,
        "result": row.value,
        "nodeData": dict(row.data),
    }
    chosen = row_model if isinstance(row_model, str) and row_model else model
    log.debug("node %s: %s done (from its row)", node_id, kind)
    return _MediaResult(_checked_url(row.value, node_id, kind), chosen, metadata)


def _await_media(
    state: ClientState, *, listen_id: str, node_id: str, model: str, kind: str, deadline: float
) -> Operation[_MediaResult]:
    """Wait for a media node's result from either stream (on the subscription
    ``listen_id``), reading the row of ``node_id`` whenever the streams stay
    quiet about it (:class:`~flowith_proto.row_checks.RowChecks` says when)."""
    now: float = yield Now()
    checks = RowChecks(state.stall_interval, now, deadline)
    streaming = True
    # Set when the job said it finished without its URL: until then, the row or the
    # other stream may still bring it.
    no_url_until: float | None = None
    outcome: NodeDone | NodePending = NodePending()
    while True:
        if streaming:
            wake = checks.wake_at() if no_url_until is None else min(checks.wake_at(), no_url_until)
            item = yield NextEvent(listen_id, wake)
            if isinstance(item, NodeFailed):
                raise failure(node_id, item.status, item.error, item.error_type)
            if isinstance(item, (Complete, WorkflowComplete)):
                chosen = (item.model if isinstance(item, Complete) else "") or model
                found = _url_from_event(item.raw, kind)
                if not found and no_url_until is None:
                    # Finished, but without the URL (a bare "completed" status on
                    # /stream, the result on /sse: protocol.md 4.2, 4.3): the row is
                    # asked now, and the other stream is given a moment.
                    log.info("node %s finished without its %s's URL", node_id, kind)
                    no_url_until = min((yield Now()) + _URL_GRACE, deadline)
                    row = yield from row_if_readable(state, node_id, deadline, media=True)
                    if isinstance(row, NodeDone) and row.value:
                        return _from_media_row(row, node_id, model, kind)
                    continue
                url = _checked_url(found, node_id, kind)
                log.debug("node %s: %s done (from the stream)", node_id, kind)
                return _MediaResult(url, chosen, dict(item.raw))
            if isinstance(item, DeadlineReached) and no_url_until is not None:
                now = yield Now()
                if now >= no_url_until:  # nothing came: the row, one last time, tells
                    row = yield from row_if_readable(state, node_id, deadline, media=True)
                    if isinstance(row, NodeDone) and row.value:
                        return _from_media_row(row, node_id, model, kind)
                    _checked_url("", node_id, kind)  # raises: ended without its URL
            if isinstance(item, StreamEnded) and item.partial:
                # One stream is gone, the other may still bring the result: listen on,
                # and read the row now and as often as when polling (the result may have
                # been on the stream that went).
                log.info("a stream of node %s ended (%s); reading its row", node_id, item.reason)
                checks = RowChecks(state.poll_interval, (yield Now()), deadline)
            elif isinstance(item, StreamEnded):
                log.info(
                    "streams ended before node %s finished (%s); polling", node_id, item.reason
                )
                streaming = False
            elif isinstance(item, Chunks):
                checks.heard((yield Now()))
                continue
            elif not isinstance(item, DeadlineReached):
                continue  # progress or unknown events: keep listening
            elif not checks.row_due((yield Now())):
                raise TimeoutError(
                    f"{kind} generation of node {node_id} did not finish in time",
                    deadline_passed=True,
                ) from read_failure(outcome)
        # A quiet stream, a stream gone, or a poll interval over: read the row,
        # unless no time is left to (the read would fail for want of time anyway).
        now = yield Now()
        if now >= deadline:
            raise TimeoutError(
                f"{kind} generation of node {node_id} did not finish in time",
                deadline_passed=True,
            ) from read_failure(outcome)
        outcome = yield from poll_row(
            state, node_id, deadline, media=True, previous=outcome, streaming=streaming
        )
        if isinstance(outcome, NodeDone) and (outcome.value or no_url_until is None):
            return _from_media_row(outcome, node_id, model, kind)
        now = yield Now()
        if no_url_until is not None and now >= no_url_until:
            _checked_url("", node_id, kind)  # raises: it ended without its URL
        if streaming:
            checks.heard(now)
        else:
            until = min(now + max(state.poll_interval, next_read_wait(outcome)), deadline)
            yield Sleep(until if no_url_until is None else min(until, no_url_until))


def generate_image(
    state: ClientState,
    conversation: Conversation,
    prompt: str,
    *,
    model: str | enum.Enum | None = None,
    aspect_ratio: str | enum.Enum = "1:1",
    image_size: str = "512",
    agent: bool = True,
    timeout: float | None = None,
) -> Operation[ImageOutput]:
    """Generate an image from ``prompt`` in ``conversation`` (created if needed)."""
    check_seconds("timeout", timeout, endless=True)
    require_prompt(prompt)
    # An empty model is the default, as for text.
    chosen = (require_option(model, "model") if model is not None else "") or DEFAULT_IMAGE_MODEL
    ratio = require_setting(aspect_ratio, "aspect_ratio")
    image_size = require_setting(image_size, "image_size")
    agent = require_flag(agent, "agent")
    with one_turn(conversation):
        started: float = yield Now()
        deadline = started + (state.result_timeout if timeout is None else timeout)
        rows = yield from begin_turn(
            state,
            conversation,
            prompt,
            deadline,
            lambda timestamp: {
                "title": "AI",
                "value": "",
                "mode": "image_generation",
                "timestamp": timestamp,
                "isImage": True,
                "model": chosen,
                "status": "init",
                "ratio": ratio,
                "resolution": image_size,
                "aspect_ratio": ratio,
                "image_size": image_size,
                "agent": agent,
            },
        )
        conv_id, ai_node_id = rows.conv_id, rows.ai_node_id
        yield Subscribe(ai_node_id, _MEDIA_CHANNELS, deadline)
        start_reply = yield from call(
            state,
            lambda e: e.start_image(
                model=chosen,
                messages=[{"role": "user", "content": prompt}],
                node_id=ai_node_id,
                conv_id=conv_id,
                aspect_ratio=ratio,
                image_size=image_size,
                agent=agent,
            ),
            deadline=deadline,
        )
        refuse_failed_start(start_answer(start_reply), ai_node_id)
        result = yield from _await_media(
            state,
            listen_id=ai_node_id,
            node_id=ai_node_id,
            model=chosen,
            kind="image",
            deadline=deadline,
        )
        conversation.turn += 1
        conversation.last_ai_node_id = ai_node_id
        return ImageOutput(
            images=(GeneratedImage(url=result.url, model=result.model),),
            model=result.model,
            node_id=ai_node_id,
            conv_id=conv_id,
            metadata=result.metadata,
        )


def generate_video(
    state: ClientState,
    conversation: Conversation,
    prompt: str,
    *,
    model: str | enum.Enum | None = None,
    image_url: str = "",
    aspect_ratio: str | enum.Enum = "16:9",
    resolution: str = "480p",
    audio: bool = True,
    timeout: float | None = None,
) -> Operation[VideoOutput]:
    """Generate a video from ``prompt`` (and optionally a first frame,
    ``image_url``); the server creates the video's node itself and may pick
    its id, which the operation then follows."""
    check_seconds("timeout", timeout, endless=True)
    chosen = (require_option(model, "model") if model is not None else "") or DEFAULT_VIDEO_MODEL
    image_url = require_option(image_url, "image_url")
    # A data: URL (the frame itself, in base64) passes as the web app's would.
    problem = None if image_url.startswith("data:") else url_problem(image_url)
    if image_url and problem is not None:
        raise ValidationError(
            f"image_url {mask_url(image_url)!r} is no http(s) URL: {problem}", status_code=None
        )
    require_prompt(prompt, "an image_url", given=bool(image_url))
    ratio = require_setting(aspect_ratio, "aspect_ratio")
    resolution = require_setting(resolution, "resolution")
    audio = require_flag(audio, "audio")
    with one_turn(conversation):
        started: float = yield Now()
        deadline = started + (DEFAULT_VIDEO_TIMEOUT if timeout is None else timeout)
        # The server creates the video's node itself: no AI row here (ai_data None).
        rows = yield from begin_turn(state, conversation, prompt, deadline, None)
        conv_id, video_node_id = rows.conv_id, rows.ai_node_id
        user_node_id, user_position = rows.user_node_id, rows.user_position
        yield Subscribe(video_node_id, _MEDIA_CHANNELS, deadline)
        response = yield from call(
            state,
            lambda e: e.start_video(
                node_id=video_node_id,
                model=chosen,
                prompt=prompt,
                image_url=image_url,
                aspect_ratio=ratio,
                audio=audio,
                resolution=resolution,
                conv_id=conv_id,
                parent_node_id=user_node_id,
                position=Position(user_position.x, user_position.y + VIDEO_OFFSET),
            ),
            deadline=deadline,
        )
        try:
            body = response.json()
        except ResponseDecodeError as exc:
            # As below: the job may have started, so say where before giving up on it.
            raise rewrap(
                exc,
                ResponseDecodeError,
                f"/video/async answered {exc.body!r}, which is not JSON; the video may "
                f"still be generating in conversation {conv_id}",
            ) from None
        refuse_failed_start(body, video_node_id)
        node_id = video_node_id
        server_id = body.get("nodeId") if isinstance(body, Mapping) else None
        if isinstance(server_id, str) and server_id and server_id != video_node_id:
            try:
                node_id = require_uuid(server_id, "nodeId")
            except ValidationError:
                # The job has started: say where it went rather than poll a node it is not.
                with response.decoding():  # (it names the start answer)
                    raise ResponseDecodeError(
                        f"/video/async named its video node {server_id!r}, which is not a "
                        f"UUID; the video may still be generating in conversation {conv_id}",
                        body=body,
                    ) from None
            yield Alias(node_id, video_node_id)
        result = yield from _await_media(
            state,
            listen_id=video_node_id,
            node_id=node_id,
            model=chosen,
            kind="video",
            deadline=deadline,
        )
        conversation.turn += 1
        conversation.last_ai_node_id = node_id
        return VideoOutput(
            video_url=result.url,
            model=result.model,
            node_id=node_id,
            conv_id=conv_id,
            metadata=result.metadata,
        )


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_STARTS = ("<!doctype html", "<html")


def _text_of(body: bytes, content_type: str) -> str:
    """``body`` read in the charset ``content_type`` declares, if it is a text encoding
    Python knows (``base64`` is no text encoding), else as UTF-8."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            # LookupError: no such codec; ValueError: one that is no text encoding
            # (idna refuses errors="replace", "undefined" refuses everything).
            with contextlib.suppress(LookupError, ValueError):
                return body.decode(value.strip().strip('"'), errors="replace")
            break
    return body.decode("utf-8", errors="replace")


def generate_title(
    state: ClientState, messages: Sequence[Mapping[str, Any]], *, timeout: float | None = None
) -> Operation[str]:
    """A short title for a conversation, from the edge's title model: plain text,
    a JSON string unquoted whatever the content type says. Declared ``text/plain``,
    any other text is the title as written (``null``, ``[1, 2]``); otherwise a number
    or a boolean is too, but ``null``, an object or an array is no title; nor is
    an answer declared JSON that starts as an object, an array or a string but does
    not parse (cut short, say). A page of HTML (a
    proxy's or a gateway's, declared or not) is none either: :class:`ResponseDecodeError`.
    The text is read in the charset the answer declares (UTF-8 if none or unknown); an
    empty answer is an empty title."""
    checked = require_messages(messages, "messages")
    response = yield from call(state, lambda e: e.conversation_title(checked), timeout=timeout)
    with response.decoding():
        return _title_of(response)


def _title_of(response: Response) -> str:
    """The title an answer holds (see :func:`generate_title`)."""
    declared = response.header("content-type") or ""
    kind = declared.split(";")[0].strip().lower()
    text = _text_of(response.body, declared).strip()
    if kind in _HTML_TYPES or (kind != "text/plain" and text[:14].lower().startswith(_HTML_STARTS)):
        raise ResponseDecodeError(
            "generate_title: expected the title as plain text, got an HTML page",
            response.status,
        )
    try:
        parsed = json.loads(text) if text else text
    except (ValueError, RecursionError):
        # Words under a JSON label are still taken as the title (which label the
        # service puts on plain text is unverified); an object or a string cut short is not.
        if (kind == "application/json" or kind.endswith("+json")) and text[0] in '{["':
            raise ResponseDecodeError(
                "generate_title: the answer is declared JSON but does not parse",
                response.status,
                body=text,
            ) from None
        return text  # plain text, the usual answer
    if isinstance(parsed, str):
        return parsed.strip()
    if kind == "text/plain" or isinstance(parsed, (int, float)):  # the user's words: "2024"
        return text
    raise ResponseDecodeError(
        "generate_title: expected the title as text", response.status, body=parsed
    )
