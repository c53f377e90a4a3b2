"""Text generation as sans-I/O operations: one turn, and a multi-turn session.

A turn (protocol.md 3.1, with the old client's defects fixed):

1. create the conversation when there is none;
2. insert the user node and the AI node the server will fill;
3. **subscribe to the AI node on the shared stream, then** POST the completion,
   so no early event can be missed (D1);
4. read the node's events: chunks become deltas (``<think>`` split even when a
   tag straddles two chunks: D7), the terminal event gives the authoritative
   text, a failure event raises :class:`GenerationError` (D4);
5. if the stream ends first, read the node's row at once and then every
   ``poll_interval`` until it is final (D2, D3), and stop at one absolute
   deadline for the whole call even if the server sends nothing (D11).

A session carries the conversation forward (D6): each turn sends the earlier
user messages and visible replies in ``messages`` and hangs its user node
under the previous AI node. Canvas positions follow :func:`turn_layout`. A session
started on an existing conversation first reads its thread (:func:`resume`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from flowith_proto import logs
from flowith_proto.arguments import require_option, require_prompt, require_urls
from flowith_proto.calls import call
from flowith_proto.canvas import read_canvas
from flowith_proto.config import check_seconds
from flowith_proto.convert import read_flag, read_number
from flowith_proto.demux import StreamEnded
from flowith_proto.effects import (
    DeadlineReached,
    Emit,
    NewId,
    NextEvent,
    Now,
    Operation,
    Sleep,
    Subscribe,
    WallClock,
)
from flowith_proto.endpoints import NODE_TYPE_AI, NODE_TYPE_USER, Position
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    ConversationBusyError,
    FlowithError,
    GenerationError,
    NotFoundError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
    one_line,
    rewrap,
)
from flowith_proto.events import (
    Chunks,
    Complete,
    MalformedEvent,
    NodeFailed,
    WorkflowComplete,
    is_failure,
)
from flowith_proto.models import FlowNode, GenerationOutput
from flowith_proto.request import Response, require_uuid
from flowith_proto.retry import RETRY_STATUSES
from flowith_proto.row_checks import RowChecks
from flowith_proto.state import ClientState, ThreadLedger
from flowith_proto.thinking import ThinkSplitter, split_think, split_think_raw

__all__ = [
    "MAX_UNREADABLE",
    "Conversation",
    "NodeDone",
    "NodeFailedState",
    "NodePending",
    "RowUnreadable",
    "TurnRows",
    "begin_turn",
    "created_conversation_id",
    "failure",
    "generate",
    "next_read_wait",
    "node_state",
    "poll_row",
    "read_failure",
    "read_row",
    "refuse_failed_start",
    "resume",
    "row_if_readable",
    "send",
    "start_answer",
    "turn_layout",
]

log = logs.logger("flowith.generation")

#: Vertical distance between a node and its child on the canvas, as the web app
#: lays out a fresh conversation (user node at y=130, its answer at y=340).
NODE_SPACING = 210
FIRST_USER_Y = 130

_PENDING_STATUSES = frozenset({"", "init", "loading", "pending", "processing", "generating"})
_DONE_STATUSES = frozenset({"done", "completed", "success"})


#: Where a new conversation's thread hangs from: its first user node is one
#: ``NODE_SPACING`` below, at the web app's (0, 130).
_ROOT_ANCHOR = Position(0, FIRST_USER_Y - NODE_SPACING)


def turn_layout(turn: int, anchor: Position = _ROOT_ANCHOR) -> tuple[Position, Position]:
    """Canvas positions of the user node and AI node of the ``turn``-th turn
    hung below ``anchor`` (the last answer a session continued from).

    Every node sits ``NODE_SPACING`` pixels below its parent, so in a new
    conversation turn 0 reproduces the web app's positions (130, 340) and turn
    *n* continues the same column: user node at ``130 + 420 n``, answer 210 below.
    """
    user_y = anchor.y + NODE_SPACING + 2 * NODE_SPACING * turn
    return Position(anchor.x, user_y), Position(anchor.x, user_y + NODE_SPACING)


@attrs.define
class Conversation:
    """A multi-turn conversation's memory: where the thread is and what was said."""

    conv_id: str | None = None
    model: str | None = None
    #: Completed turns; a turn that failed or was abandoned is not counted (D27).
    turn: int = 0
    messages: list[dict[str, Any]] = attrs.field(factory=list)
    last_ai_node_id: str | None = None
    #: An existing conversation whose thread is read from the canvas before the
    #: first turn (:func:`resume`), so that the turn carries on from it.
    resume: bool = False
    #: Where new turns are laid out below, and how many turns placed nodes there
    #: since (failed ones too: their nodes stay on the canvas, and the next turn's
    #: must not cover them).
    anchor: Position = _ROOT_ANCHOR
    turns_since_anchor: int = 0
    #: A turn is running (see :func:`one_turn`).
    in_turn: bool = False
    #: Kept by a session, whose turns the client's other sessions on the same
    #: conversation see, and which sees theirs (see :func:`claim_thread`).
    in_session: bool = False
    ledger: ThreadLedger | None = attrs.field(default=None, eq=False, repr=False)
    #: The ledger's turns_begun when this memory last matched the thread.
    turns_seen: int = 0


