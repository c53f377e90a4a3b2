"""Every public method of the client, on every transport, against the fake Flowith.

Each test calls a method over real HTTP and checks the typed result against
what the fake holds (its seeded rows, its files, its credits), and for a few
representative methods the exact request the fake received. Text generation
and the live streams are covered in ``test_transports.py``.
"""

from __future__ import annotations

import gc
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import pytest

import flowith_aiohttp
import flowith_httpx
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto import canvas
from flowith_proto import uploads as upload_ops
from flowith_proto.abc import ConversationSession
from flowith_proto.config import DEFAULT_SUPABASE_KEY
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConversationBusyError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from flowith_proto.fake import (
    KYOTO_TRIP,
    MODELS,
    OTHER_USER_ID,
    PRIVATE_PLANS,
    PRODUCT_LAUNCH,
    QUARTERLY_REPORT,
    SEED_NODES,
    SEED_PROJECTS,
    TEAM_WIKI,
    TEMPLATES,
    THIRD_USER_ID,
    FakeFlowith,
    RecordedRequest,
    Step,
    Turn,
    chunk,
    complete,
    pause,
    workflow_complete,
)
from flowith_proto.fake import postgrest as fake_postgrest
from flowith_proto.fake.postgrest import parse_timestamp
from flowith_proto.models import (
    AspectRatio,
    AuthSession,
    ConversationRecord,
    ConvNovelEditor,
    CooperatorRecord,
    DiscussRecord,
    FileRecord,
    FlowNode,
    FlowProject,
    ImageModel,
    ImageOutput,
    MigrationInfo,
    ModelInfo,
    OracleStreamRecord,
    PublicNotice,
    SubscriptionUserOwn,
    TemplateRecord,
    UserCredits,
    UserProfile,
    UserUploadRecord,
    VideoModel,
    VideoOutput,
)
from tests.conftest import MakeClient, eventually

pytestmark = pytest.mark.anyio

#: A conversation id nobody has.
UNKNOWN_CONV = "deadbeef-0000-4000-8000-00000000beef"


def last_request(fake: FakeFlowith, method: str, path: str) -> RecordedRequest:
    """The latest request the fake received with this method and path."""
    found = fake.requests_to(method, path)
    assert found, f"the fake received no {method} {path}"
    return found[-1]


def listable_conversations(fake: FakeFlowith) -> list[dict[str, Any]]:
    """The rows ``list_conversations()`` must return: the user's, live, outside
    any project, most recently updated first."""
    rows = [
        r
        for r in fake.rows("conversation").values()
        if r["user_id"] == fake.user_id and not r["is_delete"] and r["project_id"] is None
    ]
    return sorted(rows, key=lambda r: r["updated_at"], reverse=True)


def media_on_both_streams(fake: FakeFlowith) -> None:
    """Let the fake report media results on both streams.

    The image and video services report ``workflow_complete`` on ``/sse``
    (what the fake's default media responder does); the same result is also
    sent as ``complete`` on ``/stream``, as the old client expected it, so that
    these tests cover a result arriving twice.
    """

    def respond(turn: Turn) -> list[Step]:
        return [
            workflow_complete(turn.result_url, task_type=turn.kind),
            complete(result=turn.result_url),
        ]

    fake.media_responder = respond


def balance(credits: list[UserCredits]) -> float:
    return sum(c.remain_quota for c in credits)


def cdn_path(url: str) -> str:
    """The path the fake serves a file URL at (its key in ``fake.files``)."""
    return unquote(urlsplit(url).path)


# -- coverage of the public API ---------------------------------------------------------

#: The client methods covered elsewhere: text generation, streams, lifecycle, state.
COVERED_ELSEWHERE = {
    "generate",
    "generate_stream",
    "start_conversation",
    "stream_user_stream",
    "stream_user_sse",
    "aclose",
    "close",
    "user_id",
    "stream_connections",
}
#: The client methods this module calls, each in at least one test below.
COVERED_HERE = {
    "generate_image",
    "generate_video",
    "generate_title",
    "upload_file",
    "download",
    "list_conversations",
    "iter_conversations",
    "get_conversation",
    "rename_conversation",
    "delete_conversation",
    "get_flow_nodes",
    "get_cooperators",
    "list_cooperate_rows",
    "get_credits",
    "get_credit_type",
    "get_auth_user",
    "get_oauth_url",
    "refresh_access_token",
    "get_refresh_token",
    "logout",
    "get_user_profile",
    "update_user_profile",
    "list_user_upload_records",
    "list_subscription_user_own",
    "list_public_notices",
    "list_flow_projects",
    "get_conv_novel_editor",
    "list_discuss",
    "get_oracle_stream",
    "get_migration_info",
    "list_models",
    "list_templates",
    "get_discord_invite",
    "get_featurebase_status",
    "get_daily_rewards_status",
    "claim_daily_reward",
    "check_campaign",
    "check_banana_campaign",
    "check_new_version_access",
    "get_enterprise_dashboard",
    "upsert_online_session",
    "remove_online_session",
    "get_online_count",
}


@pytest.mark.parametrize(
    "cls", [flowith_httpx.FlowithClient, flowith_aiohttp.FlowithClient], ids=["httpx", "aiohttp"]
)
def test_every_public_client_method_is_covered(cls: type) -> None:
    public = {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}
    assert public == COVERED_HERE | COVERED_ELSEWHERE


def test_every_public_session_method_is_covered() -> None:
    public = {name for name, _ in inspect.getmembers(ConversationSession) if name[0] != "_"}
    # send, send_stream and delete are in test_transports.py; the media turns here.
    assert public == {"conv_id", "model", "turn", "send", "send_stream", "delete"} | {
        "generate_image",
        "generate_video",
    }


# -- conversations ------------------------------------------------------------------------


