"""Image, video, title and upload operations, driven synchronously."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowith_proto.auth import Credentials
from flowith_proto.effects import NextEvent, Send, Subscribe
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    FileUploadError,
    GenerationError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
)
from flowith_proto.events import parse_event
from flowith_proto.generation import Conversation
from flowith_proto.media import generate_image, generate_title, generate_video
from flowith_proto.models import AspectRatio, ImageModel, VideoModel
from flowith_proto.request import MultipartForm, Request, Response
from flowith_proto.state import ClientState
from flowith_proto.uploads import upload
from tests.scripted import Script, json_response, uuid_n

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
CONV = "11111111-2222-4333-8444-555555555555"
SERVER_NODE = "77777777-6666-4555-8444-333333333333"


def state(**overrides: Any) -> ClientState:
    return ClientState(credentials=Credentials(access_token=TOKEN, user_id=USER), **overrides)


def rows_script() -> Script:
    script = Script()
    script.on(
        "POST", "/rest/v1/conversation", json_response(201, json.dumps([{"id": CONV}]).encode())
    )
    script.on("POST", "/rest/v1/flow_node", json_response(201))
    return script


def workflow(node: str, **fields: Any) -> Any:
    return parse_event({"type": "workflow_complete", "nodeId": node, "convId": CONV, **fields})


def test_image_subscribes_both_streams_before_starting() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b'{"status":"processing"}'))
    ai = uuid_n(2)
    script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/cat.png")])
    result = script.run(
        generate_image(
            state(),
            Conversation(),
            "a cat",
            model=ImageModel.GPT_IMAGE_1,
            aspect_ratio=AspectRatio.PORTRAIT,
            image_size="1k",
            agent=False,
        )
    )
    assert result.image is not None
    assert result.image.url == "https://cdn/x/cat.png"
    assert (result.model, result.node_id, result.conv_id) == ("gpt-image-1", ai, CONV)
    subscribe = next(e for e in script.effects if isinstance(e, Subscribe))
    assert subscribe.channels == ("stream", "sse")
    start = next(e for e in script.effects if isinstance(e, Send) and "image_gen" in e.request.url)
    assert script.effects.index(subscribe) < script.effects.index(start)
    assert start.request.json() == {
        "model": "gpt-image-1",
        "nodeId": ai,
        "convId": CONV,
        "messages": [{"role": "user", "content": "a cat"}],
        "aspect_ratio": "9:16",
        "image_size": "1k",
        "agent": False,
    }
    ai_row = script.requests[2].json()[0]
    assert ai_row["data"] == {
        "title": "AI",
        "value": "",
        "mode": "image_generation",
        "timestamp": "1779127457",
        "isImage": True,
        "model": "gpt-image-1",
        "status": "init",
        "ratio": "9:16",
        "resolution": "1k",
        "aspect_ratio": "9:16",
        "image_size": "1k",
        "agent": False,
    }


@pytest.mark.parametrize("node_data", [None, {}])
def test_an_empty_node_data_falls_back_to_data_for_the_url(node_data: Any) -> None:
    # The web app reads nodeData or data: an image was lost as "no images" before.
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    ai = uuid_n(2)
    url = "https://cdn.test/a.png"
    done = {"nodeId": ai, "convId": CONV, "status": "done", "nodeData": node_data}
    script.feed(ai, [parse_event({**done, "data": {"value": url}})])
    output = script.run(generate_image(state(), Conversation(), "x"))
    assert [image.url for image in output.images] == [url]


def test_failed_image_raises_with_the_servers_reason() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    ai = uuid_n(2)
    script.feed(
        ai,
        [
            workflow(
                ai, status="failed", result="", error="unsafe prompt", error_type="content_policy"
            )
        ],
    )
    with pytest.raises(GenerationError) as info:
        script.run(generate_image(state(), Conversation(), "x"))
    assert (info.value.error, info.value.error_type) == ("unsafe prompt", "content_policy")


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        ("Request blocked by content policy", ""),
        ("provider_error: upstream refused", "provider_error"),
    ],
)
def test_a_result_that_is_not_a_url_is_the_failure_it_reports(value: str, error_type: str) -> None:
    """Defect D4 for media: the row's text would have become the image's URL."""
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "completed", "value": value}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    with pytest.raises(GenerationError) as info:
        script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))
    assert (info.value.error, info.value.error_type) == (value, error_type)


@pytest.mark.parametrize("value", ["https://[::1/a.png", "https://cdn.test:abc/a.png"])
def test_a_result_url_no_client_can_fetch_is_a_failure_not_an_image(value: str) -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "completed", "value": value}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    with pytest.raises(GenerationError, match="is no usable URL"):
        script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))


@pytest.mark.parametrize("value", ["/f/abc/img.png", "//cdn.example/f/img.png", "https:///f/a.png"])
def test_a_result_url_without_a_host_is_said_so_and_no_failure_of_the_job(value: str) -> None:
    # A relative URL was taken for the failure's own text: "generation failed:
    # /f/abc/img.png", with a status of "failed" where the server said "completed".
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "completed", "value": value}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    with pytest.raises(GenerationError, match="is no usable URL") as info:
        script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))
    assert info.value.status == "completed"


def test_a_result_url_padded_with_spaces_is_the_url() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "completed", "value": " https://cdn/x.png\n"}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    result = script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))
    assert result.image is not None
    assert result.image.url == "https://cdn/x.png"


@pytest.mark.parametrize(
    ("kind", "options", "refused"),
    [
        ("image", {"aspect_ratio": ""}, "aspect_ratio"),
        ("image", {"image_size": " "}, "image_size"),
        ("video", {"aspect_ratio": ""}, "aspect_ratio"),
        ("video", {"resolution": ""}, "resolution"),
        ("video", {"image_url": "not a url"}, "image_url"),
        ("video", {"image_url": "ftp://cdn/frame.png"}, "image_url"),
    ],
)
def test_an_empty_setting_or_a_frame_that_is_no_url_is_refused_before_anything_is_sent(
    kind: str, options: dict[str, Any], refused: str
) -> None:
    # Accepted, the conversation and its rows were made, then the server refused
    # the job: a half-made conversation in the account, and a server's error.
    script = Script()
    make = generate_image if kind == "image" else generate_video
    with pytest.raises(ValidationError, match=rf"^{refused} "):
        script.run(make(state(), Conversation(), "x", **options))
    assert script.requests == []


def test_a_first_frame_given_as_a_data_url_is_sent() -> None:
    # The check that refuses a frame that is no URL must not refuse the frame itself.
    script = rows_script()
    ai = uuid_n(2)
    script.on("POST", "/video/async", json_response(200, json.dumps({"nodeId": ai}).encode()))
    script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/v.mp4")])
    frame = "data:image/png;base64,iVBORw0KGgo="
    script.run(generate_video(state(), Conversation(), "x", image_url=frame))
    sent = [r for r in script.requests if r.url.endswith("/video/async")]
    assert frame in sent[0].content.decode()


@pytest.mark.parametrize("kind", ["image", "video"])
def test_an_empty_model_is_the_default_as_for_text(kind: str) -> None:
    script = rows_script()
    ai = uuid_n(2)
    if kind == "image":
        script.on("POST", "/image_gen/async", json_response(200, b"{}"))
        script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/cat.png")])
        script.run(generate_image(state(), Conversation(), "x", model=""))
        sent = [r for r in script.requests if r.url.endswith("/image_gen/async")]
        assert json.loads(sent[0].content)["model"] == "gemini-3.1-flash-image"
    else:
        answer = json.dumps({"nodeId": ai}).encode()
        script.on("POST", "/video/async", json_response(200, answer))
        script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/v.mp4")])
        script.run(generate_video(state(), Conversation(), "x", model=""))
        sent = [r for r in script.requests if r.url.endswith("/video/async")]
        assert json.loads(sent[0].content)["model"] == "seedance-2.0-fast"


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize(
    "ending",
    [
        {"type": "complete"},
        {"status": "success"},
        {"type": "complete", "resultUrl": "", "nodeData": {"value": None}},
        "row",
    ],
)
def test_a_job_done_without_its_url_is_a_failure_not_an_empty_result(
    kind: str, ending: Any
) -> None:
    """A terminal event or a done row without a URL was a success with nothing to
    show: VideoOutput(video_url=''), an ImageOutput with no image. (A terminal event
    without one has the row read first, and the other stream given a moment.)"""
    script = rows_script()
    script.on("POST", f"/{'image_gen' if kind == 'image' else 'video'}/async", json_response(200))
    ai = uuid_n(2)
    rows = [{"data": {"status": "done", "value": ""}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    if ending != "row":
        script.feed(ai, [parse_event({"nodeId": ai, "convId": CONV, **ending})])
    conversation = Conversation()
    make = generate_image if kind == "image" else generate_video
    with pytest.raises(GenerationError, match=f"ended without its {kind}'s URL") as info:
        script.run(make(state(stall_interval=5.0), conversation, "x", timeout=60))
    assert info.value.node_id == ai
    assert conversation.turn == 0  # not counted, as any failed turn


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_start_answer_that_says_the_job_failed_fails_at_once(kind: str) -> None:
    """{"status": "error", "error": "insufficient credits"} was ignored: the call
    waited out its whole timeout, then said it did not finish in time."""
    script = rows_script()
    answer = json.dumps({"status": "error", "error": "insufficient credits"}).encode()
    path = "/image_gen/async" if kind == "image" else "/video/async"
    script.on("POST", path, json_response(200, answer))
    make = generate_image if kind == "image" else generate_video
    with pytest.raises(GenerationError) as info:
        script.run(make(state(), Conversation(), "x", timeout=60))
    assert (info.value.status, info.value.error) == ("error", "insufficient credits")
    assert script.clock == 1000.0  # no time spent waiting
    assert not any(isinstance(e, NextEvent) for e in script.effects)


def test_quiet_streams_make_the_image_wait_read_the_row() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "done", "value": "https://cdn/y.png", "model": "m"}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    result = script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))
    assert result.image is not None
    assert result.image.url == "https://cdn/y.png"
    waits = [e for e in script.effects if isinstance(e, NextEvent)]
    assert [w.deadline for w in waits] == [1005.0]


def test_a_failing_row_check_leaves_the_image_to_its_streams() -> None:
    """An image job is quiet for tens of seconds: its row check meeting a database
    blip that outlasted the call's retries failed an image that then came."""
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    unavailable = json_response(503, b'{"message": "database unavailable"}')
    ai = uuid_n(2)

    def last_unavailable(request: Request) -> Response:
        script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/cat.png")])
        return unavailable

    script.on("GET", "/rest/v1/flow_node", unavailable, unavailable, last_unavailable)
    result = script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=60))
    assert result.image is not None
    assert result.image.url == "https://cdn/x/cat.png"


