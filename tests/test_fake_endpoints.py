"""Every endpoint of protocol.md section 2 against the fake Flowith as a pure model.

The requests are written by hand in the literal forms of the protocol fact
sheet and ``docs/protocol-decisions.md`` (the builders for most of them are
written elsewhere), so these tests pin the wire format the fake accepts. The
last section puts the fake on a real socket for what only a server can show:
a 50 MB upload and its download from the CDN.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.auth import Credentials
from flowith_proto.config import DEFAULT_SUPABASE_KEY, FlowithConfig
from flowith_proto.endpoints import Endpoints, Position, upload_form
from flowith_proto.fake import (
    DEFAULT_CDN_URL,
    DELETED_NOTES,
    FAKE_REFRESH_TOKEN,
    FAKE_USER_ID,
    KYOTO_TRIP,
    MODELS,
    OTHER_USER_ID,
    PRIVATE_PLANS,
    PRODUCT_LAUNCH,
    QUARTERLY_REPORT,
    SEED_NODES,
    SEED_PROJECTS,
    TABLES,
    TEAM_WIKI,
    FakeFlowith,
    FakeResponse,
    FakeStream,
    MultipartError,
    SendBytes,
    Turn,
    chunk,
    complete,
    parse_multipart,
    row,
    workflow_complete,
)
from flowith_proto.fake.multipart import boundary_of
from flowith_proto.request import FilePart, MultipartForm, Request

NOW = 1_779_127_457.0  # Mon, 18 May 2026 18:04:17 GMT
DAY = 86_400.0
USER_NODE = "00000000-0000-4000-8000-000000000001"
AI_NODE = "00000000-0000-4000-8000-000000000002"
VIDEO_NODE = "00000000-0000-4000-8000-000000000003"
BOUNDARY = "----flowithFormBoundary7MA4YWxkTrZu0gW"

Headers = Sequence[tuple[str, str]]


# -- requests written by hand -------------------------------------------------------


def call(
    fake: FakeFlowith,
    method: str,
    target: str,
    headers: Headers,
    body: bytes = b"",
    *,
    now: float = NOW,
) -> FakeResponse:
    result = fake.handle(method, target, headers, body, now=now)
    assert isinstance(result, FakeResponse)
    return result


def edge_headers(token: str, content_type: str | None = None) -> list[tuple[str, str]]:
    headers = [("Accept", "application/json, text/plain, */*"), ("authorization", token)]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return headers


def edge(
    fake: FakeFlowith,
    method: str,
    target: str,
    body: Any = None,
    *,
    token: str | None = None,
    content_type: str | None = None,
    now: float = NOW,
) -> FakeResponse:
    """An edge call: the bare token; a JSON body unless ``body`` is bytes."""
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    kind = content_type or ("application/json" if body is not None else None)
    return call(fake, method, target, edge_headers(token or fake.token, kind), raw, now=now)


def rest(
    fake: FakeFlowith,
    method: str,
    target: str,
    body: Any = None,
    *,
    prefer: str | None = None,
    token: str | None = None,
    now: float = NOW,
) -> FakeResponse:
    """A PostgREST call with supabase-js's headers (reads vs writes)."""
    headers = [
        ("apikey", DEFAULT_SUPABASE_KEY),
        ("authorization", f"Bearer {token or fake.token}"),
    ]
    if method == "GET":
        headers.append(("accept-profile", "public"))
    else:
        headers += [("Content-Profile", "public"), ("Content-Type", "application/json")]
    if prefer is not None:
        headers.append(("Prefer", prefer))
    raw = b"" if body is None else json.dumps(body).encode()
    return call(fake, method, "/rest/v1/" + target, headers, raw, now=now)


def gotrue(
    fake: FakeFlowith,
    method: str,
    target: str,
    body: Any = None,
    *,
    token: str | None = "",
    api_version: bool = False,
    now: float = NOW,
) -> FakeResponse:
    """A GoTrue call: ``apikey`` and, unless ``token`` is None, ``Bearer``."""
    headers = [("apikey", DEFAULT_SUPABASE_KEY)]
    if token is not None:
        headers.append(("authorization", f"Bearer {token or fake.token}"))
    if api_version:
        headers.append(("x-supabase-api-version", "2024-01-01"))
    raw = b""
    if body is not None:
        headers.append(("Content-Type", "application/json"))
        raw = json.dumps(body).encode()
    return call(fake, method, "/auth/v1/" + target, headers, raw, now=now)


def message_of(response: FakeResponse) -> tuple[int, str]:
    """Status and the edge's message / PostgREST's code / GoTrue's error code."""
    body = response.json()
    assert isinstance(body, dict), body
    for key in ("error_code", "code", "message", "error"):
        if isinstance(body.get(key), str):
            return response.status, body[key]
    raise AssertionError(body)


def sse_events(stream: FakeStream, *, now: float = NOW) -> list[dict[str, Any]]:
    events = []
    for item in stream.pull(now=now):
        if isinstance(item, SendBytes):
            events.append(json.loads(item.data.split(b"data: ", 1)[1]))
    return events


def open_channel(fake: FakeFlowith, path: str) -> FakeStream:
    headers = [("authorization", fake.token), ("Accept", "text/event-stream")]
    result = fake.handle("GET", f"{path}?user_id={fake.user_id}", headers, b"", now=NOW)
    assert isinstance(result, FakeStream)
    return result


def new_conversation(fake: FakeFlowith) -> str:
    response = rest(
        fake,
        "POST",
        "conversation?select=id",
        {"project_id": None, "is_absolute_mode": True, "user_id": fake.user_id},
        prefer="return=representation",
    )
    assert response.status == 201
    conv_id = response.json()[0]["id"]
    assert isinstance(conv_id, str)
    return conv_id


def new_nodes(fake: FakeFlowith, conv_id: str, *, ai_data: dict[str, Any] | None = None) -> None:
    """The user node and (unless ``ai_data`` is ``{}``-less None) the AI node of a turn."""
    user_node = {
        "id": USER_NODE,
        "position": {"x": 0, "y": 130},
        "type": "1",
        "conv_id": conv_id,
        "p_id": conv_id,
        "c_ids": [],
        "data": {"timestamp": str(int(NOW)), "value": "a red fox"},
    }
    columns = '"id","position","type","conv_id","p_id","c_ids","data"'
    target = f"flow_node?columns={quote(columns, safe=',')}"
    assert rest(fake, "POST", target, [user_node], prefer="return=minimal").status == 201
    if ai_data is not None:
        ai_node = {**user_node, "id": AI_NODE, "type": "2", "p_id": USER_NODE, "data": ai_data}
        assert rest(fake, "POST", target, [ai_node], prefer="return=minimal").status == 201


