"""Playing a cassette back: the shared tape, and a synchronous replay of one operation.

:class:`Tape` answers requests from a recording. It matches each live request
(scrubbed the same way the recording was) against the requests not yet
played, in order, and raises :class:`CassetteMismatch` with a readable diff
when nothing matches, so a test fails loudly when the code under test changed
what it sends. The async replay client (``flowith_httpx.testing``) and
:func:`replay_operation`, which needs no event loop at all, both read it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.cassette import (
    REDACTED,
    CassetteError,
    CassetteMismatch,
    Scrubber,
    decode_body,
    describe_difference,
    read_cassette,
    request_record,
)
from flowith_proto.config import FlowithConfig, check_seconds
from flowith_proto.demux import StreamEnded
from flowith_proto.effects import (
    DEADLINE,
    Alias,
    Effect,
    Emit,
    Jitter,
    NewId,
    NextEvent,
    Now,
    Operation,
    RefreshToken,
    Send,
    Sleep,
    Subscribe,
    WallClock,
)
from flowith_proto.errors import (
    ConnectionFailedError,
    FlowithError,
    ResponseDecodeError,
    TimeoutError,
)
from flowith_proto.operation_names import OperationNames
from flowith_proto.request import Request, Response, headers_of, require_uuid
from flowith_proto.state import ClientState
from flowith_proto.stream import StreamRouter
from flowith_proto.urls import ascii_url

__all__ = ["ReplayResult", "Tape", "replay_operation"]

#: The key under which a stream record keeps its place in the whole recording.
ORDER = "_order"

T = TypeVar("T")

#: Placeholders a replay signs with; the recording never held the real ones.
REPLAY_ACCESS_TOKEN = "replayed-access-token"
REPLAY_REFRESH_TOKEN = "replayed-refresh-token"

_VALUE_KINDS = ("clock", "wallclock", "id", "jitter")


#: The settings a cassette's header records; those that may be endless (recorded as
#: ``null``: JSON has no infinity).
_SETTINGS = ("timeout", "result_timeout", "poll_interval", "max_retries")
_ENDLESS = frozenset({"result_timeout"})


def _recorded_settings(header: Mapping[str, Any]) -> dict[str, float]:
    settings = header.get("settings", {})
    if not isinstance(settings, dict):
        raise CassetteError("the cassette header's 'settings' must be an object")
    recorded: dict[str, float] = {}
    for name, value in settings.items():
        if name not in _SETTINGS:
            continue  # a later version's: this one does not use it
        if value is None and name in _ENDLESS:
            value = math.inf
        try:
            if name == "max_retries":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError
            else:  # the client's own rule for durations
                check_seconds(name, value, endless=name in _ENDLESS)
        except ValueError:  # ValidationError is one
            raise CassetteError(
                f"the cassette header's {name!r} is not usable: {value!r}"
            ) from None
        recorded[name] = value
    return recorded


class Tape:
    """A cassette loaded for playback."""

    def __init__(self, source: str | os.PathLike[str] | Iterable[str]) -> None:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:  # decoded line by line: see read_cassette()
                self.header, records = read_cassette(handle)
        else:
            self.header, records = read_cassette(source)
        # What each operation drew, by its name and the kind of value (a cassette
        # recorded before operations were named keeps them all under "").
        self._values: dict[tuple[str, str], deque[Any]] = {}
        self._requests: list[dict[str, Any]] = []
        self._answers: dict[int, dict[str, Any]] = {}
        self.streams: dict[int, deque[dict[str, Any]]] = {}
        for position, record in enumerate(records):
            kind = record["kind"]
            if kind in _VALUE_KINDS:
                key = (str(record.get("op", "")), kind)
                self._values.setdefault(key, deque()).append(record["value"])
            elif kind == "request":
                self._requests.append(_in_ascii(record))
            elif kind in ("response", "error", "stream"):
                self._answers[int(record["n"])] = record
                if kind == "stream":
                    self.streams[int(record["n"])] = deque()
            else:  # chunk, read_timeout or end (read_cassette() checked the kinds)
                # Where it was recorded among the other streams' records: reads
                # of two streams at once are released in this order.
                record[ORDER] = position
                self.streams.setdefault(int(record["n"]), deque()).append(record)
        named = [r for r in records if "op" in r and r["kind"] in (*_VALUE_KINDS, "request")]
        self._named = bool(named)
        # Recorded operation names not yet taken by a replayed operation, in the
        # order they first drew a value or sent a request.
        self._unclaimed = list(dict.fromkeys(str(r["op"]) for r in named if r["op"]))
        self._played: set[int] = set()
        #: Every recorded request up to this number has been sent again: a stream
        #: record made after request k waits until this reaches k.
        self.played_through = 0
        self.scrubber = Scrubber()
        self._names = OperationNames(self.scrubber, version=self.header["version"])
        self._settings = _recorded_settings(self.header)
        #: The recorded user id when it is not the token's own (see :meth:`state`).
        self.named_user_id = ""

    # -- what the recording knew ----------------------------------------------------

    def state(self) -> ClientState:
        """A client state like the recorded one: same hosts, same user, tokens
        with the recorded claims (never the recorded secrets)."""
        header = self.header
        token = header.get("token") or REPLAY_ACCESS_TOKEN
        try:
            credentials = Credentials.from_tokens(
                token,
                refresh_token=REPLAY_REFRESH_TOKEN if header.get("refresh_token") else "",
                user_id=str(header.get("user_id", "")),
            )
            if credentials.user_id != Credentials.from_tokens(token).user_id:
                # Named apart from the token's: checked as a client checks a user_id.
                self.named_user_id = require_uuid(credentials.user_id, "user_id")
            config = FlowithConfig(
                edge_url=str(header.get("edge_url", FlowithConfig().edge_url)),
                supabase_url=str(header.get("supabase_url", FlowithConfig().supabase_url)),
            )
        except (ValueError, FlowithError) as exc:  # a hand-edited header (ValidationError too)
            raise CassetteError(f"the cassette header is not usable: {exc}") from None
        self.scrubber.learn(credentials.secrets)
        settings = self.settings
        state = ClientState(config=config, credentials=credentials)
        return attrs.evolve(
            state,
            result_timeout=settings.get("result_timeout", state.result_timeout),
            poll_interval=settings.get("poll_interval", state.poll_interval),
            retry=attrs.evolve(
                state.retry,
                max_retries=int(settings.get("max_retries", state.retry.max_retries)),
            ),
        )

    @property
    def settings(self) -> dict[str, float]:
        """The recorded client's ``timeout``, ``result_timeout``, ``poll_interval`` and
        ``max_retries``, those it recorded (none in a cassette older than them)."""
        return dict(self._settings)

    # -- playing -------------------------------------------------------------------

    def name(self, operation: Operation[Any]) -> str:
        """The name ``operation``'s draws were recorded under (see
        :mod:`flowith_proto.operation_names`).

        An operation whose arguments differ from every recorded one (the test
        changed a prompt) takes the first unclaimed recording of the same
        function instead, so that its first request fails with a diff of what
        changed rather than with a missing name.
        """
        name = self._names.name(operation)
        if name in self._unclaimed:
            self._unclaimed.remove(name)
            return name
        function = name.split(":", 1)[0]
        for candidate in self._unclaimed:
            if candidate.split(":", 1)[0] == function:
                self._unclaimed.remove(candidate)
                return candidate
        return name

    def draw(self, kind: str, operation: str) -> Any:
        """The next clock, wall time, id or jitter value the named operation drew."""
        values = self._values.get((operation if self._named else "", kind))
        if values:
            return values.popleft()
        function = operation.split(":", 1)[0] or "the session"
        if self._named and not self._recorded(operation):
            raise self._not_recorded(operation)
        raise CassetteMismatch(
            f"{function} ({operation}) asked for a '{kind}' value the recording does not "
            "hold: it did more than the recorded run (a call the recording lacks, a "
            "stream read further than it was recorded, or a timeout other than the "
            "recorded call's, which changes when it reads the clock, polls and retries)"
        )

    def _recorded(self, operation: str) -> bool:
        """Whether the recording holds anything the named operation drew or sent."""
        return any(name == operation for name, _ in self._values) or any(
            str(r.get("op", "")) == operation for r in self._requests
        )

    def _not_recorded(self, operation: str) -> CassetteMismatch:
        ran = {name for name, _ in self._values} | {str(r.get("op", "")) for r in self._requests}
        recorded = sorted({name.split(":", 1)[0] for name in ran if name})
        return CassetteMismatch(
            f"{operation.split(':', 1)[0]} ({operation}) was not recorded with these "
            f"arguments, or not this many times; the recording ran: {', '.join(recorded)}"
        )

    def match(self, request: Request, *, stream: bool, operation: str = "") -> int:
        """The number of the recorded request ``request`` replays: the first
        unplayed one equal to it that the named operation sent ("" for a shared
        stream), so operations running at once each get their own answers."""
        live = request_record(request, self.scrubber)
        waiting = [
            r
            for r in self._requests
            if int(r["n"]) not in self._played
            and (not self._named or str(r.get("op", "")) == operation)
        ]
        for record in waiting:
            if all(_matches(record.get(key), live[key]) for key in _MATCHED):
                number = int(record["n"])
                self._played.add(number)
                while self.played_through + 1 in self._played:
                    self.played_through += 1
                kind = self._answers.get(number, {}).get("kind")
                if stream != (kind == "stream"):
                    what = "a stream" if stream else "a plain request"
                    raise CassetteMismatch(f"request #{number} was not recorded as {what}")
                return number
        if not waiting:
            if self._named and operation and not self._recorded(operation):
                raise self._not_recorded(operation)
            sender = _operation_shown(operation) if operation else "the replay"
            raise CassetteMismatch(
                f"{request.method} {live['url']} was not recorded: {sender} sent every "
                "request the recording holds for it and asks for one more"
            )
        same_path = [
            r
            for r in waiting
            if r.get("method") == live["method"]
            and str(r.get("url", "")).split("?")[0] == live["url"].split("?")[0]
        ]
        expected = (same_path or waiting)[0]
        raise CassetteMismatch(
            f"{request.method} {live['url']} does not match the recording "
            f"(closest: request #{expected['n']}):\n{describe_difference(expected, live)}"
        )

    def answer(self, number: int) -> Response:
        """The recorded answer to request ``number``, or its recorded failure."""
        record = self._answers.get(number)
        if record is None:
            raise CassetteMismatch(f"request #{number} has no recorded answer")
        if record["kind"] == "error":
            raise _recorded_error(record)
        return Response(int(record["status"]), headers_of(record.get("headers", ())), _body(record))

    def stream_head(self, number: int) -> tuple[int, tuple[tuple[str, str], ...]]:
        record = self._answers[number]
        if record["kind"] == "error":
            raise _recorded_error(record)
        return int(record["status"]), headers_of(record.get("headers", ()))

    def described(self, number: int) -> str:
        """Request ``number`` as a message names it: its method, its path and the
        operation that sent it."""
        for record in self._requests:
            if int(record["n"]) == number:
                operation = str(record.get("op", ""))
                sender = f", sent by {_operation_shown(operation)}" if operation else ""
                path = urlsplit(str(record.get("url", ""))).path
                return f"request #{number} ({record.get('method')} {path}{sender})"
        return f"request #{number}"

    @property
    def unplayed(self) -> list[str]:
        """The recorded requests the replay never sent (``METHOD url``)."""
        return [
            f"{r['method']} {r['url']}" for r in self._requests if int(r["n"]) not in self._played
        ]


def _in_ascii(record: dict[str, Any]) -> dict[str, Any]:
    """A recorded request with its URL as the client now sends it, in ASCII (see
    :mod:`flowith_proto.urls`): one recorded with a base URL such as
    ``http://bücher.example``, which went out as given, still replays."""
    url = record.get("url")
    if isinstance(url, str) and not url.isascii():
        with contextlib.suppress(ValueError):
            record["url"] = ascii_url(url)
    return record


