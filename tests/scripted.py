"""A synchronous driver for core operations, with scripted answers.

It performs each effect from a script instead of the network and records every
effect, so a test can assert on the exact sequence of requests an operation
makes, with no event loop anywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flowith_proto.demux import Delivery
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
from flowith_proto.request import Request, Response

T = TypeVar("T")

Responder = Callable[[Request], Response]


def _constant(response: Response) -> Responder:
    return lambda _request: response


def uuid_n(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


class Script:
    """Answers for one operation run: responses by (method, path), node
    events in order, a clock that only moves when the operation sleeps or a
    wait runs out."""

    def __init__(self) -> None:
        self.clock = 1000.0
        self.unix = 1779127457.25
        self.ids = deque(uuid_n(i) for i in range(1, 1000))
        self.responders: dict[tuple[str, str], deque[Responder]] = {}
        self.events: dict[str, deque[Delivery]] = {}
        self.effects: list[Effect] = []
        self.emitted: list[Any] = []
        self.subscribed: list[str] = []
        self.aliases: dict[str, str] = {}
        self.jitter = 0.5
        self.refreshes: list[str] = []
        self.on_refresh: Callable[[], None] | None = None

    def on(self, method: str, path: str, *answers: Response | Responder) -> None:
        queue = self.responders.setdefault((method, path), deque())
        for answer in answers:
            queue.append(answer if callable(answer) else _constant(answer))

    def feed(self, node_id: str, items: Iterable[Delivery]) -> None:
        self.events.setdefault(node_id, deque()).extend(items)

    @property
    def requests(self) -> list[Request]:
        return [e.request for e in self.effects if isinstance(e, Send)]

    def perform(self, effect: Effect) -> Any:
        self.effects.append(effect)
        if isinstance(effect, Now):
            return self.clock
        if isinstance(effect, WallClock):
            return self.unix
        if isinstance(effect, NewId):
            return self.ids.popleft()
        if isinstance(effect, Jitter):
            return self.jitter
        if isinstance(effect, RefreshToken):
            self.refreshes.append(effect.seen_token)
            if self.on_refresh is None:
                raise AssertionError("unscripted token refresh")
            self.on_refresh()
            return None
        if isinstance(effect, Send):
            path = effect.request.url.split("?", 1)[0].split("/", 3)[3]
            key = (effect.request.method, "/" + path)
            answers = self.responders.get(key)
            if not answers:
                raise AssertionError(f"unscripted request {key}")
            responder = answers[0] if len(answers) == 1 else answers.popleft()
            return responder(effect.request)
        if isinstance(effect, Subscribe):
            self.subscribed.append(effect.node_id)
            return None
        if isinstance(effect, Alias):
            self.aliases[effect.other_id] = effect.node_id
            return None
        if isinstance(effect, NextEvent):
            assert effect.node_id in self.subscribed, "read before subscribing"
            queue = self.events.get(effect.node_id)
            if queue:
                return queue.popleft()
            self.clock = max(self.clock, effect.deadline)
            return DEADLINE
        if isinstance(effect, Sleep):
            assert effect.until >= self.clock
            self.clock = effect.until
            return None
        if isinstance(effect, Emit):
            self.emitted.append(effect.value)
            return None
        raise AssertionError(f"unknown effect {effect!r}")

    def run(self, operation: Operation[T]) -> T:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = operation.throw(error) if error is not None else operation.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            error = None
            try:
                result = self.perform(effect)
            except Exception as exc:  # thrown back, as a transport would
                result, error = None, exc


def json_response(status: int, body: bytes = b"") -> Response:
    return Response(status, (("content-type", "application/json"),), body)