def test_an_image_whose_row_checks_keep_failing_still_comes_by_its_stream() -> None:
    """An image job sends nothing for tens of seconds: its checks, failing through
    a database outage, ended the job after five, though its stream then brought it."""
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    unavailable = json_response(503, b'{"message": "database unavailable"}')
    ai = uuid_n(2)
    sent = [0]

    def failing(request: Request) -> Response:
        sent[0] += 1
        if sent[0] == 3 * 6:  # the sixth check's last try
            script.feed(ai, [workflow(ai, status="completed", result="https://cdn/x/cat.png")])
        return unavailable

    script.on("GET", "/rest/v1/flow_node", failing)
    result = script.run(generate_image(state(stall_interval=5.0), Conversation(), "x", timeout=120))
    assert result.image is not None
    assert result.image.url == "https://cdn/x/cat.png"


def test_an_image_whose_row_fails_until_the_deadline_names_the_failure() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    script.on("GET", "/rest/v1/flow_node", json_response(502, b"bad gateway"))
    with pytest.raises(TimeoutError, match="did not finish in time") as caught:
        script.run(generate_image(state(stall_interval=4.0), Conversation(), "x", timeout=10))
    cause = caught.value.__cause__
    assert isinstance(cause, APIError)
    assert cause.status_code == 502