def image_body(conv_id: str, **changes: Any) -> dict[str, Any]:
    body = {
        "model": "gemini-3.1-flash-image",
        "nodeId": AI_NODE,
        "convId": conv_id,
        "messages": [{"role": "user", "content": "a red fox"}],
        "aspect_ratio": "1:1",
        "image_size": "512",
        "agent": False,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


IMAGE_DATA = {"title": "AI", "value": "", "mode": "image_generation", "status": "init"}


def image_ready(fake: FakeFlowith) -> str:
    conv_id = new_conversation(fake)
    new_nodes(fake, conv_id, ai_data=IMAGE_DATA)
    return conv_id


def video_body(conv_id: str, **changes: Any) -> dict[str, Any]:
    body = {
        "nodeId": VIDEO_NODE,
        "model": "seedance-2.0-fast",
        "prompt": "waves at dusk",
        "imageURL": "",
        "aspect_ratio": "16:9",
        "audio": True,
        "resolution": "480p",
        "convId": conv_id,
        "parentNodeId": USER_NODE,
        "position": {"x": 0, "y": 310},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def completion_body(conv_id: str) -> dict[str, Any]:
    return {
        "model": "gpt-4.1-nano",
        "messages": [{"role": "user", "content": "hi"}],
        "nodeId": AI_NODE,
        "convId": conv_id,
        "stream": True,
    }


def node_data(fake: FakeFlowith, node_id: str, *, now: float = NOW) -> dict[str, Any]:
    response = rest(fake, "GET", f"flow_node?id=eq.{node_id}&select=data,type", now=now)
    [found] = response.json()
    data = found["data"]
    assert isinstance(data, dict)
    return data


def form(*, file: bytes, filename: str, content_type: str, kind: str | None) -> bytes:
    """A multipart body as the core's :class:`MultipartForm` lays it out."""
    fields = () if kind is None else (("type", kind),)
    part = FilePart("file", filename, content_type, len(file), data=file)
    layout = MultipartForm(BOUNDARY, fields, (part,))
    return b"".join(s if isinstance(s, bytes) else file for s in layout.segments())


def upload(fake: FakeFlowith, body: bytes, *, content_type: str | None = None) -> FakeResponse:
    kind = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    return edge(fake, "POST", "/file/store", body, content_type=kind)


def rfc1123(moment: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(moment))


# -- image generation -------------------------------------------------------------------


def test_an_image_generation_completes_on_sse_and_in_the_row() -> None:
    fake = FakeFlowith()
    sse = open_channel(fake, "/user_stream/sse")
    stream = open_channel(fake, "/user_stream/stream")
    conv_id = image_ready(fake)
    response = edge(fake, "POST", "/image_gen/async", image_body(conv_id))
    assert (response.status, response.json()) == (200, {"status": "processing", "nodeId": AI_NODE})
    url = f"{DEFAULT_CDN_URL}/f/{AI_NODE}/image.png"
    [connected, done] = sse_events(sse)
    assert connected == {"status": "connected"}
    assert done["type"] == "workflow_complete"
    assert (done["taskType"], done["nodeId"], done["convId"]) == ("image", AI_NODE, conv_id)
    assert (done["status"], done["result"]) == ("completed", url)
    assert stream.pull(now=NOW) == []  # workflow_complete is not on /stream
    assert node_data(fake, AI_NODE) == {**IMAGE_DATA, "status": "done", "value": url}
    picture = call(fake, "GET", url.removeprefix(DEFAULT_CDN_URL), [])
    assert picture.status == 200
    assert picture.header("content-type") == "image/png"
    assert picture.body.startswith(b"\x89PNG\r\n\x1a\n")
    [turn] = fake.turns
    assert (turn.kind, turn.prompt, turn.result_url) == ("image", "a red fox", url)
    assert turn.options == {"aspect_ratio": "1:1", "image_size": "512", "agent": False}


def test_a_scripted_image_result_comes_as_complete_on_the_stream() -> None:
    fake = FakeFlowith()
    stream = open_channel(fake, "/user_stream/stream")
    conv_id = image_ready(fake)
    fake.script(complete(result="https://cdn.example/fox.png"))
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 200
    [event] = sse_events(stream)
    assert event["data"]["type"] == "complete"
    assert event["data"]["result"] == "https://cdn.example/fox.png"
    assert node_data(fake, AI_NODE)["value"] == "https://cdn.example/fox.png"


def test_a_media_responder_and_row_steps_script_results() -> None:
    def responder(turn: Turn) -> list[Any]:
        return [row("done", f"https://cdn.example/{turn.kind}.png", provider="test")]

    fake = FakeFlowith(media_responder=responder)
    conv_id = image_ready(fake)
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 200
    data = node_data(fake, AI_NODE)
    assert (data["status"], data["value"], data["provider"]) == (
        "done",
        "https://cdn.example/image.png",
        "test",
    )


def test_a_failed_workflow_fails_the_row() -> None:
    fake = FakeFlowith()
    sse = open_channel(fake, "/user_stream/sse")
    conv_id = image_ready(fake)
    fake.script(workflow_complete(status="failed", error="nope", error_type="content_policy"))
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 200
    failed = sse_events(sse)[1]
    assert (failed["status"], failed["error_type"]) == ("failed", "content_policy")
    assert node_data(fake, AI_NODE)["status"] == "failed"


@pytest.mark.parametrize(
    "change",
    [
        {"model": ""},
        {"nodeId": "not-a-uuid"},
        {"convId": None},
        {"messages": []},
        {"messages": [{"role": "assistant", "content": "x"}]},
        {"aspect_ratio": "square"},
        {"aspect_ratio": None},
        {"image_size": "huge"},
        {"agent": "yes"},
    ],
)
def test_a_bad_image_body_is_400(change: dict[str, Any]) -> None:
    fake = FakeFlowith()
    conv_id = image_ready(fake)
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id, **change)).status == 400
    assert fake.turns == []


def test_an_image_needs_its_type_2_node_and_json() -> None:
    fake = FakeFlowith()
    conv_id = new_conversation(fake)
    new_nodes(fake, conv_id)  # no AI node
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 404
    user_node = image_body(conv_id, nodeId=USER_NODE)
    assert edge(fake, "POST", "/image_gen/async", user_node).status == 404
    as_text = edge(
        fake,
        "POST",
        "/image_gen/async",
        json.dumps(image_body(conv_id)).encode(),
        content_type="text/plain",
    )
    assert as_text.status == 415


# -- video generation ------------------------------------------------------------------


def test_a_video_gets_a_node_the_server_creates_under_its_own_id() -> None:
    fake = FakeFlowith()
    sse = open_channel(fake, "/user_stream/sse")
    conv_id = new_conversation(fake)
    new_nodes(fake, conv_id)
    response = edge(fake, "POST", "/video/async", video_body(conv_id))
    assert response.status == 200
    answer = response.json()
    node_id = answer["nodeId"]
    assert answer == {"status": "processing", "nodeId": node_id}
    assert node_id != VIDEO_NODE
    node = fake.nodes[node_id]
    assert (node["type"], node["p_id"], node["conv_id"]) == ("2", USER_NODE, conv_id)
    assert node["position"] == {"x": 0, "y": 310}
    assert fake.nodes[USER_NODE]["c_ids"] == [node_id]
    done = sse_events(sse)[1]
    url = f"{DEFAULT_CDN_URL}/f/{node_id}/video.mp4"
    assert (done["taskType"], done["nodeId"], done["result"]) == ("video", node_id, url)
    assert (node["data"]["status"], node["data"]["value"]) == ("done", url)
    assert node["data"]["mode"] == "video_generation"
    clip = call(fake, "GET", f"/f/{node_id}/video.mp4", [])
    assert (clip.status, clip.header("content-type")) == (200, "video/mp4")
    assert clip.body[4:8] == b"ftyp"
    assert fake.turns[0].options["requested_node_id"] == VIDEO_NODE


def test_the_echo_knob_keeps_the_clients_node_id() -> None:
    fake = FakeFlowith()
    fake.video_node_ids = "echo"
    conv_id = new_conversation(fake)
    new_nodes(fake, conv_id)
    response = edge(fake, "POST", "/video/async", video_body(conv_id))
    assert response.json() == {"status": "processing", "nodeId": VIDEO_NODE}
    assert VIDEO_NODE in fake.nodes
    again = edge(fake, "POST", "/video/async", video_body(conv_id))
    assert again.status == 409


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"nodeId": None}, 400),
        ({"prompt": "", "imageURL": ""}, 400),
        ({"imageURL": "file:///etc/passwd"}, 400),
        ({"audio": "true"}, 400),
        ({"resolution": "8k"}, 400),
        ({"position": {"x": 0}}, 400),
        ({"aspect_ratio": "wide"}, 400),
        ({"parentNodeId": AI_NODE}, 404),
        ({"convId": PRIVATE_PLANS}, 404),
    ],
)
def test_a_bad_video_request_is_refused(change: dict[str, Any], status: int) -> None:
    fake = FakeFlowith()
    conv_id = new_conversation(fake)
    new_nodes(fake, conv_id)
    assert edge(fake, "POST", "/video/async", video_body(conv_id, **change)).status == status
    assert fake.turns == []


