"""The output records and the tolerant row converter, on realistic and hostile rows.

Realistic rows use the column names of protocol.md section 2. Hostile rows are
what a changing web app may send: nulls, missing or unknown keys, numbers as
strings, JSON text where an object was expected. Each must give the documented
record, or a ResponseDecodeError that names the problem.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from flowith_proto import convert, models
from flowith_proto.convert import (
    ROW_TYPES,
    structure_credits,
    structure_models,
    structure_row,
    structure_rows,
)
from flowith_proto.errors import ResponseDecodeError
from flowith_proto.models import (
    AuthSession,
    ConversationRecord,
    ConvNovelEditor,
    CooperatorRecord,
    DiscussRecord,
    FileRecord,
    FlowNode,
    FlowProject,
    GeneratedImage,
    GenerationOutput,
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
    VideoOutput,
)
from flowith_proto.queries import unseen_rows

CONV = "5b0c6d3e-8a41-4a7e-9d2f-0c1b2a3d4e5f"
USER = "0f1e2d3c-4b5a-4968-8776-655443322110"
NODE = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNlY3JldA"
REFRESH = "v1.refresh-token-very-secret"

# One realistic row per type, and the record it must give (metadata aside).
CASES: list[tuple[type, dict[str, Any], Any]] = [
    (
        ConversationRecord,
        {
            "id": CONV,
            "title": "Capital of Poland",
            "user_id": USER,
            "is_absolute_mode": True,
            "preview": "Warsaw is the capital...",
            "created_at": "2026-05-18T18:04:17.610+00:00",
            "updated_at": "2026-05-18T18:05:02.001+00:00",
            "project_id": None,
            "is_delete": False,
            "metadata": {"member_count": 1},
        },
        ConversationRecord(
            conv_id=CONV,
            title="Capital of Poland",
            user_id=USER,
            is_absolute_mode=True,
            preview="Warsaw is the capital...",
        ),
    ),
    (
        FlowNode,
        {
            "id": NODE,
            "conv_id": CONV,
            "type": "2",
            "p_id": "11111111-2222-4333-8444-555555555555",
            "c_ids": [],
            "data": {
                "title": "AI",
                "value": "Warsaw.",
                "mode": "General",
                "timestamp": "1779127457",
                "isImage": False,
                "model": "gpt-4.1-nano",
                "status": "done",
            },
            "position": {"x": 0, "y": 340},
            "created_at": "2026-05-18T18:04:18+00:00",
            "is_delete": False,
        },
        FlowNode(
            node_id=NODE,
            conv_id=CONV,
            node_type="2",
            p_id="11111111-2222-4333-8444-555555555555",
            c_ids=(),
            data={
                "title": "AI",
                "value": "Warsaw.",
                "mode": "General",
                "timestamp": "1779127457",
                "isImage": False,
                "model": "gpt-4.1-nano",
                "status": "done",
            },
            position={"x": 0, "y": 340},
        ),
    ),
    (
        UserCredits,
        {
            "sub_type": "pro",
            "remain_quota": 1234.5,
            "init_quota": 2000,
            "remain_days": 12,
            "from_date": "2026-05-01T00:00:00Z",
            "to_date": "2026-06-01T00:00:00Z",
        },
        UserCredits(
            remain_quota=1234.5,
            init_quota=2000.0,
            sub_type="pro",
            from_date="2026-05-01T00:00:00Z",
            to_date="2026-06-01T00:00:00Z",
        ),
    ),
    (
        ModelInfo,
        {"model_id": "gpt-4.1", "title": "GPT-4.1", "media": "text", "tier": "pro", "logo": "x"},
        ModelInfo(model_id="gpt-4.1", title="GPT-4.1", media="text", tier="pro"),
    ),
    (
        TemplateRecord,
        {
            "id": 42,
            "name": "Summarise",
            "category": "writing",
            "type": "text",
            "prompt": "Summarise: {{input}}",
            "model": "gpt-4.1",
            "cover_url": "https://r2-bucket.flowith.net/f/cover.png",
        },
        TemplateRecord(
            template_id="42",
            name="Summarise",
            category="writing",
            template_type="text",
            prompt="Summarise: {{input}}",
            model="gpt-4.1",
            cover_url="https://r2-bucket.flowith.net/f/cover.png",
        ),
    ),
    (
        CooperatorRecord,
        {"user_id": USER, "role": 1, "user_name": "alice", "user_avatar": "https://a/b.png"},
        CooperatorRecord(user_id=USER, role=1, user_name="alice", user_avatar="https://a/b.png"),
    ),
    (
        UserProfile,
        {"id": USER, "language": "pl", "created_at": "2026-01-01T00:00:00Z"},
        UserProfile(user_id=USER, language="pl"),
    ),
    (
        UserUploadRecord,
        {
            "id": "rec-1",
            "user_id": USER,
            "conv_id": CONV,
            "value": "https://r2-bucket.flowith.net/f/a/my_game.html",
            "name": "my_game.html",
            "type": "html",
            "created_at": "2026-05-18T18:00:00+00:00",
        },
        UserUploadRecord(
            record_id="rec-1",
            user_id=USER,
            conv_id=CONV,
            value="https://r2-bucket.flowith.net/f/a/my_game.html",
            name="my_game.html",
            file_type="html",
            created_at="2026-05-18T18:00:00+00:00",
        ),
    ),
    (
        SubscriptionUserOwn,
        {
            "id": "sub-1",
            "months": 1,
            "from_date": "2026-05-01T00:00:00+00:00",
            "to_date": "2026-06-01T00:00:00+00:00",
            "remain_quota": 1500,
            "subscription_type": {"id": 3, "quota": 2000},
        },
        SubscriptionUserOwn(
            record_id="sub-1",
            months=1,
            from_date="2026-05-01T00:00:00+00:00",
            to_date="2026-06-01T00:00:00+00:00",
            remain_quota=1500.0,
            subscription_type={"id": 3, "quota": 2000},
        ),
    ),
    (
        PublicNotice,
        {"id": 7, "title": "Maintenance", "content": "Down at 02:00 UTC.", "is_show": True},
        PublicNotice(notice_id="7", title="Maintenance", content="Down at 02:00 UTC."),
    ),
    (
        FlowProject,
        {"id": "p-1", "title": "Thesis", "updated_at": "2026-05-18T10:00:00+00:00"},
        FlowProject(project_id="p-1", title="Thesis", updated_at="2026-05-18T10:00:00+00:00"),
    ),
    (
        ConvNovelEditor,
        {"conv_id": CONV, "content": "Chapter 1", "updated_at": "2026-05-18"},
        ConvNovelEditor(conv_id=CONV, content="Chapter 1"),
    ),
    (
        DiscussRecord,
        {
            "id": "d-1",
            "conv_id": CONV,
            "user_id": USER,
            "content": "Nice answer",
            "created_at": "2026-05-18T18:10:00+00:00",
        },
        DiscussRecord(
            discuss_id="d-1",
            conv_id=CONV,
            user_id=USER,
            content="Nice answer",
            created_at="2026-05-18T18:10:00+00:00",
        ),
    ),
    (
        OracleStreamRecord,
        {
            "id": "o-1",
            "requirement": "Plan a trip",
            "workflow": "step 1",
            "no_need_replan": False,
            "is_stop": True,
            "is_public": False,
            "user_confirm": True,
            "is_delete": False,
        },
        OracleStreamRecord(
            record_id="o-1",
            requirement="Plan a trip",
            workflow="step 1",
            is_stop=True,
            user_confirm=True,
        ),
    ),
    (MigrationInfo, {"version": "2026.05.1"}, MigrationInfo(version="2026.05.1")),
    (
        FileRecord,
        {"url": "https://r2-bucket.flowith.net/f/x/a.png", "file_type": "png", "size": 3},
        FileRecord(url="https://r2-bucket.flowith.net/f/x/a.png", file_type="png"),
    ),
    (
        GeneratedImage,
        {"url": "https://r2-bucket.flowith.net/f/x/a.png", "model": "gpt-image-1"},
        GeneratedImage(url="https://r2-bucket.flowith.net/f/x/a.png", model="gpt-image-1"),
    ),
    (
        ImageOutput,
        {
            "images": [{"url": "https://cdn/a.png", "model": "m"}, "https://cdn/b.png"],
            "model": "m",
            "node_id": NODE,
            "conv_id": CONV,
        },
        ImageOutput(
            images=(
                GeneratedImage(url="https://cdn/a.png", model="m"),
                GeneratedImage("https://cdn/b.png"),
            ),
            model="m",
            node_id=NODE,
            conv_id=CONV,
        ),
    ),
    (
        VideoOutput,
        {"video_url": "https://cdn/v.mp4", "model": "seedance-2.0-fast", "node_id": NODE},
        VideoOutput(video_url="https://cdn/v.mp4", model="seedance-2.0-fast", node_id=NODE),
    ),
    (
        GenerationOutput,
        {"text": "Warsaw", "node_id": NODE, "conv_id": CONV, "model": "gpt-4.1-nano"},
        GenerationOutput(text="Warsaw", node_id=NODE, conv_id=CONV, model="gpt-4.1-nano"),
    ),
    (
        AuthSession,
        {
            "access_token": TOKEN,
            "token_type": "bearer",
            "expires_in": 3600,
            "expires_at": 1779131057,
            "refresh_token": REFRESH,
            "user": {"id": USER, "email": "a@example.com"},
        },
        AuthSession(
            access_token=TOKEN,
            refresh_token=REFRESH,
            token_type="bearer",
            expires_in=3600,
            expires_at=1779131057.0,
            user={"id": USER, "email": "a@example.com"},
        ),
    ),
]
CASE_IDS = [cls.__name__ for cls, _, _ in CASES]


def _with_metadata(record: Any, row: dict[str, Any]) -> Any:
    """``record`` with ``row`` as its metadata (GeneratedImage has none)."""
    if "metadata" not in attrs.fields_dict(type(record)):
        return record
    return attrs.evolve(record, metadata=row)


def test_every_row_type_has_a_case() -> None:
    assert {cls for cls, _, _ in CASES} == set(ROW_TYPES)


@pytest.mark.parametrize(("cls", "row", "expected"), CASES, ids=CASE_IDS)
def test_realistic_row(cls: type, row: dict[str, Any], expected: Any) -> None:
    record: Any = structure_row(row, cls)
    assert record == _with_metadata(expected, row)
    assert getattr(record, "metadata", row) == row


@pytest.mark.parametrize(("cls", "row", "expected"), CASES, ids=CASE_IDS)
def test_null_everywhere_gives_the_defaults(cls: type, row: dict[str, Any], expected: Any) -> None:
    nulls = dict.fromkeys(row)
    assert structure_row(nulls, cls) == _with_metadata(cls(), nulls)


@pytest.mark.parametrize("cls", ROW_TYPES, ids=lambda cls: cls.__name__)
def test_missing_keys_give_the_defaults(cls: type) -> None:
    assert structure_row({}, cls) == cls()


@pytest.mark.parametrize(("cls", "row", "expected"), CASES, ids=CASE_IDS)
def test_unknown_keys_are_ignored_and_kept_in_metadata(
    cls: type, row: dict[str, Any], expected: Any
) -> None:
    drifted = {**row, "brand_new_column": {"nested": [1, 2]}, "another": None}
    record: Any = structure_row(drifted, cls)
    assert record == _with_metadata(expected, drifted)
    if hasattr(record, "metadata"):
        assert record.metadata["brand_new_column"] == {"nested": [1, 2]}


def test_null_does_not_leak_as_none() -> None:
    """D24: the old client let ``title=None`` through."""
    record = structure_row({"id": CONV, "title": None, "user_id": None}, ConversationRecord)
    assert record.title == ""
    assert record.user_id == ""
    assert record.is_absolute_mode is True


def test_preview_alone_may_be_none() -> None:
    assert structure_row({"preview": None}, ConversationRecord).preview is None
    assert structure_row({"preview": "hi"}, ConversationRecord).preview == "hi"


def test_metadata_is_a_copy_of_the_row() -> None:
    row: dict[str, Any] = {"id": CONV, "title": "t"}
    record = structure_row(row, ConversationRecord)
    row["title"] = "changed"
    assert record.metadata == {"id": CONV, "title": "t"}


def test_owned_rows_become_the_metadata_without_a_copy() -> None:
    rows: list[dict[str, Any]] = [{"id": CONV, "title": "t"}]
    [copied] = structure_rows(rows, ConversationRecord)
    [owned] = structure_rows(rows, ConversationRecord, owned=True)
    assert copied == owned
    assert copied.metadata is not rows[0]
    assert owned.metadata is rows[0]


def test_records_are_frozen() -> None:
    record = structure_row({"id": CONV}, ConversationRecord)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.title = "x"  # type: ignore[misc]


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (12.5, 12.5),
        (3, 3.0),
        ("12.5", 12.5),
        ("1,234.5", 1234.5),
        ("1_000", 1000.0),
        (" 7 ", 7.0),
        ("-3", -3.0),
        ("1e3", 1000.0),
    ],
)
def test_float_fields_accept_numeric_strings(sent: Any, expected: float) -> None:
    (credits,) = structure_credits([{"remain_quota": sent, "init_quota": sent}])
    assert credits.remain_quota == expected
    assert credits.init_quota == expected
    assert isinstance(credits.remain_quota, float)


@pytest.mark.parametrize(
    "sent", ["abc", "", "12.5 credits", True, False, {"v": 1}, [1], "nan", "inf", float("inf")]
)
def test_unparsable_float_gives_the_default_and_a_warning(
    sent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        (credits,) = structure_credits([{"remain_quota": sent, "sub_type": "pro"}])
    assert credits.remain_quota == 0.0
    assert credits.sub_type == "pro"
    assert [r.name for r in caplog.records] == ["flowith.convert"]
    assert "UserCredits.remain_quota" in caplog.records[0].getMessage()


def test_a_value_nested_deeper_than_python_recurses_gives_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The warning's repr of the value raised RecursionError out of get_credits.
    deep: list[Any] = [1]
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        (credits,) = structure_credits([{"remain_quota": deep, "sub_type": "pro"}])
    assert (credits.remain_quota, credits.sub_type) == (0.0, "pro")
    assert "UserCredits.remain_quota: expected" in caplog.text
    assert "got [[[[...]]]]" in caplog.text  # a few levels of it, on every Python


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(3, 3), (2.0, 2), ("2", 2), ("2.0", 2), (" 12 ", 12), ("1,200", 1200)],
)
def test_int_fields_accept_whole_numbers(sent: Any, expected: int) -> None:
    record = structure_row({"months": sent}, SubscriptionUserOwn)
    assert record.months == expected
    assert type(record.months) is int


@pytest.mark.parametrize("sent", [2.5, "2.5", "two", True, {}, [2]])
def test_int_field_junk_gives_its_own_default(sent: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        assert structure_row({"role": sent}, CooperatorRecord).role == 2
        assert structure_row({"months": sent}, SubscriptionUserOwn).months == 0
    assert len(caplog.records) == 2


def test_auth_session_numbers_default_to_none() -> None:
    session = structure_row({"expires_in": "3600", "expires_at": "junk"}, AuthSession)
    assert session.expires_in == 3600
    assert session.expires_at is None


# --- booleans -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        (" False ", False),
        ("1", True),
        ("0", False),
        ("t", True),
        ("f", False),
        ("no", False),
        (1, True),
        (0, False),
        ("", False),
        ("junk", True),
        ([], False),
        ({"a": 1}, True),
    ],
)
def test_bool_fields(sent: Any, expected: bool) -> None:
    record = structure_row({"is_stop": sent, "is_absolute_mode": sent}, OracleStreamRecord)
    assert record.is_stop is expected
    assert (
        structure_row({"is_absolute_mode": sent}, ConversationRecord).is_absolute_mode is expected
    )


def test_bool_null_gives_each_fields_default() -> None:
    assert structure_row({"is_absolute_mode": None}, ConversationRecord).is_absolute_mode is True
    assert structure_row({"is_stop": None}, OracleStreamRecord).is_stop is False


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(42, "42"), (1.5, "1.5"), (True, "true"), (False, "false"), ("", ""), ("żółw", "żółw")],
)
def test_text_fields_accept_scalars(sent: Any, expected: str) -> None:
    assert structure_row({"title": sent}, ConversationRecord).title == expected


def test_objects_in_text_fields_become_their_json_text() -> None:
    workflow = {"steps": [{"name": "search", "done": True}], "note": "żółw"}
    record = structure_row(
        {"id": "o", "workflow": workflow, "requirement": [1, 2]}, OracleStreamRecord
    )
    assert record.workflow == '{"steps":[{"name":"search","done":true}],"note":"żółw"}'
    assert json.loads(record.workflow) == workflow
    assert record.requirement == "[1,2]"
    editor = structure_row({"conv_id": CONV, "content": {"blocks": []}}, ConvNovelEditor)
    assert editor.content == '{"blocks":[]}'
    preview = structure_row({"preview": {"text": "hi"}}, ConversationRecord).preview
    assert preview == '{"text":"hi"}'
    upload = structure_row({"value": {"url": "u"}}, UserUploadRecord)
    assert upload.value == '{"url":"u"}'


def test_numeric_ids_become_text() -> None:
    assert structure_row({"id": 12}, PublicNotice).notice_id == "12"
    assert structure_row({"id": 1, "type": 2}, FlowNode).node_type == "2"


# --- flow nodes -----------------------------------------------------------------------------


def test_flow_node_data_and_position_as_json_strings() -> None:
    """Nodes written through /user/batch-upsert-nodes store JSON text (protocol.md 3.4)."""
    row = {
        "id": NODE,
        "type": "2",
        "data": '{"value": "https://cdn/a.png", "model": "gemini-3.1-flash-image"}',
        "position": '{"x": 0, "y": 340}',
        "c_ids": '["a", "b"]',
    }
    node = structure_row(row, FlowNode)
    assert node.data == {"value": "https://cdn/a.png", "model": "gemini-3.1-flash-image"}
    assert node.position == {"x": 0, "y": 340}
    assert node.c_ids == ("a", "b")
    assert node.text == "https://cdn/a.png"
    assert node.model == "gemini-3.1-flash-image"
    assert node.metadata == row


@pytest.mark.parametrize("sent", ["not json", "[1, 2]", '"text"', "12", ["x"], 5])
def test_flow_node_data_that_is_not_an_object(sent: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        node = structure_row({"id": NODE, "data": sent}, FlowNode)
    assert node.data == {}
    assert node.node_id == NODE
    assert "FlowNode.data" in caplog.records[0].getMessage()


@pytest.mark.parametrize("sent", [None, "", "  ", "null", {}])
def test_flow_node_empty_data_is_silent(sent: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        assert structure_row({"data": sent}, FlowNode).data == {}
    assert caplog.records == []


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (None, ()),
        ([], ()),
        (["a", "b"], ("a", "b")),
        ('["a"]', ("a",)),
        ("", ()),
        ([1, None, "x"], ("1", "x")),
    ],
)
def test_flow_node_c_ids(sent: Any, expected: tuple[str, ...]) -> None:
    node = structure_row({"c_ids": sent}, FlowNode)
    assert node.c_ids == expected
    assert isinstance(node.c_ids, tuple)


def test_flow_node_c_ids_junk(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        assert structure_row({"c_ids": "a,b"}, FlowNode).c_ids == ()
        assert structure_row({"c_ids": {"a": 1}}, FlowNode).c_ids == ()
        assert structure_row({"c_ids": ["a", {"b": 1}]}, FlowNode).c_ids == ("a",)
    assert len(caplog.records) == 3


def test_flow_node_text_and_model() -> None:
    assert FlowNode().text == ""
    assert FlowNode().model == ""
    assert FlowNode(data={"value": "hello", "model": "m"}).text == "hello"
    assert FlowNode(data={"value": None}).text == ""
    assert (
        FlowNode(data={"value": {"error": "provider_error"}}).text == '{"error":"provider_error"}'
    )
    assert FlowNode(data={"value": 3}).text == "3"
    assert FlowNode(data={"model": "gpt-4.1"}).model == "gpt-4.1"


def test_subscription_type_is_the_embedded_object() -> None:
    sub = structure_row(
        {"id": "s", "subscription_type": '{"id": 3, "quota": 10}'}, SubscriptionUserOwn
    )
    assert sub.subscription_type == {"id": 3, "quota": 10}
    assert structure_row({"subscription_type": None}, SubscriptionUserOwn).subscription_type == {}


# --- rows that cannot be understood ----------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "kind"),
    [([], "array"), ("row", "string"), (3, "number"), (None, "null"), (True, "boolean")],
)
def test_a_row_that_is_not_an_object(row: Any, kind: str) -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        structure_rows([{"id": CONV}, row], ConversationRecord, context="list_conversations")
    message = str(caught.value)
    assert message.startswith("list_conversations: row 1: ")
    assert "expected a JSON object for ConversationRecord" in message
    assert f"got a JSON {kind}" in message


@pytest.mark.parametrize("bad_id", [{"id": CONV}, [CONV]])
@pytest.mark.parametrize(
    "cls",
    [
        ConversationRecord,
        FlowNode,
        TemplateRecord,
        UserProfile,
        UserUploadRecord,
        SubscriptionUserOwn,
        OracleStreamRecord,
        PublicNotice,
        FlowProject,
        DiscussRecord,
    ],
    ids=lambda cls: cls.__name__,
)
def test_an_id_that_is_not_a_scalar(cls: type, bad_id: Any) -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        structure_row({"id": bad_id, "title": "t"}, cls, context="ctx")
    message = str(caught.value)
    assert message.startswith(f"ctx: {cls.__name__}.")
    assert "'id' must be a string or a number" in message


def test_conv_novel_editor_id_is_conv_id() -> None:
    with pytest.raises(ResponseDecodeError, match=r"ConvNovelEditor\.conv_id: the row's 'conv_id'"):
        structure_row({"conv_id": {"id": CONV}}, ConvNovelEditor)
    # Elsewhere conv_id is plain text: an embedded object becomes its JSON text.
    assert structure_row({"conv_id": {"a": 1}}, DiscussRecord).conv_id == '{"a":1}'


@pytest.mark.parametrize(("body", "kind"), [("oops", "string"), (None, "null"), (7, "number")])
def test_a_body_that_is_not_a_list(body: Any, kind: str) -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        structure_rows(body, ConversationRecord, context="list_conversations")
    assert str(caught.value) == (
        "list_conversations: expected a JSON array of ConversationRecord objects "
        f"(or one object), got a JSON {kind}"
    )
    assert caught.value.body == body


def test_a_single_object_counts_as_a_list_of_one() -> None:
    assert structure_rows({"id": CONV}, ConversationRecord) == [
        ConversationRecord(conv_id=CONV, metadata={"id": CONV})
    ]
    assert structure_rows([], ConversationRecord) == []


@pytest.mark.parametrize(
    ("body", "cls", "keys"),
    [
        (
            {"code": "PGRST116", "details": None, "hint": None, "message": "no rows"},
            ConversationRecord,
            "['code', 'details', 'hint', 'message']",
        ),
        ({}, ConversationRecord, "[]"),
        ({"error": "Unauthorized"}, UserCredits, "['error']"),
    ],
)
def test_a_lone_object_with_none_of_the_rows_fields_is_no_row(
    body: Any, cls: type, keys: str
) -> None:
    """An error envelope answered with 200 was a record of defaults: a conversation
    without an id, a credits entry of 0 (a balance of 0 shown as real)."""
    with pytest.raises(ResponseDecodeError) as caught:
        structure_rows(body, cls, context="the call")
    assert str(caught.value) == (
        f"the call: expected a JSON array of {cls.__name__} objects (or one object), "
        f"got an object with none of its fields (keys: {keys})"
    )
    assert caught.value.body == body
    # In an array, a row is judged field by field, as ever.
    assert structure_rows([body], cls)[0].metadata == body


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"id": CONV, "type": "1"}, {"id": CONV, "type": "2"}]},
        {"type": "error", "message": "boom"},
    ],
    ids=["wrapper", "error"],
)
def test_a_table_read_answering_an_object_is_no_row(body: Any) -> None:
    """A PostgREST table read answers an array. A wrapper or an error envelope
    sharing a field's name (FlowNode's ``data`` and ``type``) passed the key check:
    one node without an id, or a node of type "error"."""
    with pytest.raises(ResponseDecodeError) as caught:
        structure_rows(body, FlowNode, context="get_flow_nodes", lone_object=False)
    assert str(caught.value).startswith(
        "get_flow_nodes: expected a JSON array of FlowNode objects, got an object (keys: "
    )
    assert structure_rows([], FlowNode, lone_object=False) == []


def test_not_a_row_type() -> None:
    with pytest.raises(TypeError):
        structure_row({}, dict)


# --- credits and models ----------------------------------------------------------------------


def test_credits_list_and_dict() -> None:
    body = [
        {"sub_type": "pro", "remain_quota": "1,234.5", "init_quota": "2_000"},
        {"sub_type": "trial", "remain_quota": 10, "init_quota": None},
    ]
    credits = structure_credits(body)
    assert [c.remain_quota for c in credits] == [1234.5, 10.0]
    assert [c.init_quota for c in credits] == [2000.0, 0.0]
    assert sum(c.remain_quota for c in credits) == 1244.5
    (one,) = structure_credits({"sub_type": "os_access", "remain_quota": 5})
    assert one.sub_type == "os_access"


def test_credits_error_names_the_call() -> None:
    with pytest.raises(ResponseDecodeError, match=r"^get_credits: expected a JSON array"):
        structure_credits("unexpected")


def test_models_catalogue() -> None:
    body: dict[str, Any] = {
        "gpt-4.1": {"title": "GPT-4.1", "media": "text", "tier": "pro"},
        "kling-video/v2.6/pro/text-to-video": {"media": "video"},
        "untitled": {"title": None, "model_id": "ignored"},
    }
    models = structure_models(body)
    assert [m.model_id for m in models] == list(body)
    assert [m.title for m in models] == [
        "GPT-4.1",
        "kling-video/v2.6/pro/text-to-video",
        "untitled",
    ]
    assert models[0] == ModelInfo(
        model_id="gpt-4.1", title="GPT-4.1", media="text", tier="pro", metadata=body["gpt-4.1"]
    )
    assert models[2].metadata == {"title": None, "model_id": "ignored"}
    assert structure_models({}) == []


def test_models_that_are_not_a_catalogue() -> None:
    """D22: the old client returned [] here."""
    with pytest.raises(ResponseDecodeError, match=r"^list_models: expected a JSON object keyed"):
        structure_models([{"model_id": "x"}])
    with pytest.raises(ResponseDecodeError, match=r"^list_models: model 'x': expected a JSON"):
        structure_models({"x": "not an object"})


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        ({"data": {"gpt-4.1": {"title": "GPT-4.1"}, "o3": {"tier": "pro"}}}, "['gpt-4.1', 'o3']"),
        ({"error": {"code": 503, "message": "upstream down"}}, "['code', 'message']"),
    ],
    ids=["wrapper", "error"],
)
def test_a_catalogue_wrapped_or_an_error_is_no_model(body: Any, keys: str) -> None:
    """Read as a catalogue, the wrapper's key was the only model (``data``), and the
    real models were lost; an error envelope was a model named ``error``."""
    with pytest.raises(ResponseDecodeError) as caught:
        structure_models(body)
    (key,) = body
    assert str(caught.value) == (
        f"list_models: model {key!r}: expected a model's fields (title, media, tier), "
        f"got an object with none of them (keys: {keys})"
    )
    # An entry with no details at all is still a model.
    assert [m.model_id for m in structure_models({"bare": {}})] == ["bare"]


def test_a_model_whose_fields_were_renamed_is_still_a_model() -> None:
    """The wrapper check refused any entry with none of title, media and tier, so a
    renaming failed the whole catalogue, and flowith doctor could no longer say
    which fields were renamed."""
    renamed = {"name": "GPT-4.1", "modality": "text", "plan": "pro", "limits": {"rpm": 5}}
    (model,) = structure_models({"gpt-4.1": renamed})
    assert (model.model_id, model.title, model.metadata) == ("gpt-4.1", "gpt-4.1", renamed)


@pytest.mark.parametrize(
    "odd",
    [
        {"name": "New model", "code": "new-model", "provider": "acme"},
        {"pricing": {"input": 1}, "limits": {"rpm": 5}},
    ],
    ids=["error-like keys", "object values"],
)
def test_an_odd_entry_beside_models_is_one_more_model(odd: dict[str, Any]) -> None:
    """The wrapper check looked at each entry alone, so one entry shaped like an
    error envelope or a wrapper failed the whole catalogue, real models and all.
    Beside entries with a model's fields it can only be a model."""
    body = {"gpt-4.1": {"title": "GPT-4.1", "media": "text", "tier": "pro"}, "new": odd}
    models = structure_models(body)
    assert [(m.model_id, m.title, m.tier) for m in models] == [
        ("gpt-4.1", "GPT-4.1", "pro"),
        ("new", "new", ""),
    ]
    assert models[1].metadata == odd