@contextlib.contextmanager
def one_turn(conversation: Conversation) -> Iterator[None]:
    """Mark a turn of ``conversation`` as running while the block runs (in a turn's
    operation: until it ends, however it ends). A second turn at once is refused:
    it would read the thread before the first one's answer is in it, and the two
    would overwrite each other's place in it (two conversations, or a turn hung
    under a node that the other one's conversation does not hold)."""
    if conversation.in_turn:
        raise ConversationBusyError(
            "a turn of this conversation is still in progress: await it before sending "
            "the next one (or use another conversation for work at once)"
        )
    conversation.in_turn = True
    try:
        yield
    finally:
        conversation.in_turn = False
        ledger = conversation.ledger
        if ledger is not None and ledger.writer is conversation:
            ledger.writer = None


def claim_thread(state: ClientState, conversation: Conversation) -> None:
    """Make a session's turn the conversation's only one running in this client
    (until :func:`one_turn` ends), and have it read the thread again first if
    another session of the client began a turn since it last knew the thread:
    otherwise it would send a stale history and hang its turn under an old answer,
    on top of the other session's nodes. Writers outside this client (another
    client, the web app) go unseen: a new session reads the canvas afresh."""
    conv_id = conversation.conv_id
    if not conversation.in_session or conv_id is None:
        return
    ledger = conversation.ledger
    if ledger is None:
        ledger = conversation.ledger = state.threads.setdefault(conv_id, ThreadLedger())
        conversation.turns_seen = ledger.turns_begun
    if ledger.writer is not None and ledger.writer is not conversation:
        raise ConversationBusyError(
            f"another session of this client is running a turn of conversation {conv_id}: "
            "await it before sending this one"
        )
    if ledger.turns_begun != conversation.turns_seen:
        conversation.resume = True  # cleared once the thread has been read again
        conversation.turns_seen = ledger.turns_begun
    ledger.writer = conversation


def _count_turn_begun(conversation: Conversation) -> None:
    """A session's turn writes to the canvas: its sibling sessions must read it."""
    ledger = conversation.ledger
    if ledger is not None:
        ledger.turns_begun += 1
        conversation.turns_seen = ledger.turns_begun


# -- reading a node's row ------------------------------------------------------


@attrs.frozen
class NodePending:
    """The node is still being generated."""


@attrs.frozen
class RowUnreadable(NodePending):
    """The row could not be read this time, for a passing reason (``error``): as
    far as anyone knows, the node is still being generated. ``failures``: the
    reads in a row that failed so."""

    error: FlowithError
    failures: int = 1

    @property
    def wait(self) -> float:
        """The server's ``Retry-After`` of a 429 or 503, else 0: the next read waits
        at least that long."""
        asked = self.error.retry_after_s if isinstance(self.error, APIError) else None
        return asked or 0.0


#: Row reads in a row that may fail for a passing reason before the last failure
#: is raised: the deadline may end the wait sooner, and an endless one would wait
#: for ever on a database that stays down.
MAX_UNREADABLE = 5


@attrs.frozen
class NodeDone:
    """The node is final; ``value`` is its text or media URL."""

    value: str
    data: Mapping[str, Any]


@attrs.frozen
class NodeFailedState:
    """The node reports a failure."""

    status: str
    error: str
    error_type: str