# -- credits ---------------------------------------------------------------------------


def test_credits_are_listed_and_spent_by_generations() -> None:
    fake = FakeFlowith()
    entries = edge(fake, "GET", "/user/credits").json()
    assert [e["sub_type"] for e in entries] == ["pro", "Invitation"]
    first = entries[0]
    assert set(first) >= {
        "remain_quota",
        "init_quota",
        "sub_type",
        "from_date",
        "to_date",
        "remain_days",
    }
    assert (first["remain_quota"], first["init_quota"]) == (1523.5, 2000)
    assert first["remain_days"] == 26526  # 2026-05-18T18:04 to 2099-01-01
    assert edge(fake, "GET", "/user/credit_type").json() == {"credit_type": "pro"}
    fake.generation_cost = 2.5
    conv_id = image_ready(fake)
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 200
    assert fake.remaining_credits() == 1623.5 - 2.5
    assert edge(fake, "GET", "/user/credits").json()[0]["remain_quota"] == 1521


def test_credits_can_be_sent_as_strings() -> None:
    fake = FakeFlowith()
    fake.credits_as_strings = True
    first = edge(fake, "GET", "/user/credits").json()[0]
    assert (first["remain_quota"], first["init_quota"]) == ("1523.5", "2000")
    assert isinstance(first["remain_days"], int)


def test_generations_answer_402_when_credits_run_out() -> None:
    fake = FakeFlowith()
    conv_id = image_ready(fake)
    fake.set_credits(0)
    refused = {"message": "Insufficient credits"}
    completion = edge(fake, "POST", "/completion/async?mode=general", completion_body(conv_id))
    image = edge(fake, "POST", "/image_gen/async", image_body(conv_id))
    video = edge(fake, "POST", "/video/async", video_body(conv_id))
    for response in (completion, image, video):
        assert (response.status, response.json()) == (402, refused)
    assert fake.turns == []
    assert edge(fake, "GET", "/user/credit_type").json() == {"credit_type": "free"}
    fake.set_credits(1)
    assert edge(fake, "POST", "/image_gen/async", image_body(conv_id)).status == 200
    assert fake.remaining_credits() == 0


def test_a_text_generation_is_charged_when_it_completes() -> None:
    fake = FakeFlowith()
    conv_id = image_ready(fake)
    fake.script(chunk("a"))  # never completes
    assert edge(fake, "POST", "/completion/async?mode=general", completion_body(conv_id)).status
    assert fake.remaining_credits() == 1623.5
    fake.script(chunk("a"), complete(), row("done", "a"))  # done twice, charged once
    edge(fake, "POST", "/completion/async?mode=general", completion_body(conv_id))
    assert fake.remaining_credits() == 1622.5


# -- titles ------------------------------------------------------------------------------


def test_a_title_is_plain_text_from_the_first_user_message() -> None:
    fake = FakeFlowith()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "plan a three day trip to kyoto in autumn please!"},
        {"role": "assistant", "content": "Sure"},
    ]
    body = json.dumps({"messages": messages}).encode()
    response = edge(
        fake,
        "POST",
        "/completion/conversation-title",
        body,
        content_type="text/plain;charset=UTF-8",
    )
    assert response.status == 200
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.body.decode() == "Plan a three day trip to"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b'{"messages":[{"role":"user","content":"x"}]}', 415),
        ("text/plain", b'{"messages":[{"role":"user","content":"x"}]}', 415),
        ("text/plain;charset=UTF-8", b"plain words", 400),
        ("text/plain;charset=UTF-8", b'{"messages":[]}', 400),
        ("text/plain;charset=UTF-8", b'{"messages":[{"role":"bot","content":"x"}]}', 400),
    ],
)
def test_a_bad_title_request_is_refused(content_type: str, body: bytes, status: int) -> None:
    fake = FakeFlowith()
    response = edge(fake, "POST", "/completion/conversation-title", body, content_type=content_type)
    assert response.status == status


# -- uploads and the CDN ------------------------------------------------------------------


def test_an_upload_is_stored_served_and_recorded() -> None:
    fake = FakeFlowith()
    data = bytes(range(256)) * 40
    body = form(
        file=data, filename="My Report (v2).pdf", content_type="application/pdf", kind="pdf"
    )
    response = upload(fake, body)
    assert response.status == 200
    answer = response.json()
    assert (answer["size"], answer["type"], answer["name"]) == (
        len(data),
        "pdf",
        "My Report (v2).pdf",
    )
    url = answer["url"]
    assert url.startswith(DEFAULT_CDN_URL + "/f/")
    assert url.endswith("/My%20Report%20%28v2%29.pdf")
    served = call(fake, "GET", url.removeprefix(DEFAULT_CDN_URL), [])  # no auth: a public CDN
    assert (served.status, served.body) == (200, data)
    assert served.header("content-type") == "application/pdf"
    records = rest(
        fake,
        "GET",
        "user_upload_records?select=id,user_id,conv_id,value,name,type,created_at"
        f"&user_id=eq.{fake.user_id}&order=created_at.desc,id.desc&offset=0&limit=12",
        now=NOW + 1,
    ).json()
    assert [r["name"] for r in records] == ["My Report (v2).pdf", "photo.png", "notes.pdf"]
    assert records[0]["value"] == url
    assert set(records[0]) == {"id", "user_id", "conv_id", "value", "name", "type", "created_at"}


def test_an_upload_without_a_type_field_takes_the_extension() -> None:
    fake = FakeFlowith()
    body = form(file=b"x", filename="../../etc/notes.TXT", content_type="text/plain", kind=None)
    answer = upload(fake, body).json()
    assert (answer["name"], answer["type"]) == ("notes.TXT", "TXT")
    body = form(file=b"x", filename="noextension", content_type="text/plain", kind=None)
    assert upload(fake, body).json()["type"] == "bin"


def test_bad_uploads_are_refused() -> None:
    fake = FakeFlowith()
    good = form(file=b"abc", filename="a.png", content_type="image/png", kind="png")
    assert upload(fake, good, content_type="application/json").status == 415
    assert upload(fake, good, content_type="multipart/form-data").status == 400  # no boundary
    only_type = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="type"\r\n\r\npng\r\n'
    response = upload(fake, f"{only_type}--{BOUNDARY}--\r\n".encode())
    assert message_of(response)[0] == 400
    assert "file" in message_of(response)[1]
    assert upload(fake, good[:-10]).status == 400  # cut short
    bad_type = form(file=b"abc", filename="a.png", content_type="image/png", kind="p n g")
    assert upload(fake, bad_type).status == 400
    fake.max_upload_size = 2
    assert upload(fake, good).status == 413


