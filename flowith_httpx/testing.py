"""Offline testing: replay a recorded session with the client's own API.

Record once against the real service or the fake (``FlowithClient(...,
record_to="session.jsonl")``), then replay anywhere, with no network, on
asyncio or trio::

    from flowith_httpx.testing import ReplayClient

    async with ReplayClient("session.jsonl") as client:
        reply = await client.generate("What is the capital of Poland?")

A :class:`ReplayClient` has exactly the public API of ``FlowithClient``. It
hands the recorded ids and times back to the operations, answers each request
from the recording (a request that differs fails with a diff), and delivers
the recorded stream bytes in the recorded order. It sends nothing, but lives
in this package, so it needs the ``httpx`` extra installed.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from flowith_proto import extras

try:
    import anyio
    import anyio.lowlevel
    import anyio.to_thread

    from flowith_httpx.client import cancellable, race, running_loop, shielded
except ModuleNotFoundError as exc:  # installed without the httpx extra: say so
    extras.explain(exc, __name__, "httpx")
    raise
from flowith_proto.abc import ByteStream, FlowithClientBase, Signal
from flowith_proto.cassette import CassetteError, CassetteMismatch, decode_body
from flowith_proto.codings import ContentDecodingError, broken_stream
from flowith_proto.config import DEFAULT_TIMEOUT, check_seconds
from flowith_proto.effects import Operation
from flowith_proto.errors import ConnectionFailedError
from flowith_proto.replay import ORDER, Tape, replay_operation
from flowith_proto.request import Request, Response

__all__ = ["CassetteError", "CassetteMismatch", "ReplayClient", "replay_operation"]

T = TypeVar("T")

#: Real seconds a replay waits, by default, for something the recording says will
#: happen before it declares the replay stuck (``ReplayClient(stall_timeout=...)``).
STALL_SECONDS = 10.0
#: Turns of the event loop in a row with nothing replayed after which a replay's
#: sleeper takes the others for idle (see ReplayClient._sleep_until).
_IDLE_TURNS = 20


class _Signal:
    """A wake-up whose deadline is on the replay's virtual clock."""

    __slots__ = ("_client", "_event")

    def __init__(self, client: ReplayClient) -> None:
        self._client = client
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, deadline: float | None) -> bool:
        if self._event.is_set():
            return True
        if deadline is not None and deadline <= self._client._clock:
            return False
        stall = self._client.stall_timeout
        with anyio.move_on_after(stall):
            await self._event.wait()
            return True
        raise CassetteMismatch(
            f"the replay is stuck: after {stall:g}s the recording had not woken this waiter"
        )


class _ReplayStream:
    """A recorded stream body: its chunks, timeouts and end, in order.

    A record is released once the requests sent before it was recorded have
    been sent again (a stream event never overtakes its cause) and, while other
    streams are being read too (a race of reads), once no other holds a record
    recorded before it: the reads end in the recorded order. A read yields
    before it takes its record, so a read cancelled meanwhile takes nothing.
    """

    def __init__(self, client: ReplayClient, number: int) -> None:
        self._client = client
        self._items = client._tape.streams.get(number) or deque()
        self._number = number

    async def read(self, deadline: float | None) -> bytes | None:
        items = self._items
        look = deadline is not None and deadline <= self._client._clock
        if look and not (items and items[0].get("look")):
            return None  # a look at what has arrived: recorded only where it took something
        if not items:
            raise CassetteMismatch(
                f"stream #{self._number} was read further than the recording goes"
            )
        client = self._client
        client._reads.add(self)
        try:
            with anyio.move_on_after(client.stall_timeout):
                while True:
                    await anyio.lowlevel.checkpoint()  # reads started together all register
                    blocker = self._blocker()
                    if blocker is None:
                        return self._take(items.popleft(), deadline)
                    await client._progress.wait(None)
            raise CassetteMismatch(
                f"stream #{self._number} {blocker}; after {client.stall_timeout:g}s the replay "
                "gave up: the code under test waits for something the recording does not hold "
                "(a call made differently, a timeout other than the recorded call's "
                "included, which changes when it polls, or a call left out, or made in "
                "another order than recorded while its events share a stream with the "
                "others', or a cassette cut short or edited by hand)"
            )
        finally:
            client._reads.discard(self)
            client._progress.fire()

    def _blocker(self) -> str | None:
        """Why the next record may not be taken yet, or ``None``."""
        record = self._items[0]
        after = int(record.get("after", 0))
        played = self._client._tape.played_through
        if played < after:
            return (
                f"holds data recorded after request #{after}, but "
                f"{self._client._tape.described(played + 1)} was never sent again"
            )
        mine = int(record[ORDER])
        for other in self._client._reads:
            if other is not self and other._items and int(other._items[0][ORDER]) < mine:
                return (
                    f"holds data recorded after stream #{other._number}'s next data, "
                    "which the replay never took"
                )
        return None

    def _take(self, record: dict[str, Any], deadline: float | None) -> bytes | None:
        kind = record["kind"]
        if kind == "chunk":
            return decode_body(record.get("data")) or b""
        if kind == "read_timeout":
            if deadline is not None and deadline < math.inf:  # not a window (_window_end)
                self._client._clock = max(self._client._clock, deadline)
            return None
        if record.get("reason") == "broken":
            if "fault" in record:  # its body turned out undecodable: not retried
                raise broken_stream(ContentDecodingError(record["fault"]))
            raise ConnectionFailedError(record.get("error", "the recorded stream broke here"))
        return b""

    async def aclose(self) -> None:
        return None