def _as_object(value: Any) -> Any:
    """``data`` (and a ``value`` inside it) may be stored as a JSON string."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def node_state(rows: Any, *, media: bool = False) -> NodePending | NodeDone | NodeFailedState:
    """Judge a polled ``flow_node`` row (protocol.md 3.4, without defect D4:
    a failed node is a failure, never a result).

    A media row's ``value`` may be a JSON object with its own ``value`` or
    ``error`` (rows written through ``batch-upsert-nodes``), so with ``media``
    it is unwrapped. A text row's ``value`` is the answer itself, which may well
    be JSON: it is never unwrapped (an answer ``{"error": ...}`` is no failure).
    """
    if not isinstance(rows, list):
        raise ResponseDecodeError(
            f"expected a list of flow_node rows, got {type(rows).__name__}", body=rows
        )
    if not rows:
        return NodePending()
    row = rows[0]
    if not isinstance(row, Mapping):
        raise ResponseDecodeError(
            f"expected a flow_node row (an object), got {type(row).__name__}", body=rows
        )
    data = _as_object(row.get("data"))
    if data is None:
        return NodePending()  # the row exists, its data is not written yet
    if not isinstance(data, Mapping):
        raise ResponseDecodeError(
            f"expected a flow_node row's data to be an object, got {type(data).__name__}",
            body=rows,
        )
    status = data.get("status")
    status_text = status.lower() if isinstance(status, str) else ""
    value = data.get("value")
    inner = _as_object(value) if media else value
    error = data.get("error")
    error_type = data.get("error_type")
    if isinstance(inner, Mapping):
        error = error or inner.get("error")
        value = inner.get("value", "")
    if is_failure(status, error, error_type):
        # A failed node may keep its reason in value (protocol.md 3.4, D4): said, not lost.
        reason = error or (value if isinstance(value, str) else "")
        return NodeFailedState(status_text or "failed", str(reason or ""), str(error_type or ""))
    if isinstance(value, (bool, list, Mapping)) or (
        isinstance(value, float) and not -math.inf < value < math.inf
    ):
        # A repr of it ("[1, 2]", "nan") would pass for the generated text.
        raise ResponseDecodeError(
            f"expected a flow_node row's value to be text, got {type(value).__name__}",
            body=rows,
        )
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if status_text in _DONE_STATUSES:
        return NodeDone(text, data)
    if text and status_text not in _PENDING_STATUSES:
        return NodeDone(text, data)
    if media and text.startswith(("http://", "https://")):
        # A media row's value is its URL, written once (protocol.md 3.4). A text
        # row still being written may well begin with one: the answer so far.
        return NodeDone(text, data)
    return NodePending()


# -- the turn itself ------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(text: str) -> str:
    """``text`` with each pair of surrogates that makes a character made into it (a
    lone one stays: nothing else can be made of it)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


class _Progress:
    """What a streaming caller has been shown so far.

    A chunk whose ``seq`` was heard already is dropped (a replay after a
    reconnection would repeat it), and one overtaken by later chunks is not
    shown, since deltas already sent cannot take it back in its place; it is
    kept for :meth:`text_heard`, the text when no final one comes. Gaps pass at once: whether
    ``seq`` counts per node and without gaps is unverified (protocol.md 4.2), so
    nothing is held back waiting for a number that may never come. Chunks
    without a ``seq`` pass in the order they come.
    """

    __slots__ = ("_half", "_heard", "_last_seq", "reasoning", "splitter", "visible")

    def __init__(self) -> None:
        self.splitter = ThinkSplitter()
        self.visible = ""
        self.reasoning = ""
        self._last_seq: int | None = None
        #: Every event's fragments once, by seq (None: in the order heard).
        self._heard: dict[int | None, list[str]] = {}
        #: The first half of a character the last fragment ended with (see _paired).
        self._half = ""

    def feed(self, chunks: Sequence[str], seq: int | None = None) -> tuple[str, str]:
        """Take one event's fragments; return the text and reasoning deltas."""
        if seq is not None:
            if seq in self._heard:
                return "", ""  # heard already
            self._heard[seq] = list(chunks)
            if self._last_seq is not None and seq < self._last_seq:
                log.debug("chunks %d came after %d: kept, not shown", seq, self._last_seq)
                return "", ""
            self._last_seq = seq
        else:
            self._heard.setdefault(None, []).extend(chunks)
        visible: list[str] = []
        reasoning: list[str] = []
        for chunk in chunks:
            seen, thought = self.splitter.feed(self._paired(chunk))
            visible.append(seen)
            reasoning.append(thought)
        text_delta = "".join(visible)
        reasoning_delta = "".join(reasoning)
        self.visible += text_delta
        self.reasoning += reasoning_delta
        return text_delta, reasoning_delta

    def _paired(self, fragment: str) -> str:
        """``fragment`` with a character a server cut between two fragments made
        whole again. A server that cuts its text by UTF-16 code units (JavaScript's
        strings) sends an emoji's two halves in two events, each a lone surrogate
        once decoded: shown as they came, they made no text (``print`` and UTF-8
        refused them), and the final text no longer began with what was shown."""
        if self._half:
            fragment = _whole_characters(self._half + fragment[:1]) + fragment[1:]
            self._half = ""
        if fragment and "\ud800" <= fragment[-1] <= "\udbff":  # a first half: wait
            self._half = fragment[-1]
            fragment = fragment[:-1]
        return fragment

    def text_heard(self) -> str:
        """All the text the stream brought, each event once, in ``seq`` order
        (a late chunk in its place), for when no final text comes."""
        numbered = sorted(seq for seq in self._heard if seq is not None)
        return _whole_characters(
            "".join(
                [*(c for seq in numbered for c in self._heard[seq]), *self._heard.get(None, [])]
            )
        )

    def remainder(self, full: str, shown: str, what: str) -> str:
        """The part of the authoritative ``full`` text the caller has not seen. A
        row holds the answer trimmed: what was shown still begins it once its own
        leading white space is left aside (and is all of it, trimmed alike)."""
        for seen in (shown, shown.lstrip()):
            if full.startswith(seen):
                return full[len(seen) :]
        if full.strip() == shown.strip():
            return ""
        log.warning("streamed %s differs from the final %s; final text wins", what, what)
        return ""


