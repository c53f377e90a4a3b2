"""The edge host's endpoints besides the text completion and the streams.

Media generation (``/image_gen/async``, ``/video/async``), titles, uploads to
the CDN, and the account endpoints (credits, models, templates, rewards,
campaigns). Each handler checks its request as the real edge would and
answers ``{"message"}`` errors; ``docs/fake.md`` lists the response shapes the
protocol fact sheet does not give and what the fake assumes for them.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs

from flowith_proto.fake import multipart
from flowith_proto.fake.catalog import MODELS, TEMPLATES, fake_mp4, fake_png
from flowith_proto.fake.postgrest import iso_time, parse_timestamp
from flowith_proto.fake.routing import Call, Result, route
from flowith_proto.fake.script import Turn
from flowith_proto.fake.tables import is_member
from flowith_proto.fake.wire import Reject, edge_error, json_response, text_response

if TYPE_CHECKING:
    from flowith_proto.fake.model import FakeFlowith

__all__ = ["read_turn", "title_of"]

_ROLES = frozenset({"user", "assistant", "system"})
_ASPECT_RATIO = re.compile(r"[1-9][0-9]?:[1-9][0-9]?\Z")
_IMAGE_SIZES = frozenset({"512", "1k", "2k", "4k"})
_RESOLUTIONS = frozenset({"480p", "720p", "1080p"})
_FILE_TYPE = re.compile(r"[A-Za-z0-9]{1,16}\Z")
_DAY = 86_400


def _bad(message: str) -> Reject:
    return Reject(edge_error(400, message))


def _uuid_field(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) and len(value) == 36 else ""
    except ValueError:
        return ""


def _require_uuid(body: dict[str, Any], field: str) -> str:
    value = _uuid_field(body, field)
    if not value:
        raise _bad(f"{field!r} must be a UUID")
    return value


def _message_problem(message: Any) -> str:
    """What is wrong with one chat message, or ``""``."""
    if not isinstance(message, dict):
        return "must be an object"
    if message.get("role") not in _ROLES:
        return "'role' must be 'user', 'assistant' or 'system'"
    content = message.get("content")
    if isinstance(content, str):
        return ""
    if not isinstance(content, list) or not content:
        return "'content' must be a string or a non-empty list of parts"
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            return "each content part must be an object with a 'type'"
        if kind == "text" and not isinstance(part.get("text"), str):
            return "a text part needs a string 'text'"
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                return "an image_url part needs 'image_url': {'url': str}"
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") == "text")


def _read_messages(body: dict[str, Any], *, last_user: bool = True) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list")
    for index, message in enumerate(messages):
        problem = _message_problem(message)
        if problem:
            raise _bad(f"messages[{index}]: {problem}")
    if last_user and messages[-1]["role"] != "user":
        raise _bad("the last message must have role 'user'")
    return messages


def _read_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string")
    return model


def read_turn(body: Any, user: str) -> Turn:
    """The ``/completion/async`` body checked field by field (a 400 names the first problem)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    model = _read_model(body)
    messages = _read_messages(body)
    node_id = _require_uuid(body, "nodeId")
    conv_id = _require_uuid(body, "convId")
    if body.get("stream") is not True:
        raise _bad("'stream' must be true")
    return Turn(
        prompt=_text_of(messages[-1]["content"]),
        messages=tuple(messages),
        model=model,
        conv_id=conv_id,
        node_id=node_id,
        user_id=user,
    )


# -- media generation ------------------------------------------------------------------


