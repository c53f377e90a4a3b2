"""The httpx adapter alone, with respx standing in for the network."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import jwt
import pytest
import respx

from flowith_httpx import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    FlowithClient,
    FlowithError,
    NotFoundError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
)

pytestmark = pytest.mark.anyio

USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
CONV = "11111111-2222-4333-8444-555555555555"
TOKEN = "header.payload.signature-long-enough"
EDGE = "https://edge.test"
SB = "https://sb.test"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(**options: Any) -> FlowithClient:
    return FlowithClient(TOKEN, user_id=USER, edge_url=EDGE, supabase_url=SB, **options)


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"data": payload, "id": "1"}).encode() + b"\n\n"


async def test_a_turn_goes_out_exactly_as_the_core_built_it() -> None:
    posted = anyio.Event()
    seen: dict[str, str] = {}

    async def stream_body() -> AsyncIterator[bytes]:
        yield b'data: {"heartbeat": 1}\n\n'
        await posted.wait()
        node = seen["node"]
        yield frame({"type": "chunks", "nodeId": node, "chunks": ["Wars"]})
        yield frame({"type": "complete", "nodeId": node, "result": "Warsaw"})

    def on_completion(request: httpx.Request) -> httpx.Response:
        seen["node"] = json.loads(request.content)["nodeId"]
        posted.set()
        return httpx.Response(200, json={"status": "processing"})

    with respx.mock(assert_all_called=True) as router:
        conversation = router.post(f"{SB}/rest/v1/conversation?select=id").respond(
            201, json=[{"id": CONV}]
        )
        nodes = router.post(url__startswith=f"{SB}/rest/v1/flow_node").respond(201)
        stream = router.get(f"{EDGE}/user_stream/stream?user_id={USER}").mock(
            return_value=httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=stream_body()
            )
        )
        router.post(f"{EDGE}/completion/async?mode=general").mock(side_effect=on_completion)
        async with client() as flowith:
            result = await flowith.generate("Capital of Poland?")
    assert result.text == "Warsaw"
    assert result.conv_id == CONV
    sent = conversation.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-profile"] == "public"
    node_urls = [str(call.request.url) for call in nodes.calls]
    assert node_urls[0] == (
        f"{SB}/rest/v1/flow_node?columns="
        "%22id%22,%22position%22,%22type%22,%22conv_id%22,%22p_id%22,%22c_ids%22,%22data%22"
    )
    stream_request = stream.calls.last.request
    assert stream_request.headers["authorization"] == TOKEN  # bare on the edge
    assert stream_request.headers["accept"] == "text/event-stream"
    assert "content-type" not in stream_request.headers


async def test_any_failure_reading_a_stream_reaches_the_reader_as_a_connection_error() -> None:
    """The body is read by a pump task: an unexpected error there must reach
    the reader typed (on trio, one escaping a system task would end the run)."""

    async def stream_body() -> AsyncIterator[bytes]:
        yield frame({"type": "chunks", "nodeId": CONV, "chunks": ["seen"]})
        raise RuntimeError("the body broke oddly")

    with respx.mock() as router:
        router.get(f"{EDGE}/user_stream/stream?user_id={USER}").mock(
            return_value=httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=stream_body()
            )
        )
        events: list[dict[str, Any]] = []

        async def listen(flowith: FlowithClient) -> None:
            # Without a window: within one, a broken stream would be opened again.
            async for event in flowith.stream_user_stream():
                events.append(event)

        async with client() as flowith:
            with anyio.fail_after(5), pytest.raises(
                ConnectionFailedError, match="RuntimeError: the body broke oddly"
            ):
                await listen(flowith)
    assert [event["chunks"] for event in events] == [["seen"]]


async def test_connection_refused_is_a_connection_error_before_sending() -> None:
    with respx.mock() as router:
        router.post(f"{SB}/rest/v1/conversation?select=id").mock(
            side_effect=httpx.ConnectError("refused")
        )
        async with client() as flowith:
            with pytest.raises(ConnectionFailedError) as info:
                await flowith.generate("hi")
    assert info.value.request_sent is False


async def test_a_slow_answer_times_out_on_the_per_request_limit() -> None:
    async def slow(_request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200, json=[{"id": CONV}])

    # The call never completes, so respx never records it as called.
    with respx.mock(assert_all_called=False) as router:
        router.patch(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=slow)
        async with client() as flowith:
            with anyio.fail_after(3):
                with pytest.raises(TimeoutError, match=r"took longer than 0\.2s"):
                    await flowith.delete_conversation(CONV, timeout=0.2)


async def test_delete_of_a_missing_conversation_is_not_silent() -> None:
    with respx.mock() as router:
        route = router.patch(f"{SB}/rest/v1/conversation?id=eq.{CONV}&select=id").respond(
            200, json=[]
        )
        async with client() as flowith:
            with pytest.raises(NotFoundError):
                await flowith.delete_conversation(CONV)
    assert json.loads(route.calls.last.request.content) == {"is_delete": True}


async def test_own_http_client_is_used_and_left_open() -> None:
    with respx.mock() as router:
        route = router.patch(url__startswith=f"{SB}/rest/v1/conversation").respond(
            200, json=[{"id": CONV}]
        )
        async with httpx.AsyncClient(headers={"x-mine": "1"}) as mine:
            async with client(http_client=mine) as flowith:
                await flowith.delete_conversation(CONV)
            assert not mine.is_closed
        assert route.calls.last.request.headers["x-mine"] == "1"


async def test_own_http_client_whose_hook_reads_the_answer_still_works() -> None:
    # httpx's docs have a response hook read the body (await response.aread()): with
    # the answers streamed to undo their encoding safely, every request then failed
    # with StreamConsumed, blamed on an upload.
    seen: list[bytes] = []

    async def reading(response: httpx.Response) -> None:
        seen.append(await response.aread())

    with respx.mock() as router:
        router.patch(url__startswith=f"{SB}/rest/v1/conversation").respond(
            200, json=[{"id": CONV}]
        )
        mine = httpx.AsyncClient(event_hooks={"response": [reading]})
        async with mine, client(http_client=mine) as flowith:
            await flowith.delete_conversation(CONV)
    assert [json.loads(body) for body in seen] == [[{"id": CONV}]]


async def _peak_in_flight(calls: int, **options: Any) -> int:
    """The most listing requests the transport had out at once, with ``calls`` made
    concurrently and each answer held back long enough for the others to start."""
    in_flight = peak = 0

    async def held(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.5)  # long enough for all the others to start, even under load
        in_flight -= 1
        return httpx.Response(200, json=[])

    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=held)
        async with client(**options) as flowith, anyio.create_task_group() as group:
            for _ in range(calls):
                group.start_soon(flowith.list_conversations)
    return peak


async def test_own_pool_is_handed_a_bounded_number_of_requests() -> None:
    # The rest wait in the client, in order, rather than in httpcore's queue (whose
    # upkeep grows with its length), and all of them complete.
    assert await _peak_in_flight(40) == 16


class _HeldListings:
    """Listing answers held back until ``released`` is set."""

    def __init__(self) -> None:
        self.arrived = 0  # requests that reached the server
        self.released = anyio.Event()

    async def answer(self, _request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        await self.released.wait()
        return httpx.Response(200, json=[])

    async def occupy(self, flowith: FlowithClient, group: anyio.abc.TaskGroup) -> None:
        """Start 16 listings, the most the client sends at once, and wait until all arrived."""
        for _ in range(16):
            group.start_soon(flowith.list_conversations)
        with anyio.fail_after(5):
            while self.arrived < 16:
                await anyio.lowlevel.checkpoint()


async def test_an_upload_does_not_wait_behind_the_bounded_requests() -> None:
    # Uploads hold their connection for long, like downloads: they are not counted.
    held = _HeldListings()
    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=held.answer)
        router.post(f"{EDGE}/file/store").respond(200, json={"url": "https://cdn.test/a.txt"})
        async with client() as flowith, anyio.create_task_group() as group:
            await held.occupy(flowith, group)
            with anyio.fail_after(5):
                record = await flowith.upload_file(data=b"hello", filename="a.txt")
            assert held.arrived == 16  # all still in flight
            held.released.set()
    assert record.url == "https://cdn.test/a.txt"


async def test_a_request_that_times_out_waiting_for_its_turn_says_so() -> None:
    # It was never sent, so the server is not to blame, and the cure is on this side.
    held = _HeldListings()
    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=held.answer)
        async with client() as flowith, anyio.create_task_group() as group:
            await held.occupy(flowith, group)
            with pytest.raises(TimeoutError, match=r"not sent: it waited 0\.3s for its turn"):
                await flowith.list_conversations(timeout=0.3)
            assert held.arrived == 16  # the 17th never left
            held.released.set()


async def test_requests_on_every_lane_carry_the_cookies_a_server_set() -> None:
    # The lanes share one cookie jar: to the server they are one client, as before.
    calls = with_cookie = 0

    async def listing(request: httpx.Request) -> httpx.Response:
        nonlocal calls, with_cookie
        calls += 1
        if calls == 1:
            return httpx.Response(200, json=[], headers={"set-cookie": "session=abc; Path=/"})
        with_cookie += "session=abc" in request.headers.get("cookie", "")
        await anyio.sleep(0.2)  # so that the calls overlap and take many lanes
        return httpx.Response(200, json=[])

    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=listing)
        async with client() as flowith:
            await flowith.list_conversations()
            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(flowith.list_conversations)
    assert (calls, with_cookie) == (21, 20)


async def test_a_client_brought_along_keeps_its_own_limits() -> None:
    async with httpx.AsyncClient() as mine:
        assert await _peak_in_flight(40, http_client=mine) == 40


def test_proxy_and_own_client_are_exclusive() -> None:
    with pytest.raises(ValueError, match="proxy"):
        FlowithClient(TOKEN, proxy="http://127.0.0.1:1", http_client=httpx.AsyncClient())


# -- old-client defect fixes (protocol.md section 7) nothing else would notice undone ------


async def test_d13_a_user_id_from_the_token_is_validated_before_any_filter() -> None:
    token = jwt.encode({"sub": "x,user_id.neq.0", "exp": 4102444800}, "k" * 32, algorithm="HS256")
    with respx.mock() as router:  # any request at all would fail as unmatched
        async with FlowithClient(token, edge_url=EDGE, supabase_url=SB) as flowith:
            with pytest.raises(ValidationError, match="user_id"):
                await flowith.list_conversations()
    assert router.calls.call_count == 0


async def test_d21_a_reward_claim_answered_with_no_body_is_an_empty_object() -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{EDGE}/").respond(204)
        async with client(max_retries=0) as flowith:
            assert await flowith.claim_daily_reward() == {}


@pytest.mark.parametrize("body", ['"pro"', "[]", '{"credit_type": 3}', "<html>oops</html>"])
async def test_d22_a_credit_type_answer_of_the_wrong_shape_is_an_error(body: str) -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{EDGE}/").respond(200, text=body)
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError):
                await flowith.get_credit_type()
            with pytest.raises(ResponseDecodeError):
                await flowith.get_discord_invite()


EXPLICIT_REFRESH = "explicit-refresh-0123456789"
NEW_REFRESH = "new-refresh-9876543210"
NEW_JWT = "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, json.dumps({"error_description": f"Invalid Refresh Token: {EXPLICIT_REFRESH}"})),
        (200, f"echo {EXPLICIT_REFRESH} <html>"),
        # A truncated answer quoting tokens the client has not adopted yet.
        (200, f'{{"access_token":"{NEW_JWT}","refresh_token":"{NEW_REFRESH}'),
    ],
)
async def test_a_failed_refresh_quotes_no_token(status: int, body: str) -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(status, text=body)
        async with client(max_retries=0) as flowith:
            with pytest.raises((ResponseDecodeError, AuthenticationError)) as info:
                await flowith.refresh_access_token(EXPLICIT_REFRESH)
    shown = f"{info.value} {info.value.__dict__}"
    for secret in (EXPLICIT_REFRESH, NEW_REFRESH, NEW_JWT):
        assert secret not in shown


@pytest.mark.parametrize(
    "tokens",
    [
        {"access_token": {"x": 1}},
        {"access_token": 12345},
        {"access_token": "t", "refresh_token": ["a"]},
    ],
)
async def test_a_refresh_answer_with_tokens_that_are_not_text_is_refused(
    tokens: dict[str, Any],
) -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(200, json=tokens)
        async with client(refresh_token=EXPLICIT_REFRESH, max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError, match="must be strings"):
                await flowith.refresh_access_token()
            assert flowith._state.credentials.access_token == TOKEN  # nothing adopted


@pytest.mark.parametrize("exp", ["1e400", "-1e400", "NaN", "9" * 400])
async def test_refreshed_tokens_whose_exp_is_no_moment_are_still_adopted(exp: str) -> None:
    # int(inf) raised OverflowError after the server had rotated the tokens: the
    # client kept the spent refresh token and on_token_refresh never ran.
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, claims = b'{"alg":"HS256"}', f'{{"sub":"{USER}","exp":{exp}}}'.encode()
    token = f"{part(header)}.{part(claims)}.{part(b'signature')}"
    handed: list[tuple[str, str]] = []
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(
            200, json={"access_token": token, "refresh_token": NEW_REFRESH}
        )
        async with client(
            refresh_token=EXPLICIT_REFRESH,
            on_token_refresh=lambda access, refresh: handed.append((access, refresh)),
        ) as flowith:
            session = await flowith.refresh_access_token()
            assert flowith.get_refresh_token() == NEW_REFRESH
    assert session.access_token == token
    assert handed == [(token, NEW_REFRESH)]


async def failed_refresh(
    status: int, answer: dict[str, Any], passed: str | None = None
) -> tuple[BaseException, str, list[tuple[str, str]]]:
    """A refresh answered ``status`` and ``answer`` that fails: its error, the refresh
    token the client holds after it, and what on_token_refresh was handed."""
    handed: list[tuple[str, str]] = []
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(status, json=answer)
        async with client(
            refresh_token=EXPLICIT_REFRESH,
            max_retries=0,
            on_token_refresh=lambda access, refresh: handed.append((access, refresh)),
        ) as flowith:
            with pytest.raises(FlowithError) as info:
                await flowith.refresh_access_token(passed)
            assert flowith._state.credentials.access_token == TOKEN
            return info.value, flowith.get_refresh_token(), handed


@pytest.mark.parametrize(
    ("access_token", "error"),
    [
        (None, AuthenticationError),
        ("", AuthenticationError),
        (12345, ResponseDecodeError),
        ("has a space", ResponseDecodeError),
    ],
)
async def test_a_refresh_answer_without_a_usable_access_token_keeps_its_new_refresh_token(
    access_token: Any, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    """The server rotated the refresh token, so the one sent is spent: the answer's
    new one was dropped, and the client kept the spent one, signed out for good."""
    failure, held, handed = await failed_refresh(
        200, {"access_token": access_token, "refresh_token": NEW_REFRESH}
    )
    assert type(failure) is error
    assert held == NEW_REFRESH
    assert handed == [(TOKEN, NEW_REFRESH)]
    message = str(failure)
    assert message.endswith(
        "(the new refresh token it sent is kept, and handed to on_token_refresh)"
    )
    assert NEW_REFRESH not in f"{message} {failure!r} {getattr(failure, 'body', '')}"
    assert "the new refresh token it brought is kept" in caplog.text


async def test_a_refresh_answer_without_a_new_refresh_token_hands_nothing_on() -> None:
    failure, held, handed = await failed_refresh(
        200, {"access_token": None, "refresh_token": EXPLICIT_REFRESH}
    )
    assert isinstance(failure, AuthenticationError)
    assert str(failure).endswith("returned no access_token")
    assert (held, handed) == (EXPLICIT_REFRESH, [])


async def test_a_failed_refresh_of_a_token_passed_in_hands_nothing_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token held differs from the one passed in: that was taken for a new one
    the failed answer brought, and the unchanged tokens were handed on."""
    failure, held, handed = await failed_refresh(
        400, {"error": "invalid_grant"}, passed="another-refresh-token-0123"
    )
    assert isinstance(failure, AuthenticationError)
    assert (held, handed) == (EXPLICIT_REFRESH, [])
    assert "is kept" not in caplog.text