def _messages_content(prompt: str, images: Sequence[str] | None) -> str | list[dict[str, Any]]:
    if not images:
        return prompt
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    return parts


def created_conversation_id(body: Any) -> str:
    """The id of the conversation row an insert returned (PostgREST's list of one row,
    or the row); a body without one is a :class:`ResponseDecodeError`."""
    row = body[0] if isinstance(body, list) and body else body
    conv_id = row.get("id") if isinstance(row, Mapping) else None
    if not isinstance(conv_id, str) or not conv_id:
        raise ResponseDecodeError("creating the conversation returned no id", body=body)
    try:
        return require_uuid(conv_id, "conv_id")
    except ValidationError:  # the server's answer, not the caller's input
        raise ResponseDecodeError(
            f"creating the conversation returned an id that is not a UUID: {conv_id!r}",
            body=body,
        ) from None


@attrs.frozen
class TurnRows:
    """What :func:`begin_turn` created: the conversation, the turn's
    timestamp, and the user node and the node the answer goes into."""

    conv_id: str
    timestamp: str
    user_node_id: str
    ai_node_id: str
    user_position: Position
    ai_position: Position


def begin_turn(
    state: ClientState,
    conversation: Conversation,
    prompt: str,
    deadline: float,
    ai_data: Callable[[str], dict[str, Any]] | None,
) -> Operation[TurnRows]:
    """The rows every turn starts with: the conversation (created if it has
    none), then the user node under the previous answer, then (unless
    ``ai_data`` is ``None``: the server makes a video's node itself) the node
    the answer goes into, with ``ai_data(timestamp)`` as its data."""
    if conversation.conv_id is None:
        created = yield from call(state, lambda e: e.create_conversation(), deadline=deadline)
        with created.decoding():
            conversation.conv_id = created_conversation_id(created.json())
    claim_thread(state, conversation)
    if conversation.resume:
        yield from resume(state, conversation, deadline)
    conv_id = require_uuid(conversation.conv_id, "conv_id")
    parent_id = conversation.last_ai_node_id or conv_id
    unix_now: float = yield WallClock()
    timestamp = str(int(unix_now))
    user_node_id: str = yield NewId()
    ai_node_id: str = yield NewId()
    user_position, ai_position = turn_layout(conversation.turns_since_anchor, conversation.anchor)
    # The slot is taken before the insert is sent: an insert the server applied for a
    # call that timed out or was cancelled must not be drawn over by the next turn.
    conversation.turns_since_anchor += 1
    _count_turn_begun(conversation)
    try:
        yield from call(
            state,
            lambda e: e.create_user_node(
                node_id=user_node_id,
                conv_id=conv_id,
                parent_id=parent_id,
                prompt=prompt,
                timestamp=timestamp,
                position=user_position,
                children=[] if ai_data is None else [ai_node_id],
            ),
            deadline=deadline,
        )
    except APIError as error:
        conversation.turns_since_anchor -= 1  # refused: nothing was drawn there
        if _missing_reference(error):  # PostgREST's foreign key violation
            raise rewrap(
                error,
                NotFoundError,
                f"conversation {conv_id} does not exist (or the node the turn would hang "
                f"under, {parent_id}, does not)",
            ) from error
        raise
    if ai_data is not None:
        data = ai_data(timestamp)
        try:
            yield from call(
                state,
                lambda e: e.create_ai_node(
                    node_id=ai_node_id,
                    conv_id=conv_id,
                    parent_id=user_node_id,
                    data=data,
                    position=ai_position,
                ),
                deadline=deadline,
            )
        except FlowithError as error:
            if _never_applied(error):
                yield from _take_back_child(state, user_node_id, ai_node_id, deadline)
            raise
    return TurnRows(conv_id, timestamp, user_node_id, ai_node_id, user_position, ai_position)


def _never_applied(error: FlowithError) -> bool:
    """Whether the server said no to an insert, or it never left. (A timeout or a
    dropped connection after sending may have landed.)"""
    if isinstance(error, APIError):
        return not isinstance(error, ResponseDecodeError)  # a 2xx it could not read
    return getattr(error, "request_sent", True) is False