@route("POST", "/image_gen/async", auth="edge")
def _image_gen(fake: FakeFlowith, call: Call) -> Result:
    """Start an image generation into an existing type ``"2"`` node."""
    body = fake._json_body(call.request, rest=False)
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    model = _read_model(body)
    node_id = _require_uuid(body, "nodeId")
    conv_id = _require_uuid(body, "convId")
    messages = _read_messages(body)
    aspect_ratio = body.get("aspect_ratio")
    if not isinstance(aspect_ratio, str) or not _ASPECT_RATIO.match(aspect_ratio):
        raise _bad("'aspect_ratio' must be a ratio like '1:1' or '16:9'")
    image_size = body.get("image_size")
    if not isinstance(image_size, str) or image_size.lower() not in _IMAGE_SIZES:
        raise _bad(f"'image_size' must be one of {sorted(_IMAGE_SIZES)}")
    agent = body.get("agent", False)
    if not isinstance(agent, bool):
        raise _bad("'agent' must be a boolean")
    fake._generation_target(conv_id, node_id, call.user)
    fake._require_credits(call.user)
    prompt = _text_of(messages[-1]["content"])
    url = fake.add_file(f"/f/{node_id}/image.png", fake_png(node_id + prompt), "image/png")
    turn = Turn(
        prompt=prompt,
        messages=tuple(messages),
        model=model,
        conv_id=conv_id,
        node_id=node_id,
        user_id=call.user,
        kind="image",
        result_url=url,
        options={"aspect_ratio": aspect_ratio, "image_size": image_size, "agent": agent},
    )
    fake._start(turn, call.now, fake.media_responder)
    return json_response(200, {"status": "processing", "nodeId": node_id})


@route("POST", "/video/async", auth="edge")
def _video(fake: FakeFlowith, call: Call) -> Result:
    """Start a video generation; the server creates the AI node itself."""
    body = fake._json_body(call.request, rest=False)
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    requested_id = _require_uuid(body, "nodeId")
    model = _read_model(body)
    prompt = body.get("prompt")
    image_url = body.get("imageURL")
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string")
    if not isinstance(image_url, str):
        raise _bad("'imageURL' must be a string ('' for none)")
    if image_url and not image_url.startswith(("http://", "https://")):
        raise _bad("'imageURL' must be an http(s) URL or ''")
    if not prompt.strip() and not image_url:
        raise _bad("a video needs a 'prompt' or an 'imageURL'")
    aspect_ratio = body.get("aspect_ratio")
    if not isinstance(aspect_ratio, str) or not _ASPECT_RATIO.match(aspect_ratio):
        raise _bad("'aspect_ratio' must be a ratio like '16:9'")
    audio = body.get("audio")
    if not isinstance(audio, bool):
        raise _bad("'audio' must be a boolean")
    resolution = body.get("resolution")
    if resolution not in _RESOLUTIONS:
        raise _bad(f"'resolution' must be one of {sorted(_RESOLUTIONS)}")
    conv_id = _require_uuid(body, "convId")
    parent_id = _require_uuid(body, "parentNodeId")
    position = body.get("position")
    if not (
        isinstance(position, dict)
        and set(position) == {"x", "y"}
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in position.values())
    ):
        raise _bad("'position' must be {'x': number, 'y': number}")
    conversation = fake._rows["conversation"].get(conv_id)
    if conversation is None or conversation["user_id"] != call.user or conversation["is_delete"]:
        raise Reject(edge_error(404, f"Conversation {conv_id} not found"))
    nodes = fake._rows["flow_node"]
    parent = nodes.get(parent_id)
    if parent is None or parent["conv_id"] != conv_id or parent["is_delete"]:
        raise Reject(edge_error(404, f"Parent node {parent_id} not found in the conversation"))
    fake._require_credits(call.user)
    if fake.video_node_ids == "echo":
        node_id = requested_id
        if node_id in nodes:
            raise Reject(edge_error(409, f"Node {node_id} already exists"))
    else:
        node_id = fake._new_id()
    stamp = iso_time(call.now)
    nodes[node_id] = {
        "id": node_id,
        "conv_id": conv_id,
        "type": "2",
        "p_id": parent_id,
        "c_ids": [],
        "data": {
            "title": "AI",
            "value": "",
            "mode": "video_generation",
            "timestamp": str(int(call.now)),
            "isImage": False,
            "isVideo": True,
            "model": model,
            "status": "init",
            "prompt": prompt,
            "imageURL": image_url,
            "aspect_ratio": aspect_ratio,
            "resolution": resolution,
            "audio": audio,
        },
        "position": dict(position),
        "is_delete": False,
        "created_at": stamp,
        "updated_at": stamp,
    }
    parent["c_ids"] = [*(parent.get("c_ids") or []), node_id]
    parent["updated_at"] = stamp
    url = fake.add_file(f"/f/{node_id}/video.mp4", fake_mp4(node_id + prompt), "video/mp4")
    turn = Turn(
        prompt=prompt,
        messages=({"role": "user", "content": prompt},),
        model=model,
        conv_id=conv_id,
        node_id=node_id,
        user_id=call.user,
        kind="video",
        result_url=url,
        options={
            "aspect_ratio": aspect_ratio,
            "resolution": resolution,
            "audio": audio,
            "imageURL": image_url,
            "requested_node_id": requested_id,
            "parent_node_id": parent_id,
        },
    )
    fake._start(turn, call.now, fake.media_responder)
    return json_response(200, {"status": "processing", "nodeId": node_id})


