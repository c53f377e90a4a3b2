"""The rows a new fake starts with: a believable account, and a stranger's.

Every table gets a few rows of the fake's user and a few of
:data:`OTHER_USER_ID`, which row-level security must hide (except what that
user shares: the conversation ``TEAM_WIKI`` lists the fake's user as a
member). Ids are fixed constants, not drawn from the model's generator, so
seeding never shifts the ids a test's own requests get.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import attrs

from flowith_proto.fake.catalog import fake_png
from flowith_proto.fake.postgrest import iso_time

__all__ = [
    "DELETED_NOTES",
    "KYOTO_TRIP",
    "OTHER_USER_ID",
    "PRIVATE_PLANS",
    "PRODUCT_LAUNCH",
    "QUARTERLY_REPORT",
    "SEED_NODES",
    "SEED_PROJECTS",
    "TEAM_WIKI",
    "THIRD_USER_ID",
    "Seed",
    "seed",
]

#: Another user, whose private rows the fake's user must never see.
OTHER_USER_ID = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
#: A third member of the shared ``TEAM_WIKI`` conversation.
THIRD_USER_ID = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"


def _sid(n: int) -> str:
    return f"5eed0000-0000-4000-8000-{n:012d}"


#: The fake user's conversations.
KYOTO_TRIP = _sid(1)
QUARTERLY_REPORT = _sid(2)
PRODUCT_LAUNCH = _sid(3)  # shared with OTHER_USER_ID
DELETED_NOTES = _sid(4)  # soft-deleted
#: The other user's conversations.
TEAM_WIKI = _sid(5)  # shared with the fake's user
PRIVATE_PLANS = _sid(6)  # hidden from the fake's user
#: The nodes of KYOTO_TRIP (a user node, then its AI answer) and one of PRIVATE_PLANS.
SEED_NODES = (_sid(11), _sid(12), _sid(13))
#: The fake user's projects, then the other user's.
SEED_PROJECTS = (_sid(21), _sid(22), _sid(23))


def _at(text: str) -> str:
    moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return iso_time(moment.timestamp())


@attrs.frozen
class Seed:
    """Rows by table, and the CDN files the rows point at (path, bytes, type)."""

    rows: dict[str, list[dict[str, Any]]]
    files: list[tuple[str, bytes, str]]


def _conversation(
    conv_id: str,
    user: str,
    title: str,
    created: str,
    updated: str,
    *,
    project: str | None = None,
    preview: str | None = None,
    deleted: bool = False,
    members: int | None = None,
) -> dict[str, Any]:
    return {
        "id": conv_id,
        "user_id": user,
        "title": title,
        "project_id": project,
        "is_absolute_mode": True,
        "preview": preview,
        "is_delete": deleted,
        "metadata": {} if members is None else {"member_count": members},
        "created_at": _at(created),
        "updated_at": _at(updated),
    }


def seed(user: str, cdn_url: str) -> Seed:
    """The initial rows for the fake's ``user``; file URLs start with ``cdn_url``."""
    other = OTHER_USER_ID
    work, personal, others_project = SEED_PROJECTS
    question, answer, hidden_node = SEED_NODES
    conversations: list[dict[str, Any]] = [
        _conversation(
            KYOTO_TRIP,
            user,
            "Trip to Kyoto",
            "2026-05-10T08:00:00",
            "2026-05-12T09:30:00",
            preview="Day 1: Fushimi Inari at dawn...",
        ),
        _conversation(
            QUARTERLY_REPORT,
            user,
            "Quarterly report draft",
            "2026-05-11T10:00:00",
            "2026-05-15T16:45:00",
            project=work,
        ),
        _conversation(
            PRODUCT_LAUNCH,
            user,
            "Product launch plan",
            "2026-05-13T14:00:00",
            "2026-05-16T11:20:00",
            members=2,
        ),
        _conversation(
            DELETED_NOTES,
            user,
            "Old notes",
            "2026-04-02T07:00:00",
            "2026-04-20T07:00:00",
            deleted=True,
        ),
        _conversation(
            TEAM_WIKI, other, "Team wiki", "2026-05-01T12:00:00", "2026-05-14T08:10:00", members=3
        ),
        _conversation(
            PRIVATE_PLANS, other, "Private plans", "2026-05-05T18:00:00", "2026-05-17T21:00:00"
        ),
    ]
    nodes: list[dict[str, Any]] = [
        {
            "id": question,
            "conv_id": KYOTO_TRIP,
            "type": "1",
            "p_id": KYOTO_TRIP,
            "c_ids": [answer],
            "data": {"timestamp": "1778400000", "value": "Plan three days in Kyoto"},
            "position": {"x": 0, "y": 130},
            "is_delete": False,
            "created_at": _at("2026-05-10T08:00:01"),
            "updated_at": _at("2026-05-10T08:00:01"),
        },
        {
            "id": answer,
            "conv_id": KYOTO_TRIP,
            "type": "2",
            "p_id": question,
            "c_ids": [],
            "data": {
                "title": "AI",
                "value": "Day 1: Fushimi Inari at dawn, then Gion in the evening.",
                "mode": "General",
                "timestamp": "1778400000",
                "isImage": False,
                "model": "gpt-4.1-nano",
                "status": "done",
            },
            "position": {"x": 0, "y": 340},
            "is_delete": False,
            "created_at": _at("2026-05-10T08:00:02"),
            "updated_at": _at("2026-05-10T08:00:09"),
        },
        {
            "id": hidden_node,
            "conv_id": PRIVATE_PLANS,
            "type": "1",
            "p_id": PRIVATE_PLANS,
            "c_ids": [],
            "data": {"timestamp": "1778004000", "value": "a secret"},
            "position": {"x": 0, "y": 130},
            "is_delete": False,
            "created_at": _at("2026-05-05T18:00:01"),
            "updated_at": _at("2026-05-05T18:00:01"),
        },
    ]

    def member(
        n: int, conv: str, who: str, role: int, name: str, *, top: bool = False
    ) -> dict[str, Any]:
        return {
            "id": _sid(n),
            "conv_id": conv,
            "user_id": who,
            "role": role,
            "top": top,
            "user_name": name,
            "user_avatar": f"https://lh3.googleusercontent.com/a/{who[:8]}=s96-c",
            "created_at": _at("2026-05-13T14:05:00"),
        }

    cooperate: list[dict[str, Any]] = [
        member(31, PRODUCT_LAUNCH, user, 1, "Fake User"),
        member(32, PRODUCT_LAUNCH, other, 2, "Olga Other"),
        member(33, TEAM_WIKI, other, 1, "Olga Other"),
        member(34, TEAM_WIKI, user, 2, "Fake User"),
        member(35, TEAM_WIKI, THIRD_USER_ID, 2, "Theo Third", top=True),
        member(36, PRIVATE_PLANS, other, 1, "Olga Other"),
    ]
    profiles: list[dict[str, Any]] = [
        {
            "id": user,
            "language": "en",
            "name": "Fake User",
            "avatar_url": f"https://lh3.googleusercontent.com/a/{user[:8]}=s96-c",
            "metadata": {"theme": "dark", "onboarded": True},
            "created_at": _at("2025-09-01T10:00:00"),
            "updated_at": _at("2026-05-01T10:00:00"),
        },
        {
            "id": other,
            "language": "de",
            "name": "Olga Other",
            "avatar_url": None,
            "metadata": {},
            "created_at": _at("2025-10-01T10:00:00"),
            "updated_at": _at("2025-10-01T10:00:00"),
        },
    ]
    pdf = b"%PDF-1.4\n% fake Flowith seed file\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    png = fake_png("seed upload")
    files = [
        (f"/f/{_sid(41)}/notes.pdf", pdf, "application/pdf"),
        (f"/f/{_sid(42)}/photo.png", png, "image/png"),
        (f"/f/{_sid(43)}/secret.txt", b"not yours", "text/plain"),
    ]

    def upload(n: int, who: str, conv: str | None, path: str, size: int, at: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        return {
            "id": _sid(n),
            "user_id": who,
            "conv_id": conv,
            "value": cdn_url + path,
            "name": name,
            "type": name.rsplit(".", 1)[1],
            "size": size,
            "created_at": _at(at),
        }

    uploads: list[dict[str, Any]] = [
        upload(41, user, QUARTERLY_REPORT, files[0][0], len(pdf), "2026-05-11T10:05:00"),
        upload(42, user, None, files[1][0], len(png), "2026-05-14T09:00:00"),
        upload(43, other, PRIVATE_PLANS, files[2][0], 9, "2026-05-05T18:10:00"),
    ]
    subscription_types: list[dict[str, Any]] = [
        {"id": 1, "name": "Pro monthly", "quota": 2000, "months": 1, "price": 19.9},
        {"id": 2, "name": "Pro yearly", "quota": 24000, "months": 12, "price": 199},
        {"id": 3, "name": "Ultimate monthly", "quota": 10000, "months": 1, "price": 49.9},
    ]
    subscriptions: list[dict[str, Any]] = [
        {
            "id": _sid(51),
            "user_id": user,
            "subscription_type_id": 2,
            "months": 12,
            "from_date": _at("2026-01-01T00:00:00"),
            "to_date": _at("2099-01-01T00:00:00"),
            "remain_quota": 1523.5,
            "created_at": _at("2026-01-01T00:00:00"),
        },
        {
            "id": _sid(52),
            "user_id": user,
            "subscription_type_id": 1,
            "months": 1,
            "from_date": _at("2025-11-01T00:00:00"),
            "to_date": _at("2025-12-01T00:00:00"),
            "remain_quota": 0,
            "created_at": _at("2025-11-01T00:00:00"),
        },
        {
            "id": _sid(53),
            "user_id": other,
            "subscription_type_id": 3,
            "months": 1,
            "from_date": _at("2026-05-01T00:00:00"),
            "to_date": _at("2026-06-01T00:00:00"),
            "remain_quota": 9000,
            "created_at": _at("2026-05-01T00:00:00"),
        },
    ]
    notices: list[dict[str, Any]] = [
        {
            "id": _sid(61),
            "title": "Seedance 2.0 is here",
            "content": "Generate videos with sound from the canvas.",
            "is_active": True,
            "created_at": _at("2026-05-12T00:00:00"),
        },
        {
            "id": _sid(62),
            "title": "Scheduled maintenance",
            "content": "The canvas was read-only for 10 minutes on April 2.",
            "is_active": False,
            "created_at": _at("2026-04-01T00:00:00"),
        },
    ]
    projects: list[dict[str, Any]] = [
        {
            "id": work,
            "user_id": user,
            "title": "Work",
            "created_at": _at("2026-02-01T09:00:00"),
            "updated_at": _at("2026-05-15T16:45:00"),
        },
        {
            "id": personal,
            "user_id": user,
            "title": "Personal",
            "created_at": _at("2026-02-02T09:00:00"),
            "updated_at": _at("2026-03-02T09:00:00"),
        },
        {
            "id": others_project,
            "user_id": other,
            "title": "Olga's secret project",
            "created_at": _at("2026-02-03T09:00:00"),
            "updated_at": _at("2026-05-17T09:00:00"),
        },
    ]
    novels: list[dict[str, Any]] = [
        {
            "id": _sid(71),
            "conv_id": QUARTERLY_REPORT,
            "content": "# Q2 report\n\nRevenue grew 12% over the quarter.",
            "created_at": _at("2026-05-11T10:10:00"),
            "updated_at": _at("2026-05-15T16:40:00"),
        },
        {
            "id": _sid(72),
            "conv_id": PRIVATE_PLANS,
            "content": "not yours",
            "created_at": _at("2026-05-05T18:20:00"),
            "updated_at": _at("2026-05-05T18:20:00"),
        },
    ]
    discussions: list[dict[str, Any]] = [
        {
            "id": _sid(81),
            "conv_id": PRODUCT_LAUNCH,
            "user_id": user,
            "content": "Can we move the launch to June?",
            "created_at": _at("2026-05-14T10:00:00"),
        },
        {
            "id": _sid(82),
            "conv_id": PRODUCT_LAUNCH,
            "user_id": other,
            "content": "June works if the video is ready.",
            "created_at": _at("2026-05-14T10:30:00"),
        },
        {
            "id": _sid(83),
            "conv_id": PRIVATE_PLANS,
            "user_id": other,
            "content": "not yours",
            "created_at": _at("2026-05-06T10:30:00"),
        },
    ]
    oracles: list[dict[str, Any]] = [
        {
            "id": _sid(91),
            "conv_id": QUARTERLY_REPORT,
            "requirement": "Summarise the quarter for the board",
            "workflow": '[{"step": "outline"}, {"step": "draft"}, {"step": "review"}]',
            "no_need_replan": False,
            "is_stop": False,
            "is_public": False,
            "user_confirm": True,
            "is_delete": False,
            "created_at": _at("2026-05-11T10:15:00"),
        },
        {
            "id": _sid(92),
            "conv_id": PRIVATE_PLANS,
            "requirement": "not yours",
            "workflow": "[]",
            "no_need_replan": True,
            "is_stop": True,
            "is_public": False,
            "user_confirm": False,
            "is_delete": False,
            "created_at": _at("2026-05-05T18:30:00"),
        },
    ]
    migrations: list[dict[str, Any]] = [
        {"id": 1, "version": "2026.05.12-1", "applied_at": _at("2026-05-12T03:00:00")}
    ]
    rows: dict[str, list[dict[str, Any]]] = {
        "conversation": conversations,
        "flow_node": nodes,
        "cooperate": cooperate,
        "user_profile": profiles,
        "user_upload_records": uploads,
        "subscription_type": subscription_types,
        "subscription_user_own": subscriptions,
        "public_notice": notices,
        "flow_project": projects,
        "conv_novel_editor": novels,
        "discuss": discussions,
        "oracle_stream": oracles,
        "migration": migrations,
    }
    return Seed(rows, files)