OPAQUE_REFRESH = "opaque-refresh-token-xyz"


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/auth/v1/user", lambda c: c.get_auth_user()),
        ("/rest/v1/conversation", lambda c: c.list_conversations()),
        ("/rest/v1/cooperate", lambda c: c.list_cooperate_rows()),
    ],
)
async def test_an_answer_of_the_wrong_shape_keeps_no_token_the_client_holds(
    path: str, call: Any
) -> None:
    # Error answers were masked with the client's tokens, but a 200 of the wrong
    # shape kept an echoed opaque refresh token in .body.
    with respx.mock() as router:
        router.get(url__startswith=f"{SB}{path}").respond(200, json=[[{"echo": OPAQUE_REFRESH}]])
        async with client(refresh_token=OPAQUE_REFRESH, max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError) as info:
                await call(flowith)
    assert OPAQUE_REFRESH not in f"{info.value} {info.value.body}"
    assert "[REDACTED]" in str(info.value.body)


@pytest.mark.parametrize("answer", [[OPAQUE_REFRESH], [{"access_token": [OPAQUE_REFRESH]}]])
async def test_a_refresh_answer_of_the_wrong_shape_keeps_no_token_passed_in(answer: Any) -> None:
    # A refresh token passed to refresh_access_token() is not one the client holds:
    # the wrong-shape error kept it in its message and .body (and in its cause).
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(200, json=answer)
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError) as info:
                await flowith.refresh_access_token(OPAQUE_REFRESH)
    chain = [info.value, info.value.__cause__, info.value.__context__]
    shown = " ".join(f"{e!r} {getattr(e, 'body', '')}" for e in chain if e is not None)
    assert OPAQUE_REFRESH not in shown


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", "<html><p>refresh_token: opaque-new-refresh-0123</p>"),
        ("application/x-www-form-urlencoded", "refresh_token=opaque-new-refresh-0123&x=1"),
    ],
)
async def test_a_refresh_answer_that_is_not_json_is_not_quoted(
    content_type: str, body: str
) -> None:
    """Its excerpt was quoted: a page or a form holding the new refresh token kept it
    in the error, since no rule can tell an opaque token from a word."""
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(
            200, headers={"content-type": content_type}, text=body
        )
        async with client(refresh_token=EXPLICIT_REFRESH, max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError) as info:
                await flowith.refresh_access_token()
    media_type = content_type.split(";")[0]
    assert str(info.value) == (
        f"refresh_access_token: the answer is not JSON ({len(body)} bytes of {media_type}; "
        "not quoted, as it may hold new tokens)"
    )
    chain = [info.value, info.value.__cause__, info.value.__context__]
    shown = " ".join(f"{e!r} {getattr(e, 'body', '')}" for e in chain if e is not None)
    assert "opaque-new-refresh" not in shown
    assert info.value.status_code == 200


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_a_refused_refresh_is_an_authentication_error(status: int) -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(
            status, json={"error": "invalid_grant"}
        )
        async with client(refresh_token=EXPLICIT_REFRESH, max_retries=0) as flowith:
            with pytest.raises(AuthenticationError):
                await flowith.refresh_access_token()