# -- titles and files ----------------------------------------------------------------


def title_of(messages: list[dict[str, Any]]) -> str:
    """The fake's title: the first user message's first six words, capitalised."""
    text = next((_text_of(m["content"]) for m in messages if m["role"] == "user"), "")
    words = text.split()[:6]
    title = " ".join(words).rstrip(".,!?;:")[:50].strip()
    return title[:1].upper() + title[1:] if title else "New Conversation"


@route("POST", "/completion/conversation-title", auth="edge")
def _conversation_title(fake: FakeFlowith, call: Call) -> Result:
    """A title for a conversation, as plain text; the body is JSON sent as text."""
    request = call.request
    kind, parameters = multipart.media_type(request.header("content-type"))
    if kind != "text/plain" or parameters.get("charset", "").lower() != "utf-8":
        raise Reject(edge_error(415, "Content-Type must be text/plain;charset=UTF-8"))
    try:
        body = json.loads(request.body)
    except ValueError:
        raise _bad("the body must be JSON text") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    messages = _read_messages(body, last_user=False)
    return text_response(200, title_of(messages))


def _safe_filename(name: str | None) -> str:
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base if base not in ("", ".", "..") else "file"


@route("POST", "/file/store", auth="edge")
def _file_store(fake: FakeFlowith, call: Call) -> Result:
    """Store an upload on the CDN and record it in ``user_upload_records``."""
    request = call.request
    content_type = request.header("content-type")
    kind, _ = multipart.media_type(content_type)
    if kind != "multipart/form-data":
        raise Reject(edge_error(415, "Content-Type must be multipart/form-data"))
    try:
        parts = multipart.parse_multipart(request.body, multipart.boundary_of(content_type))
    except multipart.MultipartError as error:
        raise _bad(f"malformed multipart body: {error}") from None
    upload = multipart.field(parts, "file")
    if upload is None or upload.filename is None:
        raise _bad("No file uploaded: send a 'file' part with a filename")
    if len(upload.data) > fake.max_upload_size:
        raise Reject(edge_error(413, "File too large"))
    filename = _safe_filename(upload.filename)
    type_part = multipart.field(parts, "type")
    if type_part is not None:
        file_type = type_part.text.strip()
        if not _FILE_TYPE.match(file_type):
            raise _bad("'type' must be a file extension like 'png'")
    else:
        stem, dot, extension = filename.rpartition(".")
        file_type = extension if dot and stem and _FILE_TYPE.match(extension) else "bin"
    file_id = fake._new_id()
    url = fake.add_file(f"/f/{file_id}/{filename}", upload.data, upload.content_type)
    record_id = fake._new_id()
    fake._rows["user_upload_records"][record_id] = {
        "id": record_id,
        "user_id": call.user,
        "conv_id": None,
        "value": url,
        "name": filename,
        "type": file_type,
        "size": len(upload.data),
        "created_at": iso_time(call.now),
    }
    return json_response(
        200,
        {
            "url": url,
            "name": filename,
            "size": len(upload.data),
            "type": file_type,
            "content_type": upload.content_type,
        },
    )


# -- the account -----------------------------------------------------------------------


def _number(fake: FakeFlowith, value: float) -> float | str:
    if not fake.credits_as_strings:
        return value
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _remain_days(entry: dict[str, Any], now: float) -> int:
    end = parse_timestamp(str(entry.get("to_date") or ""))
    if end is None:
        return 0
    return max(0, math.ceil((end.timestamp() - now) / _DAY))