def _take_back_child(
    state: ClientState, user_node_id: str, ai_node_id: str, deadline: float
) -> Operation[None]:
    """Empty the user node's ``c_ids``, which named an answer whose insert was refused,
    so that the canvas names no node that does not exist. Only once a read shows no such
    node: an earlier try of the insert, cut short and retried, may have landed. Best
    effort: the refusal is what the caller hears about, so a failure here is logged."""
    try:
        read = yield from call(state, lambda e: e.poll_node(ai_node_id), deadline=deadline)
        if read.json() == []:
            yield from call(state, lambda e: e.clear_children(user_node_id), deadline=deadline)
    except FlowithError as error:
        log.warning(
            "user node %s may still name its answer %s, whose insert failed: %s: %s",
            user_node_id,
            ai_node_id,
            type(error).__name__,
            error,
        )


def _missing_reference(error: APIError) -> bool:
    """Whether PostgREST refused a row for pointing at one that does not exist."""
    body = error.body
    return error.status_code == 409 and isinstance(body, Mapping) and body.get("code") == "23503"


def resume(state: ClientState, conversation: Conversation, deadline: float) -> Operation[None]:
    """Read an existing conversation's canvas and carry its thread on.

    The thread is the chain of nodes from the newest answer (a failed or
    empty one is passed over) up to the root: its user prompts and visible
    answers (``<think>`` left out, as a session sends them) become the
    messages the next turn sends, the answer is what the next user node hangs from, and its
    answers count as turns. Media turns are left out of the messages, as a session leaves
    them. A conversation without an answer yet carries on from its root. Either way the
    next turn is laid out below the canvas's lowest node (in the answer's column), so that
    it covers no node, such as a failed turn's below the answer.
    """
    conv_id = require_uuid(conversation.conv_id, "conv_id")
    nodes = yield from read_canvas(
        state, conv_id, context="the conversation's canvas", deadline=deadline
    )
    by_id = {node.node_id: node for node in nodes}
    answers = [node for node in nodes if node.node_type == NODE_TYPE_AI and _answered(node)]
    thread: list[FlowNode] = []
    seen: set[str] = set()
    node = answers[-1] if answers else None
    while node is not None and node.node_id not in seen:  # a cycle cannot loop forever
        seen.add(node.node_id)
        thread.append(node)
        node = by_id.get(node.p_id)
    thread.reverse()
    messages: list[dict[str, Any]] = []
    for asked, answered in itertools.pairwise(thread):
        if (asked.node_type, answered.node_type) == (NODE_TYPE_USER, NODE_TYPE_AI) and not (
            _is_media(answered)
        ):
            messages += [
                {"role": "user", "content": asked.text},
                {"role": "assistant", "content": split_think(answered.text)[0]},
            ]
    conversation.messages = messages
    conversation.turn = sum(1 for node in thread if node.node_type == NODE_TYPE_AI)
    if nodes:
        lowest = max(_position(node).y for node in nodes)
        column = _position(thread[-1]).x if thread else 0
        conversation.anchor = Position(column, lowest)
    if thread:
        conversation.last_ai_node_id = thread[-1].node_id
    conversation.turns_since_anchor = 0
    conversation.resume = False


def _answered(node: FlowNode) -> bool:
    """Whether an AI node holds an answer a thread can go on from (not a
    failed or unfinished turn, which a session would not have counted)."""
    data = node.data
    status = data.get("status")
    failed = is_failure(status, data.get("error"), data.get("error_type"))
    # A row still being written ("generating", with the text so far) is no answer yet,
    # as node_state() says; a row without a status that holds text is one.
    writing = isinstance(status, str) and status.lower() in _PENDING_STATUSES - {""}
    return bool(node.text) and not failed and not writing


def _is_media(node: FlowNode) -> bool:
    return read_flag(node.data.get("isImage")) or "video" in str(node.data.get("mode", "")).lower()


#: Past this magnitude a coordinate is no JavaScript number the web app could have
#: stored exactly (Number.MAX_SAFE_INTEGER + 1): it is read as 0, like a missing one.
_LARGEST_COORDINATE = 2**53


def _position(node: FlowNode) -> Position:
    """A node's canvas position (the web app may store floats, or nothing, and a
    server may send anything: NaN, or an integer of hundreds of digits)."""
    coordinates = []
    for axis in ("x", "y"):
        value = read_number(node.position.get(axis))  # also a number stored as text
        if value is not None and -_LARGEST_COORDINATE <= value <= _LARGEST_COORDINATE:
            coordinates.append(round(value))
        else:
            coordinates.append(0)
    return Position(*coordinates)


