"""The fake Flowith as a pure model: requests built by the core, answers checked by hand.

No event loop and no socket: each test calls :meth:`FakeFlowith.handle` with the
requests :class:`Endpoints` builds (or a deliberately broken copy of one) and
reads the stream frames with the core's own SSE decoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowith_proto.auth import Credentials
from flowith_proto.config import EdgeAuth, FlowithConfig
from flowith_proto.endpoints import Endpoints, Position
from flowith_proto.events import Chunks, Complete, Connected, FlowithEvent, NodeFailed, decode_event
from flowith_proto.fake import (
    FAKE_USER_ID,
    CloseStream,
    DropStream,
    FakeFlowith,
    FakeResponse,
    FakeStream,
    Hang,
    Pause,
    SendBytes,
    Step,
    StreamItem,
    Turn,
    chunk,
    close_stream,
    comment,
    complete,
    drop,
    fail,
    hang,
    heartbeat,
    other_node,
    pause,
    raw,
    row,
    workflow_complete,
)
from flowith_proto.fake.postgrest import _like
from flowith_proto.request import MultipartForm, Request
from flowith_proto.sse import SSEDecoder
from tests.scripted import uuid_n

NOW = 1_779_127_457.0
USER_NODE = uuid_n(1)
AI_NODE = uuid_n(2)
OTHER_USER = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"


# -- helpers ---------------------------------------------------------------------


def endpoints(fake: FakeFlowith, *, token: str | None = None, bearer: bool = False) -> Endpoints:
    config = FlowithConfig(
        edge_url="http://fake",
        supabase_url="http://fake",
        edge_auth=EdgeAuth.BEARER if bearer else EdgeAuth.BARE,
    )
    return Endpoints(config, Credentials.from_tokens(token or fake.token))


def target(request: Request) -> str:
    parts = urlsplit(request.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def send(fake: FakeFlowith, request: Request, *, now: float = NOW) -> FakeResponse | FakeStream:
    assert not isinstance(request.body, MultipartForm)
    return fake.handle(
        request.method, target(request), request.headers, request.body or b"", now=now
    )


def respond(fake: FakeFlowith, request: Request, *, now: float = NOW) -> FakeResponse:
    result = send(fake, request, now=now)
    assert isinstance(result, FakeResponse)
    return result


def open_stream(fake: FakeFlowith, request: Request | None = None) -> FakeStream:
    result = send(fake, request or endpoints(fake).user_stream())
    assert isinstance(result, FakeStream)
    return result


def create_conversation(fake: FakeFlowith) -> str:
    response = respond(fake, endpoints(fake).create_conversation())
    assert response.status == 201
    conv_id = response.json()[0]["id"]
    assert isinstance(conv_id, str)
    return conv_id


def create_nodes(fake: FakeFlowith, conv_id: str, *, prompt: str = "hello") -> None:
    e = endpoints(fake)
    user_node = e.create_user_node(
        node_id=USER_NODE,
        conv_id=conv_id,
        parent_id=conv_id,
        prompt=prompt,
        timestamp=str(int(NOW)),
        position=Position(0, 130),
        children=[AI_NODE],
    )
    ai_node = e.create_ai_node(
        node_id=AI_NODE,
        conv_id=conv_id,
        parent_id=USER_NODE,
        data={"title": "AI", "value": "", "mode": "General", "model": "m", "status": "init"},
        position=Position(0, 340),
    )
    assert respond(fake, user_node).status == 201
    assert respond(fake, ai_node).status == 201


def completion(
    fake: FakeFlowith, conv_id: str, *, prompt: str = "hello", node_id: str = AI_NODE
) -> Request:
    return endpoints(fake).start_completion(
        model="gpt-4.1-nano",
        messages=[{"role": "user", "content": prompt}],
        node_id=node_id,
        conv_id=conv_id,
    )


def prepared(fake: FakeFlowith) -> str:
    """A conversation with a user node and an AI node, ready for a completion."""
    conv_id = create_conversation(fake)
    create_nodes(fake, conv_id)
    return conv_id


def run_turn(fake: FakeFlowith, *, now: float = NOW) -> tuple[FakeStream, str]:
    """Open the stream, then complete once (the order the design asks for)."""
    stream = open_stream(fake)
    conv_id = prepared(fake)
    response = respond(fake, completion(fake, conv_id), now=now)
    assert response.status == 200
    return stream, conv_id


def frames(items: Sequence[StreamItem]) -> list[bytes]:
    return [item.data for item in items if isinstance(item, SendBytes)]


def decode(items: Sequence[StreamItem]) -> list[FlowithEvent]:
    decoder = SSEDecoder()
    events = [decode_event(e.data) for data in frames(items) for e in decoder.feed(data)]
    return events + [decode_event(e.data) for e in decoder.close()]


def poll(fake: FakeFlowith, *, now: float = NOW) -> dict[str, Any]:
    response = respond(fake, endpoints(fake).poll_node(AI_NODE), now=now)
    assert response.status == 200
    rows = response.json()
    assert len(rows) == 1
    data = rows[0]["data"]
    assert isinstance(data, dict)
    return data


def with_header(request: Request, name: str, value: str | None) -> Request:
    """``request`` with header ``name`` replaced (or removed when ``value`` is None)."""
    kept = tuple((k, v) for k, v in request.headers if k.lower() != name.lower())
    return attrs.evolve(request, headers=kept if value is None else (*kept, (name, value)))


def with_body(request: Request, body: Any) -> Request:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return attrs.evolve(request, body=raw_body)


def error_of(response: FakeResponse) -> tuple[int, str]:
    """Status and PostgREST code (or edge message) of an error answer."""
    body = response.json()
    assert isinstance(body, dict)
    return response.status, str(body.get("code", body.get("message")))


# -- a whole text turn -----------------------------------------------------------


def test_a_text_turn_through_the_core_builders() -> None:
    fake = FakeFlowith()
    stream = open_stream(fake)
    created = respond(fake, endpoints(fake).create_conversation())
    assert created.status == 201
    [conv] = created.json()
    assert list(conv) == ["id"]  # select=id: only the selected column
    conv_id = conv["id"]
    create_nodes(fake, conv_id)

    answer = respond(fake, completion(fake, conv_id))

    assert answer.status == 200
    assert answer.json() == {"status": "processing", "nodeId": AI_NODE}
    events = decode(stream.pull(now=NOW))
    chunks = [e for e in events if isinstance(e, Chunks)]
    assert "".join(c for e in chunks for c in e.chunks) == "You said: hello"
    assert [e.seq for e in chunks] == list(range(len(chunks)))
    assert {(e.node_id, e.conv_id) for e in chunks} == {(AI_NODE, conv_id)}
    assert isinstance(events[-1], Complete)
    assert events[-1].result == "You said: hello"
    assert poll(fake)["status"] == "done"
    assert poll(fake)["value"] == "You said: hello"
    assert fake.turns[0].prompt == "hello"
    assert fake.turns[0].model == "gpt-4.1-nano"
    assert fake.conversations[conv_id]["user_id"] == FAKE_USER_ID
    assert fake.nodes[USER_NODE]["c_ids"] == [AI_NODE]
    assert fake.nodes[AI_NODE]["p_id"] == USER_NODE


def test_the_recorded_request_keeps_the_wire_form_and_decodes_the_query() -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    create_nodes(fake, conv_id)
    [insert, _] = fake.requests_to("POST", "/rest/v1/flow_node")
    assert insert.target.startswith("/rest/v1/flow_node?columns=%22id%22,%22position%22,")
    assert insert.param("columns") == '"id","position","type","conv_id","p_id","c_ids","data"'
    assert insert.header("PREFER") == "return=minimal"


def test_the_chunk_frame_is_byte_exact() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hi"), complete(reasoning="thought"))
    stream, conv_id = run_turn(fake)
    first, last = frames(stream.pull(now=NOW))
    node = f'"nodeId":"{AI_NODE}","convId":"{conv_id}"'
    stamp = int(NOW * 1000)
    assert (
        first
        == (
            f'data: {{"data":{{"type":"chunks",{node},"seq":0,"timestamp":{stamp},'
            f'"chunks":["Hi"]}},"id":"1"}}\n\n'
        ).encode()
    )
    assert (
        last
        == (
            f'data: {{"data":{{"type":"complete",{node},"seq":1,"timestamp":{stamp},'
            f'"result":"Hi","reasoning":"thought"}},"id":"2"}}\n\n'
        ).encode()
    )


# -- authentication --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "bearer", "status"),
    [
        ("bare", False, 200),
        ("bare", True, 401),
        ("bearer", True, 200),
        ("bearer", False, 401),
        ("either", False, 200),
        ("either", True, 200),
    ],
)
def test_the_edge_takes_the_configured_scheme(mode: str, bearer: bool, status: int) -> None:
    fake = FakeFlowith(edge_auth=mode)  # type: ignore[arg-type]
    conv_id = prepared(fake)
    request = endpoints(fake, bearer=bearer).start_completion(
        model="m", messages=[{"role": "user", "content": "x"}], node_id=AI_NODE, conv_id=conv_id
    )
    assert respond(fake, request).status == status


def test_the_edge_refuses_missing_forged_and_expired_tokens() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    request = completion(fake, conv_id)
    assert error_of(respond(fake, with_header(request, "authorization", None)))[0] == 401
    forged = FakeFlowith(seed=1).token[:-4] + "AAAA"
    assert error_of(respond(fake, with_header(request, "authorization", forged)))[0] == 401
    expired = fake.issue_token(expires_at=NOW - 1)
    assert error_of(respond(fake, with_header(request, "authorization", expired))) == (
        401,
        "jwt expired",
    )
    assert fake.turns == []


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("apikey", None, (401, "Invalid API key")),
        ("apikey", "sb_publishable_wrong", (401, "Invalid API key")),
        ("authorization", None, (401, "PGRST301")),
        ("authorization", "TOKEN", (401, "PGRST301")),  # bare: Supabase wants Bearer
        ("authorization", "Bearer not-a-jwt", (401, "PGRST301")),
        ("accept-profile", "private", (406, "PGRST106")),
    ],
)
def test_postgrest_checks_key_token_and_schema(
    header: str, value: str | None, expected: tuple[int, str]
) -> None:
    fake = FakeFlowith()
    request = endpoints(fake).poll_node(AI_NODE)
    if value == "TOKEN":
        value = fake.token
    assert error_of(respond(fake, with_header(request, header, value))) == expected


def test_postgrest_refuses_an_expired_token_with_pgrst303() -> None:
    fake = FakeFlowith()
    request = endpoints(fake, token=fake.issue_token(expires_at=NOW)).poll_node(AI_NODE)
    assert error_of(respond(fake, request)) == (401, "PGRST303")


def test_a_write_with_another_content_profile_is_refused() -> None:
    fake = FakeFlowith()
    request = with_header(endpoints(fake).create_conversation(), "Content-Profile", "auth")
    assert error_of(respond(fake, request)) == (406, "PGRST106")


# -- PostgREST validation ---------------------------------------------------------


def node_insert(fake: FakeFlowith, conv_id: str, /, **changes: Any) -> Request:
    """The AI-node insert with fields of its single row replaced (None removes one)."""
    request = endpoints(fake).create_ai_node(
        node_id=uuid_n(9), conv_id=conv_id, parent_id=conv_id, data={}, position=Position()
    )
    [row_object] = request.json()
    row_object.update(changes)
    return with_body(request, [{k: v for k, v in row_object.items() if v is not None}])


def with_query(request: Request, query: str) -> Request:
    return attrs.evolve(request, url=request.url.split("?")[0] + "?" + query)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": "not-a-uuid"}, (400, "22P02")),
        ({"conv_id": uuid_n(77)}, (409, "23503")),
        ({"p_id": uuid_n(78)}, (409, "23503")),
        ({"type": "3"}, (400, "23514")),
        ({"id": None}, (400, "23502")),
        ({"conv_id": None}, (400, "23502")),
        ({"c_ids": "nope"}, (400, "22P02")),
    ],
)
def test_a_bad_node_insert_is_refused(change: dict[str, Any], expected: tuple[int, str]) -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    assert error_of(respond(fake, node_insert(fake, conv_id, **change))) == expected
    assert fake.nodes == {}


def test_keys_outside_columns_are_ignored() -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    assert respond(fake, node_insert(fake, conv_id, extra="ignored")).status == 201
    assert "extra" not in fake.nodes[uuid_n(9)]


def test_a_duplicate_node_id_is_a_conflict() -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    assert respond(fake, node_insert(fake, conv_id)).status == 201
    assert error_of(respond(fake, node_insert(fake, conv_id))) == (409, "23505")


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ("id,position,type,conv_id,p_id,c_ids,data", (400, "PGRST100")),  # unquoted
        (quote('"id","position","type","conv_id","p_id","c_ids","colour"'), (400, "PGRST204")),
        (quote('"id","type"'), (400, "23502")),  # conv_id listed nowhere: NULL
    ],
)
def test_the_columns_parameter_is_checked(columns: str, expected: tuple[int, str]) -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    request = with_query(node_insert(fake, conv_id), "columns=" + columns)
    assert error_of(respond(fake, request)) == expected


def test_malformed_json_is_pgrst102() -> None:
    fake = FakeFlowith()
    request = with_body(endpoints(fake).create_conversation(), b"{not json")
    assert error_of(respond(fake, request)) == (400, "PGRST102")


def test_a_conversation_for_another_user_violates_row_level_security() -> None:
    fake = FakeFlowith()
    request = with_body(
        endpoints(fake).create_conversation(),
        {"project_id": None, "is_absolute_mode": True, "user_id": OTHER_USER},
    )
    assert error_of(respond(fake, request)) == (403, "42501")


def test_a_node_in_another_users_conversation_is_refused() -> None:
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    intruder = endpoints(fake, token=fake.issue_token(OTHER_USER))
    request = intruder.create_ai_node(
        node_id=uuid_n(9), conv_id=conv_id, parent_id=conv_id, data={}, position=Position()
    )
    assert error_of(respond(fake, request)) == (403, "42501")
    assert respond(fake, intruder.poll_node(AI_NODE)).json() == []


def test_a_plain_insert_of_an_existing_conversation_is_a_conflict() -> None:
    """Defect D18: renaming by POST inserts, and an existing id conflicts."""
    fake = FakeFlowith()
    conv_id = create_conversation(fake)
    request = with_body(
        endpoints(fake).create_conversation(),
        {"id": conv_id, "title": "New name", "user_id": FAKE_USER_ID},
    )
    assert error_of(respond(fake, request)) == (409, "23505")
    merge = with_header(request, "Prefer", "return=representation,resolution=merge-duplicates")
    assert respond(fake, merge).json() == [{"id": conv_id}]
    assert fake.conversations[conv_id]["title"] == "New name"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"id=like.{AI_NODE}&id=approx.1", (400, "PGRST100")),
        ("colour=eq.red", (400, "42703")),
        ("select=data,colour", (400, "42703")),
        ("id=eq.not-a-uuid", (400, "22P02")),
        ("is_delete=eq.maybe", (400, "22P02")),
        ("select=*,conv_id(*)", (400, "PGRST100")),
        ("order=created_at.sideways", (400, "PGRST100")),
        ("limit=-1", (400, "PGRST100")),
    ],
)
def test_a_bad_query_is_refused(query: str, expected: tuple[int, str]) -> None:
    fake = FakeFlowith()
    request = with_query(endpoints(fake).poll_node(AI_NODE), query)
    assert error_of(respond(fake, request)) == expected


def test_unknown_paths_and_methods() -> None:
    fake = FakeFlowith()
    poll_request = endpoints(fake).poll_node(AI_NODE)
    unknown_table = attrs.evolve(poll_request, url="http://fake/rest/v1/nope?select=*")
    assert error_of(respond(fake, unknown_table)) == (404, "PGRST205")
    unknown_edge = attrs.evolve(poll_request, url="http://fake/nowhere")
    assert error_of(respond(fake, unknown_edge)) == (404, "Not Found")
    delete = attrs.evolve(poll_request, method="DELETE")
    response = respond(fake, delete)
    assert response.status == 405
    assert response.header("allow") == "GET, PATCH, POST"


# -- reading and updating rows ------------------------------------------------------


def test_the_canvas_read_filters_orders_and_selects() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    later = endpoints(fake).create_user_node(
        node_id=uuid_n(3),
        conv_id=conv_id,
        parent_id=AI_NODE,
        prompt="again",
        timestamp="1",
        position=Position(0, 550),
    )
    assert respond(fake, later, now=NOW + 5).status == 201
    hidden = node_insert(fake, conv_id, is_delete=True)
    assert (
        respond(
            fake, with_query(hidden, "columns=" + quote('"id","conv_id","type","is_delete"'))
        ).status
        == 201
    )
    query = f"select=*&conv_id=eq.{conv_id}&is_delete=neq.true&order=created_at.desc"
    canvas = respond(fake, with_query(endpoints(fake).poll_node(AI_NODE), query))
    rows = canvas.json()
    assert [r["id"] for r in rows] == [uuid_n(3), USER_NODE, AI_NODE]
    assert set(rows[0]) == {
        "id", "conv_id", "type", "p_id", "c_ids", "data", "position", "is_delete",
        "created_at", "updated_at",
    }  # fmt: skip
    assert canvas.header("content-range") == "0-2/*"
    ascending = query.replace("desc", "asc") + "&limit=1&offset=1"
    rows = respond(fake, with_query(endpoints(fake).poll_node(AI_NODE), ascending)).json()
    assert [r["id"] for r in rows] == [AI_NODE]  # equal timestamps keep insertion order


def rest_get(fake: FakeFlowith, table: str, query: str) -> Request:
    """A PostgREST read of ``table`` with the core's read headers."""
    return attrs.evolve(
        endpoints(fake).poll_node(AI_NODE), url=f"http://fake/rest/v1/{table}?{query}"
    )