@route("GET", "/user/credits", auth="edge")
def _user_credits(fake: FakeFlowith, call: Call) -> Result:
    """The user's credit entries (a JSON array, protocol.md 2.3)."""
    entries = []
    for entry in fake._ledger(call.user):
        entries.append(
            {
                **entry,
                "init_quota": _number(fake, entry["init_quota"]),
                "remain_quota": _number(fake, entry["remain_quota"]),
                "remain_days": _remain_days(entry, call.now),
            }
        )
    return json_response(200, entries)


@route("GET", "/user/credit_type", auth="edge")
def _credit_type(fake: FakeFlowith, call: Call) -> Result:
    """The kind of the first entry with credits left that is in force now, else ``free``."""
    for entry in fake._ledger(call.user):
        start = parse_timestamp(str(entry["from_date"]))
        end = parse_timestamp(str(entry["to_date"]))
        if start is None or end is None or entry["remain_quota"] <= 0:
            continue
        if start.timestamp() <= call.now < end.timestamp():
            return json_response(200, {"credit_type": entry["sub_type"]})
    return json_response(200, {"credit_type": "free"})


@route("GET", "/cooperate/list", auth="edge")
def _cooperate_list(fake: FakeFlowith, call: Call) -> Result:
    """The members of a conversation the caller owns or cooperates on."""
    conv_id = _uuid_field({"conv_id": call.request.param("conv_id")}, "conv_id")
    if not conv_id:
        raise _bad("conv_id must be a UUID")
    if not is_member(fake, conv_id, call.user):
        raise Reject(edge_error(404, f"Conversation {conv_id} not found"))
    members = [r for r in fake._rows["cooperate"].values() if r["conv_id"] == conv_id]
    members.sort(key=lambda r: (r["role"], r["created_at"]))
    return json_response(
        200,
        [
            {
                "user_id": r["user_id"],
                "conv_id": r["conv_id"],
                "role": r["role"],
                "user_name": r["user_name"],
                "user_avatar": r["user_avatar"],
                "created_at": r["created_at"],
            }
            for r in members
        ],
    )


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


@route("GET", "/models", auth="edge")
def _models(fake: FakeFlowith, call: Call) -> Result:
    """The catalogue keyed by model id; ``logo`` and ``desc`` add those fields."""
    logo = _flag(call.request.param("logo"))
    desc = _flag(call.request.param("desc"))
    catalogue = {
        model_id: {
            key: value
            for key, value in info.items()
            if (key != "logo" or logo) and (key != "desc" or desc)
        }
        for model_id, info in MODELS.items()
    }
    return json_response(200, catalogue)


@route("GET", "/templates", auth="edge")
def _templates(fake: FakeFlowith, call: Call) -> Result:
    """One page of the template gallery, optionally of one ``type``."""
    request = call.request
    size_text = request.param("page_size") or "20"
    page_text = request.param("page") or "1"
    if not size_text.isdigit() or not 1 <= int(size_text) <= 1000:
        raise _bad("page_size must be an integer from 1 to 1000")
    if not page_text.isdigit() or int(page_text) < 1:
        raise _bad("page must be a positive integer")
    size, page = int(size_text), int(page_text)
    kind = request.param("type")
    matching = [t for t in TEMPLATES if kind is None or t["type"] == kind]
    window = matching[(page - 1) * size : page * size]
    return json_response(200, {"data": window, "total": len(matching), "page": page})


@route("GET", "/discord/invite-link", auth="edge")
def _discord(fake: FakeFlowith, call: Call) -> Result:
    return json_response(200, {"link": "https://discord.gg/flowith"})


@route("GET", "/featurebase/status", auth="edge")
def _featurebase(fake: FakeFlowith, call: Call) -> Result:
    return json_response(200, {"enabled": True, "organization": "flowith", "has_unread": False})


# -- daily rewards and campaigns ------------------------------------------------------


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).date().isoformat()


def _next_midnight(now: float) -> str:
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), timezone.utc)
    return iso_time(midnight.timestamp())


@attrs.frozen
class _Rewards:
    claimed_today: bool
    streak: int
    last: float | None