def generate(
    state: ClientState,
    prompt: str,
    *,
    conv_id: str | None = None,
    model: str | None = None,
    images: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: bool = False,
) -> Operation[GenerationOutput]:
    """One turn in a new conversation, or appended to ``conv_id``'s root."""
    conversation = Conversation(conv_id=conv_id)
    return (
        yield from send(
            state, conversation, prompt, model=model, images=images, timeout=timeout, stream=stream
        )
    )


def send(
    state: ClientState,
    conversation: Conversation,
    prompt: str,
    *,
    model: str | None = None,
    images: Sequence[str] | None = None,
    timeout: float | None = None,
    stream: bool = False,
) -> Operation[GenerationOutput]:
    """One turn of ``conversation``; on success the conversation moves on.

    ``timeout`` (else the client's ``result_timeout``) bounds the whole call,
    row creation and polling included. With ``stream`` the operation emits a
    :class:`GenerationOutput` per delta before returning the final one.
    """
    check_seconds("timeout", timeout, endless=True)
    image_urls = require_urls(images, "images")
    if model is not None:
        model = require_option(model, "model")
    # Refused before any row is made: an empty prompt left an empty conversation behind.
    require_prompt(prompt, "images", given=bool(image_urls))
    with one_turn(conversation):
        started: float = yield Now()
        deadline = started + (state.result_timeout if timeout is None else timeout)
        chosen_model = model or conversation.model or state.default_model

        rows = yield from begin_turn(
            state,
            conversation,
            prompt,
            deadline,
            lambda timestamp: {
                "title": "AI",
                "value": "",
                "mode": "General",
                "timestamp": timestamp,
                "isImage": False,
                "model": chosen_model,
                "status": "init",
            },
        )
        conv_id, ai_node_id = rows.conv_id, rows.ai_node_id
        content = _messages_content(prompt, image_urls)

        messages = [*conversation.messages, {"role": "user", "content": content}]
        yield Subscribe(ai_node_id, deadline=deadline)
        start_reply = yield from call(
            state,
            lambda e: e.start_completion(
                model=chosen_model, messages=messages, node_id=ai_node_id, conv_id=conv_id
            ),
            deadline=deadline,
        )
        refuse_failed_start(start_answer(start_reply), ai_node_id)
        log.debug("node %s: generating with %s in %s", ai_node_id, chosen_model, conv_id)

        result = yield from _await_text(
            state,
            node_id=ai_node_id,
            conv_id=conv_id,
            model=chosen_model,
            deadline=deadline,
            stream=stream,
        )
        conversation.turn += 1
        conversation.messages = [*messages, {"role": "assistant", "content": result.text}]
        conversation.last_ai_node_id = ai_node_id
        return result


def read_row(
    state: ClientState, node_id: str, deadline: float, *, media: bool = False
) -> Operation[NodeDone | NodePending]:
    """Read a node's row once: done, still pending, or (raised) failed.

    A read that the deadline cuts short is the generation's timeout, said as
    such: its own limit was only what was left of the deadline (a few ms, say).
    """
    try:
        response = yield from call(state, lambda e: e.poll_node(node_id), deadline=deadline)
    except TimeoutError as error:
        if not error.deadline_passed:
            raise
        raise TimeoutError(
            f"generation of node {node_id} did not finish in time (the deadline passed "
            "while its row was being read)",
            request_sent=error.request_sent,
            deadline_passed=True,
        ) from error
    with response.decoding():
        outcome = node_state(response.json(), media=media)
    if isinstance(outcome, NodeFailedState):
        raise failure(node_id, outcome.status, outcome.error, outcome.error_type)
    return outcome


def _await_text(
    state: ClientState,
    *,
    node_id: str,
    conv_id: str,
    model: str,
    deadline: float,
    stream: bool,
) -> Operation[GenerationOutput]:
    """Follow ``node_id`` until it is final (see :func:`_follow_text`); a failure
    after text came carries that text as its ``partial_output``."""
    progress = _Progress()
    try:
        return (
            yield from _follow_text(
                state,
                progress,
                node_id=node_id,
                conv_id=conv_id,
                model=model,
                deadline=deadline,
                stream=stream,
            )
        )
    except FlowithError as error:
        heard = progress.text_heard()
        if heard:
            visible, reasoning = split_think_raw(heard)
            error.partial_output = GenerationOutput(
                text=visible.strip(),
                node_id=node_id,
                conv_id=conv_id,
                model=model,
                metadata={"raw_text": heard},
                reasoning=reasoning.strip(),
            )
        raise