def titled_conversations(fake: FakeFlowith) -> list[str]:
    """Three conversations titled Alpha, beta and (untitled), one second apart."""
    ids = []
    for offset, title in enumerate(["Alpha", "beta", None]):
        request = with_body(
            endpoints(fake).create_conversation(), {"title": title, "user_id": FAKE_USER_ID}
        )
        ids.append(respond(fake, request, now=NOW + offset).json()[0]["id"])
    return ids


def test_conversations_list_with_is_null_in_and_order() -> None:
    fake = FakeFlowith()
    first, second, _ = titled_conversations(fake)
    query = (
        f"select=id&user_id=eq.{FAKE_USER_ID}&is_delete=neq.true&project_id=is.null"
        f"&order=updated_at.desc&id=in.({first},{second})"
    )
    assert respond(fake, rest_get(fake, "conversation", query)).json() == [
        {"id": second},
        {"id": first},
    ]


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ("title=like.A*", ["Alpha"]),
        ("title=ilike.*A*", ["Alpha", "beta"]),
        ("title=not.eq.Alpha", ["beta"]),  # NULL is neither equal nor unequal
        ("title=is.null", [None]),
        ("title=not.is.null", ["Alpha", "beta"]),
        ('title=in.("beta",Alpha)', ["Alpha", "beta"]),
        ("created_at=gt.2026-05-18T18:04:17.500000%2B00:00", ["beta", None]),
        ("order=title.desc", [None, "beta", "Alpha"]),
        ("order=title.asc.nullsfirst", [None, "Alpha", "beta"]),
        ("order=title.asc&limit=2&offset=1", ["beta", None]),
    ],
)
def test_postgrest_operators_follow_sql(query: str, titles: list[str | None]) -> None:
    fake = FakeFlowith(seed_rows=False)
    titled_conversations(fake)
    rows = respond(fake, rest_get(fake, "conversation", "select=title&" + query)).json()
    assert [r["title"] for r in rows] == titles