#: What a live request must share with a recorded one to replay it.
_MATCHED = ("method", "url", "body", "headers")
#: What a masked value may have been: a run up to a quote, a space or the next query
#: parameter (a cookie's value, a user id, a token), and up to the character that
#: follows the mask: each run then has one way to match, so a mismatch is found in
#: one pass (runs that could each stop anywhere took exponential time to refuse).
_MASKED_VALUE = '[^"&\\s{}]+'


def _matches(recorded: Any, live: Any) -> bool:
    """Whether ``live`` (a part of a request, scrubbed by the replay) is the
    ``recorded`` one: equal, or equal but where the recording masked a value.

    The recording masks every value it learned as a secret, a cookie's too, and
    a replay never learns a cookie (its ``Set-Cookie`` was masked): a cookie
    whose value a request also holds (``uid=<user id>``) made a faithful replay
    fail. What the recording hid cannot be compared, so it matches any value.
    """
    if recorded == live:
        return True
    if isinstance(recorded, str) and isinstance(live, str):
        # Either side: the replay masks by today's rules what an older recording kept.
        if REDACTED in recorded and _masked_pattern(recorded).fullmatch(live) is not None:
            return True
        return REDACTED in live and _masked_pattern(live).fullmatch(recorded) is not None
    if isinstance(recorded, list) and isinstance(live, list):
        return len(recorded) == len(live) and all(map(_matches, recorded, live))
    if isinstance(recorded, dict) and isinstance(live, dict):
        return recorded.keys() == live.keys() and all(
            _matches(recorded[key], live[key]) for key in recorded
        )
    return False