def _follow_text(
    state: ClientState,
    progress: _Progress,
    *,
    node_id: str,
    conv_id: str,
    model: str,
    deadline: float,
    stream: bool,
) -> Operation[GenerationOutput]:
    """Follow ``node_id`` on the stream, then its row, until it is final.

    While the stream is up, a node that hears no text for a while has its row
    read (:class:`~flowith_proto.row_checks.RowChecks` says when, the last time
    before the deadline): a terminal event that went missing is then found
    rather than waited for until the deadline.
    """
    now: float = yield Now()
    checks = RowChecks(state.stall_interval, now, deadline)
    row: NodeDone | NodePending = NodePending()
    streaming = True
    while streaming:
        item = yield NextEvent(node_id, checks.wake_at())
        if isinstance(item, DeadlineReached):
            now = yield Now()
            if not checks.row_due(now):
                raise TimeoutError(
                    f"generation of node {node_id} did not finish in time", deadline_passed=True
                ) from read_failure(row)
            log.info("no news of node %s for %ss; reading its row", node_id, checks.interval)
            # A safety net while the stream lives: its failures end nothing.
            row = yield from poll_row(state, node_id, deadline, streaming=True)
            if isinstance(row, NodeDone):
                return _from_row(progress, row, node_id, conv_id, model, stream)
            checks.heard((yield Now()))
        elif isinstance(item, StreamEnded):
            log.info("stream ended before node %s finished (%s); polling", node_id, item.reason)
            streaming = False
        elif isinstance(item, Chunks):
            checks.heard((yield Now()))
            text_delta, reasoning_delta = progress.feed(item.chunks, item.seq)
            if stream and (text_delta or reasoning_delta):
                yield Emit(
                    GenerationOutput(
                        text=progress.visible,
                        text_delta=text_delta,
                        node_id=node_id,
                        conv_id=conv_id,
                        model=model,
                        metadata=item.raw,
                        reasoning=progress.reasoning,
                        reasoning_delta=reasoning_delta,
                    )
                )
        elif isinstance(item, NodeFailed):
            raise failure(node_id, item.status, item.error, item.error_type)
        elif isinstance(item, (Complete, WorkflowComplete)):
            separate = item.reasoning if isinstance(item, Complete) else ""
            chosen = (item.model if isinstance(item, Complete) else "") or model
            raw = item.result
            if not raw:
                # Finished, but without the text: the chunks heard may be only part of
                # it (D3), so the row, which holds it all, is asked first.
                row = yield from row_if_readable(state, node_id, deadline)
                if isinstance(row, NodeDone) and row.value:
                    return _from_row(progress, row, node_id, conv_id, chosen, stream, separate)
                raw = progress.text_heard()
            return _final(progress, raw, separate, node_id, conv_id, chosen, stream, {**item.raw})
        elif isinstance(item, MalformedEvent):
            log.warning("skipping a malformed event for node %s: %s", node_id, item.reason)

    # The stream ended without a terminal event: the row is the authority.
    while True:
        row = yield from poll_row(state, node_id, deadline, previous=row)
        if isinstance(row, NodeDone):
            return _from_row(progress, row, node_id, conv_id, model, stream)
        now = yield Now()
        if now < deadline:
            yield Sleep(min(now + max(state.poll_interval, next_read_wait(row)), deadline))
            now = yield Now()
        if now >= deadline:  # no time is left for another read
            raise TimeoutError(
                f"node {node_id} was still generating at the deadline", deadline_passed=True
            ) from read_failure(row)


def poll_row(
    state: ClientState,
    node_id: str,
    deadline: float,
    *,
    media: bool = False,
    previous: NodeDone | NodePending | None = None,
    streaming: bool = False,
) -> Operation[NodeDone | NodePending]:
    """:func:`read_row` for a generation that waits for its node: a read that fails
    for a passing reason (the network, a limit of the read's own rather than the
    deadline, or a 408, 429 or 5xx once the call's retries are spent) is
    :class:`RowUnreadable`, a node still pending. The stream or the next read may
    yet bring the result, which a blip of the database would otherwise lose.

    Once the stream is gone (not ``streaming``), the failure is raised after
    :data:`MAX_UNREADABLE` such reads in a row (``previous`` is the last read's
    outcome), or when the server asks to wait (``Retry-After``) past the deadline:
    the row is then all there is to wait on. A read checking on a quiet stream
    (``streaming``) ends nothing: the stream may still bring the result. A
    failed node, a refused token, a 404 raise at once either way."""
    try:
        return (yield from read_row(state, node_id, deadline, media=media))
    except (ConnectionFailedError, TimeoutError, APIError) as caught:
        error = caught
    if isinstance(error, TimeoutError):
        passing = not error.deadline_passed
    elif isinstance(error, APIError):
        passing = error.status_code in RETRY_STATUSES
    else:
        passing = True
    failures = previous.failures + 1 if isinstance(previous, RowUnreadable) else 1
    unreadable = RowUnreadable(error, failures)
    if not passing or (not streaming and failures >= MAX_UNREADABLE):
        raise error
    if not streaming and unreadable.wait and (yield Now()) + unreadable.wait >= deadline:
        raise error  # the server asks for a wait the deadline does not leave
    log.warning("could not read the row of node %s (%s); trying again later", node_id, error)
    return unreadable


