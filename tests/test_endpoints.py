"""The generation path's requests, compared with literal values from protocol.md.

Expected URLs, headers and bodies are written out by hand from the fact sheet
(sections 1.4, 2.1, 2.2, 2.4 and 3.1), never produced by the builders.
"""

from __future__ import annotations

import json

import pytest

from flowith_proto.auth import Credentials
from flowith_proto.config import EdgeAuth, FlowithConfig
from flowith_proto.endpoints import Endpoints, Position
from flowith_proto.errors import AuthenticationError, ValidationError
from flowith_proto.request import Request

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
CONV = "11111111-2222-4333-8444-555555555555"
USER_NODE = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
AI_NODE = "99999999-8888-4777-8666-555555555555"
SB = "https://aibdxsebwhalbnugsqel.supabase.co"
KEY = "sb_publishable_qPCinc8LE8ChpdT7Pf79tQ_eryz5udr"
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/148.0.0.0 Safari/537.36"
)
BROWSER = [("User-Agent", UA), ("Origin", "https://flowith.io"), ("Referer", "https://flowith.io/")]
REST_READ = [
    ("Accept", "application/json, text/plain, */*"),
    *BROWSER,
    ("apikey", KEY),
    ("authorization", f"Bearer {TOKEN}"),
    ("accept-profile", "public"),
    ("x-client-info", "supabase-js-web/2.91.0"),
]


def rest_write(prefer: str) -> list[tuple[str, str]]:
    return [
        ("Accept", "application/json, text/plain, */*"),
        *BROWSER,
        ("apikey", KEY),
        ("authorization", f"Bearer {TOKEN}"),
        ("Content-Profile", "public"),
        ("Content-Type", "application/json"),
        ("Prefer", prefer),
        ("x-client-info", "supabase-js-web/2.91.0"),
    ]


@pytest.fixture
def endpoints() -> Endpoints:
    return Endpoints(FlowithConfig(), Credentials(access_token=TOKEN, user_id=USER))


def test_create_conversation(endpoints: Endpoints) -> None:
    request = endpoints.create_conversation()
    assert request.method == "POST"
    assert request.url == f"{SB}/rest/v1/conversation?select=id"
    assert list(request.headers) == rest_write("return=representation")
    assert request.json() == {"project_id": None, "is_absolute_mode": True, "user_id": USER}
    assert not request.idempotent


def test_user_node(endpoints: Endpoints) -> None:
    request = endpoints.create_user_node(
        node_id=USER_NODE,
        conv_id=CONV,
        parent_id=CONV,
        prompt="What is the capital of Poland?",
        timestamp="1779127457",
        position=Position(0, 130),
    )
    assert request.method == "POST"
    assert request.url == (
        f"{SB}/rest/v1/flow_node?columns="
        "%22id%22,%22position%22,%22type%22,%22conv_id%22,%22p_id%22,%22c_ids%22,%22data%22"
    )
    assert list(request.headers) == rest_write("return=minimal")
    assert request.json() == [
        {
            "id": USER_NODE,
            "position": {"x": 0, "y": 130},
            "type": "1",
            "conv_id": CONV,
            "p_id": CONV,
            "c_ids": [],
            "data": {"timestamp": "1779127457", "value": "What is the capital of Poland?"},
        }
    ]


def test_ai_node(endpoints: Endpoints) -> None:
    data = {
        "title": "AI",
        "value": "",
        "mode": "General",
        "timestamp": "1779127457",
        "isImage": False,
        "model": "gpt-4.1-nano",
        "status": "init",
    }
    request = endpoints.create_ai_node(
        node_id=AI_NODE, conv_id=CONV, parent_id=USER_NODE, data=data, position=Position(0, 340)
    )
    assert request.url == (
        f"{SB}/rest/v1/flow_node?columns="
        "%22id%22,%22conv_id%22,%22type%22,%22position%22,%22data%22,%22p_id%22,%22c_ids%22"
    )
    assert list(request.headers) == rest_write("return=minimal")
    assert request.json() == [
        {
            "id": AI_NODE,
            "conv_id": CONV,
            "type": "2",
            "position": {"x": 0, "y": 340},
            "data": data,
            "p_id": USER_NODE,
            "c_ids": [],
        }
    ]
    # Keys go out in the order of the columns list, as the web app sends them.
    assert request.content.startswith(b'[{"id":')


def test_completion(endpoints: Endpoints) -> None:
    request = endpoints.start_completion(
        model="gpt-4.1-nano",
        messages=[{"role": "user", "content": "hi"}],
        node_id=AI_NODE,
        conv_id=CONV,
    )
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/completion/async?mode=general"
    assert list(request.headers) == [
        ("Accept", "application/json, text/plain, */*"),
        ("Content-Type", "application/json"),
        ("authorization", TOKEN),
        *BROWSER,
    ]
    assert request.json() == {
        "model": "gpt-4.1-nano",
        "messages": [{"role": "user", "content": "hi"}],
        "nodeId": AI_NODE,
        "convId": CONV,
        "stream": True,
    }