def test_the_multipart_parser() -> None:
    body = (
        b"preamble to ignore\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="type"\r\n\r\n'
        b"png\r\n"
        b"--XyZ \r\n"
        b'Content-Disposition: form-data; name="file"; filename="a \\"q\\".png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
        b"line1\r\n--XyZnot-a-delimiter\r\n\r\nend\r\n"
        b"--XyZ\r\n"
        b"Content-Disposition: form-data; name=\"u\"; filename*=utf-8''%C3%A9t%C3%A9.txt\r\n\r\n"
        b"\r\n"
        b"--XyZ--\r\nepilogue"
    )
    parts = parse_multipart(body, "XyZ")
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("type", None, "text/plain"),
        ("file", 'a "q".png', "image/png"),
        ("u", "été.txt", "application/octet-stream"),
    ]
    assert parts[0].text == "png"
    assert parts[1].data == b"line1\r\n--XyZnot-a-delimiter\r\n\r\nend"
    assert parts[2].data == b""
    assert boundary_of('multipart/form-data; boundary="a b"') == "a b"
    for broken in (
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nno end',
        b"--XyZ\r\nX-No-Disposition: 1\r\n\r\nx\r\n--XyZ--",
        b'--XyZ\r\nContent-Disposition: form-data; name="a"',
        b"no boundary here",
    ):
        with pytest.raises(MultipartError):
            parse_multipart(broken, "XyZ")
    with pytest.raises(MultipartError):
        boundary_of("multipart/form-data")


def test_the_cdn_serves_added_files_to_anyone_and_only_by_get() -> None:
    fake = FakeFlowith()
    url = fake.add_file("/f/clip/video.mp4", b"\x00" * 10, "video/mp4")
    assert url == f"{DEFAULT_CDN_URL}/f/clip/video.mp4"
    served = call(fake, "GET", "/f/clip/video.mp4", [])
    assert (served.status, served.header("content-type"), len(served.body)) == (
        200,
        "video/mp4",
        10,
    )
    assert call(fake, "POST", "/f/clip/video.mp4", []).status == 405
    assert call(fake, "GET", "/f/clip/other.mp4", []).status == 404
    with pytest.raises(ValueError, match="API path"):
        fake.add_file("/rest/v1/conversation", b"")


def test_moving_the_cdn_rewrites_stored_urls() -> None:
    fake = FakeFlowith()
    fake.serving_at("http://127.0.0.1:5555")
    assert fake.cdn_url == "http://127.0.0.1:5555"
    records = rest(fake, "GET", "user_upload_records?select=value").json()
    assert all(r["value"].startswith("http://127.0.0.1:5555/f/") for r in records)
    fixed = FakeFlowith(cdn_url="https://cdn.example")
    fixed.serving_at("http://127.0.0.1:5555")
    assert fixed.cdn_url == "https://cdn.example"
    with pytest.raises(ValueError, match="cdn_url"):
        fixed.cdn_url = "https://cdn.example/with/path"


# -- account endpoints ------------------------------------------------------------------


def test_cooperators_of_a_conversation() -> None:
    fake = FakeFlowith()
    members = edge(fake, "GET", f"/cooperate/list?conv_id={PRODUCT_LAUNCH}").json()
    assert [(m["user_id"], m["role"]) for m in members] == [
        (FAKE_USER_ID, 1),
        (OTHER_USER_ID, 2),
    ]
    assert set(members[0]) >= {"user_id", "role", "user_name", "user_avatar"}
    assert len(edge(fake, "GET", f"/cooperate/list?conv_id={TEAM_WIKI}").json()) == 3
    assert edge(fake, "GET", f"/cooperate/list?conv_id={PRIVATE_PLANS}").status == 404
    assert edge(fake, "GET", "/cooperate/list?conv_id=x%26y").status == 400


def test_the_model_catalogue() -> None:
    fake = FakeFlowith()
    catalogue = edge(fake, "GET", "/models?logo=1&desc=1").json()
    assert catalogue.keys() == MODELS.keys()
    for model_id in ("gpt-4.1-nano", "deepseek-r1", "gemini-3.1-pro-preview"):
        assert catalogue[model_id]["media"] == "text"
    for model_id in ("gemini-3.1-flash-image", "gemini-3-pro-image-preview", "gpt-image-1"):
        assert catalogue[model_id]["media"] == "image"
    video = catalogue["kling-video/v2.6/pro/image-to-video"]
    assert (video["media"], video["tier"]) == ("video", "pro")
    assert {"title", "media", "tier", "logo", "desc"} <= set(video)
    bare = edge(fake, "GET", "/models?logo=0&desc=0").json()["gpt-4.1-nano"]
    assert "logo" not in bare
    assert "desc" not in bare


def test_templates_are_paged_and_filtered_by_type() -> None:
    fake = FakeFlowith()
    everything = edge(fake, "GET", "/templates?page_size=1000").json()["data"]
    assert len(everything) == 8
    images = edge(fake, "GET", "/templates?page_size=1000&type=image").json()["data"]
    assert {t["type"] for t in images} == {"image"}
    assert len(images) == 3
    assert set(images[0]) >= {"id", "name", "category", "type", "prompt", "model", "cover_url"}
    assert len(edge(fake, "GET", "/templates?page_size=2").json()["data"]) == 2
    assert edge(fake, "GET", "/templates?page_size=0").status == 400


@pytest.mark.parametrize(
    ("target", "keys"),
    [
        ("/discord/invite-link", {"link"}),
        ("/featurebase/status", {"enabled"}),
        ("/mkt/banana-2025/check", {"eligible", "campaign"}),
        ("/invitation/access-new-version", {"access"}),
        ("/enterprise/dashboard/me", {"is_member", "enterprise"}),
        ("/mkt/daily-rewards/status", {"claimed_today", "streak", "reward"}),
    ],
)
def test_account_endpoints_answer_json_objects(target: str, keys: set[str]) -> None:
    fake = FakeFlowith()
    response = edge(fake, "GET", target)
    assert response.status == 200
    assert keys <= set(response.json())
    assert edge(fake, "GET", target, token="not-a-token").status == 401


def test_the_discord_link() -> None:
    link = edge(FakeFlowith(), "GET", "/discord/invite-link").json()["link"]
    assert link.startswith("https://discord.gg/")


def test_a_daily_reward_is_claimed_once_a_day() -> None:
    fake = FakeFlowith()
    assert edge(fake, "GET", "/mkt/daily-rewards/status").json()["claimed_today"] is False
    claimed = edge(fake, "POST", "/mkt/daily-rewards/claim", {})
    assert claimed.status == 200
    assert claimed.json()["claimed"] is True
    assert fake.remaining_credits() == 1643.5
    status = edge(fake, "GET", "/mkt/daily-rewards/status").json()
    assert (status["claimed_today"], status["streak"]) == (True, 1)
    assert status["next_claim_at"] == "2026-05-19T00:00:00.000000+00:00"
    again = edge(fake, "POST", "/mkt/daily-rewards/claim", {}, now=NOW + 3600)
    assert (again.status, again.json()["claimed"]) == (409, False)
    tomorrow = edge(fake, "POST", "/mkt/daily-rewards/claim", {}, now=NOW + DAY)
    assert (tomorrow.status, tomorrow.json()["streak"]) == (200, 2)
    assert edge(fake, "POST", "/mkt/daily-rewards/claim", {"x": 1}, now=NOW + 2 * DAY).status == 400
    assert edge(fake, "POST", "/mkt/daily-rewards/claim", now=NOW + 2 * DAY).status == 415


def test_campaign_status_takes_a_decoded_model_id() -> None:
    fake = FakeFlowith()
    target = "/user/campaigns/effective-status?model_id="
    kling = quote("kling-video/v2.6/pro/text-to-video", safe="")
    answer = edge(fake, "GET", target + kling).json()
    assert answer["model_id"] == "kling-video/v2.6/pro/text-to-video"
    assert answer["active"] is False
    banana = edge(fake, "GET", target + "gemini-3-pro-image-preview").json()
    assert (banana["active"], banana["campaign_id"]) == (True, "banana-2025")
    assert edge(fake, "GET", "/user/campaigns/effective-status").status == 400


