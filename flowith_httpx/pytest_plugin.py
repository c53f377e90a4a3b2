"""pytest fixtures for testing code that uses this client, offline.

Registered through the ``pytest11`` entry point, so installing the package is
enough. The fake's server and the replay client live in ``flowith_httpx`` and
need the ``httpx`` extra (also for projects that use the aiohttp transport:
``pip install "flowith[httpx,aiohttp]"``). The async fixtures need anyio's
pytest plugin (installed with anyio) and a test marked ``@pytest.mark.anyio``:

``flowith_fake``
    a fresh :class:`~flowith_proto.fake.FakeFlowith` to script and inspect; a
    passing test that leaves its scripts or faults unused fails (the marker
    ``@pytest.mark.flowith(assert_all_used=False)`` allows it);
``flowith_server``
    that fake served on a loopback port (real sockets);
``flowith_transport``
    ``"httpx"`` by default; parametrize it (``indirect=True``) to run a test on
    ``"aiohttp"`` as well (skipped when the test runs on trio: aiohttp is
    asyncio only);
``flowith_client``
    an open ``FlowithClient`` of that transport, signed in to the fake;
``flowith_replay``
    a factory: ``async with flowith_replay("cassette.jsonl") as client`` plays
    a recorded session back with no network, and fails at the block's end if a
    recorded request was not sent again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from flowith_proto import extras

if TYPE_CHECKING:
    from flowith_httpx.fake_server import FakeFlowithServer
    from flowith_httpx.testing import ReplayClient
    from flowith_proto.abc import FlowithClientBase
    from flowith_proto.fake import FakeFlowith

__all__ = [
    "flowith_client",
    "flowith_fake",
    "flowith_replay",
    "flowith_server",
    "flowith_transport",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "flowith(assert_all_used=True): with False, the flowith_fake fixture lets a "
        "test end with scripts or faults it never used",
    )


@pytest.hookimpl(hookwrapper=True)  # the old style: pytest < 8 has no wrapper=True
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    """Notes a test that passed: the only one whose unused scripts are news (one that
    failed, was skipped as it ran or failed as expected has said what it had to say;
    see ``flowith_fake``)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        item.stash[_CALL_PASSED] = True


_CALL_PASSED = pytest.StashKey[bool]()


@pytest.fixture
def flowith_fake(request: pytest.FixtureRequest) -> Iterator[FakeFlowith]:
    """A fresh fake Flowith; script it before the code under test runs. A test that
    passes with scripts or faults left unused fails (its code never ran what the
    test set up), unless marked ``@pytest.mark.flowith(assert_all_used=False)``."""
    from flowith_proto.fake import FakeFlowith

    fake = FakeFlowith(heartbeat_interval=1.0)
    yield fake
    marker = request.node.get_closest_marker("flowith")
    check = marker.kwargs.get("assert_all_used", True) if marker else True
    left = fake.unused()
    if check and left and request.node.stash.get(_CALL_PASSED, False):
        pytest.fail(
            "the test ended with what it set up on flowith_fake unused (mark it "
            "@pytest.mark.flowith(assert_all_used=False) if that is meant):\n  "
            + "\n  ".join(left),
            pytrace=False,
        )


@pytest.fixture
def _flowith_httpx_extra() -> None:
    """Names the extra the served fixtures need. A sync fixture they depend on: set
    up before them, it speaks before pytest refuses an async fixture for want of
    anyio (which the extra brings)."""
    _require("httpx", "each of the flowith_server and flowith_client fixtures")


@pytest.fixture
async def flowith_server(
    flowith_fake: FakeFlowith, _flowith_httpx_extra: None
) -> AsyncIterator[FakeFlowithServer]:
    """The fake served on 127.0.0.1 for the length of the test."""
    from flowith_httpx.fake_server import FakeFlowithServer

    async with FakeFlowithServer(flowith_fake) as server:
        yield server


@pytest.fixture
def flowith_transport(request: pytest.FixtureRequest) -> str:
    """Which transport ``flowith_client`` uses: ``httpx`` unless parametrized."""
    return str(getattr(request, "param", "httpx"))


@pytest.fixture
async def flowith_client(
    _flowith_httpx_extra: None,
    flowith_fake: FakeFlowith,
    flowith_server: FakeFlowithServer,
    flowith_transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[FlowithClientBase]:
    """An open client signed in to the fake (closed after the test); loopback is
    exempt from any proxy the environment sets, for the test's length."""
    from flowith_httpx.fake_server import no_proxy_with_loopback

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, no_proxy_with_loopback(os.environ.get(name)))
    client_class: type[FlowithClientBase]
    if flowith_transport == "aiohttp":
        _require("aiohttp", 'flowith_transport "aiohttp"')
        if not _on_asyncio():  # a test run on every anyio backend: trio x aiohttp cannot be
            pytest.skip("the aiohttp transport runs on asyncio only")
        from flowith_aiohttp import FlowithClient as AiohttpClient

        client_class = AiohttpClient
    elif flowith_transport == "httpx":
        from flowith_httpx import FlowithClient as HttpxClient

        client_class = HttpxClient
    else:
        raise ValueError(f"unknown flowith_transport {flowith_transport!r}")
    client = client_class(
        flowith_fake.token,
        refresh_token=flowith_fake.refresh_token,
        edge_url=flowith_server.url,
        supabase_url=flowith_server.url,
        poll_interval=0.05,
    )
    async with client:
        yield client


def _require(extra: str, what: str) -> None:
    """Name the extra a fixture needs (this module loads without any); ``what`` is
    the singular subject of "needs"."""
    absent = extras.missing(extra)
    if absent:
        raise ModuleNotFoundError(extras.needs(what, extra, absent), name=absent[0])


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def flowith_replay() -> Callable[[str | os.PathLike[str]], ReplayClient]:
    """A factory of replay clients for recorded cassettes."""
    _require("httpx", "the flowith_replay fixture")
    from flowith_httpx.testing import ReplayClient

    return ReplayClient