def _like_as_a_regex(pattern: str, flags: int) -> re.Pattern[str]:
    """The fake's former LIKE: right, but its ``.*``s tried every split."""
    parts = [".*" if c in "*%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", flags | re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(st.text("aAb_%*", max_size=7), st.text("aAb\n", max_size=7), st.booleans())
def test_like_matches_as_sql_does(pattern: str, value: str, ignore_case: bool) -> None:
    flags = re.IGNORECASE if ignore_case else 0
    expected = _like_as_a_regex(pattern, flags).match(value) is not None
    assert _like(pattern, flags)(value) is expected


def test_like_reads_a_long_text_once_per_piece() -> None:
    # "*a*a*b" against 4,000 "a" took 9 s; "%a%a%a%b" against 200, 0.4 s.
    assert not _like("*a*a*b", 0)("a" * 4_000)
    assert not _like("%a%a%a%b", re.IGNORECASE)("A" * 4_000)
    assert _like("*a*a*b", 0)("a" * 4_000 + "b")


def soft_delete(fake: FakeFlowith, conv_id: str, *, prefer: str | None = None) -> FakeResponse:
    request = endpoints(fake).create_conversation()
    request = attrs.evolve(
        request,
        method="PATCH",
        url=request.url.split("?")[0] + f"?id=eq.{conv_id}",
        body=b'{"is_delete":true}',
    )
    return respond(fake, with_header(request, "Prefer", prefer), now=NOW + 10)


def test_soft_delete_answers_204_or_the_rows() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    assert soft_delete(fake, conv_id) == FakeResponse(204)
    assert fake.conversations[conv_id]["is_delete"] is True
    assert fake.conversations[conv_id]["updated_at"] > fake.conversations[conv_id]["created_at"]
    updated = soft_delete(fake, conv_id, prefer="return=representation")
    assert updated.status == 200
    assert [r["id"] for r in updated.json()] == [conv_id]
    assert soft_delete(fake, uuid_n(55), prefer="return=representation").json() == []
    # A deleted conversation takes no new nodes and no completions.
    assert error_of(respond(fake, node_insert(fake, conv_id))) == (409, "23503")
    assert respond(fake, completion(fake, conv_id)).status == 404


# -- the completion endpoint ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"model": ""},
        {"messages": []},
        {"messages": [{"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"nodeId": "node-1"},
        {"convId": None},
        {"stream": False},
    ],
)
def test_a_bad_completion_body_is_400(change: dict[str, Any]) -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    request = completion(fake, conv_id)
    response = respond(fake, with_body(request, {**request.json(), **change}))
    assert response.status == 400
    assert set(response.json()) == {"message"}
    assert fake.turns == []


def test_a_completion_needs_its_rows() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    assert respond(fake, completion(fake, conv_id, node_id=uuid_n(60))).status == 404
    assert respond(fake, completion(fake, conv_id, node_id=USER_NODE)).status == 404  # type "1"
    assert respond(fake, completion(fake, uuid_n(61))).status == 404


def test_a_completion_checks_mode_and_content_type() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    request = completion(fake, conv_id)
    assert respond(fake, with_query(request, "mode=agent")).status == 400
    assert respond(fake, with_header(request, "Content-Type", "text/plain")).status == 415


def test_image_parts_and_history_reach_the_responder() -> None:
    seen: list[Turn] = []

    def responder(turn: Turn) -> list[Step]:
        seen.append(turn)
        return [complete("ok")]

    fake = FakeFlowith(responder=responder)
    conv_id = prepared(fake)
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "what is "},
        {"type": "image_url", "image_url": {"url": "https://cdn/x.png"}},
        {"type": "text", "text": "this?"},
    ]
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": content},
    ]
    request = endpoints(fake).start_completion(
        model="m", messages=history, node_id=AI_NODE, conv_id=conv_id
    )
    assert respond(fake, request).status == 200
    assert seen[0].prompt == "what is this?"
    assert [m["role"] for m in seen[0].messages] == ["user", "assistant", "user"]
    assert poll(fake)["value"] == "ok"


