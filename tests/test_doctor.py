"""``flowith doctor`` against the fake: every verdict, on every transport.

The fake keeps its default five-second heartbeat here, so the all-holds run
listens for six seconds as a real doctor run does. Other runs turn one knob
of the fake (Bearer-only edge, bare stream frames, a renamed field, a fast
heartbeat) and listen briefly. Events on ``/user_stream/stream`` come only
while something generates, so a background client chatters when the envelope
must be seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from flowith_httpx import doctor
from flowith_proto.fake import FakeFlowith, FakeResponse, FakeStream, SendBytes
from flowith_proto.models import ConversationRecord, ModelInfo, UserCredits
from tests.test_cli_commands import (
    CLI,
    VARIANTS,
    Served,
    chatter,
    clean_environment,  # noqa: F401  (an autouse fixture, shared)
    serve,
)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve(FakeFlowith()) as running:
        yield running


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    return VARIANTS[request.param]


@pytest.fixture
def cli(
    served: Served,
    variant: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CLI]:
    yield CLI(served, variant, capsys, monkeypatch)

    def reset() -> None:
        fake = served.fake
        fake.edge_auth = "bare"
        fake.stream_envelope = True
        fake.field_renames.clear()
        fake.heartbeat_interval = 5.0

    served.call(reset)


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["verdict"] for check in report["assumptions"]}


def evidence(report: dict[str, Any], name: str) -> str:
    return str(next(c["evidence"] for c in report["assumptions"] if c["name"] == name))


# -- verdicts --------------------------------------------------------------------------------


def test_everything_holds_against_the_default_fake(cli: CLI, served: Served) -> None:
    with chatter(served):
        done = cli("--json", "doctor")
    assert done.code == 0, done.err
    report = done.json()
    assert set(verdicts(report).values()) == {"holds"}, report["assumptions"]
    assert all(step["ok"] for step in report["tour"])
    assert [step["name"] for step in report["tour"]] == [
        "auth user",
        "edge auth probe",
        "credits",
        "models",
        "profile",
        "conversations",
        "/user_stream/stream",
        "/user_stream/sse",
    ]
    # The fake beats every 5 s; a loaded machine reads a frame a little late.
    assert 4.9 <= heartbeat_seconds(evidence(report, "heartbeat interval")) <= 5.5
    assert "chunks" in evidence(report, "event types")
    assert report["summary"] == {"holds": 7, "fails": 0, "unknown": 0}
    transport, backend = cli.variant
    assert report["header"]["transport"] == transport
    assert report["header"]["backend"] == backend


def test_a_bearer_only_edge_fails_the_auth_assumption(cli: CLI, served: Served) -> None:
    served.call(lambda: setattr(served.fake, "edge_auth", "bearer"))
    with chatter(served, edge_auth="bearer"):
        done = cli("--json", "doctor", "--seconds", "0.6")
    assert done.code == 4, done.err
    report = done.json()
    assert verdicts(report)["edge auth scheme"] == "fails"
    assert evidence(report, "edge auth scheme").startswith("the edge wants Bearer")
    # The rest of the tour went on with Bearer and still judged the stream.
    assert verdicts(report)["/stream envelope"] == "holds"
    assert verdicts(report)["credit entries"] == "holds"


def test_a_renamed_row_field_fails_its_row_shape(cli: CLI, served: Served) -> None:
    def rename() -> None:
        served.fake.rename_field("conversation", "title", "name")
        served.fake.rename_field("models", "tier", "plan")

    served.call(rename)
    done = cli("--json", "doctor", "--seconds", "0.5")
    assert done.code == 4
    report = done.json()
    assert verdicts(report)["conversation rows"] == "fails"
    found = evidence(report, "conversation rows")
    assert "missing fields the client reads: title" in found
    assert "new fields: name" in found
    assert verdicts(report)["model entries"] == "fails"
    assert "tier" in evidence(report, "model entries")
    assert verdicts(report)["credit entries"] == "holds"


def test_no_event_leaves_the_envelope_unknown(cli: CLI) -> None:
    done = cli("--json", "doctor", "--seconds", "0.5")
    assert done.code == 0, done.err  # unknown is not a failure
    report = done.json()
    assert verdicts(report)["/stream envelope"] == "unknown"
    assert "no event arrived on /user_stream/stream in 0.5 s" in evidence(
        report, "/stream envelope"
    )
    assert verdicts(report)["heartbeat interval"] == "unknown"
    assert "fails" not in verdicts(report).values()


def test_bare_stream_frames_fail_the_envelope(cli: CLI, served: Served) -> None:
    served.call(lambda: setattr(served.fake, "stream_envelope", False))
    with chatter(served):
        done = cli("--json", "doctor", "--seconds", "0.6")
    assert done.code == 4
    report = done.json()
    assert verdicts(report)["/stream envelope"] == "fails"
    assert "arrived without the" in evidence(report, "/stream envelope")
    assert verdicts(report)["event types"] == "holds"  # the client still reads them


def heartbeat_seconds(evidence: str) -> float:
    """The interval in doctor's ``/sse heartbeat every 5.0 s (...)``."""
    prefix = "/sse heartbeat every "
    assert evidence.startswith(prefix), evidence
    return float(evidence[len(prefix) :].split(" s", 1)[0])