# -- PostgREST tables ----------------------------------------------------------------------


def test_the_conversation_list_and_a_conversation() -> None:
    fake = FakeFlowith()
    base = f"conversation?select=*&user_id=eq.{fake.user_id}&is_delete=neq.true"
    listed = rest(fake, "GET", f"{base}&project_id=is.null&order=updated_at.desc&offset=0&limit=20")
    assert [r["id"] for r in listed.json()] == [PRODUCT_LAUNCH, KYOTO_TRIP]
    assert listed.json()[0]["metadata"] == {"member_count": 2}
    work = SEED_PROJECTS[0]
    in_project = rest(fake, "GET", f"{base}&project_id=eq.{work}&order=updated_at.desc").json()
    assert [r["id"] for r in in_project] == [QUARTERLY_REPORT]
    second_page = rest(
        fake, "GET", f"{base}&project_id=is.null&order=updated_at.desc&offset=1&limit=1"
    )
    assert [r["title"] for r in second_page.json()] == ["Trip to Kyoto"]
    shared = rest(fake, "GET", f"conversation?select=*&id=eq.{TEAM_WIKI}").json()
    assert [r["title"] for r in shared] == ["Team wiki"]  # a member reads it
    assert rest(fake, "GET", f"conversation?select=*&id=eq.{PRIVATE_PLANS}").json() == []


def test_renaming_a_conversation_patches_it() -> None:
    fake = FakeFlowith()
    renamed = rest(
        fake,
        "PATCH",
        f"conversation?id=eq.{KYOTO_TRIP}&select=*",
        {"title": "Kyoto in autumn"},
        prefer="return=representation",
        now=NOW + 5,
    )
    assert renamed.status == 200
    [updated] = renamed.json()
    assert (updated["id"], updated["title"]) == (KYOTO_TRIP, "Kyoto in autumn")
    assert updated["updated_at"] == "2026-05-18T18:04:22.000000+00:00"
    member_rename = rest(
        fake,
        "PATCH",
        f"conversation?id=eq.{TEAM_WIKI}&select=*",
        {"title": "mine now"},
        prefer="return=representation",
    )
    assert member_rename.json() == []  # only the owner may write
    old_rename = rest(
        fake,
        "POST",
        "conversation?select=id",
        {"id": KYOTO_TRIP, "title": "x", "user_id": fake.user_id},
        prefer="return=representation",
    )
    assert message_of(old_rename) == (409, "23505")


def test_the_canvas_of_a_seeded_conversation() -> None:
    fake = FakeFlowith()
    query = "select=*&conv_id=eq.{}&is_delete=neq.true&order=created_at.asc"
    nodes = rest(fake, "GET", "flow_node?" + query.format(KYOTO_TRIP)).json()
    assert [n["id"] for n in nodes] == list(SEED_NODES[:2])
    assert nodes[1]["data"]["status"] == "done"
    assert rest(fake, "GET", "flow_node?" + query.format(PRIVATE_PLANS)).json() == []


COOPERATE = "cooperate?select=*,conv_id(*)"
TOP_ONLY = "&top=not.eq.true&conv_id.metadata->>member_count=not.eq.1"
LIVE = "&conv_id=not.is.null&conv_id.is_delete=not.eq.true"


def test_cooperate_rows_embed_their_conversation() -> None:
    fake = FakeFlowith()
    mine = rest(fake, "GET", f"{COOPERATE}&user_id=eq.{fake.user_id}{LIVE}{TOP_ONLY}").json()
    assert [(r["conv_id"]["id"], r["role"]) for r in mine] == [(PRODUCT_LAUNCH, 1), (TEAM_WIKI, 2)]
    assert mine[0]["conv_id"]["title"] == "Product launch plan"
    assert list(mine[0])[:3] == [
        "id",
        "conv_id",
        "user_id",
    ]  # the embedding takes the column's place
    one = rest(fake, "GET", f"{COOPERATE}&user_id=eq.{fake.user_id}&conv_id=eq.{TEAM_WIKI}").json()
    assert [r["conv_id"]["id"] for r in one] == [TEAM_WIKI]
    everyone = rest(fake, "GET", f"{COOPERATE}{LIVE}{TOP_ONLY}").json()
    assert {r["conv_id"]["id"] for r in everyone} == {PRODUCT_LAUNCH, TEAM_WIKI}
    assert len(everyone) == 4  # the third member's row is top; PRIVATE_PLANS is hidden
    all_rows = rest(fake, "GET", f"{COOPERATE}{LIVE}").json()
    assert len(all_rows) == 5


def test_a_deleted_or_unshared_conversation_drops_out_of_the_cooperate_list() -> None:
    fake = FakeFlowith()
    deleted = rest(
        fake,
        "PATCH",
        f"conversation?id=eq.{PRODUCT_LAUNCH}&select=id",
        {"is_delete": True},
        prefer="return=representation",
    )
    assert deleted.json() == [{"id": PRODUCT_LAUNCH}]
    rows = rest(fake, "GET", f"{COOPERATE}&user_id=eq.{fake.user_id}{LIVE}").json()
    assert [r["conv_id"]["id"] for r in rows] == [TEAM_WIKI]
    unfiltered = rest(fake, "GET", f"{COOPERATE}&user_id=eq.{fake.user_id}").json()
    assert [r["conv_id"] and r["conv_id"]["is_delete"] for r in unfiltered] == [True, False]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("select=*&conv_id.is_delete=eq.true", "PGRST108"),
        ("select=*,conv_id(*)&user_id.x=eq.1", "PGRST108"),
        ("select=*,conv_id(*)&metadata->>member_count=eq.1", "PGRST100"),
        ("select=*,conv_id(*)&conv_id.nope=eq.1", "42703"),
        ("select=*,conv_id(*)&conv_id.title->>x=eq.1", "42883"),
        ("select=*,user_id(*)", "PGRST100"),
        ("select=*,conv_id(nope)", "42703"),
        ("select=*,conv_id(*", "PGRST100"),
    ],
)
def test_embedding_is_checked(query: str, code: str) -> None:
    fake = FakeFlowith()
    assert message_of(rest(fake, "GET", f"cooperate?{query}")) == (400, code)


def test_the_user_profile_reads_and_patches() -> None:
    fake = FakeFlowith()
    [profile] = rest(fake, "GET", f"user_profile?select=*&id=eq.{fake.user_id}").json()
    assert (profile["id"], profile["language"]) == (fake.user_id, "en")
    patched = rest(
        fake,
        "PATCH",
        f"user_profile?id=eq.{fake.user_id}&select=*",
        {"language": "fr"},
        prefer="return=representation",
    )
    assert [r["language"] for r in patched.json()] == ["fr"]
    unknown = rest(
        fake,
        "PATCH",
        f"user_profile?id=eq.{fake.user_id}&select=*",
        {"favourite_colour": "red"},
        prefer="return=representation",
    )
    assert message_of(unknown) == (400, "PGRST204")
    assert rest(fake, "GET", f"user_profile?select=*&id=eq.{OTHER_USER_ID}").json() == []
    theirs = rest(
        fake,
        "PATCH",
        f"user_profile?id=eq.{OTHER_USER_ID}&select=*",
        {"language": "fr"},
        prefer="return=representation",
    )
    assert theirs.json() == []