# -- the streams ---------------------------------------------------------------------


def test_stream_requests_are_checked() -> None:
    fake = FakeFlowith()
    request = endpoints(fake).user_stream()
    wrong_user = endpoints(fake, token=fake.issue_token(OTHER_USER)).user_stream()
    wrong_user = attrs.evolve(wrong_user, url=request.url)  # the token is not for this user_id
    assert error_of(respond(fake, wrong_user))[0] == 403
    assert error_of(respond(fake, with_header(request, "Accept", None)))[0] == 406
    assert error_of(respond(fake, with_header(request, "Accept", "*/*")))[0] == 406
    assert error_of(respond(fake, with_query(request, "")))[0] == 400
    bearer = endpoints(fake, bearer=True).user_stream()
    assert error_of(respond(fake, bearer))[0] == 401
    assert fake.stream_connections == 0


def test_connections_are_counted_and_every_stream_gets_the_events() -> None:
    fake = FakeFlowith()
    first, second = open_stream(fake), open_stream(fake)
    sse = open_stream(fake, endpoints(fake).user_sse())
    assert (fake.stream_connections, fake.sse_connections) == (2, 1)
    woken: list[str] = []
    first.on_activity = lambda: woken.append("first")
    conv_id = prepared(fake)
    assert respond(fake, completion(fake, conv_id)).status == 200
    assert woken == ["first"]
    assert frames(first.pull(now=NOW)) == frames(second.pull(now=NOW))
    assert [type(e) for e in decode(sse.pull(now=NOW))] == [Connected]  # no text on /sse
    second.close()
    assert fake.open_streams("stream") == [first]
    assert fake.stream_connections == 2  # counts connections opened, not open ones