class _Progress:
    """Wakes waiting stream reads each time the replay sends a request or a
    stream read ends; counts those, and the operations' clock readings, for
    sleepers (see :meth:`ReplayClient._sleep_until`)."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.count = 0

    def fire(self) -> None:
        self.count += 1
        self._event.set()
        self._event = anyio.Event()

    def moved_on(self) -> None:
        """Count a step that wakes no stream read (an operation read its clock)."""
        self.count += 1

    async def wait(self, _deadline: None) -> None:
        await self._event.wait()


class ReplayClient(FlowithClientBase):
    """A client that plays a cassette back instead of talking to a server.

    It runs with the recorded client's ``timeout``, ``result_timeout``,
    ``poll_interval`` and ``max_retries`` (a replay then polls and retries as the
    recording did); pass one to override it.

    ``stall_timeout`` is how many real seconds the replay waits for the code under
    test to send a request the recording says comes before what it waits for (a
    stream's next data, say) before it raises :class:`CassetteMismatch`. A replay never
    waits on a server, so only code that diverged from the recording, or that waits
    in real time itself, waits that long: lower it for tests that fail fast.

    Leaving its ``async with`` block checks that the replay sent every recorded
    request, as respx checks that every route was called: a replay that stopped short
    of its recording (a call the code no longer makes) raises :class:`CassetteMismatch`
    listing what it never sent. Pass ``assert_all_played=False`` to replay a part of a
    recording; :meth:`assert_all_played` makes the check at any time.
    """

    def __init__(
        self,
        cassette: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        result_timeout: float | None = None,
        poll_interval: float | None = None,
        max_retries: int | None = None,
        stall_timeout: float = STALL_SECONDS,
        assert_all_played: bool = True,
    ) -> None:
        check_seconds("stall_timeout", stall_timeout)
        self._check_all_played = assert_all_played
        #: Real seconds of waiting after which the replay is declared stuck.
        self.stall_timeout = stall_timeout
        self._tape = Tape(cassette)
        recorded = self._tape.state()
        super().__init__(
            recorded.credentials.access_token,
            # The token's own user is named by the token: its id is not checked again.
            user_id=self._tape.named_user_id,
            refresh_token=recorded.credentials.refresh_token,
            edge_url=recorded.config.edge_url,
            supabase_url=recorded.config.supabase_url,
            timeout=(
                self._tape.settings.get("timeout", DEFAULT_TIMEOUT) if timeout is None else timeout
            ),
            result_timeout=(
                recorded.result_timeout if result_timeout is None else result_timeout
            ),
            poll_interval=recorded.poll_interval if poll_interval is None else poll_interval,
            max_retries=recorded.retry.max_retries if max_retries is None else max_retries,
            # The recording holds every break the watchdog made; a replay's clock
            # is no measure of silence.
            stream_idle_timeout=None,
        )
        self._tape.scrubber.learn(self._secrets)
        self._clock = 0.0
        self._progress = _Progress()
        self._reads: set[_ReplayStream] = set()

    @property
    def unplayed(self) -> list[str]:
        """Recorded requests this replay has not sent (``METHOD url``)."""
        return self._tape.unplayed

    def assert_all_played(self) -> None:
        """Raise :class:`CassetteMismatch` if a recorded request was not sent again."""
        unplayed = self._tape.unplayed
        if unplayed:
            listed = "".join(f"\n  {request}" for request in unplayed)
            raise CassetteMismatch(
                f"the replay never sent {len(unplayed)} of the recorded requests:{listed}\n"
                "(ReplayClient(..., assert_all_played=False) replays a part of a recording)"
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        # Not while an error leaves the block: it explains the short replay better.
        if exc_type is None and self._check_all_played:
            self.assert_all_played()

    # -- what operations draw comes from the recording, each operation its own -------

    def _operation_name(self, operation: Operation[Any]) -> str:
        return self._tape.name(operation)

    def _operation_clock(self, operation: str) -> float:
        value = float(self._tape.draw("clock", operation))
        # Operations running at once read the clock in another order than recorded:
        # the transport's clock only moves forward.
        self._clock = max(self._clock, value)
        self._progress.moved_on()
        return value

    def _wall_clock(self, operation: str) -> float:
        return float(self._tape.draw("wallclock", operation))

    def _new_id(self, operation: str) -> str:
        return str(self._tape.draw("id", operation))

    def _jitter(self, operation: str) -> float:
        return float(self._tape.draw("jitter", operation))

    # -- transport hooks ------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock

    def _window_end(self, timeout: float | None) -> float | None:
        # The replay's clock moves with the recorded operations' readings, which a
        # listener running beside them never took: read by that clock, its window
        # would end early or late. Its stream's records say where it ended (a read
        # that timed out, or the close), so the window is left to them.
        return None if timeout is None else math.inf

    async def _sleep_until(self, deadline: float) -> None:
        # The sleeper waits, on the replay's clock, until the operations running
        # beside it have replayed what they did meanwhile (their readings move the
        # clock), or do nothing more: then its time has come. Moved at once to its
        # end, the clock passed the deadlines of the others, which then found their
        # recorded events too late (a retry's wait beside a streamed generation).
        idle = 0
        while self._clock < deadline and idle < _IDLE_TURNS:
            seen = self._progress.count
            await anyio.lowlevel.checkpoint()
            idle = idle + 1 if self._progress.count == seen else 0
        self._clock = max(self._clock, deadline)
        await anyio.lowlevel.checkpoint()

    def _new_signal(self) -> Signal:
        return _Signal(self)

    async def _send(
        self, request: Request, timeout: float | None, deadline: float | None, operation: str
    ) -> Response:
        number = self._tape.match(request, stream=False, operation=operation)
        self._progress.fire()
        await anyio.lowlevel.checkpoint()
        return self._tape.answer(number)

    async def _open_stream(
        self, request: Request, deadline: float | None
    ) -> tuple[int, Sequence[tuple[str, str]], ByteStream]:
        number = self._tape.match(request, stream=True)
        self._progress.fire()
        status, headers = self._tape.stream_head(number)
        return status, headers, _ReplayStream(self, number)

    async def _race(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> T:
        return await race(jobs)

    def _cancellable(self) -> AbstractContextManager[Callable[[], None]]:
        return cancellable()

    async def _shielded(
        self, work: Callable[[], Coroutine[Any, Any, T]], *, hold: bool = True
    ) -> T:
        return await shielded(work, hold=hold)

    async def _to_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(function, *args)

    def _event_loop(self) -> object:
        return running_loop()

    def _http_client_closed(self) -> bool:
        return False  # a replay sends nothing

    async def _close_transport(self) -> None:
        return None