# --- the output types themselves --------------------------------------------------------------


def test_image_output_image() -> None:
    assert ImageOutput().image is None
    first = GeneratedImage(url="https://cdn/1.png", model="m")
    output = ImageOutput(images=[first, GeneratedImage(url="https://cdn/2.png")])
    assert output.image is first
    assert isinstance(output.images, tuple)


class _Marker:
    async def download(self, url: str, *args: object, **kwargs: object) -> Path:
        return Path(url)


def test_downloader_is_private_and_out_of_eq_and_repr() -> None:
    marker = _Marker()
    image = GeneratedImage(url="u", downloader=marker)
    assert image._downloader is marker
    assert image == GeneratedImage(url="u")
    assert "downloader" not in repr(image)
    video = VideoOutput(video_url="v", downloader=marker)
    assert video == VideoOutput(video_url="v")
    assert "downloader" not in repr(video)


def test_auth_session_hides_the_tokens() -> None:
    row = {
        "access_token": TOKEN,
        "refresh_token": REFRESH,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": 1779131057,
        "user": {"id": USER},
    }
    session = structure_row(row, AuthSession)
    assert session.access_token == TOKEN
    assert session.user_id == USER
    for text in (repr(session), str(session), f"{session}", repr([session])):
        assert TOKEN not in text
        assert REFRESH not in text
        assert "c2lnbmF0dXJl" not in text
        assert "metadata" not in text
    assert repr(session) == (
        "AuthSession(access_token='***', refresh_token='***', token_type='bearer', "
        f"expires_in=3600, expires_at=1779131057.0, user_id='{USER}')"
    )
    assert "access_token=''" in repr(AuthSession())