def test_another_users_stream_sees_nothing() -> None:
    fake = FakeFlowith()
    theirs = open_stream(fake, endpoints(fake, token=fake.issue_token(OTHER_USER)).user_stream())
    run_turn(fake)
    assert theirs.pull(now=NOW) == []


def test_events_before_any_stream_are_lost() -> None:
    fake = FakeFlowith()
    conv_id = prepared(fake)
    respond(fake, completion(fake, conv_id))
    late = open_stream(fake)
    assert late.pull(now=NOW + 1) == []
    assert poll(fake)["status"] == "done"  # the row is still the authority


def test_the_heartbeat_frame() -> None:
    stream = open_stream(FakeFlowith())
    assert stream.heartbeat(now=1.5) == b'data: {"heartbeat":1500}\n\n'
    assert stream.heartbeats_sent == 1


# -- scripts -------------------------------------------------------------------------


def test_fail_sends_a_status_event_and_fails_the_row() -> None:
    fake = FakeFlowith()
    fake.script(chunk("par"), fail("quota exhausted", error_type="rate_limit"))
    stream, _ = run_turn(fake)
    events = decode(stream.pull(now=NOW))
    assert isinstance(events[-1], NodeFailed)
    assert (events[-1].status, events[-1].error, events[-1].error_type) == (
        "failed",
        "quota exhausted",
        "rate_limit",
    )
    data = poll(fake)
    assert (data["status"], data["error"], data["error_type"]) == (
        "failed",
        "quota exhausted",
        "rate_limit",
    )


