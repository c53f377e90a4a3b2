"""Constructor options, proved on every transport against the fake on loopback.

``proxy=`` is proved with a real forwarding proxy (``tests/forward_proxy.py``)
between the client and the fake: every request must show up at the proxy, and
the event stream must flow through it unbuffered. The other options
(``http_client=``, ``supabase_key=``, ``result_timeout=``) and ``aclose`` are
checked the same end-to-end way.
"""

from __future__ import annotations

import base64
import importlib.util
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import aiohttp
import anyio
import anyio.abc
import httpx
import pytest

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto import proxies
from flowith_proto.abc import FlowithClientBase
from flowith_proto.errors import (
    AuthenticationError,
    ClientStateError,
    ConnectionFailedError,
    FlowithError,
    TimeoutError,
)
from flowith_proto.fake import FakeFlowith, chunk, complete, hang, pause
from tests.canned_server import raw_server
from tests.conftest import MakeClient, Transport, shown_by_the_chain, shown_with_variables
from tests.forward_proxy import ForwardProxy

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    """A loopback port nobody listens on (bound, noted, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def no_open_streams(fake: FakeFlowith, within: float = 2.0) -> bool:
    """Whether the fake sees every stream connection closed within ``within`` s
    (closing travels through sockets, so it is polled for)."""
    with anyio.move_on_after(within):
        while fake.open_streams():  # noqa: ASYNC110 - the model has no close event
            await anyio.sleep(0.02)
    return not fake.open_streams()


async def read_to_the_end(stream: anyio.abc.SocketStream) -> None:
    """Read until the peer closes (which raises)."""
    while True:
        await stream.receive()


# -- proxy= ------------------------------------------------------------------------


async def test_generate_goes_entirely_through_the_proxy(
    fake: FakeFlowith, server: FakeFlowithServer, make_client: MakeClient
) -> None:
    fake.script(chunk("Through "), chunk("the proxy."), complete())
    async with ForwardProxy() as proxy, make_client(proxy=proxy.url) as client:
        result = await client.generate("Where are you?", timeout=10)
    assert result.text == "Through the proxy."
    assert result.node_id in fake.nodes
    # Absolute-form targets at the proxy, origin-form at the fake: the same requests.
    assert all(target.startswith(server.url + "/") for _, target in proxy.requests)
    proxied = Counter((method, target[len(server.url) :]) for method, target in proxy.requests)
    received = Counter((r.method, r.target) for r in fake.requests)
    assert proxied == received  # nothing bypassed the proxy
    paths = {(method, target.split("?")[0]) for method, target in proxied}
    assert {
        ("GET", "/user_stream/stream"),
        ("POST", "/completion/async"),
        ("POST", "/rest/v1/conversation"),
        ("POST", "/rest/v1/flow_node"),
    } <= paths
    assert fake.stream_connections == 1
    assert proxy.failures == []
    # Hop-by-hop headers stay at the proxy; the origin's Host is set from the URL.
    authority = server.url.removeprefix("http://")
    for request in fake.requests:
        assert request.header("host") == authority
        assert request.header("proxy-connection") is None


async def test_a_proxy_refusing_the_tunnel_shows_no_password_in_the_traceback(
    fake: FakeFlowith, transport: Transport
) -> None:
    """aiohttp's error for a refused CONNECT quotes the proxy's URL, password and all:
    the library's message masked it, but not the traceback of its cause."""
    password = "s3cretProxyPass"
    async with ForwardProxy() as proxy:  # it refuses CONNECT: nothing goes further
        failed = await credits_through(
            transport, fake.token, f"http://alice:{password}@127.0.0.1:{proxy.port}"
        )
    shown = shown_by_the_chain(failed)
    assert password not in shown
    cause = failed.__cause__  # the transport's own error, still shown
    assert cause is not None
    assert f"{type(cause).__module__}.{type(cause).__qualname__}: {cause}" in shown
    if transport.library == "aiohttp":
        assert f"url='http://alice:[REDACTED]@127.0.0.1:{proxy.port}" in shown