@functools.lru_cache(maxsize=256)
def _masked_pattern(masked: str) -> re.Pattern[str]:
    parts = masked.split(REDACTED)
    pattern = [re.escape(parts[0])]
    for after in parts[1:]:
        pattern.append(_MASKED_VALUE.format(re.escape(after[:1])) + re.escape(after))
    return re.compile("".join(pattern))


def _operation_shown(operation: str) -> str:
    """An operation's name as a message shows it: its method, then the full name."""
    return f"{operation.split(':', 1)[0]} ({operation})"


def _body(record: Mapping[str, Any]) -> bytes:
    return decode_body(record.get("body")) or b""


def _recorded_error(record: Mapping[str, Any]) -> FlowithError:
    message = str(record.get("message", "recorded failure"))
    sent = bool(record.get("request_sent", True))
    if record.get("type") == "TimeoutError":
        # Whether it left, and whether the caller's deadline cut it, decide its retry.
        passed = bool(record.get("deadline_passed", False))
        return TimeoutError(message, request_sent=sent, deadline_passed=passed)
    if record.get("type") == "ResponseDecodeError":  # an answer the transport could not decode
        status = record.get("status")
        return ResponseDecodeError(message, status if isinstance(status, int) else None)
    return ConnectionFailedError(message, request_sent=sent)