def test_other_node_interleaves_a_stranger() -> None:
    fake = FakeFlowith()
    fake.script(chunk("a"), other_node("noise"), other_node("more"), chunk("b"), complete())
    stream, conv_id = run_turn(fake)
    events = [e for e in decode(stream.pull(now=NOW)) if isinstance(e, Chunks)]
    strangers = [e for e in events if e.node_id != AI_NODE]
    assert len(strangers) == 2
    assert len({e.node_id for e in strangers}) == 2
    assert all(e.seq == 0 and e.conv_id == conv_id for e in strangers)
    assert [e.seq for e in events if e.node_id == AI_NODE] == [0, 1]
    assert poll(fake)["value"] == "ab"


def test_row_changes_the_poll_without_events() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hel"), close_stream(), row("done", "Hello world"))
    stream, _ = run_turn(fake)
    items = stream.pull(now=NOW)
    assert [type(i) for i in items] == [SendBytes, CloseStream]
    assert stream.closed
    assert stream.pull(now=NOW + 1) == []
    assert fake.open_streams() == []
    assert (poll(fake)["status"], poll(fake)["value"]) == ("done", "Hello world")


def test_a_script_without_an_end_leaves_the_row_at_init() -> None:
    fake = FakeFlowith()
    fake.script(chunk("Hel"), drop())
    stream, _ = run_turn(fake)
    assert [type(i) for i in stream.pull(now=NOW)] == [SendBytes, DropStream]
    assert poll(fake, now=NOW + 100)["status"] == "init"