def test_generation_output_str_is_its_text() -> None:
    output = GenerationOutput(text="Warsaw", text_delta="saw", model="m")
    assert str(output) == "Warsaw"
    assert f"{output}" == "Warsaw"
    assert str(GenerationOutput()) == ""


def test_metadata_is_out_of_the_repr() -> None:
    record = structure_row({"id": CONV, "secret_column": "zzz"}, ConversationRecord)
    assert "zzz" not in repr(record)


# The generated structure functions fill slots themselves: shapes they cannot honour
# are refused when they are generated, not misread row by row.


@attrs.frozen(weakref_slot=False)
class _Validated:
    name: str = attrs.field(default="", validator=attrs.validators.instance_of(str))


if hasattr(attrs, "Converter"):  # attrs 24.1+

    @attrs.frozen(weakref_slot=False)
    class _SelfConverted:
        # mypy's attrs plugin does not know Converter objects.
        name: str = attrs.field(
            default="",
            converter=attrs.Converter(lambda value, _self: value, takes_self=True),  # type: ignore[misc]
        )


@attrs.frozen(slots=False)
class _NotSlotted:
    name: str = ""


@attrs.frozen  # a __weakref__ slot: CPython's layout check refuses the twin's __class__
class _WeakReferable:
    name: str = ""