async def test_list_conversations_returns_the_users_rows_newest_first(
    fake: FakeFlowith, server: FakeFlowithServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        records = await client.list_conversations()
    assert all(isinstance(r, ConversationRecord) for r in records)
    expected = listable_conversations(fake)
    assert [(r.conv_id, r.title) for r in records] == [(e["id"], e["title"]) for e in expected]
    # Concretely: the seed's two listable ones, the most recently updated first.
    assert [r.conv_id for r in records] == [PRODUCT_LAUNCH, KYOTO_TRIP]
    assert records[1].preview == "Day 1: Fushimi Inari at dawn..."
    assert records[0].preview is None
    assert all(r.user_id == fake.user_id for r in records)
    ids = {r.conv_id for r in records}
    assert not ids & {TEAM_WIKI, PRIVATE_PLANS}  # never the other user's rows
    assert QUARTERLY_REPORT not in ids  # in a project
    request = last_request(fake, "GET", "/rest/v1/conversation")
    assert request.query == (
        ("select", "*"),
        ("user_id", f"eq.{fake.user_id}"),
        ("is_delete", "neq.true"),
        ("project_id", "is.null"),
        ("order", "updated_at.desc"),
        ("offset", "0"),
        ("limit", "20"),
    )
    assert request.header("apikey") == DEFAULT_SUPABASE_KEY
    assert request.header("authorization") == f"Bearer {fake.token}"
    assert request.header("accept-profile") == "public"
    assert request.header("content-type") is None
    assert request.body == b""


async def test_list_conversations_of_a_project_and_with_limit_and_offset(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    work = SEED_PROJECTS[0]
    async with make_client() as client:
        in_project = await client.list_conversations(project_id=work)
        second = await client.list_conversations(limit=1, offset=1)
    assert [(r.conv_id, r.title) for r in in_project] == [
        (QUARTERLY_REPORT, "Quarterly report draft")
    ]
    assert [r.conv_id for r in second] == [KYOTO_TRIP]
    query = dict(last_request(fake, "GET", "/rest/v1/conversation").query)
    assert (query["offset"], query["limit"]) == ("1", "1")


async def test_iter_conversations_pages_through_everything(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client() as client:
        created = [(await client.generate(f"question {i}")).conv_id for i in range(3)]
        before = len(fake.requests_to("GET", "/rest/v1/conversation"))
        records = [r async for r in client.iter_conversations(page_size=2)]
    expected = listable_conversations(fake)
    assert len(expected) == 5
    assert [r.conv_id for r in records] == [e["id"] for e in expected]
    assert set(created) | {PRODUCT_LAUNCH, KYOTO_TRIP} == {r.conv_id for r in records}
    assert [r.conv_id for r in records[3:]] == [PRODUCT_LAUNCH, KYOTO_TRIP]
    pages = fake.requests_to("GET", "/rest/v1/conversation")[before:]
    assert [(p.param("offset"), p.param("limit")) for p in pages] == [
        ("0", "2"),
        ("2", "2"),
        ("4", "2"),
    ]


async def test_iter_conversations_survives_deletes_and_new_conversations_on_the_way(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Deleting each conversation as it came deleted half (each delete moved the next
    rows above the next offset); one created meanwhile, with page_size=1, ended the walk
    (the page repeated, as a server ignoring offset repeats it)."""
    async with make_client() as client:
        for i in range(7):
            await client.generate(f"question {i}")
        listed = [r.conv_id for r in await client.list_conversations(limit=100)]
        deleted = []
        async for record in client.iter_conversations(page_size=3):
            await client.delete_conversation(record.conv_id.upper())  # any spelling
            deleted.append(record.conv_id)
        assert deleted == listed
        assert await client.list_conversations(limit=100) == []
        for i in range(4):
            await client.generate(f"again {i}")
        listed = [r.conv_id for r in await client.list_conversations(limit=100)]
        walked = []
        async for record in client.iter_conversations(page_size=1):
            walked.append(record.conv_id)
            if len(walked) == 1:
                await client.generate("a new one")
    assert walked == listed


async def test_iter_conversations_asks_no_more_rows_than_supabase_answers(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # page_size=2000 met Supabase's cap of 1,000 rows per answer: the page cut short
    # looked like the last, and the walk ended a thousand conversations in.
    async with make_client() as client:
        records = [r async for r in client.iter_conversations(page_size=2000)]
    assert len(records) == 2
    (page,) = fake.requests_to("GET", "/rest/v1/conversation")
    assert page.param("limit") == "1000"


async def test_iter_conversations_asks_once_more_after_a_full_last_page(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client() as client:
        records = [r async for r in client.iter_conversations(page_size=1)]
        for bad in (0, True, 2.5):
            with pytest.raises(ValidationError, match="page_size"):
                async for _ in client.iter_conversations(page_size=bad):
                    pass
    assert [r.conv_id for r in records] == [PRODUCT_LAUNCH, KYOTO_TRIP]
    pages = fake.requests_to("GET", "/rest/v1/conversation")
    assert [p.param("offset") for p in pages] == ["0", "1", "2"]


async def test_get_conversation(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        kyoto = await client.get_conversation(KYOTO_TRIP)
        shared = await client.get_conversation(TEAM_WIKI)  # a member may read it
        with pytest.raises(NotFoundError):
            await client.get_conversation(str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            await client.get_conversation(PRIVATE_PLANS)  # hidden by row-level security
    seeded = fake.rows("conversation")
    assert isinstance(kyoto, ConversationRecord)
    assert (kyoto.conv_id, kyoto.title, kyoto.user_id, kyoto.preview) == (
        KYOTO_TRIP,
        seeded[KYOTO_TRIP]["title"],
        fake.user_id,
        seeded[KYOTO_TRIP]["preview"],
    )
    assert kyoto.is_absolute_mode is True
    assert kyoto.metadata["updated_at"] == seeded[KYOTO_TRIP]["updated_at"]
    assert (shared.title, shared.user_id) == ("Team wiki", OTHER_USER_ID)
    request = last_request(fake, "GET", "/rest/v1/conversation")
    assert request.query == (("select", "*"), ("id", f"eq.{PRIVATE_PLANS}"))


async def test_rename_conversation(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        renamed = await client.rename_conversation(KYOTO_TRIP, "Kyoto in autumn 🍁")
        again = await client.get_conversation(KYOTO_TRIP)
        with pytest.raises(NotFoundError):
            await client.rename_conversation(UNKNOWN_CONV, "nothing")
        with pytest.raises(NotFoundError):  # shared with us, but not ours to rename
            await client.rename_conversation(TEAM_WIKI, "mine now")
    assert isinstance(renamed, ConversationRecord)
    assert (renamed.conv_id, renamed.title) == (KYOTO_TRIP, "Kyoto in autumn 🍁")
    assert again.title == "Kyoto in autumn 🍁"
    rows = fake.rows("conversation")
    assert rows[KYOTO_TRIP]["title"] == "Kyoto in autumn 🍁"
    assert rows[TEAM_WIKI]["title"] == "Team wiki"
    assert len(rows) == 6  # an update, never an insert
    request = fake.requests_to("PATCH", "/rest/v1/conversation")[0]
    assert request.query == (("id", f"eq.{KYOTO_TRIP}"), ("select", "*"))
    assert request.header("prefer") == "return=representation"
    assert request.header("content-profile") == "public"
    assert request.header("accept-profile") is None
    assert request.header("content-type") == "application/json"
    assert request.header("authorization") == f"Bearer {fake.token}"
    assert request.header("apikey") == DEFAULT_SUPABASE_KEY
    assert request.body == '{"title":"Kyoto in autumn 🍁"}'.encode()


async def test_delete_conversation(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        await client.delete_conversation(KYOTO_TRIP)
        listed = await client.list_conversations()
        with pytest.raises(NotFoundError):
            await client.delete_conversation(UNKNOWN_CONV)
    assert fake.rows("conversation")[KYOTO_TRIP]["is_delete"] is True
    assert [r.conv_id for r in listed] == [PRODUCT_LAUNCH]
    request = fake.requests_to("PATCH", "/rest/v1/conversation")[0]
    assert request.query == (("id", f"eq.{KYOTO_TRIP}"), ("select", "id"))
    assert request.header("prefer") == "return=representation"
    assert request.json() == {"is_delete": True}


async def test_get_flow_nodes(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        nodes = await client.get_flow_nodes(KYOTO_TRIP)
        hidden = await client.get_flow_nodes(PRIVATE_PLANS)
    question, answer, _ = SEED_NODES
    assert all(isinstance(n, FlowNode) for n in nodes)
    assert [(n.node_id, n.node_type, n.p_id) for n in nodes] == [
        (question, "1", KYOTO_TRIP),
        (answer, "2", question),
    ]
    seeded = fake.rows("flow_node")
    assert nodes[0].text == seeded[question]["data"]["value"]
    assert nodes[1].text == seeded[answer]["data"]["value"]
    assert nodes[1].model == "gpt-4.1-nano"
    assert nodes[0].c_ids == (answer,)
    assert nodes[1].position == {"x": 0, "y": 340}
    assert hidden == []  # row-level security hides the other user's canvas


async def test_get_cooperators(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        launch = await client.get_cooperators(PRODUCT_LAUNCH)
        wiki = await client.get_cooperators(TEAM_WIKI)
        with pytest.raises(NotFoundError):
            await client.get_cooperators(PRIVATE_PLANS)
    assert all(isinstance(c, CooperatorRecord) for c in launch + wiki)
    assert [(c.user_id, c.role, c.user_name) for c in launch] == [
        (fake.user_id, 1, "Fake User"),
        (OTHER_USER_ID, 2, "Olga Other"),
    ]
    assert [(c.user_id, c.role) for c in wiki] == [
        (OTHER_USER_ID, 1),
        (fake.user_id, 2),
        (THIRD_USER_ID, 2),
    ]
    assert launch[1].user_avatar.startswith("https://lh3.googleusercontent.com/a/")
    request = last_request(fake, "GET", "/cooperate/list")
    assert request.query == (("conv_id", PRIVATE_PLANS),)
    assert request.header("authorization") == fake.token  # the edge takes it bare


async def test_list_cooperate_rows(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        mine = await client.list_cooperate_rows()
        wiki = await client.list_cooperate_rows(conv_id=TEAM_WIKI)
        others = await client.list_cooperate_rows(user_id=OTHER_USER_ID)
        third = await client.list_cooperate_rows(conv_id=TEAM_WIKI, user_id=THIRD_USER_ID)
        third_all = await client.list_cooperate_rows(
            conv_id=TEAM_WIKI, user_id=THIRD_USER_ID, top_only=False
        )
        cooperate = fake.rows("cooperate")
        conversations = fake.rows("conversation")
        await client.delete_conversation(PRODUCT_LAUNCH)
        after_delete = await client.list_cooperate_rows()
    mine_expected = {
        r["id"]
        for r in cooperate.values()
        if r["user_id"] == fake.user_id
        and not r["top"]
        and conversations[r["conv_id"]]["metadata"].get("member_count", 1) != 1
    }
    assert len(mine_expected) == 2
    assert {r["id"] for r in mine} == mine_expected
    assert {r["conv_id"]["id"] for r in mine} == {PRODUCT_LAUNCH, TEAM_WIKI}
    for row in mine:  # the conversation is embedded in place of its id
        embedded = row["conv_id"]
        assert embedded == conversations[embedded["id"]]
        assert (row["user_id"], row["role"]) == (fake.user_id, cooperate[row["id"]]["role"])
    assert [r["conv_id"]["id"] for r in wiki] == [TEAM_WIKI]
    # The other user's rows in conversations we own or share; PRIVATE_PLANS stays hidden.
    assert {r["conv_id"]["id"] for r in others} == {PRODUCT_LAUNCH, TEAM_WIKI}
    assert third == []  # THIRD_USER_ID's row is "top": filtered out by default
    assert [(r["user_id"], r["top"]) for r in third_all] == [(THIRD_USER_ID, True)]
    # Rows of deleted conversations are dropped.
    assert [r["conv_id"]["id"] for r in after_delete] == [TEAM_WIKI]
    request = fake.requests_to("GET", "/rest/v1/cooperate")[0]
    assert request.query == (
        ("select", "*,conv_id(*)"),
        ("user_id", f"eq.{fake.user_id}"),
        ("conv_id", "not.is.null"),
        ("conv_id.is_delete", "not.eq.true"),
        ("top", "not.eq.true"),
        ("conv_id.metadata->>member_count", "not.eq.1"),
    )


async def test_get_conv_novel_editor(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        editor = await client.get_conv_novel_editor(QUARTERLY_REPORT)
        with pytest.raises(NotFoundError):
            await client.get_conv_novel_editor(PRIVATE_PLANS)
        with pytest.raises(NotFoundError):
            await client.get_conv_novel_editor(KYOTO_TRIP)  # ours, but no document
    seeded = [
        r for r in fake.rows("conv_novel_editor").values() if r["conv_id"] == QUARTERLY_REPORT
    ]
    assert isinstance(editor, ConvNovelEditor)
    assert (editor.conv_id, editor.content) == (QUARTERLY_REPORT, seeded[0]["content"])
    assert editor.content.startswith("# Q2 report")


async def test_list_discuss(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        launch = await client.list_discuss(PRODUCT_LAUNCH)
        hidden = await client.list_discuss(PRIVATE_PLANS)
    seeded = [r for r in fake.rows("discuss").values() if r["conv_id"] == PRODUCT_LAUNCH]
    assert all(isinstance(d, DiscussRecord) for d in launch)
    assert sorted((d.discuss_id, d.user_id, d.content) for d in launch) == sorted(
        (r["id"], r["user_id"], r["content"]) for r in seeded
    )
    assert {d.user_id for d in launch} == {fake.user_id, OTHER_USER_ID}
    assert all(d.conv_id == PRODUCT_LAUNCH and d.created_at for d in launch)
    assert hidden == []


async def test_get_oracle_stream(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        records = await client.get_oracle_stream(QUARTERLY_REPORT)
        hidden = await client.get_oracle_stream(PRIVATE_PLANS)
    (seeded,) = [r for r in fake.rows("oracle_stream").values() if r["conv_id"] == QUARTERLY_REPORT]
    assert len(records) == 1
    record = records[0]
    assert isinstance(record, OracleStreamRecord)
    assert (record.record_id, record.requirement, record.workflow) == (
        seeded["id"],
        seeded["requirement"],
        seeded["workflow"],
    )
    assert (record.user_confirm, record.is_stop, record.no_need_replan) == (True, False, False)
    assert hidden == []
    request = last_request(fake, "GET", "/rest/v1/oracle_stream")
    assert request.param("select") == (
        "id,requirement,workflow,no_need_replan,is_stop,is_public,user_confirm,is_delete"
    )


# -- media generation, titles, files --------------------------------------------------------


async def test_generate_image_returns_a_file_the_fake_serves(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    media_on_both_streams(fake)
    async with make_client() as client:
        before = balance(await client.get_credits())
        result = await client.generate_image(
            "a red fox in the snow",
            model=ImageModel.GPT_IMAGE_1,
            aspect_ratio=AspectRatio.PORTRAIT,
            image_size="1k",
        )
        after = balance(await client.get_credits())
        assert result.image is not None
        saved = await result.image.save(tmp_path)
    turn = fake.turns[-1]
    assert isinstance(result, ImageOutput)
    assert turn.kind == "image"
    assert (result.node_id, result.conv_id, result.model) == (
        turn.node_id,
        turn.conv_id,
        "gpt-image-1",
    )
    assert [image.url for image in result.images] == [turn.result_url]
    assert cdn_path(result.image.url) in fake.files
    assert saved == tmp_path / "image.png"
    assert saved.read_bytes() == fake.files[cdn_path(turn.result_url)][0]
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    node = fake.nodes[result.node_id]
    assert (node["data"]["status"], node["data"]["value"]) == ("done", turn.result_url)
    assert result.conv_id in fake.conversations
    assert before - after == fake.generation_cost  # credits decrease after a generation
    assert fake.remaining_credits() == after
    start = last_request(fake, "POST", "/image_gen/async")
    assert start.json() == {
        "model": "gpt-image-1",
        "nodeId": result.node_id,
        "convId": result.conv_id,
        "messages": [{"role": "user", "content": "a red fox in the snow"}],
        "aspect_ratio": "9:16",
        "image_size": "1k",
        "agent": True,
    }
    assert start.header("content-type") == "application/json"
    assert start.header("authorization") == fake.token
    download = last_request(fake, "GET", cdn_path(turn.result_url))
    assert download.header("authorization") is None


async def test_generate_video_follows_the_servers_node_id(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    media_on_both_streams(fake)
    fake.video_node_ids = "server"
    async with make_client() as client:
        before = balance(await client.get_credits())
        result = await client.generate_video(
            "waves on a beach", model=VideoModel.KLING, resolution="720p", timeout=30
        )
        after = balance(await client.get_credits())
        saved = await result.save(tmp_path)
    turn = fake.turns[-1]
    assert isinstance(result, VideoOutput)
    assert turn.kind == "video"
    assert result.node_id == turn.node_id  # the id the server picked...
    assert result.node_id != turn.options["requested_node_id"]  # ...not the one we sent
    assert (result.conv_id, result.model) == (turn.conv_id, VideoModel.KLING.value)
    assert result.video_url == turn.result_url
    assert saved == tmp_path / "video.mp4"
    assert saved.read_bytes() == fake.files[cdn_path(turn.result_url)][0]
    node = fake.nodes[result.node_id]
    assert node["data"]["status"] == "done"
    assert node["data"]["resolution"] == "720p"
    assert before - after == fake.generation_cost
    start = last_request(fake, "POST", "/video/async")
    body = start.json()
    assert body["nodeId"] == turn.options["requested_node_id"]
    assert (body["model"], body["prompt"], body["resolution"], body["audio"]) == (
        "kling-video/v2.6/pro/text-to-video",
        "waves on a beach",
        "720p",
        True,
    )


async def test_generate_video_with_an_echoed_node_id(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    media_on_both_streams(fake)
    fake.video_node_ids = "echo"
    async with make_client() as client:
        result = await client.generate_video("a slow sunrise", timeout=30)
    turn = fake.turns[-1]
    assert result.node_id == turn.node_id == turn.options["requested_node_id"]
    assert result.model == "seedance-2.0-fast"
    assert result.video_url == turn.result_url


async def test_media_turns_inside_a_session_hang_under_the_previous_answer(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    media_on_both_streams(fake)
    fake.script(chunk("A fox is a small canid."), complete())
    async with make_client() as client:
        session = client.start_conversation()
        text = await session.send("Tell me about foxes.")
        image = await session.generate_image("Draw that fox.")
        video = await session.generate_video("Animate the fox.", timeout=30)
        canvas = await client.get_flow_nodes(text.conv_id)
        assert image.image is not None
        image_file = await image.image.save(tmp_path)
        video_file = await video.save(tmp_path)
    assert session.turn == 3
    assert text.conv_id == image.conv_id == video.conv_id == session.conv_id
    assert len(fake.conversations) == 1
    nodes = fake.nodes
    image_user = nodes[image.node_id]["p_id"]
    video_user = nodes[video.node_id]["p_id"]
    assert nodes[image_user]["p_id"] == text.node_id  # under the text answer
    assert nodes[video_user]["p_id"] == image.node_id  # under the image
    assert nodes[image_user]["c_ids"] == [image.node_id]
    assert video.node_id in nodes[video_user]["c_ids"]
    # The canvas, read back as typed nodes in creation order: one thread, turn by turn.
    assert [(n.node_type, n.position["y"]) for n in canvas] == [
        ("1", 130),
        ("2", 340),
        ("1", 550),
        ("2", 760),
        ("1", 970),
        ("2", 1150),
    ]
    assert [n.node_id for n in canvas][1::2] == [text.node_id, image.node_id, video.node_id]
    assert canvas[2].text == "Draw that fox."
    assert image_file.read_bytes() == fake.files[cdn_path(fake.turns[1].result_url)][0]
    assert video_file.read_bytes() == fake.files[cdn_path(fake.turns[2].result_url)][0]
    assert [t.kind for t in fake.turns] == ["text", "image", "video"]
    assert fake.turns[1].messages == ({"role": "user", "content": "Draw that fox."},)


@pytest.mark.parametrize("made_by", ["start_conversation", "the constructor"])
async def test_a_session_continues_an_existing_conversation_from_its_canvas(
    fake: FakeFlowith, make_client: MakeClient, made_by: str
) -> None:
    """``ConversationSession(client, conv_id=...)``, the original client's
    constructor, was a TypeError."""
    rows = fake.rows("flow_node")
    seeded = {n: row for n, row in rows.items() if row["conv_id"] == KYOTO_TRIP}
    (answer,) = [n for n, row in seeded.items() if row["type"] == "2"]
    (question,) = [row for row in seeded.values() if row["type"] == "1"]
    fake.script(chunk("Day 2: Arashiyama."), complete())
    async with make_client() as client:
        session = (
            client.start_conversation(conv_id=KYOTO_TRIP)
            if made_by == "start_conversation"
            else ConversationSession(client, conv_id=KYOTO_TRIP)
        )
        reply = await session.send("And day 2?")
        canvas = await client.get_flow_nodes(KYOTO_TRIP)
    assert reply.conv_id == KYOTO_TRIP
    assert session.turn == 2  # the seeded answer, then this one
    (turn,) = fake.turns
    assert turn.messages == (
        {"role": "user", "content": question["data"]["value"]},
        {"role": "assistant", "content": seeded[answer]["data"]["value"]},
        {"role": "user", "content": "And day 2?"},
    )
    rows = fake.rows("flow_node")
    new_user = rows[rows[reply.node_id]["p_id"]]
    assert new_user["p_id"] == answer  # under the last answer, not the root
    ys = [n.position["y"] for n in canvas]
    assert ys == sorted(ys)  # below the existing nodes, none on top of another
    assert len(set(ys)) == len(ys)


async def test_sessions_of_one_client_on_one_conversation_take_turns(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """Two sessions on one conversation each took itself for its only writer: the
    second sent a stale history and hung its turn under the answer the first had
    already answered below, its nodes on top of the first's; and a turn of each at
    once went through."""
    fake.script(chunk("Day 2: Arashiyama."), complete())
    fake.script(chunk("Day 3: Nara."), pause(0.3), complete())
    fake.script(chunk("Day 4: rest."), complete())
    async with make_client() as client:
        first = client.start_conversation(conv_id=KYOTO_TRIP)
        second = client.start_conversation(conv_id=KYOTO_TRIP)
        day2 = await first.send("And day 2?")
        outcomes: list[Any] = []

        async def send(session: ConversationSession, prompt: str) -> None:
            try:
                outcomes.append(await session.send(prompt))
            except ConversationBusyError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(send, second, "And day 3?")
            await eventually(lambda: len(fake.turns) == 2)
            group.start_soon(send, first, "And day 4?")
        refused, day3 = outcomes
        assert isinstance(refused, ConversationBusyError)
        assert "another session of this client" in str(refused)
        day4 = await first.send("And day 4?")
        canvas = await client.get_flow_nodes(KYOTO_TRIP)
    rows = fake.rows("flow_node")
    parent = {node: rows[rows[node]["p_id"]]["p_id"] for node in (day3.node_id, day4.node_id)}
    assert parent == {day3.node_id: day2.node_id, day4.node_id: day3.node_id}
    third_turn, fourth_turn = fake.turns[1:]
    assert [m["content"] for m in third_turn.messages[-3:]] == [
        "And day 2?",
        "Day 2: Arashiyama.",
        "And day 3?",
    ]
    assert [m["content"] for m in fourth_turn.messages[-3:]] == [
        "And day 3?",
        "Day 3: Nara.",
        "And day 4?",
    ]
    assert (first.turn, second.turn) == (4, 3)
    ys = [n.position["y"] for n in canvas]
    assert len(set(ys)) == len(ys)  # no node on top of another


async def test_what_sessions_share_goes_with_the_last_of_them(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    fake.script(chunk("Day 2: Arashiyama."), complete())
    fake.script(chunk("Day 3: Nara."), complete())
    async with make_client() as client:
        sessions = [client.start_conversation(conv_id=KYOTO_TRIP) for _ in range(2)]
        for day, session in enumerate(sessions, 2):
            await session.send(f"And day {day}?")
        del session
        assert list(client._state.threads) == [KYOTO_TRIP]
        del sessions[0]
        gc.collect()
        assert list(client._state.threads) == [KYOTO_TRIP]  # the other one still reads it
        del sessions[0]
        gc.collect()
        assert list(client._state.threads) == []


async def test_a_canvas_longer_than_the_servers_cap_is_read_in_pages(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap made 1 row here (Supabase's is 1,000): the answer was cut silently.
    monkeypatch.setattr(canvas, "POSTGREST_MAX_ROWS", 1)
    fake.max_rows = 1
    fake.script(chunk("Day 2: Arashiyama."), complete())
    async with make_client() as client:
        reply = await client.start_conversation(conv_id=KYOTO_TRIP).send("And day 2?")
        nodes = await client.get_flow_nodes(KYOTO_TRIP)
    expected = {n for n, row in fake.rows("flow_node").items() if row["conv_id"] == KYOTO_TRIP}
    assert {node.node_id for node in nodes} == expected
    assert reply.node_id in expected
    assert len(expected) == 4  # the seeded turn and this one


@pytest.mark.parametrize("reader", ["get_flow_nodes", "resumed session"])
@pytest.mark.parametrize("tied", [1, 2, 3])
async def test_nodes_created_at_the_same_instant_are_not_skipped_between_pages(
    fake: FakeFlowith,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
    tied: int,
) -> None:
    """PostgreSQL orders rows of equal created_at as it likes, read by read: pages
    cut from such an order by offsets skipped a node (and read another twice) when
    the first answer ended inside such a group and the next read ordered it otherwise."""
    monkeypatch.setattr(canvas, "POSTGREST_MAX_ROWS", 3)
    fake.max_rows = 3
    fake.script(chunk("Day 2: Arashiyama."), complete())
    async with make_client() as client:
        await client.start_conversation(conv_id=KYOTO_TRIP).send("And day 2?")
    fake.script(chunk("Day 3: Nara."), complete())
    async with make_client() as client:
        await client.start_conversation(conv_id=KYOTO_TRIP).send("And day 3?")
    rows = [row for row in fake._rows["flow_node"].values() if row["conv_id"] == KYOTO_TRIP]
    assert len(rows) == 6
    # The last `tied` nodes of the first answer (of 3) and the one after it: one instant.
    instant = rows[3]["created_at"]
    for row in rows[3 - tied : 4]:
        row["created_at"] = instant
    ordered = fake_postgrest.order_rows
    reads: list[str | None] = []

    def unstable(table: Any, found: Any, text: str | None) -> list[dict[str, Any]]:
        result = ordered(table, found, text)
        reads.append(text)
        if text == "created_at.asc" and len(reads) % 2:  # each tie group backwards
            groups: dict[Any, list[dict[str, Any]]] = {}
            for row in result:
                groups.setdefault(row.get("created_at"), []).append(row)
            result = [row for group in groups.values() for row in reversed(group)]
        return result

    monkeypatch.setattr(fake_postgrest, "order_rows", unstable)
    expected = {row["id"] for row in rows}
    async with make_client() as client:
        if reader == "get_flow_nodes":
            nodes = await client.get_flow_nodes(KYOTO_TRIP)
            assert sorted(node.node_id for node in nodes) == sorted(expected)
        else:
            fake.script(chunk("Day 4: Osaka."), complete())
            await client.start_conversation(conv_id=KYOTO_TRIP).send("And day 4?")
            # The history sent with the new turn: every node's text, each once.
            (sent, *_) = fake.requests_to("POST", "/completion/async")[-1:]
            history = [message["content"] for message in sent.json()["messages"]]
            texts = [row["data"]["value"] for row in rows] + ["And day 4?"]
            assert history == texts
    assert reads[0] == "created_at.asc"
    assert set(reads[1:]) == {"created_at.asc,id.asc"}


async def test_nodes_without_created_at_at_a_page_boundary_are_all_read(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NULLs sort together and last, in any order among themselves: a group of them at
    the end of the first answer was taken for no group, and a node was skipped."""
    monkeypatch.setattr(canvas, "POSTGREST_MAX_ROWS", 3)
    fake.max_rows = 3
    for day in ("2", "3"):
        fake.script(chunk(f"Day {day}."), complete())
        async with make_client() as client:
            await client.start_conversation(conv_id=KYOTO_TRIP).send(f"And day {day}?")
    rows = [row for row in fake._rows["flow_node"].values() if row["conv_id"] == KYOTO_TRIP]
    for row in rows[2:]:
        row["created_at"] = None
    ordered = fake_postgrest.order_rows

    def unstable(table: Any, found: Any, text: str | None) -> list[dict[str, Any]]:
        result = ordered(table, found, text)
        if text == "created_at.asc":  # the NULLs in another order than by id
            dated = [r for r in result if r.get("created_at") is not None]
            nulls = [r for r in result if r.get("created_at") is None]
            result = dated + sorted(nulls, key=lambda r: r["id"], reverse=True)
        return result

    monkeypatch.setattr(fake_postgrest, "order_rows", unstable)
    async with make_client() as client:
        nodes = await client.get_flow_nodes(KYOTO_TRIP)
    assert sorted(node.node_id for node in nodes) == sorted(row["id"] for row in rows)


@pytest.mark.parametrize("reader", ["get_flow_nodes", "resumed session"])
async def test_a_server_ignoring_offset_ends_the_canvas_reading(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    # Each full page read the next one: a server that answers the same rows whatever
    # the offset was asked for pages without end, and the nodes piled up (gigabytes).
    monkeypatch.setattr(canvas, "POSTGREST_MAX_ROWS", 2)
    fake.max_rows = 2
    handle = fake.handle

    def ignoring_offset(method: str, target: str, *args: Any, **kwargs: Any) -> Any:
        if "/flow_node?" in target:
            path, _, query = target.partition("?")
            kept = [pair for pair in query.split("&") if not pair.startswith("offset=")]
            target = f"{path}?{'&'.join(kept)}"
        return handle(method, target, *args, **kwargs)

    monkeypatch.setattr(fake, "handle", ignoring_offset)
    fake.script(chunk("Day 2: Arashiyama."), complete())
    first_two = [n for n, row in fake.rows("flow_node").items() if row["conv_id"] == KYOTO_TRIP]
    async with make_client() as client:
        with anyio.fail_after(10):
            if reader == "get_flow_nodes":
                nodes = await client.get_flow_nodes(KYOTO_TRIP)
                assert [node.node_id for node in nodes] == first_two
            else:
                await client.start_conversation(conv_id=KYOTO_TRIP).send("And day 2?")
    reads = [r for r in fake.requests_to("GET", "/rest/v1/flow_node") if KYOTO_TRIP in r.target]
    assert len(reads) == 2  # the first answer, and one page that brought nothing new


async def test_generate_title(fake: FakeFlowith, make_client: MakeClient) -> None:
    messages = [
        {"role": "user", "content": "what is the capital of Poland? I keep forgetting."},
        {"role": "assistant", "content": "Warsaw."},
    ]
    async with make_client() as client:
        title = await client.generate_title(messages)
    assert title == "What is the capital of Poland"
    request = last_request(fake, "POST", "/completion/conversation-title")
    assert request.header("content-type") == "text/plain;charset=UTF-8"
    assert request.json() == {"messages": messages}


async def test_upload_file_from_disk_and_from_memory(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    on_disk = tmp_path / "quarterly figures.csv"
    disk_bytes = b"quarter,revenue\nQ1,100\nQ2,112\n" * 1000
    on_disk.write_bytes(disk_bytes)
    memory_bytes = bytes(range(256)) * 3
    uploads_before = fake.rows("user_upload_records")
    async with make_client() as client:
        from_disk = await client.upload_file(on_disk)
        from_memory = await client.upload_file(
            data=memory_bytes, filename="blob.bin", mime_type="application/x-test"
        )
        back = tmp_path / "back"
        disk_copy = await client.download(from_disk.url, back)
        memory_copy = await client.download(from_memory.url, back)
        records = await client.list_user_upload_records()
    assert isinstance(from_disk, FileRecord)
    assert isinstance(from_memory, FileRecord)
    assert from_disk.file_type == "csv"
    assert from_memory.file_type == "bin"
    assert (from_disk.metadata["name"], from_disk.metadata["size"]) == (
        "quarterly figures.csv",
        len(disk_bytes),
    )
    assert from_memory.metadata["content_type"] == "application/x-test"
    assert disk_copy.read_bytes() == disk_bytes
    assert memory_copy.read_bytes() == memory_bytes
    assert disk_copy.name == "quarterly figures.csv"
    assert fake.files[cdn_path(from_disk.url)] == (disk_bytes, "text/csv")
    added = {k: v for k, v in fake.rows("user_upload_records").items() if k not in uploads_before}
    assert sorted((r["value"], r["name"], r["size"], r["type"]) for r in added.values()) == sorted(
        [
            (from_disk.url, "quarterly figures.csv", len(disk_bytes), "csv"),
            (from_memory.url, "blob.bin", len(memory_bytes), "bin"),
        ]
    )
    assert all(r["user_id"] == fake.user_id and r["conv_id"] is None for r in added.values())
    # The new uploads head the listing (newest first).
    assert [r.value for r in records[:2]] == [from_memory.url, from_disk.url]
    request = fake.requests_to("POST", "/file/store")[0]
    content_type = request.header("content-type") or ""
    assert content_type.startswith("multipart/form-data; boundary=")
    assert request.header("content-length") == str(len(request.body))
    assert request.header("authorization") == fake.token


# -- account and auth -----------------------------------------------------------------------


async def test_get_credits_and_credit_type(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        credits = await client.get_credits()
        credit_type = await client.get_credit_type()
    held = fake.credits()
    assert all(isinstance(c, UserCredits) for c in credits)
    assert [(c.sub_type, c.init_quota, c.remain_quota) for c in credits] == [
        (e["sub_type"], e["init_quota"], e["remain_quota"]) for e in held
    ]
    assert [(c.from_date, c.to_date) for c in credits] == [
        (e["from_date"], e["to_date"]) for e in held
    ]
    assert balance(credits) == fake.remaining_credits() == 1623.5
    now = time.time()
    in_force = [
        e["sub_type"]
        for e in held
        if e["remain_quota"] > 0
        and parse_timestamp(e["from_date"]).timestamp()  # type: ignore[union-attr]
        <= now
        < parse_timestamp(e["to_date"]).timestamp()  # type: ignore[union-attr]
    ]
    assert credit_type == (in_force[0] if in_force else "free")
    request = last_request(fake, "GET", "/user/credits")
    assert request.query == ()
    assert request.header("authorization") == fake.token
    assert request.header("content-type") is None


async def test_credit_type_follows_the_credits(fake: FakeFlowith, make_client: MakeClient) -> None:
    fake.set_credits(0)
    async with make_client() as client:
        assert await client.get_credit_type() == "free"
        assert balance(await client.get_credits()) == 0


async def test_get_auth_user(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        user = await client.get_auth_user()
    assert isinstance(user, dict)
    assert (user["id"], user["email"]) == (fake.user_id, "fake.user@example.com")
    assert user["app_metadata"]["provider"] == "google"
    request = last_request(fake, "GET", "/auth/v1/user")
    assert request.header("authorization") == f"Bearer {fake.token}"
    assert request.header("apikey") == DEFAULT_SUPABASE_KEY
    assert request.header("x-supabase-api-version") == "2024-01-01"


async def test_get_oauth_url(server: FakeFlowithServer, make_client: MakeClient) -> None:
    async with make_client() as client:
        default = client.get_oauth_url()
        custom = client.get_oauth_url(
            "github",
            redirect_to="https://example.com/cb?x=1&y=2",
            access_type=None,
            prompt=None,
            include_granted_scopes=True,
            scopes="read:user email",
        )
    assert default == (
        f"{server.url}/auth/v1/authorize?provider=google"
        "&redirect_to=https%3A%2F%2Fflowith.io&access_type=offline&prompt=consent"
    )
    assert custom == (
        f"{server.url}/auth/v1/authorize?provider=github"
        "&redirect_to=https%3A%2F%2Fexample.com%2Fcb%3Fx%3D1%26y%3D2"
        "&scopes=read%3Auser%20email&include_granted_scopes=true"
    )


async def test_refresh_access_token_rotates_the_tokens(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    initial = fake.refresh_token
    async with make_client(refresh_token=initial) as client:
        assert client.get_refresh_token() == initial
        session = await client.refresh_access_token()
        rotated = client.get_refresh_token()
        await client.get_credits()  # the next request carries the new access token
        with pytest.raises(AuthenticationError) as reused:
            await client.refresh_access_token(initial)
        assert client.get_refresh_token() == rotated  # a failed refresh changes nothing
    assert isinstance(session, AuthSession)
    assert rotated == session.refresh_token
    assert rotated not in ("", initial)
    assert session.access_token not in ("", fake.token)
    assert session.user_id == fake.user_id
    assert (session.token_type, session.expires_in) == ("bearer", fake.access_token_ttl)
    for shown in (repr(session), str(session)):
        assert session.access_token not in shown
        assert session.refresh_token not in shown
        assert "***" in shown
    assert last_request(fake, "GET", "/user/credits").header("authorization") == (
        session.access_token
    )
    assert reused.value.status_code == 400
    assert reused.value.body == {
        "code": "refresh_token_already_used",
        "message": "Invalid Refresh Token: Already Used",
    }
    first = fake.requests_to("POST", "/auth/v1/token")[0]
    assert first.query == (("grant_type", "refresh_token"),)
    assert first.header("authorization") is None  # only the apikey: works without a token
    assert first.header("apikey") == DEFAULT_SUPABASE_KEY
    assert first.header("content-type") == "application/json"
    assert first.header("x-supabase-api-version") == "2024-01-01"
    assert first.json() == {"refresh_token": initial}


async def test_refreshes_at_once_with_one_token_share_one_request(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    """A refresh token works once: an app's own refresh_access_token() beside
    another one (or an automatic one) sent it twice, and the second failed."""
    sessions: list[AuthSession] = []
    async with make_client(refresh_token=fake.refresh_token) as client:

        async def refresh() -> None:
            sessions.append(await client.refresh_access_token())

        async with anyio.create_task_group() as group:
            group.start_soon(refresh)
            group.start_soon(refresh)
        await client.get_credits()
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1
    assert sessions[0].access_token == sessions[1].access_token


async def test_a_refresh_whose_caller_was_cancelled_is_taken_over(
    fake: FakeFlowith, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller that joined it was told the session could not be refreshed."""
    async with make_client(refresh_token=fake.refresh_token) as client:
        run = client._run
        slow = anyio.Event()

        async def first_waits(operation: Any) -> Any:
            if not slow.is_set():
                slow.set()
                await anyio.sleep(10)  # the first refresh is cancelled here
            return await run(operation)

        monkeypatch.setattr(client, "_run", first_waits)
        sessions: list[AuthSession] = []
        owner = anyio.CancelScope()

        async def owning() -> None:
            with owner:
                await client.refresh_access_token()

        async def joining() -> None:
            sessions.append(await client.refresh_access_token())

        async with anyio.create_task_group() as group:
            group.start_soon(owning)
            await slow.wait()
            group.start_soon(joining)
            await anyio.sleep(0.05)
            owner.cancel()
    assert len(sessions) == 1
    assert len(fake.requests_to("POST", "/auth/v1/token")) == 1


async def test_refresh_without_a_refresh_token_fails_without_a_request(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client() as client:
        assert client.get_refresh_token() == ""
        with pytest.raises(AuthenticationError):
            await client.refresh_access_token()
    assert fake.requests_to("POST", "/auth/v1/token") == []


async def test_logout_ends_the_session(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client(refresh_token=fake.refresh_token) as client:
        await client.logout()
        with pytest.raises(PermissionDeniedError):  # GoTrue: session_not_found
            await client.get_auth_user()
        with pytest.raises(AuthenticationError) as gone:
            await client.refresh_access_token(fake.refresh_token)
    assert gone.value.body["code"] == "refresh_token_not_found"
    request = last_request(fake, "POST", "/auth/v1/logout")
    assert request.query == (("scope", "global"),)
    assert request.body == b""
    assert "json" not in (request.header("content-type") or "")  # no JSON body, no JSON type
    assert request.header("authorization") == f"Bearer {fake.token}"
    assert request.header("apikey") == DEFAULT_SUPABASE_KEY


async def test_logout_of_the_other_sessions_keeps_this_one(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    elsewhere = fake.issue_refresh_token()
    async with make_client(refresh_token=fake.refresh_token) as client:
        await client.logout("others")
        assert client.get_refresh_token() == fake.refresh_token
        user = await client.get_auth_user()
        with pytest.raises(AuthenticationError):
            await client.refresh_access_token(elsewhere)
        await client.refresh_access_token()  # this session's token still works
    assert user["id"] == fake.user_id
    assert last_request(fake, "POST", "/auth/v1/logout").query == (("scope", "others"),)


async def test_get_user_profile(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        mine = await client.get_user_profile()
        explicit = await client.get_user_profile(fake.user_id)
        with pytest.raises(NotFoundError):
            await client.get_user_profile(OTHER_USER_ID)  # row-level security
    seeded = fake.rows("user_profile")[fake.user_id]
    assert isinstance(mine, UserProfile)
    assert (mine.user_id, mine.language) == (fake.user_id, seeded["language"])
    assert mine.metadata["name"] == "Fake User"
    assert explicit == mine


async def test_update_user_profile(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        updated = await client.update_user_profile(language="pl", name="Fake Użytkownik")
        read_back = await client.get_user_profile()
        unchanged = await client.update_user_profile()  # no fields: just the GET
    assert isinstance(updated, UserProfile)
    assert (updated.user_id, updated.language) == (fake.user_id, "pl")
    assert updated.metadata["name"] == "Fake Użytkownik"
    assert read_back.language == unchanged.language == "pl"
    row = fake.rows("user_profile")[fake.user_id]
    assert (row["language"], row["name"]) == ("pl", "Fake Użytkownik")
    assert fake.rows("user_profile")[OTHER_USER_ID]["language"] == "de"
    (request,) = fake.requests_to("PATCH", "/rest/v1/user_profile")
    assert request.query == (("id", f"eq.{fake.user_id}"), ("select", "*"))
    assert request.header("prefer") == "return=representation"
    assert request.header("content-profile") == "public"
    assert request.json() == {"language": "pl", "name": "Fake Użytkownik"}


async def test_an_upload_may_take_120_s_unless_given_its_own_timeout(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds: list[float | None] = []
    upload = upload_ops.upload

    def noting(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        bounds.append(timeout)
        return upload(*args, timeout=timeout, **kwargs)

    monkeypatch.setattr(upload_ops, "upload", noting)
    async with make_client(timeout=0.5) as client:
        await client.upload_file(data=b"a", filename="a.txt")
        await client.upload_file(data=b"b", filename="b.txt", timeout=1.5)
    async with make_client(timeout=300) as client:
        await client.upload_file(data=b"c", filename="c.txt")
    assert bounds == [120.0, 1.5, 300]


async def test_list_user_upload_records(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    async with make_client() as client:
        records = await client.list_user_upload_records()
        page = await client.list_user_upload_records(limit=1, offset=1)
        photo = await client.download(records[0].value, tmp_path)
    mine = sorted(
        (r for r in fake.rows("user_upload_records").values() if r["user_id"] == fake.user_id),
        key=lambda r: (r["created_at"], r["id"]),
        reverse=True,
    )
    assert all(isinstance(r, UserUploadRecord) for r in records)
    assert [(r.record_id, r.value, r.name, r.file_type) for r in records] == [
        (m["id"], m["value"], m["name"], m["type"]) for m in mine
    ]
    assert [r.name for r in records] == ["photo.png", "notes.pdf"]  # never secret.txt
    assert records[1].conv_id == QUARTERLY_REPORT
    assert all(r.user_id == fake.user_id for r in records)
    assert [r.record_id for r in page] == [mine[1]["id"]]
    for record in records:  # the URLs point at files the fake's CDN serves
        assert cdn_path(record.value) in fake.files
    assert photo.read_bytes() == fake.files[cdn_path(records[0].value)][0]
    request = last_request(fake, "GET", "/rest/v1/user_upload_records")
    assert request.query == (
        ("select", "id,user_id,conv_id,value,name,type,created_at"),
        ("user_id", f"eq.{fake.user_id}"),
        ("order", "created_at.desc,id.desc"),
        ("offset", "1"),
        ("limit", "1"),
    )


def active_subscriptions(fake: FakeFlowith, moment: float) -> list[dict[str, Any]]:
    rows = [
        r
        for r in fake.rows("subscription_user_own").values()
        if r["user_id"] == fake.user_id
        and parse_timestamp(r["from_date"]).timestamp()  # type: ignore[union-attr]
        < moment
        < parse_timestamp(r["to_date"]).timestamp()  # type: ignore[union-attr]
    ]
    return sorted(rows, key=lambda r: r["to_date"], reverse=True)


async def test_list_subscription_user_own(fake: FakeFlowith, make_client: MakeClient) -> None:
    may = datetime(2026, 5, 15, 12, 30, 45, 999_999, tzinfo=timezone.utc)
    november_2025 = datetime(2025, 11, 15, 8, 0, 0)  # naive: read as UTC
    async with make_client() as client:
        at_may = await client.list_subscription_user_own(may)
        at_november = await client.list_subscription_user_own(november_2025)
        at_epoch = await client.list_subscription_user_own(0.0)
        started = time.time()
        now = await client.list_subscription_user_own(None)
    assert all(isinstance(s, SubscriptionUserOwn) for s in at_may + at_november + now)
    types = {r["id"]: r for r in fake.rows("subscription_type").values()}
    (yearly,) = at_may  # the other user's running subscription is hidden
    seeded = fake.rows("subscription_user_own")[yearly.record_id]
    assert seeded["user_id"] == fake.user_id
    assert (yearly.months, yearly.remain_quota, yearly.from_date, yearly.to_date) == (
        12,
        1523.5,
        seeded["from_date"],
        seeded["to_date"],
    )
    assert yearly.subscription_type == {"id": 2, "quota": types[2]["quota"]}
    assert [(s.months, s.subscription_type["id"]) for s in at_november] == [(1, 1)]
    assert at_epoch == []
    assert [s.record_id for s in now] == [r["id"] for r in active_subscriptions(fake, started)]
    first = fake.requests_to("GET", "/rest/v1/subscription_user_own")[0]
    assert first.query == (
        ("select", "id,months,from_date,to_date,remain_quota,subscription_type(id,quota)"),
        ("order", "to_date.desc"),
        ("from_date", "lt.Fri, 15 May 2026 12:30:45 GMT"),
        ("to_date", "gt.Fri, 15 May 2026 12:30:45 GMT"),
    )
    second = fake.requests_to("GET", "/rest/v1/subscription_user_own")[1]
    assert second.param("from_date") == "lt.Sat, 15 Nov 2025 08:00:00 GMT"


@pytest.mark.parametrize(
    "at_time",
    [
        "Fri, 15 May 2026 12:30:45 GMT",
        "2026-05-15T12:30:45Z",
        "2026-05-15T14:30:45+02:00",
        "2026-05-15 12:30:45",
    ],
)
async def test_subscriptions_at_a_date_string(
    fake: FakeFlowith, make_client: MakeClient, at_time: str
) -> None:
    async with make_client() as client:
        (yearly,) = await client.list_subscription_user_own(at_time=at_time)
    assert yearly.months == 12
    (sent,) = fake.requests_to("GET", "/rest/v1/subscription_user_own")
    assert sent.param("from_date") == "lt.Fri, 15 May 2026 12:30:45 GMT"


@pytest.mark.parametrize("at_time", ["next tuesday", "", True, float("nan"), 1e20, [2026]])
async def test_subscriptions_at_an_unusable_moment(
    fake: FakeFlowith, make_client: MakeClient, at_time: Any
) -> None:
    async with make_client() as client:
        with pytest.raises(ValidationError, match="at_time") as info:
            await client.list_subscription_user_own(at_time=at_time)
    assert info.value.status_code is None  # the client's refusal, no HTTP 422
    assert not fake.requests_to("GET", "/rest/v1/subscription_user_own")


# -- content and catalogue ----------------------------------------------------------------------


async def test_list_public_notices(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        notices = await client.list_public_notices()
    assert all(isinstance(n, PublicNotice) for n in notices)
    assert sorted((n.notice_id, n.title, n.content) for n in notices) == sorted(
        (r["id"], r["title"], r["content"]) for r in fake.rows("public_notice").values()
    )
    assert len(notices) == 2


async def test_list_flow_projects(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        projects = await client.list_flow_projects()
    work, personal, others = SEED_PROJECTS
    assert all(isinstance(p, FlowProject) for p in projects)
    assert [(p.project_id, p.title) for p in projects] == [(work, "Work"), (personal, "Personal")]
    assert others not in {p.project_id for p in projects}
    seeded = fake.rows("flow_project")
    assert [p.updated_at for p in projects] == [
        seeded[work]["updated_at"],
        seeded[personal]["updated_at"],
    ]


async def test_get_migration_info(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        info = await client.get_migration_info()
    assert isinstance(info, MigrationInfo)
    (seeded,) = fake.rows("migration").values()
    assert info.version == seeded["version"] == "2026.05.12-1"
    assert last_request(fake, "GET", "/rest/v1/migration").query == (("select", "version"),)


async def test_list_models(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        full = await client.list_models()
        bare = await client.list_models(logo=False, desc=False)
    assert all(isinstance(m, ModelInfo) for m in full)
    assert [m.model_id for m in full] == list(MODELS)
    for model in full:
        entry = MODELS[model.model_id]
        assert (model.title, model.media, model.tier) == (
            entry["title"],
            entry["media"],
            entry["tier"],
        )
        assert model.metadata["logo"] == entry["logo"]
    assert {m.media for m in full} == {"text", "image", "video"}
    assert [m.model_id for m in bare] == list(MODELS)
    assert all("logo" not in m.metadata and "desc" not in m.metadata for m in bare)
    requests = fake.requests_to("GET", "/models")
    assert [r.query for r in requests] == [
        (("logo", "1"), ("desc", "1")),
        (("logo", "0"), ("desc", "0")),
    ]


async def test_list_templates(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        everything = await client.list_templates()
        images = await client.list_templates("image")
        small = await client.list_templates(page_size=2)
    assert all(isinstance(t, TemplateRecord) for t in everything)
    assert [
        (t.template_id, t.name, t.category, t.template_type, t.prompt, t.model, t.cover_url)
        for t in everything
    ] == [
        (t["id"], t["name"], t["category"], t["type"], t["prompt"], t["model"], t["cover_url"])
        for t in TEMPLATES
    ]
    assert [t.template_id for t in images] == [t["id"] for t in TEMPLATES if t["type"] == "image"]
    assert [t.template_id for t in small] == [t["id"] for t in TEMPLATES[:2]]
    requests = fake.requests_to("GET", "/templates")
    assert [r.query for r in requests] == [
        (("page_size", "1000"),),
        (("page_size", "1000"), ("type", "image")),
        (("page_size", "2"),),
    ]


async def test_small_edge_reads(make_client: MakeClient) -> None:
    async with make_client() as client:
        invite = await client.get_discord_invite()
        featurebase = await client.get_featurebase_status()
        banana = await client.check_banana_campaign()
        access = await client.check_new_version_access()
        enterprise = await client.get_enterprise_dashboard()
    assert invite == "https://discord.gg/flowith"
    assert featurebase == {"enabled": True, "organization": "flowith", "has_unread": False}
    assert {k: banana[k] for k in ("campaign", "claimed", "model_id", "ends_at")} == {
        "campaign": "banana-2025",
        "claimed": False,
        "model_id": "gemini-3-pro-image-preview",
        "ends_at": "2099-01-31T23:59:59+00:00",
    }
    assert banana["eligible"]  # until 2099: no test of the fake is dated
    assert access == {"access": True, "reason": "invited"}
    assert enterprise == {"is_member": False, "enterprise": None, "role": None}


async def test_check_campaign(fake: FakeFlowith, make_client: MakeClient) -> None:
    async with make_client() as client:
        kling = await client.check_campaign(VideoModel.KLING.value)
        banana = await client.check_campaign("gemini-3-pro-image-preview")
    assert kling == {
        "model_id": "kling-video/v2.6/pro/text-to-video",
        "active": False,
        "campaign_id": None,
        "discount": 0,
        "ends_at": None,
    }
    assert banana["model_id"] == "gemini-3-pro-image-preview"
    assert banana["active"]  # until 2099
    first = fake.requests_to("GET", "/user/campaigns/effective-status")[0]
    # The slashes of the model id are percent-encoded, never sent raw.
    assert first.target == (
        "/user/campaigns/effective-status?model_id=kling-video%2Fv2.6%2Fpro%2Ftext-to-video"
    )
    assert first.param("model_id") == "kling-video/v2.6/pro/text-to-video"


async def test_daily_reward_can_be_claimed_once_a_day(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    async with make_client() as client:
        before = await client.get_daily_rewards_status()
        credits_before = balance(await client.get_credits())
        claimed = await client.claim_daily_reward()
        with pytest.raises(APIError) as again:
            await client.claim_daily_reward()
        after = await client.get_daily_rewards_status()
        credits_after = balance(await client.get_credits())
    assert (before["claimed_today"], before["can_claim"], before["streak"]) == (False, True, 0)
    assert before["last_claimed_at"] is None
    assert claimed == {
        "claimed": True,
        "reward": fake.daily_reward,
        "streak": 1,
        "remain_quota": credits_before + fake.daily_reward,
    }
    assert type(again.value) is APIError
    assert again.value.status_code == 409
    assert again.value.body["message"] == "Daily reward already claimed today"
    assert again.value.body["claimed"] is False
    assert (after["claimed_today"], after["can_claim"], after["streak"]) == (True, False, 1)
    assert after["next_claim_at"] == again.value.body["next_claim_at"]
    assert credits_after == credits_before + fake.daily_reward  # credited once
    claims = fake.requests_to("POST", "/mkt/daily-rewards/claim")
    assert len(claims) == 2  # the refused claim is not retried
    assert claims[0].body == b"{}"
    assert claims[0].header("content-type") == "application/json"
    assert claims[0].header("authorization") == fake.token


async def test_online_sessions(fake: FakeFlowith, make_client: MakeClient) -> None:
    payload = {
        "p_session_id": "tab-1",
        "p_is_idle": False,
        "p_current_path": "/conv/abc",
        "p_locale": "en-US",
    }
    async with make_client() as client:
        nobody = await client.get_online_count()
        upserted = await client.upsert_online_session(payload)
        one = await client.get_online_count()
        await client.upsert_online_session({"p_session_id": "tab-2", "p_is_idle": "true"})
        two = await client.get_online_count()
        removed = await client.remove_online_session("tab-1")
        await client.remove_online_session("never-existed")  # no error
        left = await client.get_online_count()
    assert (nobody, one, two, left) == (0, 1, 2, 1)
    assert upserted is None  # void functions: 204, no body
    assert removed is None
    assert fake.online_count(now=time.time()) == 1
    upsert = fake.requests_to("POST", "/rest/v1/rpc/upsert_online_session")[0]
    assert upsert.json() == payload
    assert upsert.header("content-profile") == "public"
    assert upsert.header("content-type") == "application/json"
    assert upsert.header("authorization") == f"Bearer {fake.token}"
    count = last_request(fake, "POST", "/rest/v1/rpc/get_online_count")
    assert count.body == b"{}"
    remove = fake.requests_to("POST", "/rest/v1/rpc/remove_online_session")[0]
    assert remove.json() == {"p_session_id": "tab-1"}


async def test_a_turn_in_a_conversation_that_does_not_exist_is_not_found(
    make_client: MakeClient,
) -> None:
    """It was the database's raw 409 (a foreign key violation) as a plain APIError."""
    missing = str(uuid.uuid4())
    async with make_client() as client:
        with pytest.raises(NotFoundError, match=f"conversation {missing} does not exist"):
            await client.generate("hi", conv_id=missing)
        with pytest.raises(NotFoundError):
            await client.start_conversation(conv_id=missing).send("hi")


async def test_a_second_turn_at_once_is_refused_and_the_session_goes_on(
    fake: FakeFlowith, make_client: MakeClient
) -> None:
    # Two sends at once made two conversations, kept one of the exchanges, and (on
    # trio) left the session hanging its next turn under the other conversation's node.
    fake.script(chunk("first answer"), pause(0.2), complete())
    fake.script(chunk("third answer"), complete())
    async with make_client() as client:
        session = client.start_conversation()
        outcomes: list[Any] = []

        async def turn(start: Callable[[], Awaitable[Any]]) -> None:
            try:
                outcomes.append(await start())
            except ConversationBusyError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(turn, lambda: session.send("first"))
            await eventually(lambda: bool(fake.nodes))
            group.start_soon(turn, lambda: session.send("second"))
            group.start_soon(turn, lambda: session.generate_image("a fox"))
        refused, first = outcomes[:2], outcomes[2]
        assert [type(o) for o in refused] == [ConversationBusyError] * 2
        assert "still in progress" in str(refused[0])
        assert first.text == "first answer"
        third = await session.send("third")
    assert third.text == "third answer"
    assert session.turn == 2
    assert len(fake.conversations) == 1
    assert fake.nodes[fake.nodes[third.node_id]["p_id"]]["p_id"] == first.node_id


async def test_an_operation_run_says_what_it_runs_and_how_far(make_client: MakeClient) -> None:
    # It was <flowith_proto.abc.OperationRun object at 0x...>.
    async with make_client() as client:
        run = client.generate_stream("hi")
        assert repr(run) == "<OperationRun generate (not started)>"
        async for _step in run:
            assert repr(run) == "<OperationRun generate (running)>"
            break
        await run.aclose()
        assert repr(run) == "<OperationRun generate (ended)>"
