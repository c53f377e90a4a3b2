"""Nothing lost, nothing leaked: faults injected by the fake, on every transport."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import os
import random
import re
import time
import traceback
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto import codings
from flowith_proto.abc import FlowithClientBase
from flowith_proto.config import DEFAULT_SUPABASE_KEY
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    FileUploadError,
    FlowithError,
    GenerationError,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
)
from flowith_proto.fake import (
    KYOTO_TRIP,
    Channel,
    FakeFlowith,
    Step,
    Turn,
    chunk,
    close_stream,
    complete,
    drop,
    fail,
    hang,
    pause,
    raw,
    row,
    workflow_complete,
)
from flowith_proto.fake.frames import data_frame
from tests.canned_server import CannedServer
from tests.conftest import MakeClient, Transport, eventually, shown_by_the_chain

pytestmark = pytest.mark.anyio


async def test_a_dropped_stream_loses_nothing_and_reconnects(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("Hello"), drop(), row("done", "Hello, world"))
    fake.script(chunk("again"), complete())
    async with make_client() as client:
        steps = [step async for step in client.generate_stream("hi", timeout=10)]
        assert [s.text_delta for s in steps] == ["Hello", ", world"]
        assert steps[-1].text == "Hello, world"
        second = await client.generate("more")
        assert second.text == "again"
        assert client.stream_connections == 2


async def test_a_row_holding_the_answer_trimmed_still_completes_the_deltas(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The streamed "\n\nHel" was no prefix of the row's "Hello world": the rest of the
    # answer never came as a delta (a warning said the stream differed).
    fake.script(chunk("<think>abc</think>"), chunk("\n\nHel"), drop(), row("done", "Hello world"))
    fake.script(chunk("Same\n"), drop(), row("done", "Same"))
    async with make_client() as client:
        steps = [step async for step in client.generate_stream("hi", timeout=10)]
        trimmed = [step async for step in client.generate_stream("again", timeout=10)]
    assert "".join(s.text_delta for s in steps) == "\n\nHello world"
    assert steps[-1].text == "Hello world"
    assert [s.text_delta for s in trimmed] == ["Same\n", ""]


async def test_the_poll_is_retried_through_server_errors(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(close_stream(), row("done", "made it"))
    fake.fail_next(2, 503, method="GET", path="/rest/v1/flow_node")
    async with make_client() as client:
        result = await client.generate("hi", timeout=10)
    assert result.text == "made it"
    assert fake.faults_served == 2


async def test_a_server_error_opening_the_stream_falls_back_to_the_row(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("streamed "), complete(result="streamed answer"))
    fake.fail_next(1, 503, method="GET", path="/user_stream/stream")
    async with make_client() as client:
        result = await client.generate("hi", timeout=10)
    assert result.text == "streamed answer"
    assert fake.faults_served == 1
    assert fake.requests_to("POST", "/completion/async")  # the generation went on
    assert fake.requests_to("GET", "/rest/v1/flow_node")  # and its row told the answer


async def test_a_refused_stream_fails_the_generation_before_it_starts(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.fail_next(1, 403, method="GET", path="/user_stream/stream")
    async with make_client() as client:
        with pytest.raises(PermissionDeniedError) as info:
            await client.generate("hi", timeout=10)
    assert not fake.requests_to("POST", "/completion/async")
    assert info.value.endpoint == "GET /user_stream/stream"


async def test_an_error_answer_names_the_request_it_answered(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # generate() sends several requests: "HTTP 502" alone did not say which failed.
    fake.fail_next(1, 502, method="POST", path="/rest/v1/flow_node", body={"message": "down"})
    async with make_client(max_retries=0) as client:
        with pytest.raises(APIError) as info:
            await client.generate("hi", timeout=10)
    assert str(info.value) == "HTTP 502 from POST /rest/v1/flow_node: down"
    assert (info.value.endpoint, info.value.status_code) == ("POST /rest/v1/flow_node", 502)


_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_LONG = b"upstream said: " + b"word\n" * 2000


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        ("text/html", _NGINX_502, "502 Bad Gateway (an HTML page)"),
        ("text/html", b"<!DOCTYPE html>\n<html><body><h1>Oops</h1></body></html>", "an HTML page"),
        (
            "text/plain",
            b"upstream failed:\r\n  connect() refused\r\n",
            "upstream failed: connect() refused",
        ),
        ("text/plain", _LONG, " ".join(_LONG.decode().split())[:397] + "..."),
    ],
    ids=["nginx page", "untitled page", "lines", "long"],
)
async def test_an_error_page_is_quoted_on_one_line(
    transport: Transport, content_type: str, body: bytes, said: str
) -> None:
    """An nginx 502 page went into the message verbatim, seven lines with CR LF in
    what a log prints as one line. The message says a page's title, and any other
    text on one line and cut short; .body keeps all of it."""
    async with CannedServer(502, [("Content-Type", content_type)], body) as page:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=page.url, supabase_url=page.url, max_retries=0
        )
        async with client:
            with pytest.raises(APIError) as info:
                await client.get_credits()
    assert str(info.value) == f"HTTP 502 from GET /user/credits: {said}"
    assert info.value.body == body.decode()


async def test_a_failed_generation_quotes_a_providers_traceback_on_one_line(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A reason of many lines (a provider's traceback) went into the message as it
    came; the GenerationError's error keeps it so."""
    reason = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'
    fake.script(chunk("a"), fail(reason, "provider_error"))
    async with make_client() as client:
        with pytest.raises(GenerationError) as info:
            await client.generate("hi", timeout=10)
    said = 'Traceback (most recent call last): File "x.py", line 1 ValueError: bad'
    assert str(info.value).endswith(f" failed: {said} (provider_error)")
    assert info.value.error == reason


async def test_an_api_redirect_is_an_error_and_never_followed_with_credentials(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    elsewhere = "http://127.0.0.1:9/steal"  # never reached: nothing may follow it
    fake.fail_next(1, 302, path="/rest/v1/conversation", headers=[("Location", elsewhere)])
    async with make_client(max_retries=0) as client:
        with pytest.raises(APIError, match=re.escape(f"redirected to '{elsewhere}'")) as caught:
            await client.list_conversations()
    assert caught.value.status_code == 302
    assert len(fake.requests_to("GET", "/rest/v1/conversation")) == 1


async def test_a_download_follows_the_cdns_redirect_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    moved = fake.add_file("/f/new/photo.png", b"the real bytes", "image/png")
    old = fake.file_url("/f/old/photo.png")
    fake.fail_next(1, 302, path="/f/old/photo.png", headers=[("Location", moved)])
    async with make_client() as client:
        saved = await client.download(old, tmp_path)
    assert saved.read_bytes() == b"the real bytes"
    assert fake.requests_to("GET", "/f/new/photo.png")


@pytest.mark.parametrize("hops", [20, 21])
async def test_a_download_follows_as_many_redirects_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path, hops: int
) -> None:
    # httpx follows 20; aiohttp, given max_redirects=20, gave up at the 20th.
    target = fake.add_file("/f/final/photo.png", b"the real bytes", "image/png")
    for hop in range(hops):
        following = target if hop == hops - 1 else fake.file_url(f"/f/hop{hop + 1}/photo.png")
        fake.fail_next(1, 302, path=f"/f/hop{hop}/photo.png", headers=[("Location", following)])
    async with make_client(max_retries=0) as client:
        if hops == 20:
            saved = await client.download(fake.file_url("/f/hop0/photo.png"), tmp_path)
            assert saved.read_bytes() == b"the real bytes"
        else:
            with pytest.raises(ConnectionFailedError, match="TooManyRedirects"):
                await client.download(fake.file_url("/f/hop0/photo.png"), tmp_path)
    followed = hops <= 20
    assert len(fake.requests_to("GET", "/f/final/photo.png")) == followed
    assert len(os.listdir(tmp_path)) == followed  # nothing left of a failed one