@attrs.frozen(weakref_slot=False)
class _Base:
    name: str = ""


@attrs.frozen(weakref_slot=False)
class _Derived(_Base):
    other: str = ""


@pytest.mark.parametrize(
    ("cls", "complaint"),
    [
        (_Validated, "validators"),
        (_NotSlotted, "must be slotted"),
        (_WeakReferable, "weakref_slot=False"),
        (_Derived, "no base class"),
        *([(_SelfConverted, "plain converter")] if hasattr(attrs, "Converter") else []),
    ],
)
def test_row_types_the_generator_cannot_honour_are_refused(cls: type, complaint: str) -> None:
    with pytest.raises(TypeError, match=complaint):
        convert._make_structure_fn(cls)


@pytest.mark.parametrize(
    "cls", [getattr(models, name) for name in models.__all__ if attrs.has(getattr(models, name))]
)
def test_every_record_is_hashable_and_equal_ones_hash_alike(cls: type) -> None:
    # A frozen record hashed its metadata dict: hash() and set() raised TypeError.
    fields = {f.name for f in attrs.fields(cls)}
    extra = {"metadata": {"raw": [1, {"a": 2}]}} if "metadata" in fields else {}
    one, two = cls(**extra), cls(**extra)
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1


def test_a_token_in_a_value_the_row_cannot_use_is_masked_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The warning quoted the value as it came: a JWT echoed in a row field was logged.
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    opaque = "v1Zq8xYkS2pLmN3rT"
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        (credits,) = structure_credits([{"remain_quota": {"echo": jwt}}])
        structure_row({"access_token": "t", "expires_in": {"refresh_token": opaque}}, AuthSession)
    assert credits.remain_quota == 0.0
    assert "UserCredits.remain_quota" in caplog.text
    assert jwt not in caplog.text
    assert opaque not in caplog.text  # under a credential key, in the repr's quotes
    assert caplog.text.count("[REDACTED]") == 2