def test_pause_spreads_the_script_over_time() -> None:
    fake = FakeFlowith()
    fake.script(chunk("a"), pause(1.5), chunk("b"), complete())
    stream, _ = run_turn(fake)
    first = stream.pull(now=NOW)
    assert [type(i) for i in first] == [SendBytes, Pause]
    assert first[-1] == Pause(1.5)
    assert poll(fake, now=NOW + 1)["status"] == "init"
    assert stream.pull(now=NOW + 1) == [Pause(0.5)]
    later = decode(stream.pull(now=NOW + 1.5))
    assert [type(e) for e in later] == [Chunks, Complete]
    assert poll(fake, now=NOW + 1.5)["status"] == "done"


def test_row_changes_wait_for_their_time_until_advanced() -> None:
    fake = FakeFlowith()
    fake.script(pause(2), row("done", "late"))
    run_turn(fake)
    assert fake.nodes[AI_NODE]["data"]["status"] == "init"
    fake.advance(now=NOW + 2)
    assert fake.nodes[AI_NODE]["data"]["value"] == "late"


def test_two_generations_interleave_by_time_on_one_connection() -> None:
    fake = FakeFlowith()
    fake.script(chunk("a1"), pause(1), chunk("a2"), complete())
    fake.script(chunk("b1"), pause(1), chunk("b2"), complete())
    stream = open_stream(fake)
    conv_id = prepared(fake)
    second_ai = uuid_n(5)
    respond(fake, node_insert(fake, conv_id, id=second_ai, p_id=USER_NODE))
    respond(fake, completion(fake, conv_id), now=NOW)
    respond(fake, completion(fake, conv_id, node_id=second_ai), now=NOW + 0.5)
    texts = []
    for moment in (NOW + 0.5, NOW + 1, NOW + 1.5):
        texts += [
            c for e in decode(stream.pull(now=moment)) if isinstance(e, Chunks) for c in e.chunks
        ]
    assert texts == ["a1", "b1", "a2", "b2"]


def test_hang_silences_the_connection_for_good() -> None:
    fake = FakeFlowith()
    fake.script(chunk("a"), hang(), chunk("never"), complete())
    stream, _ = run_turn(fake)
    assert [type(i) for i in stream.pull(now=NOW)] == [SendBytes, Hang]
    assert stream.hung
    assert stream.pull(now=NOW + 9) == []
    assert poll(fake)["status"] == "done"  # the database still finished


def test_heartbeat_comment_and_raw_steps() -> None:
    fake = FakeFlowith()
    fake.script(heartbeat(), comment("keep-alive"), raw(b'data: {"odd":'), raw(b"1}\n\n"))
    stream, _ = run_turn(fake)
    assert frames(stream.pull(now=NOW)) == [
        b'data: {"heartbeat":%d}\n\n' % int(NOW * 1000),
        b": keep-alive\n\n",
        b'data: {"odd":',
        b"1}\n\n",
    ]


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("multiline", [False, True])
def test_framing_options_change_bytes_not_events(line_ending: str, multiline: bool) -> None:
    steps = (chunk("a, b"), chunk('{"c": [1, 2]}\n'), fail("x, y"), comment("z"))
    plain = FakeFlowith()
    plain.script(*steps)
    expected = decode(run_turn(plain)[0].pull(now=NOW))
    fake = FakeFlowith()
    fake.script(*steps, line_ending=line_ending, multiline=multiline)  # type: ignore[arg-type]
    items = run_turn(fake)[0].pull(now=NOW)
    assert decode(items) == expected
    assert [e.raw for e in decode(items)] == [e.raw for e in expected]
    first = frames(items)[0].decode()
    assert first.endswith(line_ending * 2)
    rest = first.replace(line_ending, "")
    assert "\r" not in rest  # only the chosen line ending
    assert "\n" not in rest
    assert (first.count("data: ") > 5) if multiline else (first.count("data: ") == 1)


def test_queued_scripts_are_used_in_order_then_the_responder() -> None:
    fake = FakeFlowith()
    fake.script(complete("first"))
    fake.script(complete("second"))
    stream = open_stream(fake)
    conv_id = prepared(fake)
    results = []
    for _ in range(3):
        respond(fake, completion(fake, conv_id, prompt="p"))
        results += [e.result for e in decode(stream.pull(now=NOW)) if isinstance(e, Complete)]
    assert results == ["first", "second", "You said: p"]