async def test_a_cookie_set_on_a_redirect_is_hidden_too(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    # The transport keeps it as it follows the redirect; only the last answer's
    # cookies were learned, so an error echoing the request showed it.
    cookie = "RedirectCookie123456"
    moved = fake.add_file("/f/new/photo.png", b"the real bytes", "image/png")
    old = fake.file_url("/f/old/photo.png")
    fake.fail_next(
        1,
        302,
        path="/f/old/photo.png",
        headers=[("Location", moved), ("Set-Cookie", f"cdn={cookie}; Path=/")],
    )
    fake.fail_next(1, 400, path="/user/credits", body={"message": f"you sent cdn={cookie}"})
    async with make_client(max_retries=0) as client:
        await client.download(old, tmp_path)
        with pytest.raises(APIError) as caught:
            await client.get_credits()
    assert cookie not in f"{caught.value} {caught.value.body!r}"
    assert fake.requests_to("GET", "/user/credits")[0].header("cookie") == f"cdn={cookie}"


async def test_retry_after_is_honoured_on_a_rate_limited_write(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("ok"), complete())
    fake.fail_next(1, 429, path="/rest/v1/conversation", headers=[("Retry-After", "1")])
    async with make_client() as client:
        started = time.monotonic()
        result = await client.generate("hi")
    assert result.text == "ok"
    assert time.monotonic() - started >= 0.9
    assert len(fake.requests_to("POST", "/rest/v1/conversation")) == 2


@pytest.mark.parametrize("call", ["download", "listener"])
@pytest.mark.parametrize(
    ("status", "retry_after", "retried"),
    [
        (503, "0.1", True),
        (502, None, True),  # the policy's backoff
        (429, "0.1", True),
        (429, "120", False),  # longer than the policy waits: the caller's to decide
        (404, None, False),
    ],
)
async def test_a_download_or_a_listener_is_retried_as_any_read(
    fake: FakeFlowith,
    make_client: MakeClient,
    tmp_path: Path,
    call: str,
    status: int,
    retry_after: str | None,
    retried: bool,
) -> None:
    """One 503 on opening a download or a listener raised at once, where any other GET
    is retried (the README says reads are): they opened their stream once."""
    path = "/f/x/a.bin" if call == "download" else "/user_stream/sse"
    url = fake.add_file("/f/x/a.bin", b"hello")
    headers = [("Retry-After", retry_after)] if retry_after else []
    fake.fail_next(1, status, method="GET", path=path, headers=headers)

    async def use(client: FlowithClientBase) -> None:
        if call == "download":
            assert (await client.download(url, tmp_path)).read_bytes() == b"hello"
        else:
            # A window longer than the policy's backoff (at most 0.5 s here) and the
            # Retry-After wait, with room for two opens on a loaded machine.
            async for _ in client.stream_user_sse(timeout=1):
                pass

    async with make_client() as client:
        with anyio.fail_after(10):
            if retried:
                await use(client)
            else:
                with pytest.raises(APIError) as caught:
                    await use(client)
                assert caught.value.status_code == status
    assert len(fake.requests_to("GET", path)) == (2 if retried else 1)


async def test_a_download_is_tried_no_more_than_max_retries_allows(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    url = fake.add_file("/f/x/a.bin", b"hello")
    fake.fail_next(3, 503, method="GET", path="/f/x/a.bin", headers=[("Retry-After", "0")])
    async with make_client(max_retries=2) as client:
        with pytest.raises(APIError, match="503"):
            await client.download(url, tmp_path)
    assert len(fake.requests_to("GET", "/f/x/a.bin")) == 3


async def test_no_credits_is_its_own_error(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.set_credits(0)
    async with make_client() as client:
        with pytest.raises(InsufficientCreditsError):
            await client.generate("hi")


async def test_an_expired_token_is_refreshed_once_for_everyone(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    persisted: list[tuple[str, str]] = []

    async def persist(access: str, refresh: str) -> None:
        persisted.append((access, refresh))

    fake.expire_token(fake.token)
    async with make_client(refresh_token=fake.refresh_token, on_token_refresh=persist) as client:
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(client.get_credits)
        assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
        assert len(persisted) == 1
        assert client.get_refresh_token() == persisted[0][1] != fake.refresh_token
        assert (await client.get_credits())[0].remain_quota >= 0


async def test_cookie_values_the_server_set_are_hidden_like_tokens(
    fake: FakeFlowith, make_client: Any, tmp_path: Path
) -> None:
    """The transport keeps a cookie and sends it back, so an answer echoing the
    request shows it: its value is hidden in the error and the cassette, like a token."""
    cookie = "COOKIESECRET123456"
    fake.fail_next(
        1, 500, body={"message": "first"}, headers=[("Set-Cookie", f"sb-session={cookie}; Path=/")]
    )
    fake.fail_next(1, 500, body={"message": f"upstream saw sb-session={cookie}"})
    cassette = tmp_path / "cookie.jsonl"
    async with make_client(max_retries=0, record_to=cassette) as client:
        errors = []
        for _ in range(2):
            with pytest.raises(APIError) as info:
                await client.get_credits()
            errors.append(info.value)
    assert errors[1].body == {"message": "upstream saw sb-session=[REDACTED]"}
    for error in errors:
        assert cookie not in f"{error} {error!r} {error.body!r} {error.args!r}"
    assert cookie not in cassette.read_text(encoding="utf-8")
    assert "first" in cassette.read_text(encoding="utf-8")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decoded_is_a_decode_error_not_retried(
    fake: FakeFlowith, make_client: MakeClient, encoding: str
) -> None:
    """An answer whose Content-Encoding cannot be undone (corrupt, or not understood)
    was a ConnectionFailedError, retried three times for a GET, on aiohttp even for a
    200 it called a 400; the transports now agree. It names the answer's status and
    endpoint, as the error of any other answer does (it named neither)."""
    fake.fail_next(1, 200, path="/user/credits", headers=[("Content-Encoding", encoding)])
    async with make_client() as client:
        with pytest.raises(ResponseDecodeError) as caught:
            await client.get_credits()  # retried, it would have got the next, good, answer
        assert caught.value.status_code == 200
        assert caught.value.endpoint == "GET /user/credits"
        assert str(caught.value).startswith("HTTP 200 from GET /user/credits: its body could not")
        assert (await client.get_credits())[0].remain_quota >= 0
    assert len(fake.requests_to("GET", "/user/credits")) == 2


async def test_refresh_tokens_let_go_of_stay_hidden(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """A spent (rotated) or signed-out refresh token, or one passed to a single call,
    was no longer hidden: an answer quoting it showed it in the error, and the one
    passed to refresh_access_token() reached the cassette."""
    passed = "rt_PASSED_zz99YY88"
    cassette = tmp_path / "refresh.jsonl"
    async with make_client(
        refresh_token=fake.refresh_token, max_retries=0, record_to=cassette
    ) as client:
        fake.fail_next(1, 400, path="/auth/v1/token", body={"message": f"invalid: {passed}"})
        with pytest.raises(AuthenticationError) as refused:
            await client.refresh_access_token(passed)
        let_go = []
        for step in (client.refresh_access_token, client.logout):
            let_go.append(client.get_refresh_token())
            await step()
        errors: list[APIError] = [refused.value]
        for token in (passed, *let_go):
            fake.fail_next(1, 500, path="/user/credits", body={"message": f"session {token}"})
            with pytest.raises(APIError) as info:
                await client.get_credits()
            errors.append(info.value)
    recorded = cassette.read_text(encoding="utf-8")
    for token in (passed, *let_go):
        assert token not in recorded
        for error in errors:
            assert token not in f"{error} {error!r} {error.body!r}"
    assert errors[1].body == {"message": "session [REDACTED]"}


async def test_the_library_logs_no_credential_a_server_echoed(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Its own warnings quoted what the server sent: an opaque refresh token echoed in a
    malformed event was logged whole (the log mask knew shapes only)."""

    def echoing(turn: Turn) -> list[Step]:
        frame = {"data": {"nodeId": turn.node_id, "type": {"echo": fake.refresh_token}}}
        return [raw(b"data: " + json.dumps(frame).encode() + b"\n\n"), chunk("ok"), complete()]

    fake.responder = echoing
    with caplog.at_level(logging.DEBUG, logger="flowith"):
        async with make_client(refresh_token=fake.refresh_token) as client:
            assert (await client.generate("hi")).text == "ok"
    assert "malformed stream event" in caplog.text
    assert fake.refresh_token not in caplog.text
    assert "[REDACTED]" in caplog.text


async def test_a_transport_error_chained_as_the_cause_shows_no_credential(
    fake: FakeFlowith, make_client: MakeClient, transport: Transport
) -> None:
    """aiohttp's response errors keep the request's headers, and their repr (the cause
    of the library's error) showed the access token and the API key; httpx's keep the
    request, with its headers."""
    fake.fail_next(1, 500, path="/user/credits", headers=[("X-Big", "a" * 200_000)])
    async with make_client(max_retries=0) as client:
        with pytest.raises(FlowithError) as info:
            await client.get_credits()
    shown = shown_by_the_chain(info.value)
    assert fake.token not in shown
    assert DEFAULT_SUPABASE_KEY not in shown


#: The value of a cookie the client holds, and the answer that sets it.
_COOKIE = "COOKIEVALUE0123456789"
_SET_COOKIE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Connection: close\r\nSet-Cookie: sid=" + _COOKIE.encode() + b"; Path=/\r\n\r\n[]"
)
_FOUND = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nConnection: close\r\n"
#: A download URL's signature.
_SIGNATURE = "AMZSIG0123456789abcdef"
_SIGNED = b"?X-Amz-Signature=" + _SIGNATURE.encode()
#: Answers to a download that no transport reads, or follows.
_UNREADABLE = {
    "duplicate-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[]",
    "bad-status-line": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n[]",
    "bad-chunking": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n",
    "header-too-large": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    "bad-header-line": _FOUND + b"Location : http://cdn.test/b.png" + _SIGNED + b"\r\n\r\n",
    "redirect-loop": _FOUND + b"Location: /f/a.png" + _SIGNED + b"\r\n\r\n",
    "redirect-to-ftp": _FOUND + b"Location: ftp://cdn.test/a.png" + _SIGNED + b"\r\n\r\n",
    # No "://": redact() takes neither for a URL (aiohttp quoted them whole).
    "redirect-to-no-host": _FOUND + b"Location: https:a.png" + _SIGNED + b"\r\n\r\n",
    "redirect-to-mailto": _FOUND + b"Location: mailto:a@cdn.test" + _SIGNED + b"\r\n\r\n",
    # Cut inside the head: aiohttp's error held what it had read, as an object.
    "head-cut-short": (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=" + _COOKIE.encode() + b"; Path=/\r\n"
        b"Location: http://cdn.test/b.png" + _SIGNED + b"\r\nX-A: b"
    ),
    # A password in a scheme-relative Location (where no request can go).
    "redirect-with-password": (
        _FOUND + b"Location: //user:" + _SIGNATURE.encode() + b"@[::1/a\r\n\r\n"
    ),
}


@contextlib.asynccontextmanager
async def _answering(answer: bytes) -> AsyncIterator[str]:
    """A loopback server answering a credits request with a cookie, and any other
    with ``answer`` (its raw bytes), each on a connection of its own; yields its URL."""
    server = CannedServer(200, [], b"")
    server.answer = answer
    server.answers["/user/credits"] = _SET_COOKIE
    async with server:
        yield server.url


def _logged_exception(error: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """What ``logging.exception`` writes of ``error`` (only that: httpcore's own DEBUG
    logs show the answers' headers, as the README warns)."""
    logger = logging.getLogger("tests.logged")
    logger.error("it failed", exc_info=error)
    record = next(r for r in reversed(caplog.records) if r.name == logger.name)
    return logging.Formatter().format(record)


async def test_a_cookie_an_unreadable_answer_echoes_is_hidden_from_a_downloads_error(
    fake: FakeFlowith, transport: Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No operation scrubs a download's error on its way out: httpx's message, which
    quotes the header line its parser refused, showed the value of a cookie the client
    held, and so did the traceback of the transport's errors on every transport."""
    echo = _FOUND + b"Location : http://cdn.test/b.png?echo=" + _COOKIE.encode() + b"\r\n\r\n"
    async with _answering(echo) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url)
        async with client:
            await client.get_credits()  # its answer sets the cookie
            with pytest.raises(ConnectionFailedError) as caught:
                await client.download(f"{url}/f/a.png", tmp_path)
    logged = _logged_exception(caught.value, caplog)
    assert _COOKIE not in str(caught.value)
    assert _COOKIE not in logged
    assert "echo=[REDACTED]" in logged  # the line is still quoted


@pytest.mark.parametrize("call", ["download", "listener"])
async def test_a_cookie_a_breaking_body_echoes_is_hidden_from_the_error(
    fake: FakeFlowith,
    transport: Transport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    call: str,
) -> None:
    """A body that breaks once it flows fails a read, which no operation scrubs either:
    httpx's message quoted the chunk header it refused, a held cookie's value in it."""
    echo = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\necho=" + _COOKIE.encode() + b"\r\n"
    )

    async def listen(client: FlowithClientBase) -> None:
        async for _ in client.stream_user_sse():
            pass

    async with _answering(echo) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url)
        async with client:
            await client.get_credits()  # its answer sets the cookie
            failing = client.download(f"{url}/f/a.png", tmp_path) if call == "download" else None
            with pytest.raises(ConnectionFailedError) as caught:
                await (failing or listen(client))
    logged = _logged_exception(caught.value, caplog)
    assert _COOKIE not in str(caught.value)
    assert _COOKIE not in logged


@pytest.mark.parametrize("answer", list(_UNREADABLE))
async def test_a_failed_downloads_traceback_shows_no_signed_url_or_cookie(
    fake: FakeFlowith,
    transport: Transport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    """Its message was redacted, but logging.exception printed the transport's errors
    it was raised from: aiohttp's quoted the signed URL (its request's, or where a
    redirect led), and both the line of the answer they refused. httpx's kept the
    request, whose repr shows the URL and whose headers the cookie."""
    async with _answering(_UNREADABLE[answer]) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url)
        async with client:
            await client.get_credits()  # its answer sets the cookie, sent with the download
            with pytest.raises(ConnectionFailedError) as caught:
                await client.download(f"{url}/f/a.png?X-Amz-Signature={_SIGNATURE}", tmp_path)
    logged = _logged_exception(caught.value, caplog)
    shown = shown_by_the_chain(caught.value) + logged
    assert _SIGNATURE not in shown
    assert _COOKIE not in shown
    # Still there to read: the transport's error, its type and what it said.
    cause = caught.value.__cause__
    assert cause is not None
    assert f"{type(cause).__module__}.{type(cause).__qualname__}: {cause}" in logged


@pytest.mark.parametrize("answer", [name for name in _UNREADABLE if name.startswith("redirect")])
async def test_a_session_you_bring_shows_no_signed_location_either(
    transport: Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    """Such a session follows redirects itself: aiohttp's own error quoted a Location
    without "://" whole (redact() reads URLs with it only), or held it as a yarl URL,
    which redact_chain skips."""
    if transport.library != "aiohttp":
        pytest.skip("an aiohttp session's own redirects")
    import aiohttp

    async with _answering(_UNREADABLE[answer]) as url, aiohttp.ClientSession() as session:
        client_class: Any = transport.client_class()
        client = client_class(FakeFlowith().token, http_client=session, max_retries=0)
        async with client:
            with pytest.raises(ConnectionFailedError) as caught:
                await client.download(f"{url}/f/a.png?X-Amz-Signature={_SIGNATURE}", tmp_path)
    shown = shown_by_the_chain(caught.value) + _logged_exception(caught.value, caplog)
    assert _SIGNATURE not in shown


async def test_an_interim_answer_no_request_asked_for_is_no_success(
    fake: FakeFlowith, transport: Transport, tmp_path: Path
) -> None:
    """aiohttp hands on a ``101 Switching Protocols`` as the answer: the core took any
    status under 300 for a success, so logout() said it was done and dropped the
    refresh token, a download saved an empty file, and reads returned made-up values."""
    server = CannedServer(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")], b"")
    server.answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    async with server:
        client = transport.client_class()(
            fake.token,
            refresh_token=fake.refresh_token,
            edge_url=server.url,
            supabase_url=server.url,
            max_retries=0,
        )
        async with client:
            with pytest.raises(FlowithError):
                await client.logout()
            assert client.get_refresh_token() == fake.refresh_token
            with pytest.raises(FlowithError):
                await client.get_online_count()
            with pytest.raises(FlowithError):
                await client.download(f"{server.url}/f/a.png", tmp_path)
            with pytest.raises(FlowithError):
                async for _ in client.stream_user_sse(timeout=5):
                    pass
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test's look)


async def test_a_failed_calls_cause_keeps_no_cookie_the_client_sent(
    fake: FakeFlowith, transport: Transport
) -> None:
    """httpx's error, the cause of the library's, kept the request: its headers held
    the values of the cookies the client sends."""
    async with _answering(_UNREADABLE["duplicate-length"]) as url:
        client = transport.client_class()(fake.token, edge_url=url, supabase_url=url, max_retries=0)
        async with client:
            await client.get_credits()  # its answer sets the cookie
            with pytest.raises(ConnectionFailedError) as caught:
                await client.list_conversations()
    shown = shown_by_the_chain(caught.value)
    assert _COOKIE not in shown
    assert fake.token not in shown


@pytest.mark.parametrize("transport", ["httpx-asyncio"], indirect=True)
async def test_a_status_error_an_event_hook_raises_keeps_no_request_or_answer(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """httpx's HTTPStatusError, which a hook of the http_client you bring may raise,
    keeps the request and the answer (with the request again): chained as the cause
    of the library's error, both showed the signed URL."""

    async def raise_for_status(response: httpx.Response) -> None:
        response.raise_for_status()

    signed = f"{fake.file_url('/f/missing.png')}?X-Amz-Signature={_SIGNATURE}"
    hooked = httpx.AsyncClient(event_hooks={"response": [raise_for_status]})
    async with hooked as mine, make_client(http_client=mine, max_retries=0) as client:
        with pytest.raises(ConnectionFailedError, match="HTTPStatusError") as caught:
            await client.download(signed, tmp_path)
    shown = shown_by_the_chain(caught.value)
    assert _SIGNATURE not in shown
    assert "httpx.HTTPStatusError: Client error '404 Not Found' for url" in shown


def _refreshing_client(
    fake: FakeFlowith,
    make_client: MakeClient,
    persisted: list[tuple[str, str]],
    *,
    expired: bool = True,
    answered: anyio.Event | None = None,
    answer_delay: float = 0.5,
    **options: Any,
) -> FlowithClientBase:
    """A client whose token the fake finds expired (unless not ``expired``), whose
    token answers come ``answer_delay`` s after the server gave them (the refresh token
    is spent by then, as on a slow network), and which notes in ``persisted`` what it
    hands on.
    ``answered`` is set as a token answer comes: a test cancelling a refresh's caller
    waits for it, since on a loaded machine the refresh may not have started after
    any fixed time (the expired token is only found out by a first answer)."""
    if expired:
        fake.expire_token(fake.token)
    client: FlowithClientBase = make_client(
        refresh_token=fake.refresh_token,
        on_token_refresh=lambda access, refresh: persisted.append((access, refresh)),
        **options,
    )
    send = client._send

    async def slowed(request: Any, timeout: Any, deadline: Any, operation: str) -> Any:
        response = await send(request, timeout, deadline, operation)
        if "/auth/v1/token" in request.url:
            if answered is not None:
                answered.set()
            await anyio.sleep(answer_delay)
        return response

    client._send = slowed  # type: ignore[method-assign]
    return client


async def _cancelled_once_answered(
    call: Callable[[], Coroutine[Any, Any, object]], answered: anyio.Event
) -> None:
    """Run ``call`` and cancel it once the token answer came, mid-refresh."""
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        with anyio.fail_after(10):
            await answered.wait()
        group.cancel_scope.cancel()


async def test_a_call_cancelled_while_it_refreshes_still_adopts_the_new_tokens(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The server spent the refresh token as it answered: had the client dropped
    # the answer with the cancelled caller, every later call would be signed out.
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    async with _refreshing_client(fake, make_client, persisted, answered=answered) as client:
        await _cancelled_once_answered(client.get_credits, answered)
        await eventually(lambda: bool(persisted))  # on aiohttp the refresh ends on its own
        assert (await client.get_credits())[0].remain_quota >= 0
        assert (await client.generate("still signed in?")).text
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    assert persisted[0][1] == client.get_refresh_token() != fake.refresh_token


async def test_a_call_cancelled_mid_refresh_leaves_at_once_on_every_event_loop(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Its deadline must fire: on trio a shielded scope held the caller until the
    # refresh ended (up to the client's timeout per attempt), here 3 s.
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    client = _refreshing_client(fake, make_client, persisted, answered=answered, answer_delay=3)
    async with client:
        left_after: list[float] = []

        async def call() -> None:
            try:
                await client.get_credits()
            finally:
                left_after.append(time.monotonic())

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            with anyio.fail_after(10):
                await answered.wait()
            cancelled_at = time.monotonic()
            group.cancel_scope.cancel()
        assert left_after[0] - cancelled_at < 1.5  # not the 3 s the refresh takes
        assert not persisted  # the refresh goes on without it...
        await eventually(lambda: bool(persisted), within=10)  # ...and its tokens are kept
        assert (await client.get_credits())[0].remain_quota >= 0
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    assert persisted[0][1] == client.get_refresh_token() != fake.refresh_token


async def test_a_call_is_not_failed_by_a_refresh_with_a_token_not_the_clients(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Its expired token had it join the refresh under way, whatever its refresh token,
    # and raise that refresh's refusal, though the client's own token was good.
    persisted: list[tuple[str, str]] = []
    async with _refreshing_client(fake, make_client, persisted) as client:
        outcomes: dict[str, str] = {}

        async def refresh_with_another() -> None:
            with pytest.raises(AuthenticationError):
                await client.refresh_access_token("rt-some-old-one-1234")
            outcomes["explicit"] = "refused"

        async def ordinary_call() -> None:
            await anyio.sleep(0.1)
            outcomes["call"] = f"{len(await client.get_credits())} credits"

        async with anyio.create_task_group() as group:
            group.start_soon(refresh_with_another)
            group.start_soon(ordinary_call)
    assert outcomes == {"explicit": "refused", "call": "2 credits"}
    assert persisted[-1][1] == client.get_refresh_token() != fake.refresh_token


@pytest.mark.parametrize("given", [b"rt-as-bytes-1234", 1234, "rt\nwith-a-newline-inside"])
async def test_a_refresh_token_that_is_no_text_is_refused_and_the_client_goes_on(
    fake: FakeFlowith, make_client: MakeClient, given: Any
) -> None:
    # Bytes were kept among the secrets to hide, and every later error of the client
    # was a TypeError ("'in <string>' requires string as left operand").
    async with make_client(refresh_token=fake.refresh_token) as client:
        with pytest.raises(ValidationError, match="refresh_token"):
            await client.refresh_access_token(given)
        with pytest.raises(NotFoundError):
            await client.get_conversation(str(uuid.uuid4()))
        # One with white space around it is trimmed, as the constructor trims it.
        session = await client.refresh_access_token(f" {fake.refresh_token}\n")
    assert session.refresh_token == client.get_refresh_token()


@pytest.mark.parametrize(
    "option", [{"redirect_to": 123}, {"scopes": ["email"]}, {"access_type": 5}, {"prompt": 1.5}]
)
async def test_oauth_options_that_are_no_text_are_validation_errors(
    make_client: MakeClient, option: dict[str, Any]
) -> None:
    # A bare TypeError from quote(): only the provider was checked.
    async with make_client() as client:
        with pytest.raises(ValidationError, match=next(iter(option))):
            client.get_oauth_url(**option)


@pytest.mark.parametrize("escape", ["%2E", "%2e", "\\u002e", "\\u002E"])
async def test_a_token_held_before_a_refresh_stays_hidden_when_echoed_escaped(
    fake: FakeFlowith, make_client: MakeClient, escape: str
) -> None:
    # After a refresh the old access token is hidden by its shape alone, and an echo
    # with its dots escaped did not have that shape: it showed whole.
    async with make_client(refresh_token=fake.refresh_token, max_retries=0) as client:
        old = fake.token
        await client.refresh_access_token()
        echoed = old.replace(".", escape)
        fake.fail_next(1, 500, path="/user/credits", body={"message": f"session {echoed}"})
        with pytest.raises(APIError) as info:
            await client.get_credits()
    shown = f"{info.value} {info.value!r} {info.value.body!r}"
    for part in old.split("."):
        assert part not in shown


async def test_a_generations_deadline_fires_while_the_token_is_being_refreshed(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A call waited for the refresh's answer (4 s here, up to the client's timeout
    per attempt) whatever its own timeout: the refresh effect had no deadline."""
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    client = _refreshing_client(fake, make_client, persisted, answered=answered, answer_delay=4)
    fake.script(chunk("hi"), complete())
    async with client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="deadline passed while the token") as caught:
            await client.generate("hi", timeout=1)
        assert time.monotonic() - started < 3
        assert caught.value.deadline_passed
        assert not persisted  # the refresh goes on without the call...
        await eventually(lambda: bool(persisted), within=10)  # ...and its tokens are kept
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1


async def test_a_logout_lets_a_refresh_under_way_finish_first(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The refresh's answer landed after logout() and was adopted: the client held a
    refresh token again, and on_token_refresh was handed a session the user ended."""
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    client = _refreshing_client(fake, make_client, persisted, answered=answered, answer_delay=1)
    async with client, anyio.create_task_group() as group:
        group.start_soon(client.get_credits)
        with anyio.fail_after(10):
            await answered.wait()
        await client.logout()
        assert len(persisted) == 1  # handed on before the logout, not after
        assert client.get_refresh_token() == ""
    assert client.get_refresh_token() == ""
    assert len(persisted) == 1


async def test_on_token_refresh_gets_each_pair_in_order_even_when_slow(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A refresh begun while the previous one's callback still ran handed its tokens
    on first, so the pair saved last was the spent one."""
    order: list[tuple[str, str]] = []

    async def on_refresh(access: str, refresh: str) -> None:
        order.append(("start", refresh))
        if len(order) == 1:
            await anyio.sleep(0.5)
        order.append(("end", refresh))

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=on_refresh)
    async with client, anyio.create_task_group() as group:
        group.start_soon(client.refresh_access_token)
        await eventually(lambda: bool(order))
        await client.refresh_access_token()
    assert [kind for kind, _ in order] == ["start", "end", "start", "end"]
    assert order[0][1] == order[1][1] != order[2][1] == order[3][1]
    assert order[-1][1] == client.get_refresh_token()


async def test_asyncios_own_cancellation_of_a_refreshing_call_keeps_the_new_tokens(
    fake: FakeFlowith, make_client: MakeClient, transport: Transport
) -> None:
    # task.cancel() (as asyncio.wait_for and asyncio.timeout do) reaches past anyio's shields.
    if transport.backend != "asyncio":
        pytest.skip("asyncio's own cancellation")
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    async with _refreshing_client(fake, make_client, persisted, answered=answered) as client:
        task = asyncio.ensure_future(client.get_credits())
        with anyio.fail_after(10):
            await answered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: bool(persisted))
        assert (await client.get_credits())[0].remain_quota >= 0
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1


async def test_closing_the_client_waits_for_a_refresh_its_caller_left(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The caller was cancelled at once (asyncio); the answer still comes, and
    # the tokens it brings must be adopted and handed on before the client goes.
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    async with _refreshing_client(fake, make_client, persisted, answered=answered) as client:
        await _cancelled_once_answered(client.get_credits, answered)
    assert len(persisted) == 1
    assert persisted[0][1] == client.get_refresh_token() != fake.refresh_token


async def test_a_refresh_failing_after_its_caller_left_is_logged(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The server may have spent the refresh token: with nobody left to raise the
    # failure to, it was silent, and the next call found the client signed out.
    fake.fail_next(1, 400, method="POST", path="/auth/v1/token", body={"error": "boom"})
    answered = anyio.Event()
    caplog.set_level(logging.WARNING, logger="flowith")
    async with _refreshing_client(fake, make_client, [], answered=answered) as client:
        await _cancelled_once_answered(client.get_credits, answered)
        await eventually(lambda: "after its caller was cancelled" in caplog.text)
    (record,) = [r for r in caplog.records if "after its caller was cancelled" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        "FlowithClientBase._refresh_tokens failed after its caller was cancelled: "
        "AuthenticationError: "
    )
    assert fake.refresh_token not in caplog.text


async def test_closing_before_a_refresh_handed_its_tokens_on_says_so(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A close waits for a refresh at most ``timeout``: past that, tokens the server
    # issued may never reach on_token_refresh, which must not pass unsaid.
    fake.expire_token(fake.token)
    handing_on = anyio.Event()

    async def slow_save(access: str, refresh: str) -> None:
        handing_on.set()
        await anyio.sleep(5)

    caplog.set_level(logging.WARNING, logger="flowith")
    client = make_client(refresh_token=fake.refresh_token, timeout=0.5, on_token_refresh=slow_save)
    async with client:
        await _cancelled_once_answered(client.get_credits, handing_on)
        started = time.monotonic()
    assert time.monotonic() - started < 3  # not the 5 s the callback takes
    (record,) = [r for r in caplog.records if "refresh" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "closing the client with a token refresh still in progress after 0.5 s: the "
        "server may have spent the refresh token, and the new tokens may never reach "
        "on_token_refresh"
    )


async def test_a_refresh_holding_a_cancelled_caller_ends_within_the_timeout(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Retry-After waits that do not fit in the client's timeout are not waited.
    fake.expire_token(fake.token)
    fake.fail_next(2, 429, method="POST", path="/auth/v1/token", headers=[("Retry-After", "2")])
    async with make_client(refresh_token=fake.refresh_token, timeout=1.0) as client:
        started = time.monotonic()
        with anyio.move_on_after(0.2), pytest.raises(RateLimitError):
            await client.get_credits()  # the refresh's own error, unless the cancel came first
        # Not held the 4 s two waits of Retry-After would take.
        assert time.monotonic() - started < 1.5


async def test_a_closer_cancelled_while_a_refresh_is_in_flight_still_closes(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    client = _refreshing_client(fake, make_client, [], record_to=tmp_path / "c.jsonl")
    with anyio.move_on_after(0.2):
        async with client, anyio.create_task_group() as group:
            group.start_soon(client.get_credits)
            await anyio.sleep_forever()
    assert client._closed
    with pytest.raises(FlowithError, match="the client is closed"):
        await client.get_credits()


async def test_a_closer_cancelled_while_a_refresh_is_in_flight_still_ends_every_stream(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # It waited for the refresh, was cancelled there, and left the shared stream and
    # the listener's open: aiohttp, which does not wake a read when its session
    # closes, left the generation and the listener waiting on them.
    fake.script(chunk("partial"), hang())
    client = _refreshing_client(fake, make_client, [], expired=False)
    ended: dict[str, str] = {}

    async def generation() -> None:
        try:
            async for _ in client.generate_stream("hi"):
                ended.setdefault("generation", "streaming")
        except FlowithError as error:
            ended["generation"] = str(error)

    async def listener() -> None:
        try:
            async for _ in client.stream_user_sse():
                pass
        except FlowithError as error:
            ended["listener"] = str(error)

    async with client, anyio.create_task_group() as group:
        group.start_soon(generation)
        group.start_soon(listener)
        await eventually(lambda: "generation" in ended)
        group.start_soon(client.refresh_access_token)
        await anyio.sleep(0.1)  # the refresh waits for its answer
        with anyio.fail_after(3):  # not the 10 s of a hung stream
            with anyio.move_on_after(0.1):
                await client.aclose()
            await eventually(lambda: len(ended) == 2 and "streaming" not in ended.values())
    assert ended == {"generation": "the client is closed", "listener": "the client is closed"}


async def test_a_failure_closing_the_shared_stream_still_closes_the_listeners(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[str] = []
    client = make_client()

    async def listener() -> None:
        try:
            async for _ in client.stream_user_sse():
                ended.append("frame")
        except FlowithError as error:
            ended.append(str(error))

    async def failing() -> None:
        raise RuntimeError("closing the shared stream failed")

    async with anyio.create_task_group() as group:
        await client.__aenter__()
        try:
            group.start_soon(listener)
            await eventually(lambda: bool(ended))  # a frame came: the listener is open
            monkeypatch.setattr(client._hub, "aclose", failing)
            with pytest.raises(RuntimeError, match="closing the shared stream failed"):
                await client.aclose()
            with anyio.fail_after(3):
                await eventually(lambda: ended[-1] == "the client is closed")
        finally:
            if not client._closed:  # the test failed first: leave nothing open for the next
                await client.aclose()


async def test_a_body_failing_to_close_leaves_no_other_open(make_client: MakeClient) -> None:
    closed: list[str] = []

    class Body:
        def __init__(self, name: str, fails: bool) -> None:
            self.name, self.fails = name, fails

        async def read(self, deadline: float | None) -> bytes | None:
            return b""

        async def aclose(self) -> None:
            closed.append(self.name)
            if self.fails:
                raise OSError(f"{self.name} failed to close")

    client = make_client()
    await client.__aenter__()
    client._open_bodies.update(Body(name, name == "b") for name in "abc")
    with pytest.raises(OSError, match="b failed to close"):
        await client.aclose()
    assert sorted(closed) == ["a", "b", "c"]


async def test_two_closes_during_a_refresh_close_once(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    persisted: list[tuple[str, str]] = []
    answered = anyio.Event()
    client = _refreshing_client(
        fake, make_client, persisted, answered=answered, record_to=tmp_path / "c.jsonl"
    )

    async def credits() -> None:
        with contextlib.suppress(FlowithError):  # "the client is closed", once refreshed
            await client.get_credits()

    async with client, anyio.create_task_group() as group:  # closed even if the test fails
        group.start_soon(credits)
        with anyio.fail_after(10):
            await answered.wait()
        group.start_soon(client.aclose)
        group.start_soon(client.aclose)
    assert client._closed
    assert len(persisted) == 1  # the refresh in flight was adopted and handed on


async def test_an_explicit_refresh_timeout_bounds_each_attempt(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    limits: list[float | None] = []
    async with make_client(refresh_token=fake.refresh_token, timeout=0.3) as client:
        send = client._send

        async def noting(request: Any, timeout: Any, deadline: Any, operation: str) -> Any:
            if "/auth/v1/token" in request.url:
                limits.append(timeout)
            return await send(request, timeout, deadline, operation)

        client._send = noting
        await client.refresh_access_token(timeout=5)
    assert limits == [5]


async def test_callers_waiting_on_a_cancelled_callers_refresh_get_its_tokens(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    answered = anyio.Event()
    async with _refreshing_client(fake, make_client, [], answered=answered) as client:
        outcomes: list[float] = []

        async def waiter() -> None:
            with anyio.fail_after(10):
                await answered.wait()
            outcomes.append((await client.get_credits())[0].remain_quota)  # joins the refresh

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await _cancelled_once_answered(client.get_credits, answered)
        assert len(outcomes) == 1
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1


@pytest.mark.parametrize("listener", ["stream_user_stream", "stream_user_sse"])
async def test_a_listener_renews_an_expired_token(
    fake: FakeFlowith, make_client: MakeClient, listener: str
) -> None:
    fake.expire_token(fake.token)
    frames: list[Any] = []
    async with make_client(refresh_token=fake.refresh_token) as client:

        async def listen() -> None:
            async for frame in getattr(client, listener)(timeout=30):
                frames.append(frame)

        # Until it is connected, not for a fixed time: a loaded machine took longer
        # than the 0.5 s window it had to refresh and connect.
        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            channel: Channel = "sse" if listener == "stream_user_sse" else "stream"
            await eventually(lambda: fake.open_streams(channel) != [], within=10)
            if listener == "stream_user_sse":
                await eventually(lambda: frames != [], within=10)
            group.cancel_scope.cancel()
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    if listener == "stream_user_sse":
        assert frames[0] == {"status": "connected"}


async def test_the_shared_stream_renews_an_expired_token(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The edge finds the token expired when the stream opens (the REST calls
    # before it did not): the stream is opened again with a renewed token.
    fake.fail_next(1, 401, path="/user_stream/stream", body={"message": "jwt expired"})
    async with make_client(refresh_token=fake.refresh_token) as client:
        steps = [step async for step in client.generate_stream("hi", timeout=20)]
        assert [s.text_delta for s in steps if s.text_delta][:1] == ["You "]
        assert steps[-1].text == "You said: hi"
        assert client.stream_connections == 1
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    assert len(fake.requests_to("GET", "/user_stream/stream")) == 2


async def test_a_token_near_its_expiry_is_renewed_before_use(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    short = fake.issue_token(expires_at=time.time() + 60)
    async with make_client(token=short, refresh_token=fake.refresh_token) as client:
        await client.get_credits()
    paths = [r.path for r in fake.requests]
    assert paths[:2] == ["/auth/v1/token", "/user/credits"]
    credits = fake.requests_to("GET", "/user/credits")[0]
    assert credits.header("authorization") != short


async def test_a_refresh_that_fails_is_an_authentication_error(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.expire_token(fake.token)
    async with make_client(refresh_token="fkrt-not-a-real-one") as client:
        with pytest.raises(AuthenticationError):
            await client.get_credits()


async def test_a_refused_refresh_token_is_not_sent_again_until_new_tokens_come(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Each call whose 401 came after the refusal sent the refused token again, to be
    refused again: a client of many calls sent one doomed refresh per call."""
    fake.expire_token(fake.token)
    async with make_client(refresh_token="fkrt-not-a-real-one") as client:
        for _ in range(3):
            with pytest.raises(AuthenticationError, match="refreshing the session failed"):
                await client.get_credits()
        assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
        # Another token's refusal leaves the memory of the client's own alone.
        with pytest.raises(AuthenticationError):
            await client.refresh_access_token("fkrt-another-bad-one")
        with pytest.raises(AuthenticationError, match="refreshing the session failed"):
            await client.get_credits()
        assert len(fake.requests_to("POST", "/auth/v1/token")) == 2
        # A refresh token given by the app is sent, and its tokens end the refusal.
        await client.refresh_access_token(fake.refresh_token)
        assert await client.get_credits() is not None
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 3


@pytest.mark.parametrize("status", [400, 403])
async def test_a_refresh_refused_by_something_in_front_of_the_auth_server_is_tried_again(
    fake: FakeFlowith, make_client: MakeClient, status: int
) -> None:
    """A proxy's 400 or a firewall's 403 page says nothing of the refresh token, which
    is unspent: the memory of refused tokens kept the client from ever renewing."""
    fake.expire_token(fake.token)
    fake.fail_next(1, status, method="POST", path="/auth/v1/token")  # not GoTrue's words
    async with make_client(refresh_token=fake.refresh_token) as client:
        with pytest.raises(AuthenticationError):
            await client.get_credits()
        assert await client.get_credits() is not None
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 2


async def test_a_refused_upload_says_the_request_and_the_wait_of_its_503(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The FileUploadError that stands for a refused upload had no endpoint and no
    retry_after_s: the server's 'come back in 120 s' was on its cause only."""
    fake.fail_next(1, 503, method="POST", path="/file/store", headers=[("Retry-After", "120")])
    async with make_client() as client:
        with pytest.raises(FileUploadError) as info:
            await client.upload_file(data=b"x", filename="a.txt")
    error = info.value
    assert (error.status_code, error.endpoint, error.retry_after_s) == (
        503,
        "POST /file/store",
        120.0,
    )
    assert error.body == {"message": "injected 503"}


async def test_a_refused_refresh_names_the_request_refused(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The AuthenticationError of a spent refresh token had no endpoint, though its
    message said 'HTTP 400 from POST /auth/v1/token'."""
    async with make_client(refresh_token="fkrt-not-a-real-one") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.refresh_access_token()
    assert (info.value.status_code, info.value.endpoint) == (400, "POST /auth/v1/token")
    assert info.value.body["code"] == "refresh_token_not_found"


def _shown_chain(error: BaseException) -> list[str]:
    """The type of each error a traceback of ``error`` shows, the last raised first."""
    shown: list[str] = []
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        shown.append(type(link).__name__)
        hidden = link.__cause__ is None and link.__suppress_context__
        link = link.__cause__ if link.__cause__ is not None or hidden else link.__context__
    return shown


async def test_a_refused_refresh_shows_each_error_once_in_its_traceback(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """The copy each caller raises was raised from the error it copies: a traceback
    showed the same AuthenticationError twice, the one a direct cause of the other."""
    async with make_client(refresh_token="fkrt-not-a-real-one") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.refresh_access_token()
    assert _shown_chain(info.value) == ["AuthenticationError", "APIError"]
    assert "".join(traceback.format_exception(info.value)).count("refreshing the session") == 1


async def test_callers_joining_a_refused_refresh_show_each_error_once(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A caller that joined a refresh in flight raised its copy from it too."""
    answered = anyio.Event()
    client = _refreshing_client(fake, make_client, [], answered=answered, max_retries=0)
    fake.fail_next(
        1, 400, path="/auth/v1/token", body={"code": "refresh_token_not_found", "msg": "spent"}
    )
    errors: list[BaseException] = []

    async def credits() -> None:
        with pytest.raises(AuthenticationError) as info:
            await client.get_credits()
        errors.append(info.value)

    async with client, anyio.create_task_group() as group:
        group.start_soon(credits)
        with anyio.fail_after(10):
            await answered.wait()  # the refresh is in flight: the next caller joins it
        group.start_soon(credits)
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    assert [_shown_chain(error) for error in errors] == [["AuthenticationError", "APIError"]] * 2


async def test_a_failed_runs_result_asked_again_shows_its_error_once(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """result() raises a copy of the error the run failed with, and raised it from
    that error: the same GenerationError twice in one traceback."""
    fake.script(chunk("half"), fail("quota"))
    async with make_client() as client:
        run = client.generate_stream("fails")
        for _ in range(2):
            with pytest.raises(GenerationError) as info:
                await run.result()
            assert _shown_chain(info.value) == ["GenerationError"]


async def test_a_turn_in_a_missing_conversation_names_the_insert_refused(
    make_client: MakeClient,
) -> None:
    """Its NotFoundError (standing for the database's 409) lost the request's name."""
    async with make_client() as client:
        with pytest.raises(NotFoundError) as info:
            await client.generate("hi", conv_id=str(uuid.uuid4()))
    assert (info.value.status_code, info.value.endpoint) == (409, "POST /rest/v1/flow_node")


#: Calls whose 200 answer the client cannot use, the request each sends for it and
#: the body it gets (None: the fake's default, an error envelope of the wrong shape).
_WRONG_SHAPES: dict[str, tuple[Callable[[Any], Coroutine[Any, Any, object]], str, Any]] = {
    "credits": (lambda c: c.get_credits(), "GET /user/credits", None),
    "rows": (lambda c: c.list_conversations(limit=1), "GET /rest/v1/conversation", [1]),
    "one row": (lambda c: c.get_conversation(KYOTO_TRIP), "GET /rest/v1/conversation", [{}]),
    "a field": (lambda c: c.get_credit_type(), "GET /user/credit_type", [1]),
    "models": (lambda c: c.list_models(), "GET /models", [1]),
    "count": (lambda c: c.get_online_count(), "POST /rest/v1/rpc/get_online_count", {}),
    "auth user": (lambda c: c.get_auth_user(), "GET /auth/v1/user", [1]),
    "delete": (
        lambda c: c.delete_conversation(KYOTO_TRIP),
        "PATCH /rest/v1/conversation",
        {"id": KYOTO_TRIP},
    ),
    "title": (
        lambda c: c.generate_title([{"role": "user", "content": "hi"}]),
        "POST /completion/conversation-title",
        {"title": "x"},
    ),
    "new conversation": (lambda c: c.generate("hi"), "POST /rest/v1/conversation", [{}]),
    "canvas": (
        lambda c: c.start_conversation(conv_id=KYOTO_TRIP).send("hi"),
        "GET /rest/v1/flow_node",
        {"rows": []},
    ),
}


@pytest.mark.parametrize("case", list(_WRONG_SHAPES))
async def test_a_body_of_the_wrong_shape_names_the_answer(
    fake: FakeFlowith, make_client: MakeClient, case: str
) -> None:
    """A 200 answer of the wrong shape raised a ResponseDecodeError with status_code
    and endpoint None, as if no HTTP answer were involved (an answer that is no JSON
    at all had both)."""
    call, endpoint, body = _WRONG_SHAPES[case]
    method, path = endpoint.split(" ")
    fake.fail_next(1, 200, method=method, path=path, body=body)
    async with make_client(max_retries=0) as client:
        with pytest.raises(ResponseDecodeError) as info:
            await call(client)
    assert (info.value.status_code, info.value.endpoint) == (200, endpoint)


async def test_a_missing_row_names_the_answer_that_had_none(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A lookup by id that found no row raised a NotFoundError with status_code and
    endpoint None, while delete_conversation's had status 200 and no endpoint."""
    missing = str(uuid.uuid4())
    async with make_client() as client:
        with pytest.raises(NotFoundError) as looked_up:
            await client.get_conversation(missing)
        with pytest.raises(NotFoundError) as deleted:
            await client.delete_conversation(missing)
    assert (looked_up.value.status_code, looked_up.value.endpoint) == (
        200,
        "GET /rest/v1/conversation",
    )
    assert (deleted.value.status_code, deleted.value.endpoint) == (
        200,
        "PATCH /rest/v1/conversation",
    )


async def test_a_listener_answered_with_a_page_names_the_request(transport: Transport) -> None:
    """The refusal quoted the stream's whole URL (host included) and had no endpoint,
    where every other error of an answer names it as "GET /path"."""
    page = CannedServer(200, [("Content-Type", "text/html")], b"<html>sign in</html>")
    async with page:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=page.url, supabase_url=page.url, max_retries=0
        )
        async with client:
            with pytest.raises(ResponseDecodeError) as info:
                async for _ in client.stream_user_stream(timeout=5):
                    pass
    error = info.value
    assert str(error) == ("expected text/event-stream from GET /user_stream/stream, got text/html")
    assert (error.status_code, error.endpoint) == (200, "GET /user_stream/stream")


async def test_a_stream_that_cannot_be_decoded_says_so_on_one_line(transport: Transport) -> None:
    """aiohttp's own words went into the message as they were: "stream broke:
    ClientPayloadError: 400, message:" and, on a second line, what it could not do."""
    headers = [("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip")]
    corrupt = CannedServer(200, headers, b"data: this is not gzip\n\n")
    async with corrupt:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=corrupt.url, supabase_url=corrupt.url, max_retries=0
        )
        async with client:
            with anyio.fail_after(10), pytest.raises(ConnectionFailedError) as info:
                async for _ in client.stream_user_stream(timeout=5):
                    pass
    message = str(info.value)
    assert message.startswith("stream broke: ")
    assert "\n" not in message
    assert "decod" in message.lower()


async def test_bad_frames_for_others_never_break_a_generation(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    oversized = b"data: " + b"x" * (16 * 1024 * 1024 + 10) + b"\n\n"
    fake.script(
        raw(b"data: {not json\n\n"),
        raw(b"data: [1, 2, 3]\n\n"),
        raw(b'data: {"data": {"type": "chunks", "nodeId": 7}}\n\n'),
        raw(oversized),
        chunk("still "),
        chunk("fine"),
        complete(),
    )
    async with make_client() as client:
        result = await client.generate("hi", timeout=20)
    assert result.text == "still fine"


async def test_a_stream_that_only_sends_heartbeats_is_noticed(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The terminal event never comes, heartbeats do; the row says it is done.
    fake.script(chunk("par"), row("done", "partial answer, finished"), pause(30))
    async with make_client() as client:
        client._state.stall_interval = 0.5
        started = time.monotonic()
        result = await client.generate("hi", timeout=20)
    assert result.text == "partial answer, finished"
    assert time.monotonic() - started < 5


async def test_a_stream_gone_silent_is_taken_for_dead_and_replaced(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # The connection stays open but nothing comes, not even heartbeats (a NAT
    # forgot it): the generation reads its row, and the next one reconnects
    # instead of counting on the dead stream.
    fake.script(chunk("Hello"), hang(), row("done", "Hello, world"))
    fake.script(chunk("streamed "), chunk("again"), complete())
    async with make_client(stream_idle_timeout=0.5) as client:
        started = time.monotonic()
        steps = [step async for step in client.generate_stream("hi", timeout=30)]
        assert steps[-1].text == "Hello, world"
        assert time.monotonic() - started < 5  # not the 7.5 s row check of a 30 s call
        second = [step async for step in client.generate_stream("more", timeout=30)]
        assert [s.text_delta for s in second if s.text_delta] == ["streamed ", "again"]
        assert client.stream_connections == 2
    assert fake.stream_connections == 2


async def test_a_stream_that_died_while_idle_is_replaced_before_the_next_turn(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Heartbeats came while nobody read, then the connection went silent: what
    # it buffered must not pass it for alive.
    fake.heartbeat_interval = 0.05
    fake.script(chunk("one"), complete(), pause(0.3), hang())
    fake.script(chunk("two"), complete())
    async with make_client(stream_idle_timeout=0.5) as client:
        await client.generate("first", timeout=30)
        await anyio.sleep(1.0)
        steps = [step async for step in client.generate_stream("second", timeout=30)]
        assert [s.text_delta for s in steps if s.text_delta] == ["two"]
        assert client.stream_connections == 2


async def test_a_slow_listener_ends_with_its_window_not_an_error(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client(stream_idle_timeout=0.3) as client:
        frames = []
        async for frame in client.stream_user_sse(timeout=0.5):
            frames.append(frame)
            await anyio.sleep(0.6)  # longer than the silence limit, and the window
    assert frames == [{"status": "connected"}]


async def test_a_quiet_stream_with_heartbeats_is_kept(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Heartbeats are bytes: a generation quiet for longer than the limit keeps its stream.
    fake.heartbeat_interval = 0.1
    fake.script(chunk("slow "), pause(1.0), chunk("answer"), complete())
    async with make_client(stream_idle_timeout=0.5) as client:
        steps = [step async for step in client.generate_stream("hi", timeout=30)]
        assert [s.text_delta for s in steps if s.text_delta] == ["slow ", "answer"]
        assert client.stream_connections == 1


async def test_a_listener_on_a_silent_stream_is_told_the_connection_is_gone(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.heartbeat_interval = 60.0  # nothing at all comes
    async with make_client(stream_idle_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError, match=r"sent nothing for 0\.3 s"):
            async for _ in client.stream_user_sse():
                pass
        assert time.monotonic() - started < 3
    await eventually(lambda: not fake.open_streams())


_NOT_OURS = ("<", "anyio._backends", "anyio.streams", "anyio.abc", "flowith_httpx.fake_server")


def _our_tasks() -> list[str]:
    """Running tasks other than the event loop's, the test runner's and the
    fake server's (trio starts some system tasks lazily, e.g. for DNS)."""
    names = (t.name or "" for t in anyio.get_running_tasks())
    return sorted(name for name in names if not name.startswith(_NOT_OURS))


def _soak_responder(turn: Turn) -> Sequence[Step]:
    """Deterministic per prompt: most answers complete, some fail, some lose
    their stream (drop or clean close) and must be recovered from the row."""
    number = int(turn.prompt.split()[-1])
    rng = random.Random(number)
    words = [f"w{number}-{k} " for k in range(rng.randint(2, 6))]
    text = "".join(words)
    steps: list[Step] = []
    for word in words:
        steps += [pause(rng.uniform(0, 0.05)), chunk(word)]
    fate = rng.random()
    if fate < 0.1:
        return [*steps, fail(error=f"failure {number}", error_type="provider_error")]
    if fate < 0.15:
        return [*steps, drop(), row("done", text)]
    if fate < 0.2:
        return [*steps, close_stream(), row("done", text)]
    return [*steps, complete()]


def _soak_expected(number: int) -> str | None:
    rng = random.Random(number)
    words = [f"w{number}-{k} " for k in range(rng.randint(2, 6))]
    for _ in words:
        rng.uniform(0, 0.05)
    return None if rng.random() < 0.1 else "".join(words).strip()


async def test_soak_200_concurrent_generations_with_faults(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.responder = _soak_responder
    fake.fail_next(5, 503, method="GET", path="/rest/v1/flow_node")
    outcomes: dict[int, str | type[FlowithError]] = {}
    tasks_before = _our_tasks()
    async with make_client(poll_interval=0.05) as client:

        async def one(number: int) -> None:
            try:
                steps = [s async for s in client.generate_stream(f"soak {number}", timeout=30)]
            except GenerationError:
                outcomes[number] = GenerationError
                return
            joined = "".join(s.text_delta for s in steps)
            assert joined.strip() == steps[-1].text  # deltas never repeat or skip
            outcomes[number] = steps[-1].text

        async with anyio.create_task_group() as group:
            for number in range(200):
                group.start_soon(one, number)
    for number in range(200):
        expected = _soak_expected(number)
        assert outcomes[number] == (GenerationError if expected is None else expected), number
    # Nothing outlives the client: every connection closes, so the fake's
    # streams end and its per-connection tasks finish; no task of ours is left.
    with anyio.move_on_after(5):
        while fake.open_streams() or _our_tasks() != tasks_before:  # noqa: ASYNC110 (polled state has no event)
            await anyio.sleep(0.02)
    assert not fake.open_streams(), [(s.channel, s.path) for s in fake.open_streams()]
    assert _our_tasks() == tasks_before


#: Calls whose timeout bounds requests, and calls whose timeout bounds the whole call
#: or a listening window (where infinity means no limit).
_REQUEST_TIMEOUTS: dict[str, Any] = {
    "get_credits": lambda c, t: c.get_credits(timeout=t),
    "upload_file": lambda c, t: c.upload_file(data=b"x", filename="a.txt", timeout=t),
    "refresh_access_token": lambda c, t: c.refresh_access_token(timeout=t),
}
_WHOLE_CALL_TIMEOUTS: dict[str, Any] = {
    "generate": lambda c, t: c.generate("hi", timeout=t),
    "generate_image": lambda c, t: c.generate_image("a cat", timeout=t),
    "generate_video": lambda c, t: c.generate_video("a cat", timeout=t),
    "download": lambda c, t: c.download("https://cdn.flowith.net/a.png", "out", timeout=t),
    "stream_user_sse": lambda c, t: c.stream_user_sse(timeout=t).__anext__(),
}


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0, -1.0, "5", True])
async def test_a_timeout_no_clock_can_wait_is_refused_before_anything_is_sent(
    fake: FakeFlowith, make_client: Any, seconds: Any
) -> None:
    # Infinity hung httpx and overflowed aiohttp; NaN was refused by anyio only, and a
    # generation given NaN never timed out. Infinity means no limit for a whole call.
    refused = dict(_REQUEST_TIMEOUTS)
    if seconds != float("inf"):
        refused.update(_WHOLE_CALL_TIMEOUTS)
    async with make_client(refresh_token=fake.refresh_token) as client:
        for name, start in refused.items():
            with pytest.raises(ValidationError, match=r"^timeout must be a") as info:
                await start(client, seconds)
            assert isinstance(info.value, ValueError), name
    assert fake.requests == []
    options = ["timeout", "poll_interval"]
    if seconds != float("inf"):
        options += ["result_timeout", "stream_idle_timeout"]
    for option in options:
        with pytest.raises(ValueError, match=rf"^{option} must be a"):
            make_client(**{option: seconds})


@pytest.mark.parametrize("retries", ["2", None, 2.5, True, -1])
async def test_a_retry_count_that_is_no_count_is_refused_by_the_constructor(
    make_client: Any, retries: Any
) -> None:
    # "2" and None raised a bare TypeError; 2.5 and True were taken.
    with pytest.raises(ValidationError, match=r"^max_retries must be an int >= 0") as info:
        make_client(max_retries=retries)
    assert info.value.status_code is None


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        # AttributeError from the token parser; a TypeError from os.fspath; a callback
        # that is none was taken, and failed at the first refresh.
        ({"token": 123}, "access_token must be a string, not int"),
        ({"record_to": 123}, "record_to must be a path, not int"),
        ({"on_token_refresh": "save"}, "on_token_refresh must be callable, not str"),
    ],
)
async def test_settings_of_the_wrong_shape_are_refused_by_the_constructor(
    transport: Transport, options: dict[str, Any], refused: str
) -> None:
    settings = dict(options)  # shared by the transports' runs
    token = settings.pop("token", "t" * 20)
    with pytest.raises(ValueError, match=refused):
        transport.client_class()(token, **settings)


async def test_an_endless_whole_call_timeout_means_no_limit(
    fake: FakeFlowith, make_client: Any
) -> None:
    # It worked before the checks came, and it still does.
    fake.script(chunk("no hurry"), complete())
    endless = float("inf")
    async with make_client(result_timeout=endless, stream_idle_timeout=endless) as client:
        assert client.stream_idle_timeout is None
        assert (await client.generate("hi", timeout=endless)).text == "no hurry"
        async with contextlib.aclosing(client.stream_user_sse(timeout=endless)) as frames:
            async for _ in frames:
                break


async def test_text_passed_as_upload_data_is_refused_before_anything_is_sent(
    fake: FakeFlowith, make_client: Any
) -> None:
    # It failed inside each transport in its own way (aiohttp: a ConnectionFailedError
    # claiming the request was sent).
    async with make_client() as client:
        with pytest.raises(ValidationError, match=r"^data must be bytes, not str"):
            await client.upload_file(data="hello", filename="a.txt")
        # Neither a path nor data: an argument error, not a refused upload.
        with pytest.raises(ValidationError, match="pass exactly one of file_path or data"):
            await client.upload_file()
        # Both, with a path that does not exist: the arguments are wrong before the path.
        with pytest.raises(ValidationError, match="pass exactly one of file_path or data"):
            await client.upload_file("no/such/file.txt", data=b"hello")
        record = await client.upload_file(data=bytearray(b"hello"), filename="a.txt")
    assert record.url
    assert [r.path for r in fake.requests] == ["/file/store"]


async def test_text_utf8_cannot_carry_and_numbers_json_cannot_are_argument_errors(
    fake: FakeFlowith, make_client: Any, tmp_path: Path
) -> None:
    """Each escaped as a bare UnicodeEncodeError, OverflowError or httpx.InvalidURL,
    or went out as a body no server can parse (NaN); aiohttp sent the long URL."""
    async with make_client() as client:
        with pytest.raises(ValidationError, match=r"lone surrogate .U\+D800.*no URL"):
            await client.check_campaign("spring\ud800")
        with pytest.raises(ValidationError, match=r"70,0\d\d characters long: at most 65,536"):
            await client.check_campaign("x" * 70_000)
        with pytest.raises(ValidationError, match=r"token=\[REDACTED\].: it holds a lone surr"):
            await client.download("https://cdn.test/\ud800.png?token=signed-1234", tmp_path)
        with pytest.raises(ValidationError, match="NaN or infinity"):
            await client.upsert_online_session({"p_is_idle": math.nan})
        with pytest.raises(ValidationError, match="not a usable moment"):
            await client.list_subscription_user_own("0001-01-01T00:00:00+05:00")
        with pytest.raises(ValidationError, match="not a usable moment"):
            await client.list_subscription_user_own(
                datetime.max.replace(tzinfo=timezone(-timedelta(hours=5)))
            )
        assert fake.requests == []
        # In a JSON body a lone surrogate is escaped, as JSON.stringify writes it.
        output = await client.generate("half an emoji: \ud83d", timeout=10)
        # The fake seeded its picture from the prompt's UTF-8, and failed on it (500).
        assert (await client.generate_image("a cat \udcff", timeout=10)).image is not None
        await client.rename_conversation(output.conv_id, "half \udce9")
        renamed = await client.get_conversation(output.conv_id)
    assert renamed.title == "half \udce9"  # both ways, on the wire as "\\udce9"
    assert output.text
    # A name the file system could not decode goes out with "?" for its bytes.
    odd = tmp_path / os.fsdecode(b"caf\xe9.txt")
    odd.write_bytes(b"hello")
    async with make_client() as client:
        await client.upload_file(odd)
    (upload,) = fake.requests_to("POST", "/file/store")
    assert b'filename="caf?.txt"' in upload.body
    (sent,) = fake.requests_to("POST", "/completion/async")
    assert b"half an emoji: \\ud83d" in sent.body
    assert "half an emoji: \ud83d" in json.dumps(sent.json(), ensure_ascii=False)


async def test_saving_into_a_file_says_it_is_not_a_folder(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    # mkdir's FileExistsError read as "pass overwrite" (the CLI said so): no cure.
    url = fake.add_file("/f/a/photo.png", b"bytes", "image/png")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    async with make_client() as client:
        with pytest.raises(NotADirectoryError, match="it is a file, not a folder"):
            await client.download(fake.file_url("/f/a/photo.png"), afile, overwrite=True)
    assert afile.read_text() == "mine"
    assert url


@pytest.mark.parametrize("prompt", ["", "   \n"])
async def test_an_empty_prompt_is_refused_before_anything_is_sent(
    fake: FakeFlowith, make_client: MakeClient, prompt: str
) -> None:
    # It made a conversation, sent an empty message and printed the empty answer.
    async with make_client() as client:
        with pytest.raises(ValidationError, match="prompt must be text with something in it"):
            await client.generate(prompt)
        session = client.start_conversation()
        with pytest.raises(ValidationError):
            await session.send(prompt)
        assert session.turn == 0
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "refused"),
    [
        # A str is a sequence: each character went out as an image URL.
        (lambda c: c.generate("look", images="https://example.com/a.png"), "images must be"),
        (lambda c: c.generate("look", images=[b"https://example.com/a.png"]), r"images\[0\]"),
        (lambda c: c.generate("hi", model=4), "model must be a str, not int"),
        (lambda c: c.start_conversation().send("hi", images="a.png"), "images must be"),
        # Sent as JSON numbers after the conversation and its nodes were made (HTTP 400).
        (lambda c: c.generate_image("cat", image_size=512), "image_size must be a str"),
        (lambda c: c.generate_image("cat", aspect_ratio=5), "aspect_ratio must be a str"),
        (lambda c: c.generate_image("cat", agent="yes"), "agent must be a bool"),
        (lambda c: c.generate_video("sea", resolution=720), "resolution must be a str"),
        (lambda c: c.generate_video("sea", image_url=None), "image_url must be a str"),
        (lambda c: c.generate_video("sea", audio=1), "audio must be a bool"),
        # A raw "dictionary update sequence element" ValueError.
        (lambda c: c.generate_title("hi"), "messages must be a list"),
        (lambda c: c.generate_title([{"content": "hi"}]), r"messages\[0\] must be a mapping"),
        # Media prompts made the conversation and its nodes, then got HTTP 400 (or
        # went through blank).
        (lambda c: c.generate_image(""), "prompt must be text with something in it, not"),
        (lambda c: c.generate_image(None), "prompt must be text with something in it, not"),
        (lambda c: c.generate_video("   "), r"prompt must be .* \(or an image_url\)"),
        (lambda c: c.generate_video(5), r"prompt must be .* \(or an image_url\)"),
        (lambda c: c.start_conversation(model=4).send("hi"), "model must be a str, not int"),
        # A data URL of megabytes was quoted whole.
        (lambda c: c.generate("x", images="data:image/png;base64," + "A" * 10**6), "'data:"),
        # Bare TypeErrors ("'NoneType' object is not iterable"), a ValueError of int()
        # and an OverflowError.
        (lambda c: c.download(None), "cannot download None: it is not a str but NoneType"),
        (lambda c: c.download(123), "it is not a str but int"),
        (lambda c: c.upsert_online_session(None), "payload must be a mapping, not NoneType"),
        (lambda c: c.list_models(logo="yes"), "logo must be a bool, not str 'yes'"),
        (lambda c: c.list_models(desc=None), "desc must be a bool"),
        (lambda c: c.get_credits(timeout=10**400), "timeout is too many seconds to compute"),
        (lambda c: c.generate("hi", timeout=10**400), "timeout is too many seconds to compute"),
    ],
)
async def test_arguments_the_api_cannot_take_are_refused_before_anything_is_sent(
    fake: FakeFlowith, make_client: MakeClient, call: Any, refused: str
) -> None:
    async with make_client() as client:
        with pytest.raises(ValidationError, match=refused) as caught:
            await call(client)
    assert caught.value.status_code is None
    assert len(str(caught.value)) < 200
    assert fake.requests == []


async def test_messages_and_image_urls_may_come_from_any_iterable(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # generate_title took a generator before its checks came, and still does.
    async with make_client() as client:
        title = await client.generate_title(m for m in [{"role": "user", "content": "Hi there"}])
        session = client.start_conversation()
        await session.send("what is this?", images=(u for u in ["https://example.com/a.png"]))
    assert title == "Hi there"
    (sent,) = fake.requests_to("POST", "/completion/async")
    assert sent.json()["messages"][-1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/a.png"},
    }


async def test_a_logout_from_on_token_refresh_does_not_wait_for_itself(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    signed_out: list[str] = []

    async def on_refresh(access: str, refresh: str) -> None:
        await client.logout()
        signed_out.append(client.get_refresh_token())

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=on_refresh)
    async with client:
        with anyio.fail_after(10):
            await client.refresh_access_token()
    assert signed_out == [""]


async def test_a_refresh_failing_while_its_caller_waits_is_raised_not_logged(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """With a deadline the caller races the refresh: when its wait won, the refresh's
    failure, raised to the caller too, was also logged as left behind by it."""
    fake.expire_token(fake.token)
    fake.fail_next(5, 500, path="/auth/v1/token")
    async with make_client(refresh_token=fake.refresh_token, max_retries=0) as client:
        for _ in range(5):
            with pytest.raises(APIError, match="HTTP 500"):
                await client.generate("hi", timeout=10)
    assert "after its caller was cancelled" not in caplog.text


class _HeldOpen(CannedServer):
    """A canned answer whose connection then stays open, silent."""

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        await super().serve_one(socket)
        await anyio.sleep(3)


async def test_a_download_cut_by_its_own_timeout_says_its_deadline_passed(
    transport: Transport, tmp_path: Path
) -> None:
    """A download's timeout is one deadline for the whole call: a timeout it brought
    about said deadline_passed=False, opening or reading alike."""
    client_class = transport.client_class()
    async with CannedServer(200, [("Content-Type", "image/png")], b"png") as slow:
        slow.delay = 1.0  # the answer's head comes late
        async with client_class(FakeFlowith().token, timeout=10, max_retries=0) as client:
            with pytest.raises(TimeoutError, match="did not open") as opening:
                await client.download(f"{slow.url}/a.png", tmp_path, timeout=0.3)
    assert opening.value.deadline_passed
    # A body that never ends: the head says 1,000 bytes and 3 come.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nabc"
    async with _HeldOpen(200, [], b"") as trickle:
        trickle.answer = head
        async with client_class(FakeFlowith().token, timeout=10, max_retries=0) as client:
            with pytest.raises(TimeoutError) as reading:
                await client.download(f"{trickle.url}/b.png", tmp_path, timeout=0.3)
        assert str(reading.value).endswith("outlived its timeout")
        assert reading.value.deadline_passed
        # The client's own limit between two reads is no deadline of the call's.
        async with client_class(FakeFlowith().token, timeout=0.3, max_retries=0) as client:
            with pytest.raises(TimeoutError) as stalled:
                await client.download(f"{trickle.url}/c.png", tmp_path, timeout=30)
        assert str(stalled.value).endswith("stalled: nothing came for 0.3 s")
        assert not stalled.value.deadline_passed
    assert os.listdir(tmp_path) == []


async def test_a_listening_window_that_closes_while_the_stream_opens_ends_quietly(
    transport: Transport,
) -> None:
    # It raised "stream did not open within 0.3s", which the window promises not to.
    async with CannedServer(200, [("Content-Type", "text/event-stream")], b": hi\n\n") as slow:
        slow.delay = 1.0
        client_class = transport.client_class()
        client = client_class(FakeFlowith().token, edge_url=slow.url, supabase_url=slow.url)
        async with client:
            frames = [frame async for frame in client.stream_user_sse(timeout=0.3)]
            assert frames == []
            # Its own limit (the client's timeout) is still an error: the stream never opened.
            client.timeout = 0.3
            with pytest.raises(TimeoutError, match="did not open"):
                async for _ in client.stream_user_stream(timeout=30):
                    pass


class _Heads(CannedServer):
    """A canned answer, the head of each request kept."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(status, headers, body)
        self.heads: list[bytes] = []

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await socket.receive()
        self.heads.append(received.split(b"\r\n\r\n")[0])
        await socket.send(self.answer)


async def test_a_cookie_that_is_not_ascii_is_sent_back(transport: Transport) -> None:
    # httpx wrote its Cookie header in ASCII: every request after the answer that
    # set it failed with a bare UnicodeEncodeError, for the client's life.
    set_cookie = "pref=café; Path=/".encode()
    async with _Heads(200, [("Content-Type", "application/json")], b"[]") as server:
        server.answer = server.answer.replace(
            b"\r\n\r\n", b"\r\nSet-Cookie: " + set_cookie + b"\r\n\r\n", 1
        )
        client_class = transport.client_class()
        client = client_class(FakeFlowith().token, edge_url=server.url, supabase_url=server.url)
        async with client:
            for _ in range(3):
                assert await client.list_public_notices() == []
    assert b"Cookie:" not in server.heads[0]
    # httpx now sends its bytes as a browser does; aiohttp quoted them as Python's
    # http.cookies does ('pref="caf\\351"'), a value the server never set.
    assert all(b"Cookie: pref=caf\xc3\xa9" in head.split(b"\r\n") for head in server.heads[1:])


@pytest.mark.parametrize("value", ["abc/def+ghi==", '{"k":1}', "a=b", "", "eyJhbGciOi.J9x_y-z"])
async def test_a_cookie_is_sent_back_as_the_server_set_it(transport: Transport, value: str) -> None:
    # aiohttp quoted and escaped a value holding "/", "+", "=", a quote (a base64 or
    # JSON value): the server got a="abc/def+ghi==" back, not its own value.
    async with _Heads(200, [("Content-Type", "application/json")], b"[]") as server:
        server.answer = server.answer.replace(
            b"\r\n\r\n", f"\r\nSet-Cookie: a={value}; Path=/\r\n\r\n".encode(), 1
        )
        client = transport.client_class()(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url
        )
        async with client:
            for _ in range(2):
                assert await client.list_public_notices() == []
    assert f"Cookie: a={value}".encode() in server.heads[1].split(b"\r\n")


@pytest.mark.parametrize(
    ("location", "said"),
    [
        # httpx's InvalidURL (no httpx.HTTPError) went out bare.
        ("mailto:someone@example.com", r"mailto|InvalidURL"),
        # httpx checks the port of a URL it is given, not a Location's: connecting
        # raised an OverflowError inside anyio's task group, which went out as a bare
        # ExceptionGroup on asyncio (on trio, httpx's ConnectError said so already).
        ("http://127.0.0.1:99999/x", r"redirect|99999"),
        # Browsers read the backslashes as slashes (no host then); aiohttp's transport,
        # following itself, took it for a path on the same host.
        ("http:\\\\localhost:1\\final", r"InvalidURL|no origin"),
    ],
    ids=["no-http-url", "port-past-65535", "backslashes"],
)
async def test_a_download_redirected_where_no_request_can_go_is_a_connection_failure(
    transport: Transport, tmp_path: Path, location: str, said: str
) -> None:
    client = transport.client_class()(FakeFlowith().token, max_retries=0)
    redirect = CannedServer(302, [("Location", location)], b"")
    async with redirect as server, client:
        with pytest.raises(ConnectionFailedError, match=said):
            await client.download(f"{server.url}/a.png", tmp_path)
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test's look)


@pytest.mark.parametrize(
    ("location", "fetched"),
    [
        (b"/caf\xe9.bin", "/caf%C3%A9.bin"),  # not UTF-8: read as Latin-1, as httpx reads it
        (b"/caf\xc3\xa9.bin", "/caf%C3%A9.bin"),
        (b"/a b.bin", "/a%20b.bin"),
    ],
    ids=["latin-1", "utf-8", "space"],
)
async def test_a_location_of_raw_bytes_leads_to_the_same_path_on_every_transport(
    transport: Transport, tmp_path: Path, location: bytes, fetched: str
) -> None:
    # aiohttp dropped a byte that is not UTF-8: it fetched /caf.bin, another file.
    async with CannedServer(200, [("Content-Type", "text/plain")], b"the file") as server:
        server.answers["/start.bin"] = (
            b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        client = transport.client_class()(FakeFlowith().token, max_retries=0)
        async with client:
            await client.download(f"{server.url}/start.bin", tmp_path)
    assert server.paths == ["/start.bin", fetched]


async def test_a_redirect_to_another_origin_drops_your_sessions_credentials(
    transport: Transport, tmp_path: Path
) -> None:
    # The aiohttp transport followed a download's redirects itself: the default
    # headers of a session you bring went along to the other origin.
    if transport.library != "aiohttp":
        pytest.skip("an aiohttp session's default headers")
    import aiohttp

    async with _Heads(200, [("Content-Type", "text/plain")], b"the file") as other:
        elsewhere = other.url.replace("127.0.0.1", "localhost") + "/file.txt"
        found = CannedServer(302, [("Location", elsewhere)], b"")
        secret = {"Authorization": "Bearer SESSIONSECRET123", "Cookie": "sid=SESSIONCOOKIE"}
        async with found as start, aiohttp.ClientSession(headers=secret) as session:
            client_class: Any = transport.client_class()
            client = client_class(FakeFlowith().token, http_client=session, max_retries=0)
            async with client:
                saved = await client.download(f"{start.url}/a.txt", tmp_path)
    assert saved.read_bytes() == b"the file"
    (head,) = other.heads
    assert b"SESSIONSECRET123" not in head
    assert b"SESSIONCOOKIE" not in head


async def test_a_redirect_with_an_empty_location_is_no_redirect_on_every_transport(
    transport: Transport, tmp_path: Path
) -> None:
    # httpx took "" for the URL it had asked, and asked it again 20 times before its
    # TooManyRedirects; aiohttp read it as no target at all.
    client = transport.client_class()(FakeFlowith().token, max_retries=0)
    async with CannedServer(302, [("Location", "")], b"") as server, client:
        with pytest.raises(APIError, match=r"HTTP 302 from GET /a\.png without a Location"):
            await client.download(f"{server.url}/a.png", tmp_path)
    assert server.paths == ["/a.png"]


async def test_an_overflow_error_of_an_event_hook_is_not_taken_for_a_redirects_port(
    transport: Transport, tmp_path: Path
) -> None:
    # Any OverflowError raised while sending was called a redirect to a bad port.
    if transport.library != "httpx":
        pytest.skip("httpx's event hooks")

    async def hook(request: httpx.Request) -> None:
        raise OverflowError("my own bug")

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
        client_class: Any = transport.client_class()
        client = client_class(FakeFlowith().token, http_client=http, max_retries=0)
        async with CannedServer(200, [], b"[]") as server, client:
            with pytest.raises(OverflowError, match="my own bug"):
                await client.list_public_notices()
            with pytest.raises(OverflowError, match="my own bug"):
                await client.download(f"{server.url}/a.png", tmp_path)


class _HookBug(RuntimeError):
    pass


@pytest.mark.parametrize("deadline", [False, True])
async def test_a_refresh_interrupted_by_your_own_bug_raises_that_bug(
    fake: FakeFlowith, server: FakeFlowithServer, transport: Transport, deadline: bool
) -> None:
    """Under a call's deadline (generate()), the refresh's wait for itself won the race
    against the refresh: the caller got a FlowithError without a cause ("the token
    refresh was interrupted"), and an `except FlowithError` swallowed the app's bug."""
    if transport.library != "httpx":
        pytest.skip("httpx's event hooks")

    async def hook(request: httpx.Request) -> None:
        if request.url.path == "/auth/v1/token":
            raise _HookBug("a bug in my request hook")

    fake.fail_next(1, 401, body={"message": "jwt expired"})  # a refresh follows
    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
        client_class: Any = transport.client_class()
        client = client_class(
            fake.token,
            refresh_token=fake.refresh_token,
            edge_url=server.url,
            supabase_url=server.url,
            http_client=http,
        )
        async with client:
            for _ in range(3):  # which of the two ended the race first was up to chance
                with pytest.raises(_HookBug, match="a bug in my request hook"):
                    # A generation runs under a deadline; a plain call under none.
                    await (client.generate("hi", timeout=10) if deadline else client.get_credits())
                fake.fail_next(1, 401, body={"message": "jwt expired"})


def _encoded(data: bytes, codings: str) -> bytes:
    for coding in (c.strip() for c in codings.split(",")):
        if coding in ("gzip", "x-gzip"):
            data = gzip.compress(data)
        elif coding == "deflate":
            data = zlib.compress(data)
    return data


@pytest.mark.parametrize("on_lines", [False, True], ids=["one-line", "a-line-each"])
@pytest.mark.parametrize(
    "codings", ["gzip, identity", "deflate, gzip", "gzip, gzip", "x-gzip", "deflate, x-gzip"]
)
async def test_a_body_whose_codings_are_stacked_is_decoded_on_every_transport(
    transport: Transport, tmp_path: Path, codings: str, on_lines: bool
) -> None:
    # aiohttp decodes only a single coding: it handed the rest over still compressed,
    # and a download landed as gzip bytes, silently. Given a line each, the library
    # read the first line and aiohttp's parser the last (its pure-Python parser the
    # first, undone first: the wrong order). httpx knows no x-gzip (RFC 9110: gzip),
    # and handed it on compressed.
    payload = b"hello world " * 100
    lines = codings.split(", ") if on_lines else [codings]
    headers = [("Content-Encoding", line) for line in lines]
    headers.append(("Content-Type", "application/json"))
    async with CannedServer(200, headers, _encoded(payload, codings)) as server:
        server.answers["/user/credits"] = CannedServer(
            200, headers, _encoded(b'[{"sub_type":"pro","remain_quota":2}]', codings)
        ).answer
        client_class = transport.client_class()
        client = client_class(FakeFlowith().token, edge_url=server.url, supabase_url=server.url)
        async with client:
            saved = await client.download(f"{server.url}/words.txt", tmp_path)
            (credits,) = await client.get_credits()
    assert saved.read_bytes() == payload
    assert (credits.sub_type, credits.remain_quota) == ("pro", 2.0)


@pytest.mark.parametrize(
    "transfer",
    [b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"],
    ids=["one-line", "two-lines"],
)
async def test_a_transfer_coding_besides_chunked_is_refused_on_every_transport(
    transport: Transport, tmp_path: Path, transfer: bytes
) -> None:
    # aiohttp read "Transfer-Encoding: gzip, chunked" as chunked and kept the gzip bytes;
    # given on two lines, the library read the first and saved the chunks' framing.
    body = gzip.compress(b"[]")
    head = b"HTTP/1.1 200 OK\r\n" + transfer + b"\r\nConnection: close\r\n\r\n"
    async with CannedServer(200, [], b"") as server:
        server.answer = head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        # httpx's words, or the library's
        refused = r"[Oo]nly (Transfer-Encoding: )?chunked|multiple Transfer-Encoding"
        async with client:
            with pytest.raises(ConnectionFailedError, match=refused):
                await client.list_public_notices()
            with pytest.raises(ConnectionFailedError, match=refused):
                await client.download(f"{server.url}/f.txt", tmp_path)


async def test_an_answer_in_a_coding_no_transport_undoes_is_refused_naming_its_request(
    transport: Transport,
) -> None:
    # aiohttp failed before it handed the answer over: the error said "the answer"
    # alone. httpx decoded br where Brotli was installed, aiohttp where Brotli was:
    # the same answer read on one transport, refused on another.
    headers = [("Content-Encoding", "br"), ("Content-Type", "application/json")]
    async with CannedServer(503, headers, b"\x0b\x00\x80[]\x03") as server:
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            with pytest.raises(ResponseDecodeError) as refused:
                await client.get_credits()
    assert str(refused.value) == (
        "HTTP 503 from GET /user/credits: its body could not be decoded: it is in br, which "
        "this client does not decode (it asks for gzip, deflate only)"
    )
    assert (refused.value.status_code, refused.value.endpoint) == (503, "GET /user/credits")


async def test_a_body_stacking_a_thousand_codings_is_refused_not_a_recursion_error(
    transport: Transport, tmp_path: Path
) -> None:
    # Each coding was a layer read by a call of its own: a bare RecursionError came
    # out of every transport, for an answer, a stream and a download alike.
    headers = [("Content-Encoding", ", ".join(["gzip"] * 1000))]
    stacked = "it names 1000 codings, more than the 5 this client undoes on one body"
    async with CannedServer(200, [*headers, ("Content-Type", "application/json")], b"[]") as server:
        server.answers["/user_stream/sse"] = CannedServer(
            200, [*headers, ("Content-Type", "text/event-stream")], b"data: {}\n\n"
        ).answer
        client = transport.client_class()(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            with pytest.raises(ResponseDecodeError, match=stacked):
                await client.get_credits()
            with pytest.raises(ConnectionFailedError, match=stacked):
                await client.download(f"{server.url}/c.json", tmp_path)
            with pytest.raises(ConnectionFailedError, match=stacked):
                async for _ in client.stream_user_sse():
                    pass


@pytest.mark.parametrize("yours", [False, True], ids=["own", "brought"])
async def test_every_request_asks_for_the_codings_the_library_undoes(
    transport: Transport, tmp_path: Path, yours: bool
) -> None:
    # Each library asked for its own list (br and zstd where their modules were
    # installed), and a client you bring for whatever it says by default.
    import aiohttp

    asks_br = {"Accept-Encoding": "br"}
    async with _Heads(200, [("Content-Type", "application/json")], b"[]") as server:
        brought: Any = None
        if yours:
            brought = (
                httpx.AsyncClient(headers=asks_br)
                if transport.library == "httpx"
                else aiohttp.ClientSession(headers=asks_br)
            )
        client_class: Any = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, http_client=brought
        )
        async with client:
            await client.list_public_notices()
            await client.download(f"{server.url}/a.json", tmp_path)
        if brought is not None:
            await (brought.aclose() if transport.library == "httpx" else brought.close())
    for head in server.heads:
        asked = [line for line in head.split(b"\r\n") if line.lower().startswith(b"accept-enc")]
        assert asked == [b"Accept-Encoding: gzip, deflate"]
    assert len(server.heads) == 2


#: A body in two gzip members, then bytes that start no other: every transport
#: decodes both members and passes over the rest (httpx kept the first member,
#: aiohttp refused the bytes after it).
_MEMBERS = gzip.compress(b'[{"sub_type":"pro",') + gzip.compress(b'"remain_quota":2}]') + b"\0\0"


@pytest.mark.parametrize("body", ["members", "cut-short"])
async def test_a_gzip_body_is_read_whole_or_refused_on_every_transport(
    transport: Transport, tmp_path: Path, body: str
) -> None:
    whole = body == "members"
    encoded = _MEMBERS if whole else gzip.compress(b"[]" + b" " * 500)[:-6]
    headers = [("Content-Encoding", "gzip"), ("Content-Type", "application/json")]
    stream_headers = [("Content-Encoding", "gzip"), ("Content-Type", "text/event-stream")]
    frames = gzip.compress(b'data: {"n": 1}\n\n') + gzip.compress(b'data: {"n": 2}\n\n')
    async with CannedServer(200, headers, encoded) as server:
        cut = gzip.compress(b'data: {"n": 1}\n\n' * 50)[:-3]
        server.answers["/user_stream/sse"] = CannedServer(
            200, stream_headers, frames if whole else cut
        ).answer
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            if whole:
                (credits,) = await client.get_credits()
                saved = await client.download(f"{server.url}/c.json", tmp_path)
                events = [frame async for frame in client.stream_user_sse()]
                assert (credits.sub_type, credits.remain_quota) == ("pro", 2.0)
                assert saved.read_bytes() == b'[{"sub_type":"pro","remain_quota":2}]'
                assert events == [{"n": 1}, {"n": 2}]
                return
            with pytest.raises(ResponseDecodeError, match="its body could not be decoded: it end"):
                await client.get_credits()
            cut_short = "stream broke: the body could not be decoded: it ended inside its gzip"
            with pytest.raises(ConnectionFailedError, match=cut_short):
                await client.download(f"{server.url}/c.json", tmp_path)
            seen: list[dict[str, Any]] = []

            async def listen() -> None:
                async for frame in client.stream_user_sse():
                    seen.append(frame)

            with pytest.raises(ConnectionFailedError, match=cut_short):
                await listen()
    assert len(seen) == 50  # every event before the cut came, then the error
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test's look)


async def test_a_stream_hands_over_what_came_before_a_fault_in_the_same_read(
    transport: Transport,
) -> None:
    # zlib drops the output of a call that fails: 20 events and the corrupt bytes
    # after them, arriving in one read of the connection, came to nothing.
    squeeze = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    frames = b"".join(b'data: {"n": %d}\n\n' % n for n in range(20))
    body = squeeze.compress(frames) + squeeze.flush(zlib.Z_SYNC_FLUSH) + b"\xff\xff no block"
    headers = [("Content-Encoding", "gzip"), ("Content-Type", "text/event-stream")]
    seen: list[dict[str, Any]] = []

    async def listen(client: FlowithClientBase) -> None:
        async for frame in client.stream_user_sse():
            seen.append(frame)

    async with CannedServer(200, headers, body) as server:
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            with pytest.raises(ConnectionFailedError, match="it is not gzip data"):
                await listen(client)
    assert seen == [{"n": n} for n in range(20)]


@pytest.mark.parametrize("coding", ["br", "cut-short-gzip"])
@pytest.mark.parametrize("recorded", [False, True], ids=["plain", "recorded"])
async def test_an_error_answer_a_stream_cannot_decode_keeps_its_status_and_is_sent_once(
    transport: Transport, tmp_path: Path, coding: str, recorded: bool
) -> None:
    # Read as a stream's body, it broke like a dropped connection: retried, then a
    # ConnectionFailedError without its 401; a request's is a ResponseDecodeError.
    body = b"\x0b\x00\x80{}\x03" if coding == "br" else gzip.compress(b'{"msg": "no"}')[:-4]
    headers = [("Content-Encoding", coding.split("-")[-1]), ("Content-Type", "application/json")]
    async with CannedServer(401, headers, body) as server:
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token,
            refresh_token=None,
            edge_url=server.url,
            supabase_url=server.url,
            max_retries=2,
            record_to=tmp_path / "session.jsonl" if recorded else None,
        )
        async with client:
            with pytest.raises(ResponseDecodeError) as refused:
                async for _ in client.stream_user_sse():
                    pass
    assert refused.value.status_code == 401
    assert str(refused.value).startswith(
        "HTTP 401 from GET /user_stream/sse: its body could not be decoded: it "
    )
    assert server.paths == ["/user_stream/sse"]


async def test_the_doctors_window_starts_once_its_raw_stream_is_open(
    transport: Transport,
) -> None:
    # Its window included the opening: a stream that took longer to open than the
    # window to listen failed with "did not open", where /user_stream/sse opened.
    from flowith_httpx import doctor

    frame = b'data: {"data": {"type": "status"}, "id": "1"}\n\n'
    async with CannedServer(200, [("Content-Type", "text/event-stream")], frame) as server:
        server.delay = 0.6
        client = transport.client_class()(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        request = client._live_request("stream")
        frames: list[Any] = []
        async with client:
            await doctor._listen_raw(client, request, 0.3, frames, anyio.current_time())
    assert [f.payload for f in frames] == [{"data": {"type": "status"}, "id": "1"}]


@pytest.mark.parametrize("coding", ["gzip", "none"])
async def test_an_answer_past_the_bound_of_one_read_whole_is_refused_as_it_comes(
    transport: Transport, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    # Read whole and unbounded: 65 KB of gzip on the wire was 64 MiB in memory
    # (and a plain answer of any size was held whole).
    if coding == "gzip":
        squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        body = b"".join(squeeze.compress(bytes(1 << 20)) for _ in range(65)) + squeeze.flush()
        headers = [("Content-Encoding", "gzip")]
    else:
        monkeypatch.setattr(codings, "MAX_ANSWER_SIZE", 1 << 20)
        body, headers = b"[" + b" " * (3 << 20) + b"]", []
    async with CannedServer(200, [*headers, ("Content-Type", "application/json")], body) as server:
        client = transport.client_class()(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            with pytest.raises(ResponseDecodeError) as refused:
                await client.get_credits()
    bound = "67,108,864" if coding == "gzip" else "1,048,576"
    assert str(refused.value) == (
        f"HTTP 200 from GET /user/credits: its body could not be decoded: it is larger than "
        f"the {bound} bytes this client reads of an answer"
    )


async def test_a_download_that_inflates_hugely_is_held_a_piece_at_a_time(
    transport: Transport, tmp_path: Path
) -> None:
    # aiohttp, its own decoding turned off, inflated a whole read of the connection
    # at once: 64 MiB of zeros, 65 KB on the wire, was one chunk in memory.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    body = b"".join(squeeze.compress(bytes(1 << 20)) for _ in range(64)) + squeeze.flush()
    headers = [("Content-Encoding", "gzip"), ("Content-Type", "application/octet-stream")]
    async with CannedServer(200, headers, body) as server:
        client = transport.client_class()(FakeFlowith().token, max_retries=0)
        async with client:
            tracemalloc.start()
            try:
                saved = await client.download(f"{server.url}/zeros.bin", tmp_path)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert saved.stat().st_size == 64 << 20
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while inflating 64 MiB"


async def test_a_stream_your_http_clients_hook_read_is_still_handed_over(
    transport: Transport, tmp_path: Path
) -> None:
    # The httpx transport read every stream raw: a body a response hook had read
    # (httpx's documented pattern) failed with StreamConsumed.
    if transport.library != "httpx":
        pytest.skip("httpx's event hooks")

    async def read_it(response: httpx.Response) -> None:
        await response.aread()

    server = CannedServer(200, [("Content-Type", "text/plain")], b"file contents")
    http = httpx.AsyncClient(event_hooks={"response": [read_it]})
    async with server, http:
        client_class: Any = transport.client_class()
        client = client_class(FakeFlowith().token, http_client=http, max_retries=0)
        async with client:
            saved = await client.download(f"{server.url}/f.txt", tmp_path)
    assert saved.read_bytes() == b"file contents"


class _InTurn(_Heads):
    """Each request answered with the next of ``answers``' bytes, heads kept."""

    def __init__(self, answers: list[bytes]) -> None:
        super().__init__(200, [], b"")
        self.in_turn = answers

    async def serve_one(self, socket: anyio.abc.SocketStream) -> None:
        self.answer = self.in_turn[min(len(self.heads), len(self.in_turn) - 1)]
        await super().serve_one(socket)


@pytest.mark.parametrize(
    "expires",
    [
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Thu, 01-Jan-1970 00:00:00 GMT",
        '"Thu, 01 Jan 1970 00:00:00 GMT"',  # quoted: aiohttp's jar read no date in it
    ],
)
async def test_a_cookie_deleted_by_an_epoch_expiry_is_no_longer_sent(
    transport: Transport, expires: str
) -> None:
    # aiohttp reads an expiry of 0 as none (aio-libs/aiohttp#13692): it kept sending it.
    def answer(set_cookie: str) -> bytes:
        head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
        return (head + (f"Set-Cookie: {set_cookie}\r\n" if set_cookie else "") + "\r\n[]").encode()

    answers = [
        answer("session=abcdefgh12345; Path=/"),
        answer(f"session=gone; Path=/; Expires={expires}"),
        answer(""),
    ]
    async with _InTurn(answers) as server:
        client_class = transport.client_class()
        client = client_class(FakeFlowith().token, edge_url=server.url, supabase_url=server.url)
        async with client:
            for _ in range(3):
                await client.list_public_notices()
    assert [b"\r\nCookie: " in head for head in server.heads] == [False, True, False]


async def test_an_image_job_finished_without_its_url_looks_at_its_row_and_other_stream(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A bare "completed" status on /stream, or an empty complete, failed the job at
    once ("ended without its image's URL"), though the URL came on /sse a moment
    later, or was in the row already (protocol.md 4.2, 4.3)."""

    def status_then_result(turn: Turn) -> list[Step]:
        said = {"nodeId": turn.node_id, "convId": turn.conv_id, "type": "status"}
        status = raw(data_frame({"data": {**said, "status": "completed"}, "id": "7"}))
        return [status, pause(0.1), workflow_complete(turn.result_url, task_type=turn.kind)]

    def row_then_empty(turn: Turn) -> list[Step]:
        said = {"nodeId": turn.node_id, "convId": turn.conv_id, "type": "complete"}
        empty = raw(data_frame({"data": {**said, "result": ""}, "id": "8"}))  # the row kept
        return [row("done", turn.result_url), pause(0.05), empty]

    async with make_client() as client:
        fake.media_responder = status_then_result
        first = await client.generate_image("a cat", timeout=10)
        fake.media_responder = row_then_empty
        second = await client.generate_image("a dog", timeout=10)
        fake.media_responder = lambda turn: [complete(result="")]
        with pytest.raises(GenerationError, match="ended without its image's URL"):
            await client.generate_image("a bird", timeout=10)
    urls = [turn.result_url for turn in fake.turns]
    assert [first.image and first.image.url, second.image and second.image.url] == urls[:2]


async def test_arguments_of_the_wrong_type_are_validation_errors_before_anything_is_sent(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Each was a bare TypeError (quote_from_bytes, "not JSON serializable"), or went
    # out as given: top_only="false" as true, a title None clearing it, a null session.
    conv = str(uuid.uuid4())
    loop: dict[str, Any] = {}
    loop["self"] = loop
    calls: list[tuple[str, Callable[[FlowithClientBase], Coroutine[Any, Any, object]]]] = [
        ("template_type", lambda c: c.list_templates(5)),  # type: ignore[arg-type]
        ("not JSON serializable", lambda c: c.update_user_profile(language=datetime.now())),
        ("not JSON serializable", lambda c: c.upsert_online_session({"p_session_id": {1}})),
        ("Circular reference", lambda c: c.upsert_online_session(loop)),
        ("title must be a string", lambda c: c.rename_conversation(conv, b"x")),  # type: ignore[arg-type]
        ("title must be a string", lambda c: c.rename_conversation(conv, None)),  # type: ignore[arg-type]
        ("session_id", lambda c: c.remove_online_session(None)),  # type: ignore[arg-type]
        ("top_only", lambda c: c.list_cooperate_rows(top_only="false")),  # type: ignore[arg-type]
        # Bare TypeErrors and AttributeErrors from inside the library:
        ("filename must be a str", lambda c: c.upload_file(data=b"x", filename=3)),  # type: ignore[call-overload]
        ("mime_type must be a str", lambda c: c.upload_file(data=b"x", mime_type=3)),  # type: ignore[call-overload]
        ("file_type must be a str", lambda c: c.upload_file(data=b"x", file_type=3)),  # type: ignore[call-overload]
        ("filename must be a str", lambda c: c.download("https://cdn.test/a.png", ".", filename=3)),  # type: ignore[arg-type]
    ]
    async with make_client() as client:
        for said, call in calls:
            with pytest.raises(ValidationError, match=said):
                await call(client)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"user_id": "not-a-uuid"}, "user_id must be a UUID"),
        ({"user_id": 5}, "user_id must be a UUID string, got int"),
        ({"proxy": 5}, "proxy must be a str, not int"),
    ],
)
def test_a_client_refuses_a_user_id_or_proxy_of_the_wrong_kind(
    fake: FakeFlowith, transport: Transport, setting: dict[str, Any], said: str
) -> None:
    """A user id that is no UUID was taken, and refused at the first call that needed
    it; a proxy that is no str was an AttributeError from inside the client."""
    with pytest.raises(ValidationError, match=said):
        transport.client_class()(fake.token, **setting)


def test_a_user_id_of_none_is_the_tokens_user(fake: FakeFlowith, transport: Transport) -> None:
    """user_id=os.environ.get("FLOWITH_USER_ID") with the variable unset, as refresh_token
    takes it: the check of user_ids refused it."""
    client = transport.client_class()(fake.token, user_id=None)
    assert client.user_id == fake.user_id


def test_a_user_id_given_is_read_as_its_canonical_uuid(transport: Transport) -> None:
    user = "4F1C2D3E-5A6B-4C7D-8E9F-0A1B2C3D4E5F"
    client = transport.client_class()("t" * 20, user_id=user)
    assert client.user_id == user.lower()


async def test_the_online_count_is_read_again_after_a_503(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # An RPC was sent as a write nobody may repeat: this one only reads.
    async with make_client() as client:
        fake.fail_next(1, 503, path="/rest/v1/rpc/get_online_count")
        assert await client.get_online_count() >= 0
    assert len(fake.requests_to("POST", "/rest/v1/rpc/get_online_count")) == 2


async def test_an_image_job_waiting_for_its_url_is_not_ended_by_a_row_read_or_lost_streams(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Two ways the wait for a URL after a bare "completed" went wrong: a scheduled row
    read inside it (timeout=8: one every 2 s) failed the job at once, though the URL
    came on /sse 2 s later; and streams closing during it left the job polling its
    row until the whole timeout passed, where it had failed at once before the wait."""

    def bare_completed(turn: Turn) -> Step:
        said = {"nodeId": turn.node_id, "convId": turn.conv_id, "type": "status"}
        return raw(data_frame({"data": {**said, "status": "completed"}, "id": "1"}))

    def late_result(turn: Turn) -> list[Step]:
        return [
            pause(1.5),
            row("done", ""),
            bare_completed(turn),
            pause(2.0),
            workflow_complete(turn.result_url),
        ]

    def streams_closed(turn: Turn) -> list[Step]:
        return [bare_completed(turn), pause(0.2), close_stream(), close_stream(channel="sse")]

    async with make_client() as client:
        fake.media_responder = late_result
        found = await client.generate_image("a cat", timeout=8)
        assert found.image is not None
        assert found.image.url == fake.turns[-1].result_url
        fake.media_responder = streams_closed
        started = time.monotonic()
        with pytest.raises(GenerationError, match="ended without its image's URL"):
            await client.generate_image("a dog", timeout=12)
        assert time.monotonic() - started < 8  # the 3 s wait, not the 12 s timeout


async def test_a_coding_nobody_knows_is_passed_over_and_a_body_less_answer_needs_none(
    transport: Transport,
) -> None:
    # The aiohttp transport took "UTF-8" for a stack it could not decode, and refused
    # a 204 for a coding list it could not undo, though it had nothing to decode.
    headers = [("Content-Encoding", "UTF-8"), ("Content-Type", "application/json")]
    async with CannedServer(200, headers, b"[]") as server:
        server.answers["/auth/v1/logout"] = (
            b"HTTP/1.1 204 No Content\r\nContent-Encoding: br, gzip\r\nConnection: close\r\n\r\n"
        )
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            assert await client.list_public_notices() == []
            await client.logout("others")


async def test_a_redirect_httpx_cannot_send_a_cookie_on_is_a_connection_failure(
    transport: Transport, tmp_path: Path
) -> None:
    # httpx builds a redirect itself, with its cookies in ASCII: a bare UnicodeEncodeError.
    def answer(extra: str) -> bytes:
        head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
        return (head + extra + "\r\n[]").encode()

    answers = [
        answer("Set-Cookie: pref=café; Path=/\r\n"),
        b"HTTP/1.1 302 Found\r\nLocation: /b.png\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        answer("Content-Type: image/png\r\n"),
    ]
    async with _InTurn(answers) as server:
        client_class = transport.client_class()
        client = client_class(
            FakeFlowith().token, edge_url=server.url, supabase_url=server.url, max_retries=0
        )
        async with client:
            await client.list_public_notices()
            if transport.library == "httpx":
                with pytest.raises(ConnectionFailedError, match="cannot follow the redirect"):
                    await client.download(f"{server.url}/a.png", tmp_path)
            else:
                assert (await client.download(f"{server.url}/a.png", tmp_path)).name == "a.png"


async def test_a_logout_waits_for_on_token_refresh_under_way(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """logout() waited for the refresh's tokens to be adopted, not for its callback:
    an app that forgot its stored tokens once logout() returned had them written
    back by the callback a moment later."""
    fake.expire_token(fake.token)
    stored: dict[str, str] = {}
    saving = anyio.Event()

    async def save(access: str, refresh: str) -> None:
        saving.set()
        await anyio.sleep(0.3)
        stored["refresh_token"] = refresh

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=save)
    async with client, anyio.create_task_group() as group:
        group.start_soon(client.get_credits)
        with anyio.fail_after(10):
            await saving.wait()
            await client.logout()
        assert stored  # handed on before logout() returned...
        stored.clear()  # ...so that what the app does now is the last word
    assert stored == {}


async def test_a_refresh_needed_by_on_token_refresh_itself_does_not_wait_for_it(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A call from the callback that needed a refresh waited for that refresh's
    tokens to be handed on, which waits for the callback: it hung for ever, and the
    token the server had just issued never reached the callback."""
    handed: list[str] = []

    async def save(access: str, refresh: str) -> None:
        handed.append(refresh)
        if len(handed) == 1:
            await client.refresh_access_token()  # a call that needs one, as a skewed clock's

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=save)
    async with client:
        with anyio.fail_after(10):
            await client.refresh_access_token()
    assert len(handed) == 2
    assert handed[-1] == client.get_refresh_token() != handed[0]


async def test_an_aclose_from_on_token_refresh_closes_at_once(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """It waited for its own refresh's callback, itself: the whole timeout (30 s), then
    warned that the tokens may never reach on_token_refresh, as they were doing."""
    fake.expire_token(fake.token)

    async def save_and_quit(access: str, refresh: str) -> None:
        await client.aclose()

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=save_and_quit)
    client.timeout = 30
    with anyio.fail_after(10):
        with contextlib.suppress(FlowithError):
            await client.get_credits()
        await client.aclose()
    assert "still in progress" not in caplog.text


async def test_a_refusal_saying_expired_of_something_else_spends_no_refresh_token(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Any 401 or 403 with "expired" in its message was taken for an expired token.
    body = {"message": "Your subscription has expired"}
    fake.fail_next(1, 403, path="/user/credits", body=body)
    async with make_client(refresh_token=fake.refresh_token) as client:
        with pytest.raises(PermissionDeniedError, match="subscription has expired"):
            await client.get_credits()
    assert fake.requests_to("POST", "/auth/v1/token") == []


async def test_a_logout_waits_for_a_hung_on_token_refresh_no_longer_than_its_timeout(
    fake: FakeFlowith, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting for the callback had no bound: one that hung (a keyring prompt) hung
    the logout too. It is waited for as long as the logout's timeout."""
    fake.expire_token(fake.token)
    saving = anyio.Event()

    async def hung(access: str, refresh: str) -> None:
        saving.set()
        await anyio.sleep(60)

    # (A close waits for the callback as long as the client's timeout: 2 s here.)
    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=hung, timeout=2)
    async with client, anyio.create_task_group() as group:
        group.start_soon(client.get_credits)
        with anyio.fail_after(20):
            await saving.wait()
            await client.logout(timeout=0.5)
        group.cancel_scope.cancel()
    assert "on_token_refresh still runs: the logout goes on without it" in caplog.text


async def test_a_task_on_token_refresh_starts_waits_for_later_callbacks(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A task started by the callback copied its 'in the callback' mark for good: a
    logout from it, later, did not wait for the callback then running, whose tokens
    were stored after the logout returned."""
    log: list[str] = []
    go = anyio.Event()

    async def logs_out() -> None:
        await go.wait()
        await client.logout()
        log.append("logout returned")

    async def save(access: str, refresh: str) -> None:
        stored = len([entry for entry in log if entry.startswith("stored")])
        if stored == 0:
            group.start_soon(logs_out)  # started while the first callback runs
        else:
            go.set()  # the app logs out while this callback is saving
            await anyio.sleep(0.3)
        log.append(f"stored {stored}")

    client = make_client(refresh_token=fake.refresh_token, on_token_refresh=save)
    async with client, anyio.create_task_group() as group:
        with anyio.fail_after(20):
            await client.refresh_access_token()
            await client.refresh_access_token()
    assert log == ["stored 0", "stored 1", "logout returned"]