def test_a_fast_heartbeat_fails_the_interval(cli: CLI, served: Served) -> None:
    served.call(lambda: setattr(served.fake, "heartbeat_interval", 0.2))
    done = cli("--json", "doctor", "--seconds", "0.7")
    assert done.code == 4
    report = done.json()
    assert verdicts(report)["heartbeat interval"] == "fails"
    assert 0.15 <= heartbeat_seconds(evidence(report, "heartbeat interval")) <= 0.5


# -- the report ------------------------------------------------------------------------------


def test_human_report_is_ready_for_a_bug_report(cli: CLI) -> None:
    done = cli("doctor", "--seconds", "0.5")
    assert done.code == 0, done.err
    text = done.out
    lines = text.splitlines()
    assert lines[0].startswith("flowith doctor report (")
    assert lines[1].startswith("  flowith ")
    assert ", Python " in lines[1]
    transport, backend = cli.variant
    assert f"  transport {transport} on {backend}" in lines
    assert "  ok      edge auth probe" in text
    assert any(line.startswith("  holds    edge auth scheme  ") for line in lines)
    assert any(line.startswith("  unknown  /stream envelope  ") for line in lines)
    assert "protocol.md" not in done.out  # a file the user does not have
    assert lines[-1] == "summary: 5 hold, 0 fail, 2 unknown"
    assert max(len(line) for line in lines) <= 120


def test_an_expired_token_stops_the_doctor(cli: CLI, served: Served) -> None:
    expired = served.call(lambda: served.fake.issue_token(expires_at=1_000_000_000))
    done = cli("doctor", "--seconds", "0.5", token=expired)
    assert done.code == 3
    assert done.err.count("\n") == 1
    assert done.err.startswith("flowith: ")


def test_the_doctor_renews_and_saves_an_expired_token(
    cli: CLI, served: Served, tmp_path: Any
) -> None:
    refresh = served.call(served.fake.issue_refresh_token)
    expired = served.call(lambda: served.fake.issue_token(expires_at=1_000_000_000))
    store = tmp_path / "tokens.json"
    done = cli(
        "--json",
        "doctor",
        "--seconds",
        "0.5",
        "--save-tokens",
        str(store),
        token=expired,
        FLOWITH_REFRESH_TOKEN=refresh,
    )
    saved = json.loads(store.read_text())
    cli.secrets += saved.values()
    cli.check_secrets(done)
    assert done.code == 0, done.err
    # The raw /stream probe used the renewed token too.
    assert all(step["ok"] for step in done.json()["tour"])


# -- the parts -------------------------------------------------------------------------------


def _read_keys(cls: type, renames: dict[str, str], skip: set[str]) -> set[str]:
    return {
        renames.get(field.name, field.name)
        for field in attrs.fields(cls)
        if field.name not in skip and not field.name.startswith("_")
    }


def test_row_shapes_follow_the_typed_records() -> None:
    """The doctor's "fields the client reads" must be what the records read."""
    shapes = doctor.ROW_SHAPES
    assert shapes["conversation"].expected == _read_keys(
        ConversationRecord, {"conv_id": "id"}, {"metadata"}
    )
    assert shapes["models"].expected == _read_keys(ModelInfo, {}, {"metadata", "model_id"})
    assert shapes["credits"].expected == _read_keys(UserCredits, {}, {"metadata"})