async def test_a_rate_limited_refresh_keeps_its_type_and_its_wait() -> None:
    # The tokens may still be good: "try again in 120 s", not "sign in again".
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(
            429, headers={"retry-after": "120"}, json={"error": "over_request_rate_limit"}
        )
        async with client(refresh_token=EXPLICIT_REFRESH, max_retries=0) as flowith:
            with pytest.raises(RateLimitError) as info:
                await flowith.refresh_access_token()
    assert not isinstance(info.value, AuthenticationError)
    assert info.value.retry_after_s == 120.0


async def test_a_refresh_the_auth_server_failed_is_a_server_error() -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(503, text="upstream down")
        async with client(refresh_token=EXPLICIT_REFRESH, max_retries=0) as flowith:
            with pytest.raises(APIError) as info:
                await flowith.refresh_access_token()
    assert not isinstance(info.value, AuthenticationError)
    assert info.value.status_code == 503


@pytest.mark.parametrize("answer", [{}, {"refresh_token": None}, {"refresh_token": ""}])
async def test_a_refresh_without_a_new_refresh_token_names_the_one_kept(
    answer: dict[str, Any],
) -> None:
    persisted: list[tuple[str, str]] = []
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/auth/v1/token").respond(
            200, json={"access_token": NEW_JWT, "token_type": "bearer", **answer}
        )
        async with client(
            refresh_token=EXPLICIT_REFRESH,
            max_retries=0,
            on_token_refresh=lambda access, refresh: persisted.append((access, refresh)),
        ) as flowith:
            session = await flowith.refresh_access_token()
            assert flowith._state.credentials.refresh_token == EXPLICIT_REFRESH
    assert session.access_token == NEW_JWT
    assert session.refresh_token == EXPLICIT_REFRESH  # what to persist: still in use
    assert persisted == [(NEW_JWT, EXPLICIT_REFRESH)]