def test_image_times_out_when_nothing_ever_finishes() -> None:
    script = rows_script()
    script.on("POST", "/image_gen/async", json_response(200, b"{}"))
    rows = [{"data": {"status": "init", "value": ""}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    with pytest.raises(TimeoutError, match="did not finish in time") as caught:
        script.run(generate_image(state(stall_interval=4.0), Conversation(), "x", timeout=10))
    assert script.clock == 1010.0
    assert caught.value.deadline_passed  # the call's own deadline ended it


def test_video_follows_the_node_id_the_server_picks() -> None:
    script = rows_script()
    script.on(
        "POST",
        "/video/async",
        json_response(200, json.dumps({"status": "processing", "nodeId": SERVER_NODE}).encode()),
    )
    local = uuid_n(2)
    script.feed(local, [workflow(SERVER_NODE, status="completed", result="https://cdn/v.mp4")])
    conversation = Conversation()
    result = script.run(
        generate_video(
            state(), conversation, "a cat on a beach", model=VideoModel.KLING, image_url="https://i"
        )
    )
    assert (result.video_url, result.node_id) == ("https://cdn/v.mp4", SERVER_NODE)
    assert script.aliases == {SERVER_NODE: local}
    assert conversation.last_ai_node_id == SERVER_NODE
    node_posts = [r for r in script.requests if r.url.split("?")[0].endswith("/flow_node")]
    assert len(node_posts) == 1  # only the user node: the server makes the video node
    start = next(r for r in script.requests if r.url.endswith("/video/async"))
    assert start.json() == {
        "nodeId": local,
        "model": "kling-video/v2.6/pro/text-to-video",
        "prompt": "a cat on a beach",
        "imageURL": "https://i",
        "aspect_ratio": "16:9",
        "audio": True,
        "resolution": "480p",
        "convId": CONV,
        "parentNodeId": uuid_n(1),
        "position": {"x": 0, "y": 310},
    }


def test_a_video_node_id_that_is_not_a_uuid_says_where_the_video_went() -> None:
    script = rows_script()
    script.on(
        "POST", "/video/async", json_response(200, json.dumps({"nodeId": "vid-42"}).encode())
    )
    with pytest.raises(ResponseDecodeError, match=f"'vid-42'.*in conversation {CONV}") as info:
        script.run(generate_video(state(), Conversation(), "a cat"))
    assert info.value.body == {"nodeId": "vid-42"}


def test_a_video_start_answered_with_no_json_says_where_the_video_may_be() -> None:
    # A bare "expected JSON" error, although the job may have started. The error
    # saying so kept the status of the one it stood for, not its endpoint.
    script = rows_script()
    script.on("POST", "/video/async", Response(200, (("content-type", "text/html"),), b"<html>"))
    with pytest.raises(ResponseDecodeError, match=f"'<html>'.*in conversation {CONV}") as info:
        script.run(generate_video(state(), Conversation(), "a cat"))
    error = info.value
    assert (error.status_code, error.endpoint, error.body) == (200, "POST /video/async", "<html>")


def test_video_waits_five_minutes_by_default() -> None:
    script = rows_script()
    script.on("POST", "/video/async", json_response(200, b""))
    rows = [{"data": {"status": "init"}, "type": "2"}]
    script.on("GET", "/rest/v1/flow_node", json_response(200, json.dumps(rows).encode()))
    with pytest.raises(TimeoutError):
        script.run(generate_video(state(stall_interval=100.0), Conversation(), "x"))
    assert script.clock == 1300.0


def test_title_is_the_plain_text_answer() -> None:
    script = Script()
    script.on("POST", "/completion/conversation-title", json_response(200, b"  Capital cities\n"))
    messages = [{"role": "user", "content": "What is the capital of Poland?"}]
    assert script.run(generate_title(state(), messages)) == "Capital cities"
    assert script.requests[0].json() == {"messages": messages}


@pytest.mark.parametrize(
    ("content_type", "body", "title"),
    [
        ("text/plain", b"Capital cities", "Capital cities"),
        ("application/json", b'"Capital cities"', "Capital cities"),
        ("text/plain", b"", ""),
        # Titles that read as JSON numbers or booleans were refused as not text.
        ("text/plain; charset=utf-8", b"2024", "2024"),
        ("text/plain", b"3.14\n", "3.14"),
        ("text/plain", b"true", "true"),
        # Declared plain text, a title is what it says, JSON-looking or not.
        ("text/plain", b"null", "null"),
        ("text/plain", b"[1, 2]", "[1, 2]"),
        # In the charset declared ("Caf\ufffd \ufffd Paris" before); an unknown one,
        # or one that is no text encoding, reads as UTF-8.
        ("text/plain; charset=iso-8859-1", "Café à Paris".encode("latin-1"), "Café à Paris"),
        ('text/plain; charset="windows-1252"', "Café".encode("cp1252"), "Café"),
        ("text/plain; charset=no-such-thing", "Café".encode(), "Café"),
        ("text/plain; charset=base64", "Café".encode(), "Café"),
        # Codecs that refuse errors="replace", or everything: a bare UnicodeError.
        ("text/plain; charset=idna", "Café".encode(), "Café"),
        ("text/plain; charset=undefined", "Café".encode(), "Café"),
        # Declared plain text, markup is the title as written.
        ("text/plain", b"<html> tips", "<html> tips"),
    ],
)
def test_a_title_in_plain_text_or_a_json_string(
    content_type: str, body: bytes, title: str
) -> None:
    script = Script()
    script.on(
        "POST",
        "/completion/conversation-title",
        Response(200, (("content-type", content_type),), body),
    )
    assert script.run(generate_title(state(), [])) == title


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html>Bad gateway</html>"),
        # A gateway's page declared as something else, or not at all, was the title.
        ("application/xhtml+xml", b"<html><body>Bad gateway</body></html>"),
        ("", b"<!DOCTYPE html>\n<html>Bad gateway</html>"),
        ("application/octet-stream", b"  <HTML>Bad gateway</HTML>"),
        # JSON cut short was the title, braces and all.
        ("application/json", b'{"title": "Trip to Par'),
        ("application/problem+json", b'{"title": "Trip'),
        ("application/json", b"null"),
        ("", b"{}"),
        ("application/json", b"[1, 2]"),
    ],
)
def test_an_answer_that_is_no_title_is_a_decode_error(content_type: str, body: bytes) -> None:
    script = Script()
    script.on(
        "POST",
        "/completion/conversation-title",
        Response(200, (("content-type", content_type),), body),
    )
    with pytest.raises(ResponseDecodeError, match="generate_title"):
        script.run(generate_title(state(), []))