def test_subscriptions_in_force_embed_their_type() -> None:
    fake = FakeFlowith()
    select = "select=id,months,from_date,to_date,remain_quota,subscription_type(id,quota)"

    def in_force(moment: float) -> list[dict[str, Any]]:
        at = quote(rfc1123(moment), safe="")
        target = (
            f"subscription_user_own?{select}&order=to_date.desc&from_date=lt.{at}&to_date=gt.{at}"
        )
        response = rest(fake, "GET", target)
        assert response.status == 200, response.body
        rows: list[dict[str, Any]] = response.json()
        return rows

    [current] = in_force(NOW)
    assert current == {
        "id": current["id"],
        "months": 12,
        "from_date": "2026-01-01T00:00:00.000000+00:00",
        "to_date": "2099-01-01T00:00:00.000000+00:00",
        "remain_quota": 1523.5,
        "subscription_type": {"id": 2, "quota": 24000},
    }
    [old] = in_force(NOW - 180 * DAY)
    assert old["months"] == 1
    assert in_force(NOW + 80 * 365 * DAY) == []
    bad = rest(fake, "GET", "subscription_user_own?select=id&from_date=lt.yesterday")
    assert message_of(bad) == (400, "22P02")
    iso = rest(fake, "GET", "subscription_user_own?select=id&to_date=gt.2026-12-31T23:00:00Z")
    assert len(iso.json()) == 1


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("public_notice?select=*", 2),
        ("flow_project?select=*&order=updated_at.desc", 2),
        (f"conv_novel_editor?select=*&conv_id=eq.{QUARTERLY_REPORT}", 1),
        (f"conv_novel_editor?select=*&conv_id=eq.{PRIVATE_PLANS}", 0),
        (f"discuss?select=*&conv_id=eq.{PRODUCT_LAUNCH}", 2),
        (f"discuss?select=*&conv_id=eq.{PRIVATE_PLANS}", 0),
        (
            "oracle_stream?select=id,requirement,workflow,no_need_replan,is_stop,is_public,"
            f"user_confirm,is_delete&conv_id=eq.{QUARTERLY_REPORT}",
            1,
        ),
        ("migration?select=version", 1),
    ],
)
def test_the_other_tables_read_with_the_protocols_queries(target: str, expected: int) -> None:
    fake = FakeFlowith()
    response = rest(fake, "GET", target)
    assert response.status == 200, response.body
    assert len(response.json()) == expected


def test_read_rows_have_the_protocols_columns() -> None:
    fake = FakeFlowith()
    projects = rest(fake, "GET", "flow_project?select=*&order=updated_at.desc").json()
    assert [p["title"] for p in projects] == ["Work", "Personal"]
    assert {"id", "title", "updated_at"} <= set(projects[0])
    [oracle] = rest(
        fake,
        "GET",
        "oracle_stream?select=id,requirement,workflow,no_need_replan,is_stop,is_public,"
        f"user_confirm,is_delete&conv_id=eq.{QUARTERLY_REPORT}",
    ).json()
    assert list(oracle) == [
        "id",
        "requirement",
        "workflow",
        "no_need_replan",
        "is_stop",
        "is_public",
        "user_confirm",
        "is_delete",
    ]
    assert rest(fake, "GET", "migration?select=version").json() == [{"version": "2026.05.12-1"}]
    notice = rest(fake, "GET", "public_notice?select=*").json()[0]
    assert {"id", "title", "content"} <= set(notice)


def test_row_level_security_hides_the_strangers_rows_in_every_table() -> None:
    fake = FakeFlowith()
    private = {PRIVATE_PLANS, OTHER_USER_ID, SEED_NODES[2], SEED_PROJECTS[2]}
    for name in TABLES:
        rows = rest(fake, "GET", f"{name}?select=*").json()
        for found in rows:
            shared = {found.get("conv_id"), found.get("id")} & {PRODUCT_LAUNCH, TEAM_WIKI}
            assert shared or not (private & {str(v) for v in found.values()}), (name, found)
    seen = rest(fake, "GET", "conversation?select=id").json()
    assert {r["id"] for r in seen} == {
        KYOTO_TRIP,
        QUARTERLY_REPORT,
        PRODUCT_LAUNCH,
        DELETED_NOTES,
        TEAM_WIKI,
    }
    stranger = fake.issue_token(OTHER_USER_ID)
    theirs = rest(fake, "GET", "subscription_user_own?select=remain_quota", token=stranger).json()
    assert theirs == [{"remain_quota": 9000}]


def test_read_only_tables_refuse_writes() -> None:
    fake = FakeFlowith()
    for target in ("public_notice", "cooperate", "user_upload_records", "migration"):
        inserted = rest(fake, "POST", target, {"id": KYOTO_TRIP})
        assert message_of(inserted) == (403, "42501")
        patched = rest(fake, "PATCH", f"{target}?id=eq.{KYOTO_TRIP}", {"id": KYOTO_TRIP})
        assert message_of(patched) == (403, "42501")


def test_a_project_can_hold_a_new_conversation() -> None:
    fake = FakeFlowith()
    body = {"project_id": SEED_PROJECTS[1], "is_absolute_mode": True, "user_id": fake.user_id}
    created = rest(
        fake, "POST", "conversation?select=project_id", body, prefer="return=representation"
    )
    assert created.json() == [{"project_id": SEED_PROJECTS[1]}]
    body["project_id"] = USER_NODE
    assert message_of(rest(fake, "POST", "conversation", body)) == (409, "23503")


def test_without_seed_rows_the_tables_start_empty() -> None:
    fake = FakeFlowith(seed_rows=False)
    for name in TABLES:
        assert rest(fake, "GET", f"{name}?select=*").json() == [], name
    assert fake.remaining_credits() == 1623.5  # credits are not rows


# -- RPCs -----------------------------------------------------------------------------------