def test_workflow_complete_goes_to_sse_only() -> None:
    fake = FakeFlowith()
    sse = open_stream(fake, endpoints(fake).user_sse())
    fake.script(workflow_complete("https://cdn/img.png"))
    stream, _ = run_turn(fake)
    assert stream.pull(now=NOW) == []
    raw_events = [json.loads(e.split(b"data: ", 1)[1]) for e in frames(sse.pull(now=NOW))]
    assert raw_events[0] == {"status": "connected"}
    assert raw_events[1]["type"] == "workflow_complete"
    assert raw_events[1]["nodeId"] == AI_NODE
    assert poll(fake)["value"] == "https://cdn/img.png"


def test_close_and_drop_knobs_end_open_streams() -> None:
    fake = FakeFlowith()
    first = open_stream(fake)
    fake.close_streams(now=NOW)
    assert first.pull(now=NOW) == [CloseStream()]
    second = open_stream(fake)
    fake.drop_streams(now=NOW)
    assert second.pull(now=NOW) == [DropStream()]


def test_script_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="line_ending"):
        FakeFlowith().script(chunk("x"), line_ending="\n\n")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pause"):
        pause(-1)
    with pytest.raises(ValueError, match="edge_auth"):
        FakeFlowith(edge_auth="basic")  # type: ignore[arg-type]


# -- determinism ---------------------------------------------------------------------


def transcript(seed: int) -> list[Any]:
    fake = FakeFlowith(seed=seed)
    fake.script(chunk("x"), other_node("y"), complete())
    stream, conv_id = run_turn(fake)
    return [conv_id, fake.token, frames(stream.pull(now=NOW)), fake.nodes, fake.conversations]


def test_the_same_seed_gives_the_same_bytes() -> None:
    assert transcript(3) == transcript(3)
    assert transcript(3)[0] != transcript(4)[0]
    assert transcript(3)[1] == transcript(4)[1]  # the token does not depend on the seed


@pytest.mark.parametrize(
    ("misuse", "said"),
    [
        (lambda fake: fake.script([chunk("a"), complete()]), r"script\(\*steps\)"),
        (lambda fake: fake.script("hello"), "not a script step: 'hello'"),
        (lambda fake: fake.script(chunk(123)), "chunk\\(\\) takes text, not int"),  # type: ignore[arg-type]
        (lambda fake: fake.set_credits("10"), "set_credits\\(\\) takes a number, not str"),
    ],
)
def test_a_script_or_knob_misused_is_a_type_error_at_once(misuse: Any, said: str) -> None:
    """Each was accepted, and the next generation failed with a 500 whose cause
    was only in the server's log."""
    with pytest.raises(TypeError, match=said):
        misuse(FakeFlowith())


@pytest.mark.parametrize(
    ("write", "complaint"),
    [
        (lambda: raw("text"), "raw\\(\\) takes bytes, not str"),  # type: ignore[arg-type]
        (lambda: pause("1"), "a pause takes a number of seconds, not str"),  # type: ignore[arg-type]
        (lambda: heartbeat(channel="bogus"), "'channel' must be in"),  # type: ignore[arg-type]
        (lambda: close_stream(channel="x"), "'channel' must be in"),  # type: ignore[arg-type]
        (lambda: complete(5), "'result' must be"),  # type: ignore[arg-type]
        (lambda: row(1, "x"), "'status' must be"),  # type: ignore[arg-type]
        (lambda: comment(b"x"), "'text' must be"),  # type: ignore[arg-type]
        (lambda: other_node(None), "'text' must be"),  # type: ignore[arg-type]
        (lambda: fail(error=3), "'error' must be"),  # type: ignore[arg-type]
        (lambda: workflow_complete(result=None), "'result' must be"),  # type: ignore[arg-type]
    ],
)
def test_a_step_with_a_wrong_argument_is_refused_when_written(
    write: Any, complaint: str
) -> None:
    # Accepted, raw("text") broke the fake's stream when played (an ERROR log only),
    # a channel typo did nothing, complete(5) answered '5', row(1, ...) left the
    # client to time out: the test did not test what it meant to.
    with pytest.raises((TypeError, ValueError), match=complaint):
        write()


@pytest.mark.parametrize("status", ["500", 99, 600, True, 500.0])
def test_a_fault_with_a_status_no_server_sends_is_refused(status: Any) -> None:
    # Served, it dropped the connection: the test saw a connection error (retried,
    # and passing) instead of the status it meant to inject.
    with pytest.raises(ValueError, match="status must be an HTTP status from 200 to 599"):
        FakeFlowith().fail_next(1, status)