@pytest.mark.parametrize("user", [None, "99999999-8888-4777-8666-555555555555"])
async def test_a_profile_row_without_its_id_is_the_users_it_was_read_for(
    user: str | None,
) -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/user_profile").respond(
            200, json=[{"language": "en"}]
        )
        router.patch(url__startswith=f"{SB}/rest/v1/user_profile").respond(
            200, json=[{"language": "pl"}]
        )
        async with client(max_retries=0) as flowith:
            read = await flowith.get_user_profile(user)
            updated = await flowith.update_user_profile(user, language="pl")
    assert (read.user_id, read.language) == (user or USER, "en")
    assert (updated.user_id, updated.language) == (user or USER, "pl")


@pytest.mark.parametrize(
    "body", ["1e400", "Infinity", '"1e400"', "9" * 400, "9007199254740993", "12.9", "true", "[3]"]
)
async def test_an_online_count_that_is_no_whole_count_is_a_decode_error(body: str) -> None:
    """Read through a float, 9007199254740993 came back as 9007199254740992 and
    12.9 as 12."""
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/rest/v1/rpc/get_online_count").respond(
            200, text=body
        )
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError, match="expected a whole number"):
                await flowith.get_online_count()


@pytest.mark.parametrize(
    ("body", "count"),
    [("9007199254740992", 2**53), ("12.0", 12), ('"1,234"', 1234), ("null", 0), ("7", 7)],
)
async def test_an_online_count_comes_back_exactly(body: str, count: int) -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/rest/v1/rpc/get_online_count").respond(
            200, text=body
        )
        async with client(max_retries=0) as flowith:
            assert await flowith.get_online_count() == count


