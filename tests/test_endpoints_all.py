"""Every endpoint's request, compared with literal values from the fact sheet.

Expected URLs, headers and bodies are copied by hand from protocol.md
(sections 1.4, 2.1 to 2.7, 3.2, 3.3) and from docs/protocol-decisions.md where
this client deliberately differs from the old one; none is produced by the
builders or by the encoding helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flowith_proto.auth import Credentials
from flowith_proto.config import EdgeAuth, FlowithConfig
from flowith_proto.endpoints import Endpoints, Position, guess_upload_meta, upload_form
from flowith_proto.errors import AuthenticationError, ValidationError
from flowith_proto.request import FilePart, MultipartForm, Request

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
REFRESH = "rt-v1-Zk3mQ9x"
USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
OTHER_USER = "0b0b0b0b-1c1c-4d2d-8e3e-4f4f4f4f4f4f"
CONV = "11111111-2222-4333-8444-555555555555"
PROJECT = "77777777-6666-4555-8444-333333333333"
USER_NODE = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
AI_NODE = "99999999-8888-4777-8666-555555555555"
EDGE = "https://edge.flowith.io"
SB = "https://aibdxsebwhalbnugsqel.supabase.co"
REST = f"{SB}/rest/v1"
KEY = "sb_publishable_qPCinc8LE8ChpdT7Pf79tQ_eryz5udr"
ACCEPT = "application/json, text/plain, */*"
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/148.0.0.0 Safari/537.36"
)
BROWSER = [("User-Agent", UA), ("Origin", "https://flowith.io"), ("Referer", "https://flowith.io/")]

EDGE_GET = [("Accept", ACCEPT), ("authorization", TOKEN), *BROWSER]
EDGE_JSON = [
    ("Accept", ACCEPT),
    ("Content-Type", "application/json"),
    ("authorization", TOKEN),
    *BROWSER,
]
REST_READ = [
    ("Accept", ACCEPT),
    *BROWSER,
    ("apikey", KEY),
    ("authorization", f"Bearer {TOKEN}"),
    ("accept-profile", "public"),
    ("x-client-info", "supabase-js-web/2.91.0"),
]
REST_RETURN_ROWS = [
    ("Accept", ACCEPT),
    *BROWSER,
    ("apikey", KEY),
    ("authorization", f"Bearer {TOKEN}"),
    ("Content-Profile", "public"),
    ("Content-Type", "application/json"),
    ("Prefer", "return=representation"),
    ("x-client-info", "supabase-js-web/2.91.0"),
]
REST_RPC = [
    ("Accept", ACCEPT),
    *BROWSER,
    ("apikey", KEY),
    ("authorization", f"Bearer {TOKEN}"),
    ("Content-Profile", "public"),
    ("Content-Type", "application/json"),
    ("x-client-info", "supabase-js-web/2.91.0"),
]
AUTH_WITH_TOKEN = [
    ("Accept", ACCEPT),
    ("apikey", KEY),
    ("authorization", f"Bearer {TOKEN}"),
    ("x-supabase-api-version", "2024-01-01"),
    *BROWSER,
]
AUTH_REFRESH = [
    ("Accept", ACCEPT),
    ("apikey", KEY),
    ("Content-Type", "application/json"),
    ("x-supabase-api-version", "2024-01-01"),
    *BROWSER,
]

# Ids a caller might pass that must never reach a filter or a query.
HOSTILE_IDS = [
    f"{CONV}&select=*",
    f"{CONV},id.neq.x",
    "x) or (1=1",
    f"{CONV} ",
    "../../etc/passwd",
    "%2e%2e%2f",
    f"{CONV}%26limit=1",
    "",
]


@pytest.fixture
def endpoints() -> Endpoints:
    return Endpoints(FlowithConfig(), Credentials(access_token=TOKEN, user_id=USER))


def no_user_id() -> Endpoints:
    return Endpoints(FlowithConfig(), Credentials(access_token=TOKEN))


# -- edge: generation (2.1, 3.2, 3.3) -----------------------------------------


def test_start_image(endpoints: Endpoints) -> None:
    request = endpoints.start_image(
        model="gemini-3.1-flash-image",
        messages=[{"role": "user", "content": "a red fox"}],
        node_id=AI_NODE,
        conv_id=CONV,
        aspect_ratio="1:1",
        image_size="512",
        agent=False,
    )
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/image_gen/async"
    assert list(request.headers) == EDGE_JSON
    # The exact bytes: the keys in the order of protocol.md 2.1; the caller's
    # agent value, not a forced true (decisions doc, 3.2).
    assert request.body == (
        b'{"model":"gemini-3.1-flash-image",'
        b'"nodeId":"99999999-8888-4777-8666-555555555555",'
        b'"convId":"11111111-2222-4333-8444-555555555555",'
        b'"messages":[{"role":"user","content":"a red fox"}],'
        b'"aspect_ratio":"1:1","image_size":"512","agent":false}'
    )
    assert not request.idempotent
    assert not request.stream


def test_start_video(endpoints: Endpoints) -> None:
    request = endpoints.start_video(
        node_id=AI_NODE,
        model="seedance-2.0-fast",
        prompt="waves at dusk",
        image_url="",
        aspect_ratio="16:9",
        audio=True,
        resolution="480p",
        conv_id=CONV,
        parent_node_id=USER_NODE,
        position=Position(0, 310),
    )
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/video/async"
    assert list(request.headers) == EDGE_JSON
    assert request.body == (
        b'{"nodeId":"99999999-8888-4777-8666-555555555555",'
        b'"model":"seedance-2.0-fast","prompt":"waves at dusk","imageURL":"",'
        b'"aspect_ratio":"16:9","audio":true,"resolution":"480p",'
        b'"convId":"11111111-2222-4333-8444-555555555555",'
        b'"parentNodeId":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",'
        b'"position":{"x":0,"y":310}}'
    )
    assert not request.idempotent


def test_conversation_title_is_json_labelled_text(endpoints: Endpoints) -> None:
    request = endpoints.conversation_title(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    )
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/completion/conversation-title"
    assert list(request.headers) == [
        ("Accept", ACCEPT),
        ("Content-Type", "text/plain;charset=UTF-8"),
        ("authorization", TOKEN),
        *BROWSER,
    ]
    assert request.body == (
        b'{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}'
    )


# -- edge: upload (2.1) ---------------------------------------------------------

SMALL_FORM_BYTES = (
    b"--xYzBoundary123\r\n"
    b'Content-Disposition: form-data; name="type"\r\n'
    b"\r\n"
    b"txt\r\n"
    b"--xYzBoundary123\r\n"
    b'Content-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"hello\n"
    b"\r\n"
    b"--xYzBoundary123--\r\n"
)


def joined(form: MultipartForm) -> bytes:
    out = b""
    for segment in form.segments():
        if isinstance(segment, FilePart):
            assert segment.data is not None
            out += segment.data
        else:
            out += segment
    return out


def test_upload_form_bytes_for_a_small_file() -> None:
    form = upload_form(
        boundary="xYzBoundary123",
        filename="notes.txt",
        content_type="text/plain",
        size=6,
        file_type="txt",
        data=b"hello\n",
    )
    assert form.content_type == "multipart/form-data; boundary=xYzBoundary123"
    assert joined(form) == SMALL_FORM_BYTES
    assert form.length == len(SMALL_FORM_BYTES)


def test_upload_form_from_a_path_streams_the_file() -> None:
    form = upload_form(
        boundary="b0undary",
        filename="big.mp4",
        content_type="video/mp4",
        size=50_000_000,
        file_type="mp4",
        path="/videos/big.mp4",
    )
    segments = form.segments()
    assert (
        segments[0] == b'--b0undary\r\nContent-Disposition: form-data; name="type"\r\n\r\nmp4\r\n'
    )
    assert segments[1] == (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n"
    )
    assert segments[2] == FilePart(
        name="file",
        filename="big.mp4",
        content_type="video/mp4",
        size=50_000_000,
        path="/videos/big.mp4",
    )
    assert segments[3:] == [b"\r\n", b"--b0undary--\r\n"]
    framing = len(segments[0]) + len(segments[1]) + 2 + len(b"--b0undary--\r\n")
    assert form.length == framing + 50_000_000


def test_upload_file(endpoints: Endpoints) -> None:
    form = upload_form(
        boundary="xYzBoundary123",
        filename="notes.txt",
        content_type="text/plain",
        size=6,
        file_type="txt",
        data=b"hello\n",
    )
    request = endpoints.upload_file(form)
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/file/store"
    assert list(request.headers) == [
        ("Accept", ACCEPT),
        ("Content-Type", "multipart/form-data; boundary=xYzBoundary123"),
        ("authorization", TOKEN),
        *BROWSER,
    ]
    assert request.body is form
    assert not request.idempotent
    assert repr(request) == (
        "Request('POST', 'https://edge.flowith.io/file/store', headers={Accept: "
        f"{ACCEPT}, Content-Type: multipart/form-data; boundary=xYzBoundary123, "
        f"authorization: [REDACTED], User-Agent: {UA}, Origin: https://flowith.io, "
        f"Referer: https://flowith.io/}}, body=<multipart, {len(SMALL_FORM_BYTES)} bytes>)"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"boundary": "a\r\nX-Evil: 1"}, "boundary"),
        ({"boundary": "with space"}, "boundary"),
        ({"boundary": ""}, "boundary"),
        ({"boundary": "x" * 71}, "boundary"),
        ({"boundary": 'q"uote'}, "boundary"),
        ({"path": "/tmp/x.txt"}, "exactly one"),
        ({"data": None}, "exactly one"),
        ({"data": "hello\n"}, r"data must be bytes, not str \(encode the text first\)"),
        ({"data": bytearray(b"hello\n")}, "data must be bytes, not bytearray"),
        ({"size": 5}, "size"),
        ({"size": -1}, "size"),
        ({"content_type": "text/plain\r\nX-Evil: 1"}, "content_type"),
        ({"content_type": ""}, "content_type"),
        ({"file_type": "txt\r\n--xYzBoundary123"}, "file_type"),
    ],
)
def test_upload_form_refuses_bad_arguments(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "boundary": "xYzBoundary123",
        "filename": "notes.txt",
        "content_type": "text/plain",
        "size": 6,
        "file_type": "txt",
        "data": b"hello\n",
    }
    arguments.update(changes)
    with pytest.raises(ValidationError, match=message):
        upload_form(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("file_path", "filename", "mime_type", "file_type", "expected"),
    [
        ("/tmp/photo.png", "", None, None, ("photo.png", "image/png", "png")),
        # The path decides type and MIME type; an explicit filename is still announced.
        ("/tmp/photo.png", "holiday.jpeg", None, None, ("holiday.jpeg", "image/png", "png")),
        # A path without a suffix: the filename's text after its last dot.
        ("/tmp/blob", "notes.txt", None, None, ("notes.txt", "text/plain", "txt")),
        ("/data/README", "", None, None, ("README", "application/octet-stream", "bin")),
        (None, "report.final.PDF", None, None, ("report.final.PDF", "application/pdf", "PDF")),
        (None, "file", None, None, ("file", "application/octet-stream", "bin")),
        (None, "", None, None, ("file", "application/octet-stream", "bin")),
        (None, "trailing.", None, None, ("trailing.", "application/octet-stream", "bin")),
        (None, ".env", None, None, (".env", "application/octet-stream", "env")),
        (None, "x.zzqx", None, None, ("x.zzqx", "application/octet-stream", "zzqx")),
        (None, "a.bin", "application/zip", "zip", ("a.bin", "application/zip", "zip")),
        # Compressed: the bytes are the compressor's, not the CSV's or the tarball's.
        ("/tmp/data.csv.gz", "", None, None, ("data.csv.gz", "application/gzip", "gz")),
        (None, "x.tar.gz", None, None, ("x.tar.gz", "application/gzip", "gz")),
        (None, "a.svgz", None, None, ("a.svgz", "application/gzip", "svgz")),
        (None, "a.txt.bz2", None, None, ("a.txt.bz2", "application/x-bzip2", "bz2")),
    ],
)
def test_guess_upload_meta(
    file_path: str | None,
    filename: str,
    mime_type: str | None,
    file_type: str | None,
    expected: tuple[str, str, str],
) -> None:
    assert guess_upload_meta(file_path, filename, mime_type, file_type) == expected


# -- edge: account and misc (2.3) -----------------------------------------------

EDGE_GETS: list[tuple[str, Callable[[Endpoints], Request], str]] = [
    ("credits", lambda e: e.credits(), "https://edge.flowith.io/user/credits"),
    ("credit_type", lambda e: e.credit_type(), "https://edge.flowith.io/user/credit_type"),
    (
        "cooperators",
        lambda e: e.cooperators(CONV),
        "https://edge.flowith.io/cooperate/list?conv_id=11111111-2222-4333-8444-555555555555",
    ),
    ("models", lambda e: e.models(), "https://edge.flowith.io/models?logo=1&desc=1"),
    (
        "models-flags",
        lambda e: e.models(logo=False, desc=True),
        "https://edge.flowith.io/models?logo=0&desc=1",
    ),
    (
        "models-no-desc",
        lambda e: e.models(logo=True, desc=False),
        "https://edge.flowith.io/models?logo=1&desc=0",
    ),
    ("templates", lambda e: e.templates(), "https://edge.flowith.io/templates?page_size=1000"),
    (
        "templates-typed",
        lambda e: e.templates(template_type="image", page_size=50),
        "https://edge.flowith.io/templates?page_size=50&type=image",
    ),
    (
        "discord_invite",
        lambda e: e.discord_invite(),
        "https://edge.flowith.io/discord/invite-link",
    ),
    (
        "featurebase_status",
        lambda e: e.featurebase_status(),
        "https://edge.flowith.io/featurebase/status",
    ),
    (
        "daily_rewards_status",
        lambda e: e.daily_rewards_status(),
        "https://edge.flowith.io/mkt/daily-rewards/status",
    ),
    (
        "campaign_status",
        lambda e: e.campaign_status("gemini-3.1-flash-image"),
        "https://edge.flowith.io/user/campaigns/effective-status?model_id=gemini-3.1-flash-image",
    ),
    (
        "campaign_status-slash",
        lambda e: e.campaign_status("google/gemini-3-pro"),
        "https://edge.flowith.io/user/campaigns/effective-status?model_id=google%2Fgemini-3-pro",
    ),
    (
        "banana_campaign",
        lambda e: e.banana_campaign(),
        "https://edge.flowith.io/mkt/banana-2025/check",
    ),
    (
        "new_version_access",
        lambda e: e.new_version_access(),
        "https://edge.flowith.io/invitation/access-new-version",
    ),
    (
        "enterprise_dashboard",
        lambda e: e.enterprise_dashboard(),
        "https://edge.flowith.io/enterprise/dashboard/me",
    ),
]


@pytest.mark.parametrize(
    ("build", "url"), [(b, u) for _, b, u in EDGE_GETS], ids=[n for n, _, _ in EDGE_GETS]
)
def test_edge_gets(endpoints: Endpoints, build: Callable[[Endpoints], Request], url: str) -> None:
    request = build(endpoints)
    assert request.method == "GET"
    assert request.url == url
    # D26: a GET names no content type.
    assert list(request.headers) == EDGE_GET
    assert request.body is None
    assert request.idempotent
    assert not request.stream


def test_claim_daily_reward(endpoints: Endpoints) -> None:
    request = endpoints.claim_daily_reward()
    assert request.method == "POST"
    assert request.url == "https://edge.flowith.io/mkt/daily-rewards/claim"
    assert list(request.headers) == EDGE_JSON
    assert request.body == b"{}"
    assert not request.idempotent


def test_bearer_scheme_reaches_every_edge_builder() -> None:
    endpoints = Endpoints(
        FlowithConfig(edge_auth=EdgeAuth.BEARER), Credentials(access_token=TOKEN, user_id=USER)
    )
    assert list(endpoints.credits().headers) == [
        ("Accept", ACCEPT),
        ("authorization", f"Bearer {TOKEN}"),
        *BROWSER,
    ]
    assert endpoints.claim_daily_reward().header("authorization") == f"Bearer {TOKEN}"


def test_edge_host_is_configurable() -> None:
    endpoints = Endpoints(
        FlowithConfig(edge_url="https://edge.flowith.net"),
        Credentials(access_token=TOKEN, user_id=USER),
    )
    assert endpoints.credits().url == "https://edge.flowith.net/user/credits"


@pytest.mark.parametrize(
    ("model_id", "url"),
    [
        (
            "gpt&model_id=free",
            "https://edge.flowith.io/user/campaigns/effective-status?model_id=gpt%26model_id%3Dfree",
        ),
        (
            "a b#frag",
            "https://edge.flowith.io/user/campaigns/effective-status?model_id=a%20b%23frag",
        ),
        (
            "../../admin",
            "https://edge.flowith.io/user/campaigns/effective-status?model_id=..%2F..%2Fadmin",
        ),
        (
            "100%,(x)",
            "https://edge.flowith.io/user/campaigns/effective-status?model_id=100%25%2C%28x%29",
        ),
    ],
)
def test_model_id_cannot_add_a_parameter(endpoints: Endpoints, model_id: str, url: str) -> None:
    assert endpoints.campaign_status(model_id).url == url


@pytest.mark.parametrize("model_id", ["", "gpt\r\nX-Evil: 1"])
def test_model_id_must_be_plain_text(endpoints: Endpoints, model_id: str) -> None:
    with pytest.raises(ValidationError, match="model_id"):
        endpoints.campaign_status(model_id)


@pytest.mark.parametrize(
    ("template_type", "url"),
    [
        (
            "image&page_size=1",
            "https://edge.flowith.io/templates?page_size=1000&type=image%26page_size%3D1",
        ),
        ("a b,(c)", "https://edge.flowith.io/templates?page_size=1000&type=a%20b%2C%28c%29"),
        ("%26", "https://edge.flowith.io/templates?page_size=1000&type=%2526"),
        ("", "https://edge.flowith.io/templates?page_size=1000"),  # every type
    ],
)
def test_template_type_cannot_add_a_parameter(
    endpoints: Endpoints, template_type: str, url: str
) -> None:
    assert endpoints.templates(template_type=template_type).url == url


@pytest.mark.parametrize("page_size", [0, -1, True, "10", 2.5])
def test_page_size_must_be_a_positive_int(endpoints: Endpoints, page_size: object) -> None:
    with pytest.raises(ValidationError, match="page_size"):
        endpoints.templates(page_size=page_size)  # type: ignore[arg-type]


# -- PostgREST tables (2.4) --------------------------------------------------------

REST_GETS: list[tuple[str, Callable[[Endpoints], Request], str]] = [
    (
        "list_conversations",
        lambda e: e.list_conversations(),
        f"{REST}/conversation?select=*&user_id=eq.{USER}&is_delete=neq.true"
        "&project_id=is.null&order=updated_at.desc&offset=0&limit=20",
    ),
    (
        "list_conversations-project",
        lambda e: e.list_conversations(limit=5, offset=40, project_id=PROJECT),
        f"{REST}/conversation?select=*&user_id=eq.{USER}&is_delete=neq.true"
        f"&project_id=eq.{PROJECT}&order=updated_at.desc&offset=40&limit=5",
    ),
    (
        "get_conversation",
        lambda e: e.get_conversation(CONV),
        f"{REST}/conversation?select=*&id=eq.{CONV}",
    ),
    (
        "flow_nodes",
        lambda e: e.flow_nodes(CONV),
        f"{REST}/flow_node?select=*&conv_id=eq.{CONV}&is_delete=neq.true&order=created_at.asc",
    ),
    (
        "cooperate_rows",
        lambda e: e.cooperate_rows(),
        f"{REST}/cooperate?select=*,conv_id(*)&user_id=eq.{USER}"
        "&conv_id=not.is.null&conv_id.is_delete=not.eq.true"
        "&top=not.eq.true&conv_id.metadata-%3E%3Emember_count=not.eq.1",
    ),
    (
        "cooperate_rows-conv",
        lambda e: e.cooperate_rows(conv_id=CONV, top_only=False),
        f"{REST}/cooperate?select=*,conv_id(*)&user_id=eq.{USER}&conv_id=eq.{CONV}",
    ),
    (
        "cooperate_rows-other-user",
        lambda e: e.cooperate_rows(user_id=OTHER_USER, conv_id=CONV),
        f"{REST}/cooperate?select=*,conv_id(*)&user_id=eq.{OTHER_USER}&conv_id=eq.{CONV}"
        "&top=not.eq.true&conv_id.metadata-%3E%3Emember_count=not.eq.1",
    ),
    (
        "user_profile",
        lambda e: e.user_profile(),
        f"{REST}/user_profile?select=*&id=eq.{USER}",
    ),
    (
        "user_profile-other",
        lambda e: e.user_profile(OTHER_USER),
        f"{REST}/user_profile?select=*&id=eq.{OTHER_USER}",
    ),
    (
        "user_upload_records",
        lambda e: e.user_upload_records(),
        f"{REST}/user_upload_records?select=id,user_id,conv_id,value,name,type,created_at"
        f"&user_id=eq.{USER}&order=created_at.desc,id.desc&offset=0&limit=12",
    ),
    (
        "user_upload_records-paged",
        lambda e: e.user_upload_records(user_id=OTHER_USER, limit=0, offset=24),
        f"{REST}/user_upload_records?select=id,user_id,conv_id,value,name,type,created_at"
        f"&user_id=eq.{OTHER_USER}&order=created_at.desc,id.desc&offset=24&limit=0",
    ),
    (
        "subscriptions",
        lambda e: e.subscriptions("Mon, 18 May 2026 18:04:25 GMT"),
        f"{REST}/subscription_user_own?select=id,months,from_date,to_date,remain_quota,"
        "subscription_type(id,quota)&order=to_date.desc"
        "&from_date=lt.Mon%2C%2018%20May%202026%2018%3A04%3A25%20GMT"
        "&to_date=gt.Mon%2C%2018%20May%202026%2018%3A04%3A25%20GMT",
    ),
    ("public_notices", lambda e: e.public_notices(), f"{REST}/public_notice?select=*"),
    (
        "flow_projects",
        lambda e: e.flow_projects(),
        f"{REST}/flow_project?select=*&order=updated_at.desc",
    ),
    (
        "conv_novel_editor",
        lambda e: e.conv_novel_editor(CONV),
        f"{REST}/conv_novel_editor?select=*&conv_id=eq.{CONV}",
    ),
    ("discuss", lambda e: e.discuss(CONV), f"{REST}/discuss?select=*&conv_id=eq.{CONV}"),
    (
        "oracle_stream",
        lambda e: e.oracle_stream(CONV),
        f"{REST}/oracle_stream?select=id,requirement,workflow,no_need_replan,is_stop,"
        f"is_public,user_confirm,is_delete&conv_id=eq.{CONV}",
    ),
    ("migration", lambda e: e.migration(), f"{REST}/migration?select=version"),
]


@pytest.mark.parametrize(
    ("build", "url"), [(b, u) for _, b, u in REST_GETS], ids=[n for n, _, _ in REST_GETS]
)
def test_postgrest_reads(
    endpoints: Endpoints, build: Callable[[Endpoints], Request], url: str
) -> None:
    request = build(endpoints)
    assert request.method == "GET"
    assert request.url == url
    assert list(request.headers) == REST_READ
    assert request.body is None
    assert request.idempotent


def test_rename_conversation_is_an_update(endpoints: Endpoints) -> None:
    # D18: the old client POSTed an insert; the decisions doc says PATCH with the row back.
    request = endpoints.rename_conversation(CONV, 'Trip "plans" & notes')
    assert request.method == "PATCH"
    assert request.url == f"{REST}/conversation?id=eq.{CONV}&select=*"
    assert list(request.headers) == REST_RETURN_ROWS
    assert request.body == b'{"title":"Trip \\"plans\\" & notes"}'
    assert not request.idempotent


def test_update_user_profile(endpoints: Endpoints) -> None:
    request = endpoints.update_user_profile({"language": "pl", "nick_name": "Ada"})
    assert request.method == "PATCH"
    assert request.url == f"{REST}/user_profile?id=eq.{USER}&select=*"
    assert list(request.headers) == REST_RETURN_ROWS
    assert request.body == b'{"language":"pl","nick_name":"Ada"}'


def test_update_other_user_profile(endpoints: Endpoints) -> None:
    request = endpoints.update_user_profile({"language": "en"}, OTHER_USER)
    assert request.url == f"{REST}/user_profile?id=eq.{OTHER_USER}&select=*"


@pytest.mark.parametrize(
    "field", ["", "language,id", "metadata->>x", "x y", "1abc", "a.b", "ład", "id=eq.1&x"]
)
def test_profile_field_names_must_be_identifiers(endpoints: Endpoints, field: str) -> None:
    with pytest.raises(ValidationError, match="field name"):
        endpoints.update_user_profile({field: "x"})


def test_cooperate_rows_without_a_user_id_omits_the_filter() -> None:
    request = no_user_id().cooperate_rows()
    assert request.url == (
        f"{REST}/cooperate?select=*,conv_id(*)"
        "&conv_id=not.is.null&conv_id.is_delete=not.eq.true"
        "&top=not.eq.true&conv_id.metadata-%3E%3Emember_count=not.eq.1"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda e: e.list_conversations(),
        lambda e: e.user_profile(),
        lambda e: e.update_user_profile({"language": "pl"}),
        lambda e: e.user_upload_records(),
    ],
)
def test_own_user_id_is_required(build: Callable[[Endpoints], Request]) -> None:
    with pytest.raises(AuthenticationError, match="No user id"):
        build(no_user_id())


def test_ids_are_normalised_to_lower_case(endpoints: Endpoints) -> None:
    request = endpoints.get_conversation(CONV.upper())
    assert request.url == f"{REST}/conversation?select=*&id=eq.{CONV}"


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("limit", lambda e: e.list_conversations(limit=-1)),
        ("offset", lambda e: e.list_conversations(offset=-20)),
        ("limit", lambda e: e.list_conversations(limit=True)),
        ("limit", lambda e: e.list_conversations(limit="20&select=*")),
        ("offset", lambda e: e.list_conversations(offset=1.5)),
        ("limit", lambda e: e.user_upload_records(limit=-12)),
        ("offset", lambda e: e.user_upload_records(offset="0")),
    ],
)
def test_limits_and_offsets_are_non_negative_ints(
    endpoints: Endpoints, name: str, build: Callable[[Endpoints], Request]
) -> None:
    with pytest.raises(ValidationError, match=name):
        build(endpoints)


def image(e: Endpoints, *, node_id: str = AI_NODE, conv_id: str = CONV) -> Request:
    return e.start_image(
        model="m",
        messages=[],
        node_id=node_id,
        conv_id=conv_id,
        aspect_ratio="1:1",
        image_size="512",
        agent=True,
    )


def video(
    e: Endpoints, *, node_id: str = AI_NODE, conv_id: str = CONV, parent: str = USER_NODE
) -> Request:
    return e.start_video(
        node_id=node_id,
        model="m",
        prompt="p",
        image_url="",
        aspect_ratio="16:9",
        audio=True,
        resolution="480p",
        conv_id=conv_id,
        parent_node_id=parent,
        position=Position(0, 310),
    )


UUID_BUILDERS: list[tuple[str, str, Callable[[Endpoints, str], object]]] = [
    ("start_image", "node_id", lambda e, v: image(e, node_id=v)),
    ("start_image", "conv_id", lambda e, v: image(e, conv_id=v)),
    ("start_video", "node_id", lambda e, v: video(e, node_id=v)),
    ("start_video", "conv_id", lambda e, v: video(e, conv_id=v)),
    ("start_video", "parent_node_id", lambda e, v: video(e, parent=v)),
    ("cooperators", "conv_id", lambda e, v: e.cooperators(v)),
    ("list_conversations", "project_id", lambda e, v: e.list_conversations(project_id=v)),
    ("get_conversation", "conv_id", lambda e, v: e.get_conversation(v)),
    ("rename_conversation", "conv_id", lambda e, v: e.rename_conversation(v, "t")),
    ("flow_nodes", "conv_id", lambda e, v: e.flow_nodes(v)),
    ("cooperate_rows", "user_id", lambda e, v: e.cooperate_rows(user_id=v)),
    ("cooperate_rows", "conv_id", lambda e, v: e.cooperate_rows(conv_id=v)),
    ("user_profile", "user_id", lambda e, v: e.user_profile(v)),
    ("update_user_profile", "user_id", lambda e, v: e.update_user_profile({"a": 1}, v)),
    ("user_upload_records", "user_id", lambda e, v: e.user_upload_records(user_id=v)),
    ("conv_novel_editor", "conv_id", lambda e, v: e.conv_novel_editor(v)),
    ("discuss", "conv_id", lambda e, v: e.discuss(v)),
    ("oracle_stream", "conv_id", lambda e, v: e.oracle_stream(v)),
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("field", "build"),
    [(f, b) for _, f, b in UUID_BUILDERS],
    ids=[f"{n}-{f}" for n, f, _ in UUID_BUILDERS],
)
def test_hostile_ids_are_refused(
    endpoints: Endpoints, field: str, build: Callable[[Endpoints, str], object], hostile: str
) -> None:
    with pytest.raises(ValidationError, match=f"{field} must be a UUID"):
        build(endpoints, hostile)


@pytest.mark.parametrize(
    "at",
    [
        "2026-05-18T18:04:25Z",
        "Mon, 18 May 2026 18:04:25 UTC",
        "Mon, 18 May 2026 18:04:25 GMT&select=*",
        "Mon, 18 May 2026 18:04:25 GMT,to_date.lt.x",
        "Mon, \u0661\u0668 May \u0662\u0660\u0662\u0666 18:04:25 GMT",  # no ASCII digits
        "",
    ],
)
def test_subscription_time_must_be_an_rfc_1123_date(endpoints: Endpoints, at: str) -> None:
    with pytest.raises(ValidationError, match="RFC 1123"):
        endpoints.subscriptions(at)


# -- RPC (2.5) ------------------------------------------------------------------------


def test_rpc(endpoints: Endpoints) -> None:
    request = endpoints.rpc("remove_online_session", {"p_session_id": "s-1"})
    assert request.method == "POST"
    assert request.url == f"{REST}/rpc/remove_online_session"
    # Decisions doc: writes name the schema in Content-Profile; no Prefer.
    assert list(request.headers) == REST_RPC
    assert request.body == b'{"p_session_id":"s-1"}'
    assert not request.idempotent


def test_rpc_with_an_empty_body(endpoints: Endpoints) -> None:
    request = endpoints.rpc("get_online_count", {})
    assert request.url == f"{REST}/rpc/get_online_count"
    assert request.body == b"{}"


@pytest.mark.parametrize(
    "function",
    ["", "../conversation", "get_online_count?select=*", "a b", "x&y", "f(1)", "%2e%2e", "1fn"],
)
def test_rpc_function_must_be_an_identifier(endpoints: Endpoints, function: str) -> None:
    with pytest.raises(ValidationError, match="function"):
        endpoints.rpc(function, {})


# -- GoTrue (2.6, 2.7) --------------------------------------------------------------------


def test_auth_user(endpoints: Endpoints) -> None:
    request = endpoints.auth_user()
    assert request.method == "GET"
    assert request.url == f"{SB}/auth/v1/user"
    assert list(request.headers) == AUTH_WITH_TOKEN
    assert request.body is None
    assert request.idempotent


def test_refresh_session_needs_no_access_token() -> None:
    # D14: the old client needed (and sent) the old access token.
    endpoints = Endpoints(FlowithConfig(), Credentials(refresh_token=REFRESH))
    request = endpoints.refresh_session(REFRESH)
    assert request.method == "POST"
    assert request.url == f"{SB}/auth/v1/token?grant_type=refresh_token"
    assert list(request.headers) == AUTH_REFRESH
    assert request.header("authorization") is None
    assert request.body == b'{"refresh_token":"rt-v1-Zk3mQ9x"}'
    # The refresh token rotates: replaying the request would fail.
    assert not request.idempotent
    assert REFRESH not in repr(request)


def test_refresh_session_sends_no_stale_token(endpoints: Endpoints) -> None:
    assert list(endpoints.refresh_session(REFRESH).headers) == AUTH_REFRESH


def test_refresh_session_needs_a_refresh_token(endpoints: Endpoints) -> None:
    with pytest.raises(AuthenticationError, match="No refresh token"):
        endpoints.refresh_session("")


@pytest.mark.parametrize("scope", ["global", "local", "others"])
def test_logout(endpoints: Endpoints, scope: str) -> None:
    # D19: the scope is a query parameter, and there is no body.
    request = endpoints.logout(scope)
    assert request.method == "POST"
    assert request.url == f"{SB}/auth/v1/logout?scope={scope}"
    assert list(request.headers) == AUTH_WITH_TOKEN
    assert request.body is None
    assert not request.idempotent


def test_logout_defaults_to_global(endpoints: Endpoints) -> None:
    assert endpoints.logout().url == f"{SB}/auth/v1/logout?scope=global"


@pytest.mark.parametrize("scope", ["GLOBAL", "global&x=1", "", "all", "local "])
def test_logout_scope_is_one_of_three(endpoints: Endpoints, scope: str) -> None:
    with pytest.raises(ValidationError, match="scope must be one of global, local, others"):
        endpoints.logout(scope)


def test_oauth_url_with_google_options(endpoints: Endpoints) -> None:
    # D20: each option is its own top-level parameter.
    url = endpoints.oauth_url(query_params={"access_type": "offline", "prompt": "consent"})
    assert url == (
        "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1/authorize?provider=google"
        "&redirect_to=https%3A%2F%2Fflowith.io&access_type=offline&prompt=consent"
    )


def test_oauth_url_defaults(endpoints: Endpoints) -> None:
    assert endpoints.oauth_url() == (
        "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1/authorize?provider=google"
        "&redirect_to=https%3A%2F%2Fflowith.io"
    )


def test_oauth_url_needs_no_credentials() -> None:
    endpoints = Endpoints(FlowithConfig(), Credentials())
    assert endpoints.oauth_url(provider="github", redirect_to="") == (
        "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1/authorize?provider=github"
    )


def test_oauth_url_scopes_and_encode_uri_component(endpoints: Endpoints) -> None:
    url = endpoints.oauth_url(
        redirect_to="https://flowith.io/app?x=1#y",
        scopes="email profile",
        query_params={"include_granted_scopes": "true", "login_hint": "a+b@x.io", "s": "!*'()~"},
    )
    assert url == (
        "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1/authorize?provider=google"
        "&redirect_to=https%3A%2F%2Fflowith.io%2Fapp%3Fx%3D1%23y"
        "&scopes=email%20profile"
        "&include_granted_scopes=true&login_hint=a%2Bb%40x.io&s=!*'()~"
    )


def test_oauth_values_cannot_add_parameters(endpoints: Endpoints) -> None:
    url = endpoints.oauth_url(
        provider="google&redirect_to=https://evil.example",
        query_params={"prompt": "consent&redirect_to=evil", "a&b=c": "d%e"},
    )
    assert url == (
        "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1/authorize"
        "?provider=google%26redirect_to%3Dhttps%3A%2F%2Fevil.example"
        "&redirect_to=https%3A%2F%2Fflowith.io"
        "&prompt=consent%26redirect_to%3Devil&a%26b%3Dc=d%25e"
    )


@pytest.mark.parametrize("key", ["provider", "redirect_to", "scopes", ""])
def test_oauth_options_cannot_repeat_a_parameter(endpoints: Endpoints, key: str) -> None:
    with pytest.raises(ValidationError, match="query_params"):
        endpoints.oauth_url(query_params={key: "x"})


@pytest.mark.parametrize("provider", ["", "google\r\nX: y"])
def test_oauth_provider_must_be_plain_text(endpoints: Endpoints, provider: str) -> None:
    with pytest.raises(ValidationError, match="provider"):
        endpoints.oauth_url(provider=provider)


# -- secrets ------------------------------------------------------------------------------

ALL_REQUESTS: list[Callable[[Endpoints], Request]] = [
    *(b for _, b, _ in EDGE_GETS),
    *(b for _, b, _ in REST_GETS),
    image,
    video,
    lambda e: e.conversation_title([{"role": "user", "content": "hi"}]),
    lambda e: e.upload_file(
        upload_form(
            boundary="b", filename="f", content_type="text/plain", size=1, file_type="t", data=b"x"
        )
    ),
    lambda e: e.claim_daily_reward(),
    lambda e: e.rename_conversation(CONV, "t"),
    lambda e: e.update_user_profile({"language": "pl"}),
    lambda e: e.rpc("get_online_count", {}),
    lambda e: e.auth_user(),
    lambda e: e.refresh_session(REFRESH),
    lambda e: e.logout(),
]


@pytest.mark.parametrize("build", ALL_REQUESTS)
def test_repr_never_shows_a_secret(
    endpoints: Endpoints, build: Callable[[Endpoints], Request]
) -> None:
    request = build(endpoints)
    text = repr(request)
    assert TOKEN not in text
    assert KEY not in text
    assert REFRESH not in text
    assert "[REDACTED]" in text