def _rewards(fake: FakeFlowith, user: str, now: float) -> _Rewards:
    claims = fake._claimed_at.get(user, [])
    days = {_day(moment) for moment in claims}
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    cursor = today if today.isoformat() in days else today - timedelta(days=1)
    streak = 0
    while cursor.isoformat() in days:
        streak += 1
        cursor -= timedelta(days=1)
    return _Rewards(today.isoformat() in days, streak, claims[-1] if claims else None)


@route("GET", "/mkt/daily-rewards/status", auth="edge")
def _rewards_status(fake: FakeFlowith, call: Call) -> Result:
    state = _rewards(fake, call.user, call.now)
    next_claim = _next_midnight(call.now) if state.claimed_today else iso_time(call.now)
    return json_response(
        200,
        {
            "claimed_today": state.claimed_today,
            "can_claim": not state.claimed_today,
            "streak": state.streak,
            "reward": fake.daily_reward,
            "last_claimed_at": None if state.last is None else iso_time(state.last),
            "next_claim_at": next_claim,
        },
    )


@route("POST", "/mkt/daily-rewards/claim", auth="edge")
def _rewards_claim(fake: FakeFlowith, call: Call) -> Result:
    """Claim today's reward (body ``{}``); a second claim the same UTC day is ``409``."""
    body = fake._json_body(call.request, rest=False)
    if body != {}:
        raise _bad("the body must be {}")
    if _rewards(fake, call.user, call.now).claimed_today:
        return json_response(
            409,
            {
                "message": "Daily reward already claimed today",
                "claimed": False,
                "next_claim_at": _next_midnight(call.now),
            },
        )
    fake._claimed_at.setdefault(call.user, []).append(call.now)
    fake._add_credits(call.user, fake.daily_reward)
    state = _rewards(fake, call.user, call.now)
    return json_response(
        200,
        {
            "claimed": True,
            "reward": fake.daily_reward,
            "streak": state.streak,
            "remain_quota": fake.remaining_credits(call.user),
        },
    )


#: Model id -> (campaign, discount, ends at).
_CAMPAIGNS = {
    "gemini-3-pro-image-preview": ("banana-2025", 0.5, "2099-01-31T23:59:59+00:00"),
    "gemini-3.1-flash-image": ("banana-2025", 0.5, "2099-01-31T23:59:59+00:00"),
    "seedance-2.0-fast": ("seedance-launch", 0.3, "2099-12-31T23:59:59+00:00"),
}


@route("GET", "/user/campaigns/effective-status", auth="edge")
def _campaign_status(fake: FakeFlowith, call: Call) -> Result:
    """Whether a campaign discounts ``model_id`` for the user now."""
    model_id = call.request.param("model_id")
    if not model_id:
        raise _bad("model_id is required")
    campaign = _CAMPAIGNS.get(model_id)
    ends = parse_timestamp(campaign[2]) if campaign else None
    active = campaign is not None and ends is not None and call.now < ends.timestamp()
    return json_response(
        200,
        {
            "model_id": model_id,
            "active": active,
            "campaign_id": campaign[0] if campaign and active else None,
            "discount": campaign[1] if campaign and active else 0,
            "ends_at": campaign[2] if campaign and active else None,
        },
    )


@route("GET", "/mkt/banana-2025/check", auth="edge")
def _banana_check(fake: FakeFlowith, call: Call) -> Result:
    ends = "2099-01-31T23:59:59+00:00"
    end_time = parse_timestamp(ends)
    eligible = end_time is not None and call.now < end_time.timestamp()
    return json_response(
        200,
        {
            "campaign": "banana-2025",
            "eligible": eligible,
            "claimed": False,
            "model_id": "gemini-3-pro-image-preview",
            "ends_at": ends,
        },
    )


@route("GET", "/invitation/access-new-version", auth="edge")
def _new_version_access(fake: FakeFlowith, call: Call) -> Result:
    return json_response(200, {"access": True, "reason": "invited"})


@route("GET", "/enterprise/dashboard/me", auth="edge")
def _enterprise(fake: FakeFlowith, call: Call) -> Result:
    return json_response(200, {"is_member": False, "enterprise": None, "role": None})