@pytest.mark.parametrize("body", ["null", "{}", "42", '"hello"', "", "[{}, 3]"])
async def test_a_delete_answered_with_anything_but_the_row_is_not_taken_for_success(
    body: str,
) -> None:
    # Without the deleted row back, deleting nothing cannot be told from deleting it (D21).
    with respx.mock() as router:
        router.patch(url__startswith=f"{SB}/rest/v1/conversation").respond(200, text=body)
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError, match="expected the deleted row back"):
                await flowith.delete_conversation(CONV)


async def test_a_created_conversation_id_that_is_not_a_uuid_is_a_decode_error() -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{SB}/rest/v1/conversation").respond(
            201, json=[{"id": "not-a-uuid"}]
        )
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError, match="not a UUID: 'not-a-uuid'"):
                await flowith.generate("hi")


async def test_iter_conversations_ends_when_a_server_ignores_the_offset() -> None:
    rows = [{"id": CONV, "title": "a"}, {"id": USER, "title": "b"}]
    with respx.mock() as router:
        route = router.get(url__startswith=f"{SB}/rest/v1/conversation").respond(200, json=rows)
        async with client(max_retries=0) as flowith:
            seen = [r.conv_id async for r in flowith.iter_conversations(page_size=2)]
    assert seen == [CONV, USER]  # each once
    # Repeated twice, the page ended the walk (once could be new rows pushing it down).
    assert route.call_count == 3