def test_upload_sends_a_streamable_form_and_returns_the_record() -> None:
    script = Script()
    answer = {"url": "https://r2-bucket.flowith.net/f/abc/game.html", "size": 5}
    script.on("POST", "/file/store", json_response(200, json.dumps(answer).encode()))
    record = script.run(upload(state(), size=12, file_path="/tmp/game.html"))
    assert (record.url, record.file_type) == (answer["url"], "html")
    form = script.requests[0].body
    assert isinstance(form, MultipartForm)
    assert [f.filename for f in form.files] == ["game.html"]
    assert form.files[0].path == "/tmp/game.html"
    assert form.files[0].data is None  # streamed by the transport, never read here
    assert ("type", "html") in form.fields


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b'{"message": "disk full"}', FileUploadError),
        (200, b'{"nourl": true}', FileUploadError),
        (401, b'{"message": "expired"}', AuthenticationError),
    ],
)
def test_upload_failures(status: int, body: bytes, error: type[Exception]) -> None:
    script = Script()
    script.on("POST", "/file/store", json_response(status, body))
    with pytest.raises(error):
        script.run(upload(state(), size=3, data=b"abc", filename="a.txt"))


@pytest.mark.parametrize(
    "url", ["   ", "javascript:alert(1)", "/f/relative.txt", "https://cdn/x\n.txt", "not a url"]
)
def test_an_upload_answered_with_no_usable_url_fails_there(url: str) -> None:
    """Any non-empty text was returned as the record's URL, to fail later in the
    generation it was handed to."""
    script = Script()
    script.on("POST", "/file/store", json_response(200, json.dumps({"url": url}).encode()))
    with pytest.raises(FileUploadError, match="is no usable URL") as info:
        script.run(upload(state(), size=3, data=b"abc", filename="a.txt"))
    assert info.value.status_code == 200


def test_upload_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one of file_path or data") as info:
        Script().run(upload(state(), size=0))
    assert info.value.status_code is None