def test_a_badly_formatted_record_passes_the_mask_untouched() -> None:
    # The masking filter formats the record: a bad format raised into library code,
    # instead of reaching the handler, which reports it (logging's handleError).
    from flowith_proto import logs

    (mask,) = logs.logger("flowith.test").filters
    assert isinstance(mask, logging.Filter)
    record = logging.LogRecord("flowith.test", logging.WARNING, __file__, 1, "bad %d", ("x",), None)
    assert mask.filter(record) is True
    assert (record.msg, record.args) == ("bad %d", ("x",))


@pytest.mark.parametrize("sent", [10**400, 2**53 + 1, -(2**60), "9" * 40, 1e300])
def test_a_whole_number_no_float_can_hold_gives_the_default(
    sent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # expires_in=10**400 was kept: time.time() + session.expires_in overflowed.
    with caplog.at_level(logging.WARNING, logger="flowith.convert"):
        session = structure_row({"access_token": "t", "expires_in": sent}, AuthSession)
    assert session.expires_in == AuthSession().expires_in
    assert "AuthSession.expires_in" in caplog.text


def test_a_row_without_an_id_nested_past_repr_is_still_told_apart() -> None:
    """Rows without an id are keyed by their content (see unseen_rows); one nested
    deeper than repr() reaches from where the pager runs raised a bare RecursionError."""
    depth = 900
    body = json.loads('[{"title": ' + "[" * depth + "]" * depth + "}]")
    (row,) = structure_rows(body, ConversationRecord)

    def from_deep_in_the_stack(frames: int) -> tuple[list[ConversationRecord], bool]:
        if frames:
            return from_deep_in_the_stack(frames - 1)
        return unseen_rows([row], set(), lambda record: record.conv_id)

    assert from_deep_in_the_stack(200) == ([row], True)