async def test_iter_conversations_ends_on_pages_of_rows_without_ids() -> None:
    # Each id-less row counted as new: the walk never ended.
    rows = [{"title": "no id"}, {"title": "no id either"}]
    with respx.mock() as router:
        route = router.get(url__startswith=f"{SB}/rest/v1/conversation").respond(200, json=rows)
        async with client(max_retries=0) as flowith:
            with anyio.fail_after(5):
                titles = [r.title async for r in flowith.iter_conversations(page_size=2)]
    assert titles == ["no id", "no id either"]
    assert route.call_count == 3  # repeated twice, as rows with ids


async def test_iter_conversations_yields_every_page_of_rows_without_ids() -> None:
    """Rows without an id were never new: the second such page ended the walk
    before it was yielded, and five of seven conversations were lost."""
    rows = [{"title": f"conv {n}"} for n in range(7)]

    def paged(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", "0"))
        limit = int(request.url.params["limit"])
        return httpx.Response(200, json=rows[offset : offset + limit])

    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=paged)
        async with client(max_retries=0) as flowith:
            titles = [r.title async for r in flowith.iter_conversations(page_size=2)]
    assert titles == [row["title"] for row in rows]


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
async def test_a_listener_answered_with_no_event_stream_says_so(content_type: str) -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{EDGE}/user_stream/").respond(
            200, headers={"content-type": content_type}, text="<html>sign in</html>"
        )
        async with client(max_retries=0) as flowith:
            expected = f"expected text/event-stream.*{content_type}"
            with pytest.raises(ResponseDecodeError, match=expected):
                async for _ in flowith.stream_user_sse(timeout=2):
                    pass


async def test_a_listener_reports_an_oversized_event_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = b"data: " + b"x" * (17 * 1024 * 1024) + b"\n\n"
    body = big + frame({"type": "chunks", "nodeId": CONV, "chunks": ["after"]})
    with respx.mock() as router:
        router.get(url__startswith=f"{EDGE}/user_stream/").respond(
            200, headers={"content-type": "text/event-stream"}, content=body
        )
        async with client(max_retries=0) as flowith:
            events = [event async for event in flowith.stream_user_stream()]
    assert [event["chunks"] for event in events] == [["after"]]
    assert "skipping an oversized event on a listened stream" in caplog.text


def test_a_transport_error_without_words_still_says_what_happened() -> None:
    """httpcore raises ReadError('') on asyncio: the message was 'ReadError: '."""
    import httpx

    from flowith_httpx.client import _transport_error

    error = _transport_error(httpx.ReadError(""))
    assert str(error) == "ReadError: the connection broke or was closed"


def test_a_transport_error_without_words_says_what_its_cause_said() -> None:
    """On trio, a refused certificate was "ConnectError: the connection broke or was
    closed": the SSLCertVerificationError saying so was three causes down."""
    import ssl

    import httpx

    from flowith_httpx.client import _transport_error

    refused = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    broken = httpx.ConnectError("")
    broken.__cause__ = OSError()  # one more that says nothing, as trio's does
    broken.__cause__.__cause__ = refused
    error = _transport_error(broken)
    assert str(error) == "ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] self-signed"