def presence(session: str, **changes: Any) -> dict[str, Any]:
    body = {
        "p_browser": "Chrome",
        "p_current_path": "/",
        "p_device_type": "desktop",
        "p_is_idle": False,
        "p_locale": "en-US",
        "p_platform": "Linux",
        "p_session_id": session,
        "p_subscription_tier": "pro",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_online_sessions_are_counted() -> None:
    fake = FakeFlowith()
    count = "rpc/get_online_count"
    assert rest(fake, "POST", count, {}).json() == 0
    assert rest(fake, "POST", "rpc/upsert_online_session", presence("tab-1")).status == 204
    stranger = fake.issue_token(OTHER_USER_ID)
    upserted = rest(fake, "POST", "rpc/upsert_online_session", presence("tab-2"), token=stranger)
    assert upserted.status == 204
    response = rest(fake, "POST", count, {})
    assert (response.status, response.body) == (200, b"2")
    removed = rest(fake, "POST", "rpc/remove_online_session", {"p_session_id": "tab-1"})
    assert removed.status == 204
    assert rest(fake, "POST", count, {}).json() == 1
    assert rest(fake, "POST", count, {}, now=NOW + 301).json() == 0  # not refreshed: gone


@pytest.mark.parametrize(
    ("target", "body", "expected"),
    [
        ("rpc/upsert_online_session", presence("t", p_colour="red"), (404, "PGRST202")),
        ("rpc/upsert_online_session", presence("t", p_session_id=None), (404, "PGRST202")),
        ("rpc/upsert_online_session", presence("t", p_is_idle="maybe"), (400, "22P02")),
        ("rpc/remove_online_session", {}, (404, "PGRST202")),
        ("rpc/get_online_count", {"p_x": 1}, (404, "PGRST202")),
        ("rpc/no_such_function", {}, (404, "PGRST202")),
        ("rpc/get_online_count", [], (400, "PGRST102")),
    ],
)
def test_rpc_arguments_are_matched_like_postgrest(
    target: str, body: Any, expected: tuple[int, str]
) -> None:
    assert message_of(rest(FakeFlowith(), "POST", target, body)) == expected


def test_a_string_idle_flag_is_cast() -> None:
    fake = FakeFlowith()
    body = presence("tab", p_is_idle="true")
    assert rest(fake, "POST", "rpc/upsert_online_session", body).status == 204


# -- GoTrue ----------------------------------------------------------------------------------


def test_the_auth_user() -> None:
    fake = FakeFlowith()
    response = gotrue(fake, "GET", "user")
    assert response.status == 200
    user = response.json()
    assert (user["id"], user["app_metadata"]["provider"]) == (fake.user_id, "google")
    assert {"preferred_username", "avatar_url", "email"} <= set(user["user_metadata"])
    assert user["email"] == user["user_metadata"]["email"]
    no_key = call(fake, "GET", "/auth/v1/user", [("authorization", f"Bearer {fake.token}")])
    assert no_key.status == 401
    assert message_of(gotrue(fake, "GET", "user", token=None)) == (401, "no_authorization")
    assert message_of(gotrue(fake, "GET", "user", token="forged")) == (401, "bad_jwt")


def refresh(
    fake: FakeFlowith, token: str, *, api_version: bool = False, now: float = NOW
) -> FakeResponse:
    return gotrue(
        fake,
        "POST",
        "token?grant_type=refresh_token",
        {"refresh_token": token},
        token=None,
        api_version=api_version,
        now=now,
    )


def test_a_refresh_rotates_the_refresh_token() -> None:
    fake = FakeFlowith()
    assert fake.refresh_token == FAKE_REFRESH_TOKEN
    response = refresh(fake, fake.refresh_token)
    assert response.status == 200
    session = response.json()
    assert set(session) == {
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
        "user",
    }
    assert (session["token_type"], session["expires_in"]) == ("bearer", 3600)
    assert session["expires_at"] == int(NOW) + 3600
    assert session["refresh_token"] != fake.refresh_token
    assert session["user"]["id"] == fake.user_id
    access = session["access_token"]
    assert access != fake.token
    assert fake._claims(access)["exp"] == int(NOW) + 3600
    assert edge(fake, "GET", "/user/credit_type", token=access).status == 200
    assert rest(fake, "GET", "migration?select=version", token=access).status == 200
    assert gotrue(fake, "GET", "user", token=access).status == 200
    # The old access token still works until its exp, as GoTrue's JWTs do.
    assert rest(fake, "GET", "migration?select=version").status == 200
    # The new refresh token works once too.
    assert refresh(fake, session["refresh_token"], now=NOW + 60).status == 200
    assert edge(fake, "GET", "/user/credit_type", token=access, now=NOW + 3600).status == 401


def test_two_refreshes_within_a_second_issue_two_tokens() -> None:
    """Their claims were the same to the second, and so were the tokens: expiring the
    first with expire_token() expired the next one too."""
    fake = FakeFlowith()
    first = refresh(fake, fake.refresh_token).json()
    fake.expire_token(first["access_token"])
    second = refresh(fake, first["refresh_token"]).json()
    assert second["access_token"] != first["access_token"]
    assert edge(fake, "GET", "/user/credit_type", token=second["access_token"]).status == 200
    assert edge(fake, "GET", "/user/credit_type", token=first["access_token"]).status == 401


def test_a_used_or_unknown_refresh_token_is_refused() -> None:
    fake = FakeFlowith()
    assert refresh(fake, fake.refresh_token).status == 200
    reused = refresh(fake, fake.refresh_token)
    assert reused.status == 400
    assert reused.json() == {
        "code": 400,
        "error_code": "refresh_token_already_used",
        "msg": "Invalid Refresh Token: Already Used",
    }
    versioned = refresh(fake, fake.refresh_token, api_version=True)
    assert versioned.json() == {
        "code": "refresh_token_already_used",
        "message": "Invalid Refresh Token: Already Used",
    }
    assert versioned.header("x-supabase-api-version") == "2024-01-01"
    assert message_of(refresh(fake, "nonsense")) == (400, "refresh_token_not_found")


def test_the_token_endpoint_needs_only_the_apikey() -> None:
    fake = FakeFlowith()
    headers = [("Content-Type", "application/json")]
    body = json.dumps({"refresh_token": fake.refresh_token}).encode()
    target = "/auth/v1/token?grant_type=refresh_token"
    assert call(fake, "POST", target, headers, body).status == 401  # no apikey
    expired = fake.issue_token(expires_at=NOW - 10)
    with_old = [*headers, ("apikey", DEFAULT_SUPABASE_KEY), ("authorization", f"Bearer {expired}")]
    assert call(fake, "POST", target, with_old, body).status == 200  # Authorization is ignored
    no_grant = gotrue(fake, "POST", "token", {"refresh_token": "x"}, token=None)
    assert no_grant.json() == {"error": "unsupported_grant_type", "error_description": ""}
    empty = gotrue(fake, "POST", "token?grant_type=refresh_token", {}, token=None)
    assert (empty.status, empty.json()["error"]) == (400, "invalid_request")
    password = gotrue(
        fake, "POST", "token?grant_type=password", {"email": "a", "password": "b"}, token=None
    )
    assert message_of(password) == (400, "invalid_credentials")


def test_an_issued_refresh_token_starts_a_session() -> None:
    fake = FakeFlowith()
    token = fake.issue_refresh_token(OTHER_USER_ID)
    session = refresh(fake, token).json()
    assert session["user"]["id"] == OTHER_USER_ID
    assert fake._claims(session["access_token"])["sub"] == OTHER_USER_ID


@pytest.mark.parametrize("how", ["expire_token", "issue_token"])
def test_an_expired_token_is_401_on_every_host(how: str) -> None:
    fake = FakeFlowith()
    if how == "expire_token":
        token = fake.token
        fake.expire_token(token)
    else:
        token = fake.issue_token(expires_at=NOW - 1)
    assert edge(fake, "GET", "/user/credits", token=token).json() == {"message": "jwt expired"}
    assert edge(fake, "GET", "/user/credits", token=token).status == 401
    expired = rest(fake, "GET", "migration?select=version", token=token)
    assert (expired.status, expired.json()["code"], expired.json()["message"]) == (
        401,
        "PGRST303",
        "JWT expired",
    )
    assert message_of(gotrue(fake, "GET", "user", token=token)) == (401, "bad_jwt")
    assert gotrue(fake, "POST", "logout", token=token).status == 401


def test_a_local_logout_revokes_its_session() -> None:
    fake = FakeFlowith()
    second = refresh(fake, fake.issue_refresh_token()).json()
    assert gotrue(fake, "POST", "logout?scope=local").status == 204
    assert message_of(refresh(fake, fake.refresh_token)) == (400, "refresh_token_not_found")
    assert message_of(gotrue(fake, "GET", "user")) == (403, "session_not_found")
    # Stateless JWTs: the edge and PostgREST accept the token until its exp...
    assert rest(fake, "GET", "migration?select=version").status == 200
    assert edge(fake, "GET", "/user/credit_type").status == 200
    # ... unless the knob says logouts reach them too.
    fake.revoke_access_on_logout = True
    assert message_of(rest(fake, "GET", "migration?select=version")) == (401, "PGRST303")
    assert edge(fake, "GET", "/user/credit_type").status == 401
    # The other session lives on.
    assert gotrue(fake, "GET", "user", token=second["access_token"]).status == 200
    assert refresh(fake, second["refresh_token"]).status == 200


def test_global_and_others_logouts() -> None:
    fake = FakeFlowith()
    other_session = fake.issue_refresh_token()
    assert gotrue(fake, "POST", "logout?scope=others").status == 204
    assert message_of(refresh(fake, other_session)) == (400, "refresh_token_not_found")
    assert gotrue(fake, "GET", "user").status == 200
    third = fake.issue_refresh_token()
    assert gotrue(fake, "POST", "logout", {"scope": "local"}).status == 204  # body ignored: global
    assert message_of(refresh(fake, third)) == (400, "refresh_token_not_found")
    assert message_of(refresh(fake, fake.refresh_token)) == (400, "refresh_token_not_found")


def test_an_unknown_logout_scope_is_400() -> None:
    fake = FakeFlowith()
    response = gotrue(fake, "POST", "logout?scope=everywhere", api_version=True)
    assert response.json() == {
        "code": "validation_failed",
        "message": 'Unsupported logout scope "everywhere"',
    }
    assert refresh(fake, fake.refresh_token).status == 200


def test_unknown_auth_paths_are_404() -> None:
    assert gotrue(FakeFlowith(), "GET", "factors").status == 404


# -- on a real socket ----------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


FIFTY_MB = 50 * 1024 * 1024


@pytest.mark.anyio
async def test_a_50_mb_upload_and_its_download_through_the_server() -> None:
    fake = FakeFlowith()
    data = bytes(range(251)) * (FIFTY_MB // 251 + 1)
    data = data[:FIFTY_MB]
    body = form(file=data, filename="big.bin", content_type="application/octet-stream", kind="bin")
    headers = edge_headers(fake.token, f"multipart/form-data; boundary={BOUNDARY}")
    started = time.monotonic()
    async with FakeFlowithServer(fake) as server, httpx.AsyncClient(timeout=30) as client:
        assert fake.cdn_url == server.url
        response = await client.post(server.url + "/file/store", headers=headers, content=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["size"] == FIFTY_MB
        assert answer["url"] == f"{server.url}/f/{answer['url'].split('/')[-2]}/big.bin"
        received = bytearray()
        async with client.stream("GET", answer["url"]) as download:
            assert download.headers["content-length"] == str(FIFTY_MB)
            assert download.headers["content-type"] == "application/octet-stream"
            async for piece in download.aiter_raw():
                received += piece
        assert received == data
    assert time.monotonic() - started < 10  # linear: a quadratic copy would take minutes


@pytest.mark.anyio
async def test_a_generated_image_is_downloaded_from_the_server() -> None:
    fake = FakeFlowith()
    conv_id = image_ready(fake)
    async with FakeFlowithServer(fake) as server, httpx.AsyncClient(timeout=5) as client:
        headers = edge_headers(fake.token, "application/json")
        posted = await client.post(
            server.url + "/image_gen/async", headers=headers, json=image_body(conv_id)
        )
        assert posted.status_code == 200
        url = node_data(fake, AI_NODE)["value"]
        assert url == f"{server.url}/f/{AI_NODE}/image.png"
        picture = await client.get(url)
        assert picture.status_code == 200
        assert picture.content.startswith(b"\x89PNG")


def builder_body(request: Request) -> bytes:
    """A request's body as bytes; a multipart form is laid out in memory."""
    if isinstance(request.body, MultipartForm):
        return b"".join(
            s if isinstance(s, bytes) else (s.data or b"") for s in request.body.segments()
        )
    return request.body or b""


def test_every_endpoint_builder_gets_a_2xx() -> None:
    """Each request the core's ``Endpoints`` builds is accepted by the fake."""
    fake = FakeFlowith()
    e = Endpoints(
        FlowithConfig(edge_url="http://fake", supabase_url="http://fake"),
        Credentials.from_tokens(fake.token, refresh_token=fake.refresh_token),
    )

    def send(request: Request, *, now: float = NOW) -> FakeResponse | FakeStream:
        target = request.url.removeprefix("http://fake")
        result = fake.handle(
            request.method, target, request.headers, builder_body(request), now=now
        )
        assert 200 <= result.status < 300, (request, getattr(result, "body", None))
        return result

    created = send(e.create_conversation())
    assert isinstance(created, FakeResponse)
    conv_id = created.json()[0]["id"]
    at = Position(0, 130)
    send(
        e.create_user_node(
            node_id=USER_NODE,
            conv_id=conv_id,
            parent_id=conv_id,
            prompt="hi",
            timestamp=str(int(NOW)),
            position=at,
            children=[AI_NODE],
        )
    )
    send(
        e.create_ai_node(
            node_id=AI_NODE,
            conv_id=conv_id,
            parent_id=USER_NODE,
            data=dict(IMAGE_DATA),
            position=Position(0, 340),
        )
    )
    assert isinstance(send(e.user_stream()), FakeStream)
    assert isinstance(send(e.user_sse()), FakeStream)
    messages = [{"role": "user", "content": "a red fox"}]
    send(
        e.start_completion(
            model="gpt-4.1-nano", messages=messages, node_id=AI_NODE, conv_id=conv_id
        )
    )
    send(e.poll_node(AI_NODE))
    send(
        e.start_image(
            model="gemini-3.1-flash-image",
            messages=messages,
            node_id=AI_NODE,
            conv_id=conv_id,
            aspect_ratio="1:1",
            image_size="512",
            agent=True,
        )
    )
    send(
        e.start_video(
            node_id=VIDEO_NODE,
            model="seedance-2.0-fast",
            prompt="waves",
            image_url="",
            aspect_ratio="16:9",
            audio=True,
            resolution="480p",
            conv_id=conv_id,
            parent_node_id=USER_NODE,
            position=Position(0, 310),
        )
    )
    send(e.conversation_title(messages))
    form = upload_form(
        boundary="flowithBoundary",
        filename="a.png",
        content_type="image/png",
        size=3,
        file_type="png",
        data=b"abc",
    )
    stored = send(e.upload_file(form))
    assert isinstance(stored, FakeResponse)
    assert stored.json()["type"] == "png"
    for request in (
        e.credits(),
        e.credit_type(),
        e.cooperators(PRODUCT_LAUNCH),
        e.models(),
        e.templates(),
        e.templates(template_type="image"),
        e.discord_invite(),
        e.featurebase_status(),
        e.daily_rewards_status(),
        e.claim_daily_reward(),
        e.campaign_status("kling-video/v2.6/pro/text-to-video"),
        e.banana_campaign(),
        e.new_version_access(),
        e.enterprise_dashboard(),
        e.list_conversations(),
        e.list_conversations(project_id=SEED_PROJECTS[0], limit=5, offset=0),
        e.get_conversation(KYOTO_TRIP),
        e.rename_conversation(conv_id, "Renamed"),
        e.flow_nodes(KYOTO_TRIP),
        e.clear_children(USER_NODE),
        e.cooperate_rows(),
        e.cooperate_rows(conv_id=TEAM_WIKI),
        e.cooperate_rows(top_only=False),
        e.user_profile(),
        e.update_user_profile({"language": "fr"}),
        e.user_upload_records(),
        e.subscriptions(rfc1123(NOW)),
        e.public_notices(),
        e.flow_projects(),
        e.conv_novel_editor(QUARTERLY_REPORT),
        e.discuss(PRODUCT_LAUNCH),
        e.oracle_stream(QUARTERLY_REPORT),
        e.migration(),
        e.rpc("upsert_online_session", presence("tab-1")),
        e.rpc("get_online_count", {}),
        e.rpc("remove_online_session", {"p_session_id": "tab-1"}),
        e.auth_user(),
        e.delete_conversation(conv_id),
        e.refresh_session(fake.refresh_token),
        e.logout("local"),
    ):
        response = send(request)
        if request.method == "GET" and "/rest/v1/" in request.url:
            assert isinstance(response, FakeResponse)
            assert response.json(), request  # every read finds seeded rows
    assert fake.rows("flow_node")[USER_NODE]["c_ids"] == []  # clear_children took effect