def test_bearer_edge_auth_is_selectable() -> None:
    endpoints = Endpoints(
        FlowithConfig(edge_auth=EdgeAuth.BEARER), Credentials(access_token=TOKEN, user_id=USER)
    )
    assert endpoints.user_stream().header("authorization") == f"Bearer {TOKEN}"
    # Supabase always takes Bearer, whatever the edge scheme.
    assert endpoints.poll_node(AI_NODE).header("authorization") == f"Bearer {TOKEN}"


def test_poll_node(endpoints: Endpoints) -> None:
    request = endpoints.poll_node(AI_NODE)
    assert request.method == "GET"
    assert request.url == f"{SB}/rest/v1/flow_node?id=eq.{AI_NODE}&select=data,type"
    assert list(request.headers) == REST_READ
    assert request.body is None
    assert request.header("content-type") is None  # D26: no JSON content type on a GET
    assert request.idempotent


def test_user_stream(endpoints: Endpoints) -> None:
    request = endpoints.user_stream()
    assert request.url == f"https://edge.flowith.io/user_stream/stream?user_id={USER}"
    assert list(request.headers) == [
        ("authorization", TOKEN),
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("pragma", "no-cache"),
        *BROWSER,
    ]
    assert request.stream
    assert request.header("content-type") is None


def test_user_sse(endpoints: Endpoints) -> None:
    request = endpoints.user_sse()
    assert request.url == f"https://edge.flowith.io/user_stream/sse?user_id={USER}"
    assert list(request.headers) == [
        ("authorization", TOKEN),
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        *BROWSER,
    ]


@pytest.mark.parametrize(
    "hostile",
    [
        f"{AI_NODE}&select=*",
        f"{AI_NODE},id.neq.x",
        "x) or (1=1",
        f"{AI_NODE} ",
        "../../etc",
        "",
        f"{{{AI_NODE}}}",
    ],
)
def test_ids_that_are_not_uuids_never_reach_a_filter(endpoints: Endpoints, hostile: str) -> None:
    with pytest.raises(ValidationError, match="node_id must be a UUID"):
        endpoints.poll_node(hostile)


def test_uuids_are_normalised_to_lower_case(endpoints: Endpoints) -> None:
    assert endpoints.poll_node(AI_NODE.upper()).url.endswith(f"id=eq.{AI_NODE}&select=data,type")


def test_no_token_is_an_authentication_error() -> None:
    endpoints = Endpoints(FlowithConfig(), Credentials(user_id=USER))
    with pytest.raises(AuthenticationError, match="No access token"):
        endpoints.user_stream()


def test_no_user_id_is_an_authentication_error() -> None:
    endpoints = Endpoints(FlowithConfig(), Credentials(access_token=TOKEN))
    with pytest.raises(AuthenticationError, match="No user id"):
        endpoints.create_conversation()


def test_request_repr_hides_credentials(endpoints: Endpoints) -> None:
    for request in (endpoints.user_stream(), endpoints.create_conversation()):
        text = repr(request)
        assert TOKEN not in text
        assert KEY not in text
        assert "[REDACTED]" in text


def test_request_repr_hides_every_credential_header_as_errors_do() -> None:
    # The repr had its own list of four names: an x-api-key or refresh-token header
    # was shown, though an error quoting the same request masked it.
    headers = (("x-api-key", "key-1"), ("X-Refresh-Token", "tok-2"), ("accept", "*/*"))
    text = repr(Request("GET", "https://example.test/", headers=headers))
    assert "key-1" not in text
    assert "tok-2" not in text
    assert "accept: */*" in text


def test_request_repr_hides_the_credentials_of_its_url() -> None:
    # A download's URL as the caller gave it: its password and signed token.
    url = "https://alice:s3cret-pass-word@cdn.test/f.bin?token=signed-token-123&w=2"
    text = repr(Request("GET", url))
    assert "s3cret" not in text
    assert "signed-token" not in text
    assert "cdn.test/f.bin" in text
    assert "w=2" in text


def test_prompt_with_unicode_is_sent_as_utf8(endpoints: Endpoints) -> None:
    request = endpoints.create_user_node(
        node_id=USER_NODE,
        conv_id=CONV,
        parent_id=CONV,
        prompt="Zażółć gęślą jaźń 🚀",
        timestamp="1",
        position=Position(0, 130),
    )
    assert "Zażółć gęślą jaźń 🚀".encode() in request.content
    assert json.loads(request.content)[0]["data"]["value"] == "Zażółć gęślą jaźń 🚀"