def _frames(stream: FakeStream, now: float) -> list[Any]:
    payloads = []
    for item in stream.pull(now=now):
        if isinstance(item, SendBytes):
            text = item.data.decode()
            payloads.append(json.loads(text.removeprefix("data: ").strip()))
    return payloads


def _open(fake: FakeFlowith, path: str, now: float) -> FakeStream:
    headers = [("authorization", fake.token), ("accept", "text/event-stream")]
    stream = fake.handle("GET", f"{path}?user_id={fake.user_id}", headers, b"", now=now)
    assert isinstance(stream, FakeStream)
    return stream


def _answer(
    fake: FakeFlowith, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
) -> FakeResponse:
    answer = fake.handle(method, target, headers, body, now=1000.0)
    assert isinstance(answer, FakeResponse)
    return answer


def _generate(fake: FakeFlowith) -> None:
    """A text turn through the edge and PostgREST, as a client makes it."""
    rest = [
        ("apikey", fake.supabase_key),
        ("authorization", f"Bearer {fake.token}"),
        ("content-type", "application/json"),
    ]
    created = _answer(
        fake, "POST", "/rest/v1/conversation", [*rest, ("prefer", "return=representation")], b"{}"
    )
    conv = created.json()[0]["id"]
    user_node = "11111111-1111-4111-8111-111111111111"
    ai_node = "22222222-2222-4222-8222-222222222222"
    nodes = [
        {"id": user_node, "conv_id": conv, "type": "1", "p_id": conv},
        {"id": ai_node, "conv_id": conv, "type": "2", "p_id": user_node},
    ]
    inserted = _answer(fake, "POST", "/rest/v1/flow_node", rest, json.dumps(nodes).encode())
    assert inserted.status == 201
    body = {
        "model": "gpt-4.1-nano",
        "messages": [{"role": "user", "content": "hi"}],
        "nodeId": ai_node,
        "convId": conv,
        "stream": True,
    }
    edge = [("authorization", fake.token), ("content-type", "application/json")]
    answer = _answer(
        fake, "POST", "/completion/async?mode=general", edge, json.dumps(body).encode()
    )
    assert answer.status == 200


def test_fake_stream_envelope_knob() -> None:
    fake = FakeFlowith(seed_rows=False)
    stream = _open(fake, "/user_stream/stream", 1000.0)
    _generate(fake)
    wrapped = _frames(stream, 1000.0)
    assert wrapped
    assert all(set(frame) == {"data", "id"} for frame in wrapped)

    fake = FakeFlowith(seed_rows=False)
    fake.stream_envelope = False
    stream = _open(fake, "/user_stream/stream", 1000.0)
    _generate(fake)
    bare = _frames(stream, 1000.0)
    assert [frame["type"] for frame in bare] == [e["data"]["type"] for e in wrapped]
    assert all("data" not in frame and "nodeId" in frame for frame in bare)


def test_fake_rename_field_knob() -> None:
    fake = FakeFlowith()
    rest = [("apikey", fake.supabase_key), ("authorization", f"Bearer {fake.token}")]
    edge = [("authorization", fake.token)]
    target = "/rest/v1/conversation?select=*&order=updated_at.desc"
    before = _answer(fake, "GET", target, rest)
    fake.rename_field("conversation", "title", "name")
    fake.rename_field("credits", "sub_type", "kind")
    fake.rename_field("models", "media", "modality")
    rows = _answer(fake, "GET", target, rest).json()
    assert [row["name"] for row in rows] == [row["title"] for row in before.json()]
    assert all("title" not in row for row in rows)
    assert list(rows[0]) == [("name" if k == "title" else k) for k in before.json()[0]]
    credits = _answer(fake, "GET", "/user/credits", edge).json()
    assert all("kind" in entry and "sub_type" not in entry for entry in credits)
    models = _answer(fake, "GET", "/models", edge).json()
    assert all("modality" in entry and "media" not in entry for entry in models.values())
    # Stored rows keep the old name; only what is served changes.
    assert all("title" in row for row in fake.rows("conversation").values())
    with pytest.raises(ValueError, match="no table"):
        fake.rename_field("nope", "a", "b")
    fake.field_renames.clear()
    assert _answer(fake, "GET", target, rest).json() == before.json()