@attrs.frozen
class ReplayResult(Generic[T]):
    """What a synchronous replay produced: what the operation emitted, in
    order, and what it returned (typed as the operation's result)."""

    value: T
    emitted: tuple[Any, ...]


def replay_operation(
    cassette: str | os.PathLike[str] | Iterable[str] | Tape,
    make_operation: Callable[[ClientState], Operation[T]],
) -> ReplayResult[T]:
    """Run one operation against a recording, synchronously, with no event loop.

    ``make_operation`` receives a client state like the recorded one, e.g.
    ``lambda state: generation.generate(state, "hi", stream=True)``. The
    operation gets the recorded ids and times, its requests are matched
    against the recording, and its stream events come from the recorded bytes.
    """
    tape = cassette if isinstance(cassette, Tape) else Tape(cassette)
    state = tape.state()
    operation = make_operation(state)
    player = _SyncPlayer(tape, state, tape.name(operation))
    emitted: list[Any] = []
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = operation.throw(error) if error is not None else operation.send(result)
        except StopIteration as stop:
            return ReplayResult(stop.value, tuple(emitted))
        result, error = None, None
        if isinstance(effect, Emit):
            emitted.append(effect.value)
            continue
        try:
            result = player.perform(effect)
        except (ConnectionFailedError, TimeoutError, ResponseDecodeError) as exc:
            # Every failure a recording holds (see _recorded_error) goes back into the
            # operation, as an async driver's does: the operation may recover from it.
            error = exc


class _SyncPlayer:
    """Performs effects from a tape, one operation at a time."""

    def __init__(self, tape: Tape, state: ClientState, operation: str) -> None:
        self.tape = tape
        self.state = state
        self.operation = operation
        self.router = StreamRouter()
        self.open: dict[str, int] = {}

    def perform(self, effect: Effect) -> Any:
        tape = self.tape
        if isinstance(effect, Now):
            return tape.draw("clock", self.operation)
        if isinstance(effect, WallClock):
            return tape.draw("wallclock", self.operation)
        if isinstance(effect, NewId):
            return tape.draw("id", self.operation)
        if isinstance(effect, Jitter):
            return tape.draw("jitter", self.operation)
        if isinstance(effect, Send):
            return tape.answer(tape.match(effect.request, stream=False, operation=self.operation))
        if isinstance(effect, Sleep):
            return None
        if isinstance(effect, Subscribe):
            self.router.demux.subscribe(effect.node_id)
            endpoints = self.state.endpoints
            for channel in effect.channels:
                if channel not in self.open:
                    request = (
                        endpoints.user_stream() if channel == "stream" else endpoints.user_sse()
                    )
                    number = tape.match(request, stream=True)
                    tape.stream_head(number)
                    self.open[channel] = number
            return None
        if isinstance(effect, Alias):
            self.router.demux.alias(effect.other_id, effect.node_id)
            return None
        if isinstance(effect, NextEvent):
            return self._next_event(effect.node_id)
        if isinstance(effect, RefreshToken):
            raise CassetteMismatch("a synchronous replay cannot refresh tokens")
        raise TypeError(f"effect {effect!r} cannot be replayed")

    def _next_event(self, node_id: str) -> Any:
        while True:
            item = self.router.demux.pop(node_id)
            if item is not None:
                return item
            items = [self.tape.streams[n] for n in self.open.values()]
            pending = [queue for queue in items if queue]
            if not pending:
                return StreamEnded("the recording ends here")
            record = min(pending, key=lambda queue: int(queue[0][ORDER])).popleft()
            if record["kind"] == "chunk":
                self.router.feed(decode_body(record.get("data")) or b"")
            elif record["kind"] == "read_timeout":
                return DEADLINE
            else:
                return StreamEnded(f"recorded end: {record.get('reason')}")


def cassette_path(path: str | os.PathLike[str]) -> Path:
    """A cassette path with the ``.jsonl`` suffix ensured."""
    candidate = Path(path)
    return candidate if candidate.suffix == ".jsonl" else candidate.with_suffix(".jsonl")