def next_read_wait(row: NodeDone | NodePending) -> float:
    """The least wait before the row is read again: what the server asked for when
    the last read failed with a ``Retry-After``, else 0."""
    return row.wait if isinstance(row, RowUnreadable) else 0.0


def read_failure(row: NodeDone | NodePending) -> FlowithError | None:
    """The error of a last read that failed, for the deadline's error to name as
    its cause: a timeout that was a failing database says so."""
    return row.error if isinstance(row, RowUnreadable) else None


def row_if_readable(
    state: ClientState, node_id: str, deadline: float, *, media: bool = False
) -> Operation[NodeDone | NodePending]:
    """The node's row, or pending when it cannot be read: what the stream
    already brought is then the result, rather than lost to the error."""
    try:
        return (yield from read_row(state, node_id, deadline, media=media))
    except (ConnectionFailedError, TimeoutError, APIError) as error:
        # The network's or the server's trouble only: a failed node, a refused
        # token, a closed client or a replay that lacks the read still raise.
        if isinstance(error, (AuthenticationError, ValidationError)):
            raise
        log.warning(
            "could not read the row of node %s (%s); keeping the streamed text", node_id, error
        )
        return NodePending()


def _from_row(
    progress: _Progress,
    row: NodeDone,
    node_id: str,
    conv_id: str,
    model: str,
    stream: bool,
    separate_reasoning: str = "",
) -> GenerationOutput:
    raw = row.value or progress.text_heard()
    node_model = row.data.get("model")
    metadata = {"type": "complete", "nodeId": node_id, "result": raw, "nodeData": row.data}
    chosen = node_model if isinstance(node_model, str) and node_model else model
    return _final(progress, raw, separate_reasoning, node_id, conv_id, chosen, stream, metadata)


def refuse_failed_start(body: Any, node_id: str) -> None:
    """A job that its start answer says failed at once (``{"status": "error",
    "error": "insufficient credits"}``) is raised as such, rather than waited for
    until the deadline. Any other answer is left alone: its shape is unknown
    (protocol.md 2.1), and the node's events and row say how the job goes."""
    if not isinstance(body, Mapping):
        return
    status, error, error_type = body.get("status"), body.get("error"), body.get("error_type")
    if is_failure(status, error, error_type):
        raise failure(
            node_id,
            status if isinstance(status, str) and status else "failed",
            str(error or ""),
            str(error_type or ""),
        )


def start_answer(response: Response) -> Any:
    """The start answer's JSON, or ``None`` when it has none to read."""
    try:
        return response.json()
    except ResponseDecodeError:
        return None


def failure(node_id: str, status: str, error: str, error_type: str) -> GenerationError:
    """The error a node's failure raises, from what its event or row says of it.
    Its message quotes the server's words on one line (a provider's traceback spans
    many); ``error`` and ``error_type`` keep them as they came."""
    reason = one_line(error) or one_line(status) or "unknown error"
    suffix = f" ({one_line(error_type)})" if error_type.strip() else ""
    return GenerationError(
        f"generation of node {node_id} failed: {reason}{suffix}",
        status=status,
        error=error,
        error_type=error_type,
        node_id=node_id,
    )


def _final(
    progress: _Progress,
    raw: str,
    separate_reasoning: str,
    node_id: str,
    conv_id: str,
    model: str,
    stream: bool,
    metadata: dict[str, Any],
) -> GenerationOutput:
    """The result from the authoritative text; when streaming, the deltas
    carry only what the caller has not seen yet."""
    visible, reasoning = split_think_raw(raw)
    if not reasoning.strip():
        # Else what the stream showed: a row holds the answer alone, and reasoning
        # already received is not lost because the result came from there.
        reasoning = separate_reasoning if separate_reasoning.strip() else progress.reasoning
    metadata["raw_text"] = raw
    metadata["raw_reasoning"] = reasoning  # as the old client's key: unstripped, whole
    text_delta = reasoning_delta = ""
    if stream:
        text_delta = progress.remainder(visible, progress.visible, "text")
        reasoning_delta = progress.remainder(reasoning, progress.reasoning, "reasoning")
    log.debug(
        "node %s: done, %d characters of text and %d of reasoning",
        node_id,
        len(visible.strip()),
        len(reasoning.strip()),
    )
    return GenerationOutput(
        text=visible.strip(),
        text_delta=text_delta,
        node_id=node_id,
        conv_id=conv_id,
        model=model,
        metadata=metadata,
        reasoning=reasoning.strip(),
        reasoning_delta=reasoning_delta,
    )
