"""Shared fixtures: the fake Flowith on loopback and a client of each transport.

``transport`` is parametrized over httpx on asyncio, httpx on trio and aiohttp
(asyncio only), so one test body proves a behaviour on every transport.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import attrs
import pytest

import flowith_aiohttp
import flowith_httpx
from flowith_httpx.fake_server import FakeFlowithServer, no_proxy_with_loopback
from flowith_proto.abc import FlowithClientBase
from flowith_proto.fake import FakeFlowith
from tests.memory_streams import Streams

# Access tokens (JWTs), the project key and the fake's refresh tokens.
_SECRET = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+|sb_publishable_\w+|fkrt\w+")


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with logging at DEBUG (ours, httpx's, aiohttp's) and
    fails if any record, at any level, shows a credential."""
    caplog.set_level(logging.DEBUG)
    yield
    leaked = _SECRET.findall(caplog.text)
    assert not leaked, f"a secret reached the logs: {leaked[0][:12]}..."


@pytest.fixture(autouse=True, scope="session")
def loopback_bypasses_proxies() -> Iterator[None]:
    """The suite talks to loopback only: a proxy set in the environment (which
    both transports honour) must not stand in between."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("NO_PROXY", "no_proxy"):
            patch.setenv(name, no_proxy_with_loopback(os.environ.get(name)))
        yield


TRANSPORTS = {
    "httpx-asyncio": ("httpx", "asyncio"),
    "httpx-trio": ("httpx", "trio"),
    "aiohttp": ("aiohttp", "asyncio"),
}


@attrs.frozen
class Transport:
    library: str
    backend: str

    def client_class(self) -> type[FlowithClientBase]:
        if self.library == "httpx":
            return flowith_httpx.FlowithClient
        return flowith_aiohttp.FlowithClient


@pytest.fixture(params=list(TRANSPORTS), ids=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Transport:
    library, backend = TRANSPORTS[request.param]
    return Transport(library, backend)


@pytest.fixture
def anyio_backend(transport: Transport) -> str:
    return transport.backend


@pytest.fixture
def fake() -> FakeFlowith:
    return FakeFlowith(heartbeat_interval=0.2)


@pytest.fixture
async def server(fake: FakeFlowith) -> AsyncIterator[FakeFlowithServer]:
    async with FakeFlowithServer(fake) as running:
        yield running


MakeClient = Callable[..., Any]


@pytest.fixture
def make_client(transport: Transport, fake: FakeFlowith, server: FakeFlowithServer) -> MakeClient:
    """A client of the test's transport pointed at the fake (not yet opened)."""

    def make(**options: Any) -> FlowithClientBase:
        options.setdefault("poll_interval", 0.05)
        return transport.client_class()(
            options.pop("token", fake.token),
            edge_url=server.url,
            supabase_url=server.url,
            **options,
        )

    return make


async def eventually(condition: Callable[[], bool], *, within: float = 2.0) -> None:
    """Wait (up to ``within`` seconds) for the server to reach a state the test
    cannot await."""
    for _ in range(round(within * 100)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"the condition did not become true within {within:g} s")


@pytest.fixture
async def streams() -> AsyncIterator[Streams]:
    """In-memory bodies for the hub's connections, closed after the test."""
    opened = Streams()
    yield opened
    await opened.aclose()


def shown_with_variables(error: BaseException) -> str:
    """A traceback of ``error`` with the variables of the library's frames (and the
    transports'), as ``pytest -l`` and error reporters show them. Not the test's own
    frames: they hold what the test wrote, as an application's hold what it passed."""
    shown = traceback.TracebackException.from_exception(error, capture_locals=True)
    tests = os.path.dirname(__file__)
    links: list[traceback.TracebackException | None] = [shown]
    while links:
        link = links.pop()
        if link is None:
            continue
        for frame in link.stack:
            if frame.filename.startswith(tests):
                frame.locals = None
        links += [link.__cause__, link.__context__]
    return "".join(shown.format())


def shown_by_the_chain(error: BaseException) -> str:
    """What a traceback shows of ``error``, and a look at every error it was raised
    from: its repr, its arguments, its attributes and the headers of what it keeps
    (httpx's request, aiohttp's request info), or of the request that keeps (an
    httpx answer's)."""
    shown = "".join(traceback.format_exception(error))
    links, seen = [error], set()
    while links:
        link = links.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        kept = vars(link)
        shown += f"{link!r} {link.args!r} {kept!r}"
        for value in kept.values():
            shown += repr(getattr(value, "headers", ""))
            with contextlib.suppress(AttributeError, RuntimeError):  # none, or never set
                shown += f"{value.request!r} {value.request.headers!r}"
        links += [e for e in (link.__cause__, link.__context__) if e is not None]
    return shown