async def test_the_environments_proxy_is_used_by_every_transport(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swapping the transport never changes the route: both honour HTTP_PROXY."""
    fake.script(chunk("via the environment"), complete())
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with make_client() as client:
            result = await client.generate("hi", timeout=10)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with make_client() as client:
            await client.get_discord_invite()
    assert result.text == "via the environment"
    proxied = Counter(target.split("?")[0].split("/", 3)[-1] for _, target in proxy.requests)
    assert proxied["user_stream/stream"] == 1
    assert proxied["completion/async"] == 1
    assert len(proxy.requests) == len(fake.requests) - 1  # all but the NO_PROXY one
    assert proxy.failures == []


async def test_the_environment_is_read_once_when_the_client_is_made(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx read it again for each of its clients: the lanes, made on first use, took
    a proxy set after the client was made (and a NO_PROXY then set to "[::1]" broke
    each call with a bare InvalidURL)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    async with make_client() as client:
        monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", "[::1]")
        await client.get_discord_invite()  # on a lane made now: direct, as the client was
    assert len(fake.requests) == 1


async def test_no_proxy_entries_httpx_refused_are_read_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The httpx transport's constructor raised ValueError for NO_PROXY=[::1] (httpx's
    InvalidURL), where the aiohttp transport read it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "[::1]:8080, bücher.example, 127.0.0.1:notaport, 127.0.0.1")
    async with make_client() as client:
        await client.get_discord_invite()  # 127.0.0.1 is exempt: direct to the fake
    assert len(fake.requests) == 1


async def test_a_proxy_scheme_in_capitals_is_an_http_proxy(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schemes are case-insensitive (RFC 3986 3.1): aiohttp refused proxy="HTTP://...",
    and the same in HTTP_PROXY failed every call with "speaks HTTP proxies only"."""
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    async with ForwardProxy() as proxy:
        loud = proxy.url.replace("http://", "HTTP://", 1)
        async with make_client(proxy=loud) as client:
            await client.get_discord_invite()
        monkeypatch.setenv("HTTP_PROXY", loud)
        async with make_client() as client:
            await client.get_discord_invite()
    assert len(proxy.requests) == 2
    assert proxy.failures == []


NO_PROXY_CASES = [
    ("https://edge.flowith.io", ""),
    ("https://edge.flowith.io", "*"),
    ("https://edge.flowith.io", "flowith.io"),
    ("https://flowith.io", "flowith.io"),
    ("https://edge.flowith.io", " .flowith.io , other"),
    ("https://flowith.io", ".flowith.io"),
    ("https://edge.flowith.io", "FLOWITH.IO"),
    ("https://edge.flowith.io", "flowith.io:443"),
    ("http://edge.flowith.io:8080", "flowith.io:8080"),
    ("http://edge.flowith.io:8080", "flowith.io:9090"),
    ("https://notflowith.io", "flowith.io"),
    ("http://127.0.0.1:8000", "localhost,127.0.0.1"),
    ("http://localhost:8000", ".localhost"),
    ("http://localhost:8000", "localhost"),
    ("http://localhost:8000", "http://localhost"),
    ("https://localhost:8000", "http://localhost"),
    ("http://[::1]:8000", "::1"),
    ("http://127.0.0.2", "127.0.0.1"),
    ("http://10.1.2.3", "10.0.0.0/8"),
    ("https://example.com", "example.com."),
    ("https://example.com:8443", "https://example.com:443"),
    ("https://example.com", "https://example.com:443"),
]


@pytest.mark.parametrize(
    ("named", "usable"),
    [
        ({"https": "alice:pw@proxy.test:3128"}, True),  # no scheme: an HTTP proxy
        ({"http": "http://[::1]:3128", "all": "socks5://proxy.test:1080"}, True),
        ({"https": "proxy.test:99999"}, False),
        ({"all": "http://proxy.test:port"}, False),
        ({"http": "http://:3128"}, False),
        ({"https": "http://[::1:3128"}, False),
        # What HTTP requests never use is not theirs to refuse.
        ({"ftp": "http://proxy.test:port", "no": "127.0.0.1:port", "http": ""}, True),
    ],
)
def test_the_environments_proxies_are_checked_as_urls(
    named: dict[str, str], usable: bool
) -> None:
    assert proxies.EnvironmentProxies(named).well_formed() is usable


def test_the_setting_refused_is_the_one_in_use() -> None:
    bad = {"https": "proxy.test:port"}
    assert proxies.refused_setting("http://proxy.test:99999", {}) == "proxy"
    assert proxies.refused_setting(None, bad) == "environment"
    assert proxies.refused_setting("http://proxy.test:3128", bad) is None  # used alone
    assert proxies.refused_setting(None, {}) is None


@pytest.mark.parametrize(("url", "no_proxy"), NO_PROXY_CASES)
def test_no_proxy_is_read_as_httpx_reads_it(
    url: str, no_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aiohttp transport's route (this module) against httpx's own (the
    reference): ".localhost", ports and schemes in NO_PROXY used to differ."""
    import httpx
    from httpx._utils import URLPattern, get_environment_proxies

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    target = httpx.URL(url)
    mounts = get_environment_proxies()
    patterns = sorted((URLPattern(key), value) for key, value in mounts.items())
    by_httpx = next((value for pattern, value in patterns if pattern.matches(target)), None)
    ours = proxies.bypassed(target.host, no_proxy, scheme=target.scheme, port=target.port)
    assert ours is (by_httpx is None)


@pytest.mark.parametrize("transport", ["aiohttp"], indirect=True)
async def test_a_proxy_aiohttp_cannot_speak_fails_loudly_rather_than_being_gone_around(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx follows a SOCKS proxy itself (with socksio installed); aiohttp cannot.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:9")
    async with make_client() as client:
        with pytest.raises(FlowithError, match="speaks HTTP proxies only") as info:
            await client.get_discord_invite()
    assert "pw" not in str(info.value)
    assert fake.requests == []


def test_environment_proxies_by_scheme_and_host() -> None:
    environment = proxies.EnvironmentProxies(
        {"http": "http://p:3128", "all": "socks5://user:pw@s:1080", "no": "internal.test"}
    )
    assert environment.for_url("http", "edge.flowith.io") == "http://p:3128"
    assert environment.for_url("http", "api.internal.test") is None  # NO_PROXY
    assert environment.for_url("https", "api.internal.test") is None  # NO_PROXY beats SOCKS
    # Only a SOCKS proxy for https: refused loudly rather than gone around, without its password.
    with pytest.raises(FlowithError, match=r"socks5://s for https:// requests") as info:
        environment.for_url("https", "edge.flowith.io")
    assert "pw" not in str(info.value)


def test_environment_proxies_remember_a_bounded_number_of_routes() -> None:
    """One route was kept per host ever asked for: a long-lived client downloading
    from the hosts its users name grew without end (always, on aiohttp)."""
    environment = proxies.EnvironmentProxies({"http": "http://p:3128", "no": ".internal.test"})
    for number in range(3 * proxies.MAX_ROUTES):
        assert environment.for_url("http", f"host-{number}.example") == "http://p:3128"
        assert environment.for_url("http", f"host-{number}.internal.test") is None
    assert len(environment._routes) == proxies.MAX_ROUTES
    assert environment.for_url("http", "host-0.example") == "http://p:3128"  # decided again


async def test_the_stream_flows_through_the_proxy_unbuffered(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("early "), pause(0.5), chunk("late"), complete())
    arrivals: list[tuple[str, float]] = []
    async with ForwardProxy() as proxy, make_client(proxy=proxy.url) as client:
        async for step in client.generate_stream("hi", timeout=10):
            if step.text_delta:
                arrivals.append((step.text_delta, time.monotonic()))
    assert [delta for delta, _ in arrivals] == ["early ", "late"]
    # A buffering proxy would hand both over together, after the pause.
    assert arrivals[1][1] - arrivals[0][1] >= 0.25
    assert proxy.failures == []


async def test_a_dead_proxy_fails_fast_before_sending(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client(proxy=f"http://127.0.0.1:{closed_port()}") as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as info:
            await client.generate("hi", timeout=10)
        elapsed = time.monotonic() - started
    assert info.value.request_sent is False
    assert elapsed < 5.0  # refused at once; the default two retries back off <= 1.5 s
    assert fake.requests == []


async def test_the_proxy_is_left_when_the_client_closes(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The shared stream's connection through the proxy ends with ``aclose``,
    all the way to the origin."""
    fake.script(chunk("hi"), complete())
    async with ForwardProxy() as proxy:
        async with make_client(proxy=proxy.url) as client:
            await client.generate("hi")
            assert fake.open_streams()
        assert await no_open_streams(fake)
    assert proxy.failures == []


# -- http_client= --------------------------------------------------------------------


@asynccontextmanager
async def own_http_client(library: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    if library == "aiohttp":
        async with aiohttp.ClientSession(headers=headers) as session:
            yield session
    else:
        async with httpx.AsyncClient(headers=headers) as client:
            yield client


def is_closed(http_client: Any) -> bool:
    if isinstance(http_client, aiohttp.ClientSession):
        return http_client.closed
    assert isinstance(http_client, httpx.AsyncClient)
    return http_client.is_closed


async def test_own_http_client_is_used_and_left_open(
    transport: Transport,
    fake: FakeFlowith,
    server: FakeFlowithServer,
    make_client: MakeClient,
) -> None:
    """Bring your own ``aiohttp.ClientSession`` / ``httpx.AsyncClient``: it
    carries every request (its default headers arrive) and outlives the client."""
    fake.script(chunk("mine"), complete())
    async with own_http_client(transport.library, {"x-mine": "1"}) as mine:
        async with make_client(http_client=mine) as client:
            result = await client.generate("hi")
        assert not is_closed(mine)
        assert await no_open_streams(fake)  # the stream was released, not the client
        if isinstance(mine, aiohttp.ClientSession):
            async with mine.get(f"{server.url}/nowhere") as answer:
                status = answer.status
        else:
            status = (await mine.get(f"{server.url}/nowhere")).status_code
        assert status == 404  # still usable
    assert result.text == "mine"
    assert fake.requests_to("GET", "/user_stream/stream")
    assert all(request.header("x-mine") == "1" for request in fake.requests)


async def test_an_own_http_client_closed_under_the_client_is_a_client_state_error(
    transport: Transport, make_client: MakeClient
) -> None:
    # httpx's and aiohttp's bare RuntimeError reached the caller: no FlowithError.
    async with own_http_client(transport.library, {}) as mine:
        client = make_client(http_client=mine)
    async with client:
        with pytest.raises(ClientStateError, match="must stay open") as info:
            await client.get_credits()
    assert isinstance(info.value, RuntimeError)


async def test_another_runtime_error_of_an_own_http_client_is_not_blamed_on_closing(
    transport: Transport, make_client: MakeClient
) -> None:
    # Every RuntimeError from sending (a mock transport's NotImplementedError, a hook's
    # error) was reported as "an http_client passed in must stay open".
    async with own_http_client(transport.library, {}) as mine:
        client = make_client(http_client=mine)
        failing = patch.object(type(client), "_send", side_effect=NotImplementedError("no mock"))
        async with client:
            with failing, pytest.raises(NotImplementedError, match="no mock"):
                await client.get_credits()


async def test_proxy_and_own_http_client_are_exclusive(transport: Transport) -> None:
    """A proxy belongs on the user's own client; silently ignoring one is worse."""
    flowith_client: Any = transport.client_class()
    async with own_http_client(transport.library, {}) as mine:
        with pytest.raises(ValueError, match="proxy"):
            flowith_client("token", proxy="http://127.0.0.1:1", http_client=mine)


async def test_a_refused_constructor_leaves_an_existing_cassette_alone(
    transport: Transport, tmp_path: Path
) -> None:
    # The base constructor opened record_to (mode "w") before the transport refused
    # its proxy: the cassette was emptied, and its file left open.
    cassette = tmp_path / "kept.jsonl"
    cassette.write_text("recorded before\n")
    flowith_client: Any = transport.client_class()
    with pytest.raises(ValueError, match="proxy"):
        flowith_client("t" * 20, proxy="ftp://proxy.test", record_to=cassette)
    assert cassette.read_text() == "recorded before\n"


@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "ftp://proxy.test", "127.0.0.1:1"])
async def test_a_proxy_url_no_transport_can_use_is_refused_by_the_constructor(
    transport: Transport, proxy: str
) -> None:
    """aiohttp took any of these, then sent plain HTTP proxy requests to a SOCKS
    port or failed every call; httpx refuses them when the client is made."""
    flowith_client: Any = transport.client_class()
    try:
        client = flowith_client("token", proxy=proxy)
    except ValueError:  # httpx: SOCKS needs socksio installed (httpx's own ImportError before)
        return
    await client.aclose()
    pytest.fail(f"{proxy!r} was accepted")


async def grant_and_close(stream: anyio.abc.SocketStream) -> None:
    """A proxy that grants every CONNECT and then closes the tunnel: the TLS
    handshake behind it fails."""
    async with stream:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")


async def credits_through(transport: Transport, token: str, proxy: str) -> ConnectionFailedError:
    """The error of a credits call to an https:// edge through ``proxy`` that fails."""
    flowith_client: Any = transport.client_class()
    edge = "https://127.0.0.1:9"
    client = flowith_client(token, edge_url=edge, supabase_url=edge, proxy=proxy, max_retries=0)
    async with client:
        with pytest.raises(ConnectionFailedError) as caught:
            await client.get_credits()
    return caught.value


async def test_a_dead_proxy_shows_no_password_among_a_tracebacks_variables(
    fake: FakeFlowith, transport: Transport
) -> None:
    """The transport's error is the cause of the library's: its traceback's frames
    (httpcore's, aiohttp's) held the proxy's URL and the ``Proxy-Authorization``
    header sent, which ``pytest -l`` and error reporters print."""
    password = "s3cretProxyPass"
    with socket.socket() as unused:  # a port nobody listens on: refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    failed = await credits_through(transport, fake.token, f"http://alice:{password}@127.0.0.1:{port}")
    shown = shown_with_variables(failed)
    assert password not in shown
    assert base64.b64encode(f"alice:{password}".encode()).decode() not in shown
    assert failed.__cause__ is not None  # the transport's own error, kept with its message
    assert str(failed.__cause__) in shown


async def test_a_tunnel_that_fails_after_connect_shows_no_proxy_password(
    fake: FakeFlowith, transport: Transport
) -> None:
    """aiohttp's connector error keeps its connection key, whose proxy URL holds the
    password: the error's repr and args showed it (a refused CONNECT was masked)."""
    password = "s3cretProxyPass"
    async with raw_server(grant_and_close) as url:
        port = int(url.rsplit(":", 1)[1])
        failed = await credits_through(transport, fake.token, f"http://alice:{password}@127.0.0.1:{port}")
    assert password not in shown_by_the_chain(failed)
    assert failed.__cause__ is not None  # the transport's own error, kept
    if transport.library == "aiohttp":
        assert isinstance(failed.__cause__, aiohttp.ClientConnectorError)
        assert f"alice:[REDACTED]@127.0.0.1:{port}" in repr(failed.__cause__)


@pytest.mark.parametrize(
    "proxy",
    ["alice:s3cretProxyPass@proxy.test:3128", "socks4://alice:s3cretProxyPass@proxy.test:1080"],
)
async def test_a_refused_proxy_url_is_not_quoted_with_its_password(
    transport: Transport, proxy: str
) -> None:
    """httpx's ValueError quoted a proxy URL whose scheme was left out ("alice" was taken
    for one), password and all; aiohttp's refusal quoted nothing."""
    flowith_client: Any = transport.client_class()
    with pytest.raises(ValueError, match=r"^proxy must be an http://") as refused:
        flowith_client("token", proxy=proxy)
    assert "s3cretProxyPass" not in shown_by_the_chain(refused.value)


@pytest.mark.parametrize(
    ("transport", "where"),
    [
        ("httpx-asyncio", "proxy="),
        ("httpx-asyncio", "ALL_PROXY"),
        # (NO_PROXY is the core's to read on both: an entry whose port is no number
        # exempts nothing; httpx refused it.)
        ("aiohttp", "proxy="),
        ("aiohttp", "ALL_PROXY"),
    ],
    indirect=["transport"],
)
@pytest.mark.parametrize("port", ["notaport", "99999"])
async def test_a_proxy_url_with_a_bad_port_is_a_value_error_on_every_transport(
    transport: Transport, monkeypatch: pytest.MonkeyPatch, where: str, port: str
) -> None:
    """A port that is no number (in a proxy, or, on httpx, a host NO_PROXY lists) was
    httpx's InvalidURL, which is no ValueError: the flowith command printed a traceback.
    aiohttp took such a proxy and failed every call with a bare ValueError."""
    bad = f"http://alice:s3cretProxyPass@127.0.0.1:{port}"
    for name in ("ALL_PROXY", "all_proxy"):  # urllib reads the lower-case one first
        monkeypatch.setenv(name, bad if where == "ALL_PROXY" else "http://127.0.0.1:1")
    flowith_client: Any = transport.client_class()
    settings = {"proxy": bad} if where == "proxy=" else {}
    expected = "proxy must be" if where == "proxy=" else "a proxy setting in the environment"
    with pytest.raises(ValueError, match=f"^{expected}") as refused:
        flowith_client("token", **settings)
    assert "s3cretProxyPass" not in shown_by_the_chain(refused.value)


@pytest.mark.parametrize("transport", ["httpx-asyncio"], indirect=True)
async def test_a_socks_proxy_in_the_environment_without_socksio_is_a_setting_refused(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's ImportError came out of the constructor, and out of the flowith
    command as a traceback."""
    if importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed: httpx speaks SOCKS")
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:1")
    needs = r'needs the socksio package: pip install "httpx\[socks\]"'
    with pytest.raises(ValueError, match=needs):
        transport.client_class()("token")


# -- aclose, supabase_key=, result_timeout= --------------------------------------------


async def test_no_connection_outlives_aclose(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.script(chunk("hi"), complete())
    client = make_client()
    try:
        await client.generate("hi")
        assert len(fake.open_streams()) == 1
    finally:
        await client.aclose()
    assert await no_open_streams(fake)


async def test_a_wrong_supabase_key_is_an_authentication_error(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client(supabase_key="not-the-anon-key") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("hi")
    assert "not-the-anon-key" not in str(info.value)
    assert fake.conversations == {}


async def test_result_timeout_is_the_default_deadline_of_generate(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(hang())
    async with make_client(result_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.generate("hi")
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0


# -- the proxy itself ----------------------------------------------------------------


async def _exchange(stream: anyio.abc.SocketStream, request: bytes) -> bytes:
    """Send ``request`` and read one whole answer (Content-Length framed)."""
    await stream.send(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive()
    return head + b"\r\n\r\n" + body


async def test_the_proxy_keeps_alive_forwards_chunked_bodies_and_refuses_connect(
    fake: FakeFlowith, server: FakeFlowithServer
) -> None:
    """What the client tests rely on, checked byte by byte on one connection."""
    authority = server.url.removeprefix("http://")
    async with ForwardProxy() as proxy:
        stream = await anyio.connect_tcp("127.0.0.1", proxy.port)
        async with stream:
            first = await _exchange(
                stream,
                f"GET {server.url}/nowhere?x=%2F HTTP/1.1\r\nHost: {authority}\r\n"
                "Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n".encode(),
            )
            second = await _exchange(
                stream,
                f"POST {server.url}/completion/async HTTP/1.1\r\nHost: {authority}\r\n"
                "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                '3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'.encode(),
            )
            refused = await _exchange(
                stream, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
            )
    assert first.startswith(b"HTTP/1.1 404 ")
    assert second.startswith(b"HTTP/1.1 401 ")  # no token: the fake read it and said so
    assert refused.startswith(b"HTTP/1.1 405 ")
    assert proxy.requests == [
        ("GET", f"{server.url}/nowhere?x=%2F"),
        ("POST", f"{server.url}/completion/async"),
    ]
    got, posted = fake.requests
    assert got.target == "/nowhere?x=%2F"
    assert got.header("x-kept") == "yes"
    assert got.header("proxy-connection") is None
    assert posted.body == b'{"a":1}'
    assert proxy.failures == []


async def test_the_proxy_answers_502_when_the_origin_is_down() -> None:
    async with ForwardProxy() as proxy:
        origin = f"127.0.0.1:{closed_port()}"
        stream = await anyio.connect_tcp("127.0.0.1", proxy.port)
        async with stream:
            answer = await _exchange(
                stream, f"GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n".encode()
            )
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert proxy.failures == []


async def test_leaving_the_proxy_closes_an_open_event_stream_promptly(
    fake: FakeFlowith, server: FakeFlowithServer
) -> None:
    authority = server.url.removeprefix("http://")
    async with AsyncExitStack() as cleanup:
        async with ForwardProxy() as proxy:
            client = await anyio.connect_tcp("127.0.0.1", proxy.port)
            cleanup.push_async_callback(client.aclose)  # after the proxy is gone
            await client.send(
                f"GET {server.url}/user_stream/stream?user_id={fake.user_id} HTTP/1.1\r\n"
                f"Host: {authority}\r\nAuthorization: {fake.token}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            assert (await client.receive()).startswith(b"HTTP/1.1 200 ")
            assert fake.open_streams()
            started = time.monotonic()
        assert time.monotonic() - started < 1.0
        with anyio.fail_after(2), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await read_to_the_end(client)  # what was relayed, then the end
    assert await no_open_streams(fake)
    assert proxy.failures == []


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "exempt"),
    [
        # Entries that name no host exempted every host: the proxy was gone around.
        ("*://example.com", "other.test", None, False),
        ("://example.com", "other.test", None, False),
        ("all://", "other.test", None, False),
        ("http://*", "other.test", None, True),  # "*" names every host
        # Where httpx fails (its constructor refuses these), they are read on.
        ("[::1]", "::1", None, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 9090, False),
        ("bücher.example", "xn--bcher-kva.example", None, True),
        ("bücher.example", "sub.xn--bcher-kva.example", None, True),
        ("xn--bcher-kva.example", "sub.xn--bcher-kva.example", None, True),
        # The host alone is encoded, in IDNA 2008 as httpx and yarl write a URL's host:
        # the codec of the whole entry failed on a leading dot, mangled a scheme, and
        # made "ss" of "ß".
        (".bücher.example", "cdn.xn--bcher-kva.example", None, True),
        ("http://bücher.example", "xn--bcher-kva.example", None, True),
        ("bücher.example:8080", "xn--bcher-kva.example", 8080, True),
        ("faß.de", "xn--fa-hia.de", None, True),
        # An address is one however it is written: httpx hands the host on as the
        # URL wrote it, yarl shortens it, and text alone routed them apart.
        ("::1", "0:0:0:0:0:0:0:1", None, True),
        ("[0:0:0:0:0:0:0:1]", "::1", None, True),
        ("::1", "::2", None, False),
        ("::ffff:127.0.0.1", "::ffff:7f00:1", None, True),
        ("127.0.0.1", "::ffff:7f00:1", None, False),
    ],
)
def test_no_proxy_entries_httpx_cannot_read_exempt_what_they_name_and_no_more(
    no_proxy: str, host: str, port: int | None, exempt: bool
) -> None:
    assert proxies.bypassed(host, no_proxy, scheme="http", port=port) is exempt


def test_a_proxy_setting_with_spaces_around_it_is_refused() -> None:
    # urlsplit() strips them, and aiohttp then read " http" as the scheme of every request.
    assert proxies.refused_setting(None, {"http": " http://127.0.0.1:3128"}) == "environment"
    assert proxies.refused_setting("http://127.0.0.1:3128 ", {}) == "proxy"


def test_aiohttp_routes_by_the_hosts_ascii_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # yarl's host is "bücher.example": NO_PROXY's xn-- name never matched it.
    from yarl import URL

    from flowith_aiohttp import FlowithClient

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "xn--bcher-kva.example")
    client = FlowithClient(FakeFlowith().token)
    assert client._proxy_for(URL("http://sub.bücher.example/a")) is None
    assert client._proxy_for(URL("http://other.example/a")) == "http://127.0.0.1:3128"


def test_aiohttp_refuses_proxy_credentials_it_cannot_send(monkeypatch: pytest.MonkeyPatch) -> None:
    # aiohttp writes them in Latin-1: a "€" failed every request with a bare
    # UnicodeEncodeError.
    from flowith_aiohttp import FlowithClient

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    refused = "holds a character aiohttp cannot send"
    with pytest.raises(ValueError, match=refused) as info:
        FlowithClient(FakeFlowith().token, proxy="http://alice:%E2%82%AC@127.0.0.1:3128")
    assert "alice" not in str(info.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://\u20ac:pw@127.0.0.1:3128")
    with pytest.raises(ValueError, match=refused):
        FlowithClient(FakeFlowith().token)
    FlowithClient(FakeFlowith().token, proxy="http://al%C3%A4:pw@127.0.0.1:3128")  # Latin-1


async def test_the_doctor_reads_the_raw_stream_through_the_clients_route(
    fake: FakeFlowith, server: FakeFlowithServer, make_client: MakeClient
) -> None:
    """The doctor read /user_stream/stream with an HTTP client of its own: httpx by
    httpx's reading of the environment, aiohttp by none (it went around the proxy)."""
    from flowith_httpx import doctor

    async with ForwardProxy() as proxy:

        def client_for(*, edge_auth: str, renew: bool) -> FlowithClientBase:
            client: FlowithClientBase = make_client(proxy=proxy.url, edge_auth=edge_auth)
            return client

        report = await doctor.run_doctor(
            client_for,
            access_token=lambda: fake.token,
            user_id=fake.user_id,
            transport="test",
            backend="test",
            edge_url=server.url,
            supabase_url=server.url,
            seconds=0.3,
        )
    assert all(step.ok for step in report.steps), report.steps
    streamed = [target for _, target in proxy.requests if "/user_stream/stream" in target]
    assert streamed, proxy.requests
    assert proxy.failures == []


async def test_each_redirect_of_a_download_takes_its_own_route(
    transport: Transport, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """aiohttp, left to follow redirects, kept the first hop's proxy for every hop: a
    download from a host NO_PROXY exempts, redirected to one it does not, went direct
    (httpx picks each hop's route)."""
    from tests.canned_server import CannedServer

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    async with CannedServer(200, [("Content-Type", "text/plain")], b"the file") as server:
        port = server.url.rsplit(":", 1)[1]
        server.answers["/start.txt"] = (
            b"HTTP/1.1 302 Found\r\nLocation: http://localhost:%s/file.txt\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n" % port.encode()
        )
        async with ForwardProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            flowith_client: Any = transport.client_class()
            async with flowith_client(FakeFlowith().token, max_retries=0) as client:
                saved = await client.download(f"{server.url}/start.txt", tmp_path)
    assert saved.read_bytes() == b"the file"
    assert proxy.requests == [("GET", f"http://localhost:{port}/file.txt")]
    assert server.paths == ["/start.txt", "/file.txt"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_address_no_proxy_names_is_exempt_however_the_url_writes_it(
    transport: Transport, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """httpx hands a URL's host on as written (0:0:0:0:0:0:0:1) and yarl shortens it
    (::1): NO_PROXY=::1 exempted it on aiohttp only."""
    from tests.canned_server import CannedServer

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    served = CannedServer(200, [("Content-Type", "text/plain")], b"the file", host="::1")
    async with served as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "::1")
        flowith_client: Any = transport.client_class()
        async with flowith_client(FakeFlowith().token, max_retries=0) as client:
            port = server.url.rsplit(":", 1)[1]
            saved = await client.download(f"http://[0:0:0:0:0:0:0:1]:{port}/f.txt", tmp_path)
    assert saved.read_bytes() == b"the file"
    assert proxy.requests == []
    assert server.paths == ["/f.txt"]
