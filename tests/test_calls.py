"""Retries and token renewal, decided in the core (driven synchronously)."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from flowith_proto.auth import Credentials
from flowith_proto.calls import call
from flowith_proto.effects import RefreshToken, Send, Sleep
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
)
from flowith_proto.queries import (
    get_conv_novel_editor,
    get_conversation,
    get_user_profile,
    refresh,
    rename_conversation,
)
from flowith_proto.request import Request, Response
from flowith_proto.retry import RetryPolicy
from flowith_proto.state import ClientState
from tests.scripted import Script, json_response

USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
NODE = "99999999-8888-4777-8666-555555555555"
CONV = "11111111-2222-4333-8444-555555555555"
KEY = "a-test-signing-key-that-is-32-bytes-long"


def token(exp: int = 4102444800, sub: str = USER) -> str:
    return jwt.encode({"sub": sub, "exp": exp}, KEY, algorithm="HS256")


def state(refresh_token: str = "", access: str | None = None) -> ClientState:
    return ClientState(
        credentials=Credentials.from_tokens(access or token(), refresh_token=refresh_token)
    )


def poll(s: ClientState, script: Script, **kwargs: Any) -> Response:
    return script.run(call(s, lambda e: e.poll_node(NODE), **kwargs))


def failing(exc: Exception) -> Any:
    def raise_it(_request: Request) -> Response:
        raise exc

    return raise_it


def sleeps(script: Script) -> list[float]:
    starts = 1000.0
    out = []
    for effect in script.effects:
        if isinstance(effect, Sleep):
            out.append(round(effect.until - starts, 6))
            starts = effect.until
    return out


def test_a_read_is_retried_on_server_trouble_with_jittered_backoff() -> None:
    script = Script()
    script.on(
        "GET",
        "/rest/v1/flow_node",
        json_response(503),
        json_response(502),
        json_response(200, b"[]"),
    )
    assert poll(state(), script).status == 200
    # base 0.5 doubled per attempt, jitter 0.5 keeps 75 % of the ceiling
    assert sleeps(script) == [0.375, 0.75]


def test_retries_stop_after_max_retries() -> None:
    script = Script()
    script.on("GET", "/rest/v1/flow_node", json_response(500, b'{"message": "boom"}'))
    with pytest.raises(APIError, match="boom"):
        poll(state(), script)
    assert len(script.requests) == 3


def test_retry_after_is_honoured() -> None:
    script = Script()
    limited = Response(429, (("Retry-After", "2"),), b"{}")
    script.on("GET", "/rest/v1/flow_node", limited, json_response(200, b"[]"))
    poll(state(), script)
    assert sleeps(script) == [2.0]


def test_a_503s_retry_after_is_honoured_too() -> None:
    # RFC 9110: a 503 may say how long the service will be down; the date form too.
    script = Script()  # its wall clock: 1779127457.25
    script.on(
        "GET",
        "/rest/v1/flow_node",
        Response(503, (("Retry-After", "3"),), b"{}"),
        Response(503, (("Retry-After", "Mon, 18 May 2026 18:04:20 GMT"),), b"{}"),
        json_response(200, b"[]"),
    )
    poll(state(), script)
    assert sleeps(script) == [3.0, 2.75]


def test_retry_after_as_an_http_date_is_honoured() -> None:
    """D21: the date form needs the wall clock, which the core asks for."""
    script = Script()  # its wall clock: 1779127457.25
    limited = Response(429, (("Retry-After", "Mon, 18 May 2026 18:04:20 GMT"),), b"{}")
    script.on("GET", "/rest/v1/flow_node", limited, json_response(200, b"[]"))
    poll(state(), script)
    assert sleeps(script) == [2.75]  # 18:04:20 is 1779127460


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("3600", 3600.0),
        # Past a week, or endless: no advice for the caller, and still no retry (they
        # were retried at once, as if the server had named no wait).
        ("604801", None),
        ("1e309", None),
        ("Fri, 01 Jan 2100 00:00:00 GMT", None),
    ],
)
def test_a_very_long_retry_after_goes_to_the_caller(asked: str, kept: float | None) -> None:
    script = Script()
    script.on("GET", "/rest/v1/flow_node", Response(429, (("Retry-After", asked),), b"{}"))
    with pytest.raises(RateLimitError) as info:
        poll(state(), script)
    assert info.value.retry_after_s == kept
    assert len(script.requests) == 1


def test_no_retry_wait_past_the_deadline() -> None:
    script = Script()
    script.on("GET", "/rest/v1/flow_node", Response(429, (("Retry-After", "5"),), b"{}"))
    with pytest.raises(RateLimitError):
        poll(state(), script, deadline=1003.0)
    assert len(script.requests) == 1


def test_a_write_is_not_repeated_after_a_server_error() -> None:
    script = Script()
    script.on("POST", "/rest/v1/conversation", json_response(500))
    with pytest.raises(APIError):
        script.run(call(state(), lambda e: e.create_conversation()))
    assert len(script.requests) == 1


def test_a_write_turned_away_with_429_is_repeated() -> None:
    script = Script()
    script.on(
        "POST",
        "/rest/v1/conversation",
        json_response(429),
        json_response(201, json.dumps([{"id": CONV}]).encode()),
    )
    assert script.run(call(state(), lambda e: e.create_conversation())).status == 201


@pytest.mark.parametrize("failure", [ConnectionFailedError, TimeoutError])
@pytest.mark.parametrize(("sent", "retried"), [(False, True), (True, False)])
def test_a_write_is_resent_only_if_it_never_left(
    failure: type[ConnectionFailedError | TimeoutError], sent: bool, retried: bool
) -> None:
    # A timeout while connecting proves as much as a refused connection.
    script = Script()
    script.on(
        "POST",
        "/rest/v1/conversation",
        failing(failure("refused or stuck connecting", request_sent=sent)),
        json_response(201, json.dumps([{"id": CONV}]).encode()),
    )
    operation = call(state(), lambda e: e.create_conversation())
    if retried:
        assert script.run(operation).status == 201
    else:
        with pytest.raises(failure):
            script.run(operation)


def test_reads_are_resent_after_a_dropped_connection_or_a_timeout() -> None:
    script = Script()
    script.on(
        "GET",
        "/rest/v1/flow_node",
        failing(ConnectionFailedError("reset", request_sent=True)),
        failing(TimeoutError("slow")),
        json_response(200, b"[]"),
    )
    assert poll(state(), script).status == 200


def test_a_node_insert_that_landed_before_the_connection_broke_counts_as_done() -> None:
    from flowith_proto.endpoints import Position

    script = Script()
    duplicate = json.dumps({"code": "23505", "message": "duplicate key"}).encode()
    script.on(
        "POST",
        "/rest/v1/flow_node",
        failing(ConnectionFailedError("reset after sending", request_sent=True)),
        json_response(409, duplicate),
    )
    response = script.run(
        call(
            state(),
            lambda e: e.create_user_node(
                node_id=NODE,
                conv_id=CONV,
                parent_id=CONV,
                prompt="hi",
                timestamp="1",
                position=Position(0, 130),
            ),
        )
    )
    assert response.status == 409
    assert len(script.requests) == 2


def test_an_expired_token_is_renewed_once_and_the_request_replayed() -> None:
    s = state(refresh_token="refresh-1")
    old = s.credentials.access_token
    new = token(sub=USER, exp=4102444801)
    script = Script()
    script.on(
        "GET",
        "/rest/v1/flow_node",
        json_response(401, b'{"code": "PGRST303", "message": "JWT expired"}'),
        json_response(200, b"[]"),
    )

    def renew() -> None:
        s.credentials = s.credentials.with_tokens(new, "refresh-2")

    script.on_refresh = renew
    assert poll(s, script).status == 200
    assert script.refreshes == [old]
    first, second = script.requests
    assert first.header("authorization") == f"Bearer {old}"
    assert second.header("authorization") == f"Bearer {new}"


def test_a_second_401_is_an_authentication_error() -> None:
    s = state(refresh_token="refresh-1")
    script = Script()
    expired = json_response(401, b'{"code": "PGRST303", "message": "JWT expired"}')
    script.on("GET", "/rest/v1/flow_node", expired)
    script.on_refresh = lambda: None
    with pytest.raises(AuthenticationError):
        poll(s, script)
    assert len(script.refreshes) == 1


def test_a_401_that_does_not_say_expired_keeps_the_refresh_token() -> None:
    s = state(refresh_token="refresh-1")
    script = Script()
    script.on("GET", "/rest/v1/flow_node", json_response(401, b'{"message": "Unauthorized"}'))
    with pytest.raises(AuthenticationError):
        poll(s, script)
    assert script.refreshes == []


def test_without_a_refresh_token_a_401_goes_to_the_caller() -> None:
    script = Script()
    script.on("GET", "/rest/v1/flow_node", json_response(401, b"{}"))
    with pytest.raises(AuthenticationError):
        poll(state(), script)
    assert script.refreshes == []


def test_a_token_about_to_expire_is_renewed_before_use() -> None:
    script = Script()
    s = state(refresh_token="refresh-1", access=token(exp=int(script.unix) + 60))
    script.on("GET", "/rest/v1/flow_node", json_response(200, b"[]"))
    script.on_refresh = lambda: None
    poll(s, script)
    kinds = [type(e).__name__ for e in script.effects]
    assert kinds[:3] == ["WallClock", "RefreshToken", "Send"]
    refresh_effect = next(e for e in script.effects if isinstance(e, RefreshToken))
    assert refresh_effect.seen_token not in repr(refresh_effect)


@pytest.mark.parametrize(
    ("failure", "rests"),
    [
        (APIError("HTTP 503 from POST /auth/v1/token", 503), 30.0),
        (RateLimitError("HTTP 429 from POST /auth/v1/token", 120.0), 120.0),
        (ConnectionFailedError("connection refused", request_sent=False), 30.0),
    ],
)
def test_an_early_refresh_that_fails_goes_on_with_the_still_good_token(
    failure: Exception, rests: float
) -> None:
    """Every call failed with the refresh's error although its token had minutes
    left, and each tried /token again, rate limit or not."""
    script = Script()
    s = state(refresh_token="refresh-1", access=token(exp=int(script.unix) + 200))
    script.on("GET", "/rest/v1/flow_node", json_response(200, b"[]"))

    def refuse() -> None:
        raise failure

    script.on_refresh = refuse
    assert poll(s, script).status == 200
    assert poll(s, script).status == 200  # resting: no second try
    assert len(script.refreshes) == 1
    assert s.early_refresh_after == script.unix + rests


@pytest.mark.parametrize(
    "failure",
    [
        AuthenticationError("refreshing the session failed: HTTP 400", status_code=400),
        TimeoutError("the call's deadline passed", deadline_passed=True),
    ],
)
def test_an_early_refresh_refused_or_out_of_time_still_raises(failure: Exception) -> None:
    script = Script()
    s = state(refresh_token="refresh-1", access=token(exp=int(script.unix) + 200))
    script.on("GET", "/rest/v1/flow_node", json_response(200, b"[]"))

    def refuse() -> None:
        raise failure

    script.on_refresh = refuse
    with pytest.raises(type(failure)):
        poll(s, script)
    assert script.requests == []


def test_a_401_after_an_early_refresh_renews_the_token_it_carried() -> None:
    """The reactive refresh named the token from before the early one: the client
    found it already replaced, refreshed nothing, and resent the refused token."""
    script = Script()
    s = state(refresh_token="refresh-1", access=token(exp=int(script.unix) + 60))
    renewed = token(exp=int(script.unix) + 3600)
    script.on_refresh = lambda: setattr(
        s, "credentials", s.credentials.with_tokens(renewed, "refresh-2")
    )
    expired = json_response(401, b'{"code": "PGRST301", "message": "JWT expired"}')
    script.on("GET", "/rest/v1/flow_node", expired, json_response(200, b"[]"))
    assert poll(s, script).status == 200
    assert script.refreshes[1] == renewed


def test_refresh_adopts_the_rotated_tokens() -> None:
    s = state(refresh_token="refresh-1")
    new = token(exp=4102444900)
    body = {
        "access_token": new,
        "refresh_token": "refresh-2",
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": 4102444900,
        "user": {"id": USER},
    }
    script = Script()
    script.on("POST", "/auth/v1/token", json_response(200, json.dumps(body).encode()))
    session = script.run(refresh(s, "refresh-1"))
    assert (s.credentials.access_token, s.credentials.refresh_token) == (new, "refresh-2")
    assert session.user_id == USER
    sent = next(e for e in script.effects if isinstance(e, Send)).request
    assert sent.header("authorization") is None
    assert json.loads(sent.content) == {"refresh_token": "refresh-1"}


def test_a_blank_refresh_token_in_the_answer_keeps_the_old_one() -> None:
    """A refresh token of blanks was kept as the new one (stripped to nothing
    only when held), while the session returned reported the blanks."""
    s = state(refresh_token="refresh-1")
    new = token(exp=4102444900)
    body = {"access_token": f" {new}\n", "refresh_token": "   "}
    script = Script()
    script.on("POST", "/auth/v1/token", json_response(200, json.dumps(body).encode()))
    session = script.run(refresh(s, "refresh-1"))
    assert (s.credentials.access_token, s.credentials.refresh_token) == (new, "refresh-1")
    assert (session.access_token, session.refresh_token) == (new, "refresh-1")


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_a_blank_access_token_in_the_answer_is_adopted_by_nobody(blank: str | None) -> None:
    """A token of blanks was adopted: the client signed itself out, and
    on_token_refresh was handed blanks to save. (The new refresh token is kept: the
    server spent the one sent.)"""
    s = state(refresh_token="refresh-1")
    held = s.credentials
    body = {"access_token": blank, "refresh_token": "refresh-2"}
    script = Script()
    script.on("POST", "/auth/v1/token", json_response(200, json.dumps(body).encode()))
    with pytest.raises(AuthenticationError, match="returned no access_token"):
        script.run(refresh(s, "refresh-1"))
    assert s.credentials == held.with_tokens(held.access_token, "refresh-2")


def test_a_used_refresh_token_is_an_authentication_error() -> None:
    script = Script()
    used = {"code": 400, "error_code": "refresh_token_already_used", "msg": "Already Used"}
    script.on("POST", "/auth/v1/token", json_response(400, json.dumps(used).encode()))
    with pytest.raises(AuthenticationError, match="Already Used"):
        script.run(refresh(state(refresh_token="refresh-1"), "refresh-1"))
    assert script.refreshes == []


# -- lookups by id --------------------------------------------------------------------------

OTHER = "99999999-2222-4333-8444-555555555555"


def lookups() -> list[tuple[str, Any, str, str]]:
    """(name, operation maker, table path, the row's id key) of each lookup by id."""
    return [
        ("get_conversation", lambda s: get_conversation(s, CONV), "/rest/v1/conversation", "id"),
        (
            "rename_conversation",
            lambda s: rename_conversation(s, CONV, "t"),
            "/rest/v1/conversation",
            "id",
        ),
        (
            "get_conv_novel_editor",
            lambda s: get_conv_novel_editor(s, CONV),
            "/rest/v1/conv_novel_editor",
            "conv_id",
        ),
    ]


@pytest.mark.parametrize(("name", "make", "path", "key"), lookups())
def test_a_lookup_answered_with_another_rows_id_is_a_decode_error(
    name: str, make: Any, path: str, key: str
) -> None:
    """get_conversation(A) returned conversation B's record as A's."""
    script = Script()
    body = json.dumps([{key: OTHER, "title": "someone else's"}]).encode()
    script.on("GET" if name != "rename_conversation" else "PATCH", path, json_response(200, body))
    with pytest.raises(ResponseDecodeError) as caught:
        script.run(make(state()))
    assert str(caught.value) == (
        f"{name}: asked for {CONV}, the answer's row has conv_id {OTHER!r}"
    )


@pytest.mark.parametrize(("name", "make", "path", "key"), lookups())
def test_a_lookup_answered_with_a_row_naming_nothing_is_a_decode_error(
    name: str, make: Any, path: str, key: str
) -> None:
    script = Script()
    body = json.dumps([{"title": "whose?"}]).encode()
    script.on("GET" if name != "rename_conversation" else "PATCH", path, json_response(200, body))
    with pytest.raises(ResponseDecodeError, match=f"{name}: asked for {CONV}, .* has no conv_id"):
        script.run(make(state()))


def test_a_lookup_takes_its_id_in_any_case() -> None:
    script = Script()
    body = json.dumps([{"id": CONV.upper(), "title": "mine"}]).encode()
    script.on("GET", "/rest/v1/conversation", json_response(200, body))
    assert script.run(get_conversation(state(), CONV)).title == "mine"


def test_a_profile_row_without_its_id_is_the_users_but_another_users_is_not() -> None:
    # protocol.md 2.3: user_id = row.id | uid.
    script = Script()
    script.on("GET", "/rest/v1/user_profile", json_response(200, b'[{"language": "en"}]'))
    assert script.run(get_user_profile(state(), None)).user_id == USER
    script = Script()
    body = json.dumps([{"id": OTHER, "language": "en"}]).encode()
    script.on("GET", "/rest/v1/user_profile", json_response(200, body))
    with pytest.raises(ResponseDecodeError, match=f"asked for {USER}, .* user_id {OTHER!r}"):
        script.run(get_user_profile(state(), None))


def test_an_answer_that_is_not_json_names_the_request() -> None:
    """ "expected JSON from the server" did not say which of a generation's
    requests got the gateway's page, and .endpoint was None."""
    script = Script()
    script.on("GET", "/rest/v1/flow_node", Response(200, (), b"<html>Bad gateway</html>"))
    response = poll(state(), script)
    with pytest.raises(ResponseDecodeError) as caught:
        response.json()
    assert str(caught.value) == (
        "expected JSON from GET /rest/v1/flow_node, got '<html>Bad gateway</html>'"
    )
    assert caught.value.endpoint == "GET /rest/v1/flow_node"


def test_no_link_of_a_decode_errors_chain_holds_the_body_it_quotes() -> None:
    """json's JSONDecodeError, the error's context, kept the whole answer (.doc):
    a refresh answer cut short held the new tokens in clear there."""
    new = token(exp=4102444900)
    body = f'{{"access_token": "{new}", "refresh_token": "refresh-secret-0002"'.encode()
    script = Script()
    script.on("POST", "/auth/v1/token", json_response(200, body))
    with pytest.raises(ResponseDecodeError) as caught:
        script.run(refresh(state(refresh_token="refresh-1"), "refresh-1"))
    chain: list[BaseException] = []
    link: BaseException | None = caught.value
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for error in chain:
        held = repr(vars(error)) + repr(error.args) + str(error)
        assert new not in held
        assert "refresh-secret-0002" not in held


@pytest.mark.parametrize("attempt", [0, 3, 1_024, 100_000])
def test_a_retry_policy_of_endless_retries_backs_off_at_most_its_cap(attempt: int) -> None:
    """The backoff doubled an int per attempt: from the 1,024th retry of a policy that
    retries for ever, OverflowError instead of a wait."""
    policy = RetryPolicy(max_retries=1_000_000, base_delay=0.5, max_delay=8.0)
    ceiling = 0.5 * 2 ** min(attempt, 4)  # 8.0 from the 4th attempt on
    assert policy.backoff(attempt, 0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert policy.backoff(attempt, 0.0) == ceiling / 2
