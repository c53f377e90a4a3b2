"""``flowith_httpx.client.shielded``: work that must end even if its caller is cancelled
(a token refresh, a close), on asyncio and on trio."""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
import trio

from flowith_httpx.client import shielded
from tests.conftest import eventually

pytestmark = pytest.mark.anyio

_seen_by_work: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by_work")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _cancel_while(work_started: anyio.Event, call: Callable[[], Awaitable[object]]) -> float:
    """Run ``call`` and cancel it once the work started; return how long the caller
    took to leave after the cancellation."""
    left: list[float] = []

    async def caller() -> None:
        try:
            await call()
        finally:
            left.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        group.start_soon(caller)
        await work_started.wait()
        cancelled_at = anyio.current_time()
        group.cancel_scope.cancel()
    return left[0] - cancelled_at


@pytest.mark.parametrize("hold", [False, True])
async def test_the_work_ends_although_its_caller_was_cancelled(hold: bool) -> None:
    started, ended = anyio.Event(), anyio.Event()

    async def work() -> None:
        started.set()
        await anyio.sleep(0.5)
        ended.set()

    held = await _cancel_while(started, lambda: shielded(work, hold=hold))
    with anyio.fail_after(5):
        await ended.wait()
    if not hold:  # its deadline fires: it does not wait the 0.5 s the work takes
        assert held < 0.3


async def test_a_held_caller_on_trio_leaves_once_the_work_is_done(anyio_backend: str) -> None:
    # A close: the closer goes on once the connections are closed. (On asyncio the
    # caller always leaves at once: task.cancel() cannot be held.)
    started = anyio.Event()

    async def work() -> None:
        started.set()
        await anyio.sleep(0.5)

    held = await _cancel_while(started, lambda: shielded(work, hold=True))
    if anyio_backend == "trio":
        assert held >= 0.4
    else:
        assert held < 0.3


@pytest.mark.parametrize("hold", [False, True])
async def test_the_caller_gets_the_works_value_or_error(hold: bool) -> None:
    async def value() -> int:
        await anyio.lowlevel.checkpoint()
        return 42

    async def failure() -> None:
        await anyio.lowlevel.checkpoint()
        raise OSError("disk full")

    assert await shielded(value, hold=hold) == 42
    with pytest.raises(OSError, match="disk full"):
        await shielded(failure, hold=hold)


async def test_work_left_to_end_on_its_own_sees_the_callers_context_variables() -> None:
    _seen_by_work.set("the caller's")
    seen: list[str] = []

    async def work() -> None:
        seen.append(_seen_by_work.get("nothing"))

    await shielded(work, hold=False)
    assert seen == ["the caller's"]


async def test_a_failure_of_work_its_caller_left_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = anyio.Event()

    async def renew() -> None:
        started.set()
        await anyio.sleep(0.2)
        raise OSError("no route to host")

    caplog.set_level(logging.WARNING, logger="flowith")
    await _cancel_while(started, lambda: shielded(renew, hold=False))
    await eventually(lambda: "no route to host" in caplog.text)
    (record,) = [r for r in caplog.records if "no route to host" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().endswith(
        "renew failed after its caller was cancelled: OSError: no route to host"
    )


async def test_work_that_ends_as_its_caller_is_cancelled_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The work fails and its caller is cancelled in the same step of the loop: the
    # caller leaves with its cancellation, so the failure is logged, once.
    async def renew() -> None:
        raise OSError("refused")

    caplog.set_level(logging.WARNING, logger="flowith")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await shielded(renew, hold=False)
    await anyio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        "test_work_that_ends_as_its_caller_is_cancelled_is_reported_once.<locals>.renew "
        "failed after its caller was cancelled: OSError: refused"
    ]


def test_an_exit_from_work_its_caller_left_ends_the_trio_run() -> None:
    # asyncio ends its loop with a SystemExit raised in a task; on trio the system
    # task running the work must not swallow it as a failure to log.
    async def main() -> None:
        started = trio.Event()

        async def save_tokens() -> None:
            started.set()
            await trio.sleep(0.1)
            raise SystemExit(3)

        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(shielded, save_tokens, hold=False))
                await started.wait()
                nursery.cancel_scope.cancel()
            await trio.sleep(1)  # the run ends here, with the exit
        raise AssertionError("the run went on")

    with pytest.raises(trio.TrioInternalError) as info:
        trio.run(main)
    chain = [info.value.__cause__, *getattr(info.value.__cause__, "exceptions", ())]
    flat = [e for group in chain for e in getattr(group, "exceptions", (group,))]
    assert any(isinstance(error, SystemExit) and error.code == 3 for error in flat)