async def test_a_request_body_can_be_sent_again_by_your_clients_auth_flow() -> None:
    """An auth flow may resend a request (a challenge answered): the body goes again,
    whole (it went once only, and h11 refused the short second one)."""

    class Challenged(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            response = yield request
            if response.status_code == 401:
                request.headers["x-answer"] = "1"
                yield request

    bodies: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if "x-answer" not in request.headers:
            return httpx.Response(401, json={"message": "challenge"})
        return httpx.Response(200, json=[{"id": CONV}])

    with respx.mock() as router:
        router.patch(url__startswith=f"{SB}/rest/v1/conversation").mock(side_effect=answer)
        async with (
            httpx.AsyncClient(auth=Challenged()) as mine,
            client(http_client=mine) as flowith,
        ):
            await flowith.rename_conversation(CONV, "renamed")
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    assert json.loads(bodies[1])["title"] == "renamed"


async def test_an_upload_an_auth_flow_sends_again_fails_with_a_typed_error() -> None:
    """A streamed body goes once (as in httpx): a second send is a FlowithError, not
    httpx's bare StreamConsumed."""

    class Twice(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            yield request
            yield request

    with respx.mock() as router:
        router.post(url__regex=r".*/file/store.*").respond(200, json={"url": "https://cdn/x"})
        async with (
            httpx.AsyncClient(auth=Twice()) as mine,
            client(http_client=mine) as flowith,
        ):
            with pytest.raises(ConnectionFailedError, match="cannot be sent again"):
                await flowith.upload_file(data=b"hello", filename="a.txt")


async def test_a_request_out_of_time_before_it_starts_does_not_blame_the_turns() -> None:
    # With no crowd, a deadline too short to start the request said it "waited for its
    # turn (the client sends 16 requests at once...)": advice that fixed nothing.
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith=f"{SB}/rest/v1/conversation").respond(200, json=[])
        async with client() as flowith:
            with pytest.raises(TimeoutError, match=r"^request was not sent: its 1e-09s ran") as e:
                await flowith.list_conversations(timeout=1e-9)
    assert e.value.request_sent is False
    assert "turn" not in str(e.value)


async def test_table_reads_refuse_an_object_and_the_catalogue_a_wrapper() -> None:
    """Each call is wired to the stricter reading: a PostgREST table read answers an
    array, and the model catalogue maps ids to models."""
    wrapper = {"data": [{"id": CONV, "type": "1"}]}
    with respx.mock() as router:
        router.get(url__startswith=f"{SB}/rest/v1/flow_node").respond(200, json=wrapper)
        router.get(url__startswith=f"{SB}/rest/v1/conversation").respond(200, json=wrapper)
        router.get(url__startswith=f"{EDGE}/models").respond(
            200, json={"error": {"code": 503, "message": "upstream down"}}
        )
        router.get(f"{EDGE}/cooperate/list?conv_id={CONV}").respond(
            200, json={"user_id": USER, "role": 1}
        )
        async with client(max_retries=0) as flowith:
            with pytest.raises(ResponseDecodeError, match="expected a JSON array of FlowNode"):
                await flowith.get_flow_nodes(CONV)
            with pytest.raises(ResponseDecodeError, match="of ConversationRecord objects, got"):
                await flowith.list_conversations()
            with pytest.raises(ResponseDecodeError, match="model 'error': expected a model's"):
                await flowith.list_models()
            # The edge's own listing may answer one object.
            (cooperator,) = await flowith.get_cooperators(CONV)
    assert (cooperator.user_id, cooperator.role) == (USER, 1)


def test_a_listener_whose_stream_keeps_ending_empty_backs_off() -> None:
    """A stream ended at once, without an event, was reopened every second for the
    whole window; the delay now doubles after each empty connection (on trio's mock
    clock: the listener's sleeps take no time)."""
    import trio
    import trio.testing

    opened: list[float] = []

    def empty(request: httpx.Request) -> httpx.Response:
        opened.append(trio.current_time())
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"")

    async def listen() -> list[Any]:
        with respx.mock() as router:
            router.get(url__startswith=f"{EDGE}/user_stream/").mock(side_effect=empty)
            async with client(max_retries=0) as flowith:
                return [event async for event in flowith.stream_user_stream(timeout=40)]

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(listen, clock=clock) == []
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(opened)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0]  # the next, 30 s on, would be past the window


def test_a_failed_refresh_that_brought_a_new_refresh_token_fails_every_waiter() -> None:
    """A 200 refresh answer with a new refresh token but no access token: the new token
    is kept, and each of the 50 calls waiting for that refresh saw that the token held
    was no longer the one it had renewed, took the failure for another's, and
    refreshed again: 50 refreshes, one after the other (on trio's mock clock)."""
    import trio
    import trio.testing

    posts: list[float] = []

    async def token_answer(request: httpx.Request) -> httpx.Response:
        posts.append(trio.current_time())
        await trio.sleep(0.1)  # the 401s of all the calls come meanwhile
        return httpx.Response(200, json={"refresh_token": f"rt-new-{len(posts):04}-abcdefgh"})

    outcomes: list[str] = []

    async def calls() -> None:
        with respx.mock() as router:
            router.get(f"{EDGE}/user/credits").respond(401, json={"message": "jwt expired"})
            router.post(url__startswith=f"{SB}/auth/v1/token").mock(side_effect=token_answer)
            async with client(refresh_token="rt-0001-abcdefgh", max_retries=0) as flowith:

                async def one() -> None:
                    try:
                        await flowith.get_credits()
                    except FlowithError as error:
                        outcomes.append(type(error).__name__)

                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(one)

    trio.run(calls, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(outcomes) == 50
    assert len(posts) == 1


def _listen_on_mock_clock(
    answers: Callable[[httpx.Request], httpx.Response],
    *,
    window: float,
    close_at: float | None = None,
) -> tuple[list[Any], str, float]:
    """Listen to /user_stream/stream (mocked by ``answers``) for ``window`` seconds of
    trio's mock clock; ``close_at``: aclose() from another task then. What was
    heard, how the loop ended and when."""
    import trio
    import trio.testing

    heard: list[Any] = []
    ended = ["the window"]
    at = [0.0]

    async def listen() -> None:
        with respx.mock() as router:
            router.get(url__startswith=f"{EDGE}/user_stream/").mock(side_effect=answers)
            flowith = client(max_retries=0)
            async with trio.open_nursery() as nursery:
                if close_at is not None:

                    async def close() -> None:
                        await trio.sleep(close_at)
                        await flowith.aclose()

                    nursery.start_soon(close)
                try:
                    async for event in flowith.stream_user_stream(timeout=window):
                        heard.append(event)
                except FlowithError as error:
                    ended[0] = type(error).__name__
                at[0] = trio.current_time()
            await flowith.aclose()

    trio.run(listen, clock=trio.testing.MockClock(autojump_threshold=0))
    return heard, ended[0], at[0]


def _sse(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def test_a_listener_waiting_to_reopen_its_stream_is_ended_by_aclose() -> None:
    """The wait before reopening (the server's retry: of 20 s) was a plain sleep,
    which aclose() could not end: the close waited 20 s for it."""
    event = frame({"type": "chunks", "nodeId": CONV, "chunks": ["one"]})
    heard, ended, at = _listen_on_mock_clock(
        lambda request: _sse(b"retry: 20000\n" + event), window=60, close_at=0.5
    )
    assert [e["chunks"] for e in heard] == [["one"]]
    assert (ended, at) == ("ClientStateError", 0.5)


def test_a_retry_longer_than_a_float_holds_ends_the_window() -> None:
    """``retry:`` takes any run of digits: 400 of them made the wait's division
    raise a bare OverflowError, which ended the listener."""
    event = frame({"type": "chunks", "nodeId": CONV, "chunks": ["one"]})
    heard, ended, at = _listen_on_mock_clock(
        lambda request: _sse(event + b"retry: 1" + b"0" * 400 + b"\n\n"), window=3
    )
    assert [e["chunks"] for e in heard] == [["one"]]
    assert (ended, at) == ("the window", 0.0)  # the wait asked for outlasts it


def test_an_event_id_no_header_can_carry_is_not_sent_back() -> None:
    """httpx encodes headers in ASCII: a listener whose stream numbered its events
    'é-1' ended in a bare UnicodeEncodeError when it reopened the stream."""
    asked: list[str | None] = []
    event = frame({"type": "chunks", "nodeId": CONV, "chunks": ["one"]})

    def answers(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        return _sse("id: é-1\n".encode() + event)

    heard, ended, _ = _listen_on_mock_clock(answers, window=2.5)
    assert ended == "the window"
    assert asked == [None, None, None]  # at 0, 1 and 2 s
    assert len(heard) == 3


def test_a_stream_that_brings_heartbeats_is_reopened_without_backing_off() -> None:
    """Only events yielded counted as heard: /stream drops heartbeats, so a stream
    recycled by a proxy while idle backed off to 30 s of deafness after each close."""
    opened: list[float] = []

    def answers(request: httpx.Request) -> httpx.Response:
        import trio

        opened.append(trio.current_time())
        return _sse(b'data: {"heartbeat": 1}\n\n')

    heard, _, _ = _listen_on_mock_clock(answers, window=4.5)
    assert heard == []
    assert opened == [0.0, 1.0, 2.0, 3.0, 4.0]
