"""The ``flowith`` subcommands, run in-process against the fake on loopback.

One fake server runs for the whole module in a background thread (an anyio
blocking portal: its own event loop), and each test calls the CLI's ``main``
as a shell would, on every transport: httpx on asyncio and on trio, and
aiohttp. Every run is checked for leaked credentials. A few smoke tests start
the real ``python -m flowith_httpx`` process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import flowith_httpx
from flowith_httpx.cli import main
from flowith_httpx.cli_commands import render_table, write_tokens
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.fake import KYOTO_TRIP, FakeFlowith, chunk, complete, fail, pause

T = TypeVar("T")

VARIANTS = {
    "httpx-asyncio": ("httpx", "asyncio"),
    "httpx-trio": ("httpx", "trio"),
    "aiohttp": ("aiohttp", "asyncio"),
}


@attrs.frozen
class Served:
    """The fake and its server, running on the portal's event loop thread."""

    fake: FakeFlowith
    url: str
    portal: BlockingPortal

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's thread (the fake is not thread-safe)."""
        return self.portal.call(function)


@contextlib.contextmanager
def serve(fake: FakeFlowith) -> Iterator[Served]:
    """``fake`` on a loopback port, served from a background thread."""
    with start_blocking_portal("asyncio") as portal:
        server = FakeFlowithServer(fake)
        with portal.wrap_async_context_manager(server):
            yield Served(fake, server.url, portal)


@contextlib.contextmanager
def chatter(served: Served, *, edge_auth: str = "bare") -> Iterator[None]:
    """Text generations, one after another, on the server's loop while the
    block runs: events on ``/user_stream/stream`` for a listener to see."""

    async def talk() -> None:
        async with flowith_httpx.FlowithClient(
            served.fake.token,
            edge_url=served.url,
            supabase_url=served.url,
            edge_auth=edge_auth,
            poll_interval=0.05,
        ) as client:
            while True:
                await client.generate("ping", timeout=10)
                await anyio.sleep(0.05)

    future = served.portal.start_task_soon(talk)
    try:
        yield
    finally:
        future.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError):
            future.result(timeout=10)


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("flowith:")]


class CLI:
    """``main([...])`` with the transport's options, the fake's URLs and a
    token in the environment; checks that no secret reaches the output."""

    def __init__(
        self,
        served: Served,
        variant: tuple[str, str],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.served = served
        self.variant = variant
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.secrets = [served.fake.token, served.fake.refresh_token]

    def __call__(self, *args: str, token: str | None = None, **env: str) -> Result:
        fake = self.served.fake
        values = {
            "FLOWITH_TOKEN": fake.token if token is None else token,
            "FLOWITH_EDGE_URL": self.served.url,
            "FLOWITH_SUPABASE_URL": self.served.url,
            **env,
        }
        for name, value in values.items():
            if value:
                self.monkeypatch.setenv(name, value)
                if name.endswith("TOKEN"):
                    self.secrets.append(value)
            else:
                self.monkeypatch.delenv(name, raising=False)
        transport, backend = self.variant
        self.capsys.readouterr()
        code = main(["--transport", transport, "--backend", backend, *args])
        captured = self.capsys.readouterr()
        result = Result(code, captured.out, captured.err)
        self.check_secrets(result)
        return result

    def replay_offline(self, cassette: Path, *args: str) -> Result:
        """``replay CASSETTE ARGS...`` with no token, the hosts at a closed port:
        only the cassette can answer."""
        return self(
            "replay",
            str(cassette),
            *args,
            token="",
            FLOWITH_EDGE_URL="http://127.0.0.1:9",
            FLOWITH_SUPABASE_URL="http://127.0.0.1:9",
        )

    def check_secrets(self, result: Result) -> None:
        for secret in self.secrets:
            assert secret not in result.out, "a secret reached stdout"
            assert secret not in result.err, "a secret reached stderr"
        assert "Traceback" not in result.err


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLOWITH_* from the developer's shell; a fixed terminal width."""
    for name in list(os.environ):
        if name.startswith("FLOWITH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve(FakeFlowith(heartbeat_interval=0.2)) as running:
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
) -> CLI:
    return CLI(served, variant, capsys, monkeypatch)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- account and catalogue ---------------------------------------------------------------------


def test_models_table_and_json(cli: CLI) -> None:
    done = cli("models")
    assert done.code == 0, done.err
    header, *rows = done.out.splitlines()
    assert header.split() == ["ID", "TITLE", "MEDIA", "TIER"]
    nano = next(row for row in rows if row.startswith("gpt-4.1-nano "))
    assert nano[header.index("TITLE") :].startswith("GPT-4.1 nano")
    assert nano[header.index("MEDIA") :].startswith("text")
    listed = cli("models", "--json", "--media", "image").json()
    assert listed
    assert all(m["media"] == "image" for m in listed)
    assert {"id", "title", "media", "tier"} == set(listed[0])


def test_credits_entries_and_total(cli: CLI, served: Served) -> None:
    done = cli("credits")
    assert done.code == 0, done.err
    assert done.out.splitlines()[0].split() == ["TYPE", "LEFT", "OF", "FROM", "TO"]
    assert "Invitation" in done.out
    assert done.out.rstrip().splitlines()[-1].startswith("total: ")
    data = cli("--json", "credits").json()
    assert data["total"] == pytest.approx(sum(e["remain_quota"] for e in data["entries"]))
    assert data["total"] == pytest.approx(served.call(served.fake.remaining_credits))


def test_templates_filtered_by_type(cli: CLI) -> None:
    done = cli("templates", "--type", "image")
    assert done.code == 0, done.err
    header, *rows = done.out.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "CATEGORY", "MODEL"]
    assert rows
    assert all(row[header.index("TYPE") :].startswith("image") for row in rows)
    assert {t["type"] for t in cli("templates", "--json").json()} == {"text", "image", "video"}


def test_profile_show_and_set(cli: CLI) -> None:
    shown = cli("profile")
    assert shown.code == 0, shown.err
    assert "language:" in shown.out
    changed = cli("profile", "--set", "language=de", "--json")
    assert changed.code == 0, changed.err
    assert changed.json()["language"] == "de"
    assert "language:   de" in cli("profile").out  # aligned under the longest key
    bad = cli("profile", "--set", "language")
    assert bad.code == 2
    assert bad.error_lines == ["flowith: --set wants KEY=VALUE, got 'language'"]
    unknown = cli("profile", "--set", "shoe_size=44")
    assert unknown.code == 4
    assert len(unknown.error_lines) == 1
    assert "shoe_size" in unknown.err


def test_rewards_status_and_claim(cli: CLI, served: Served) -> None:
    # A fresh user per run, so the first claim of the day is really the first.
    token = served.call(lambda: served.fake.issue_token(str(uuid.uuid4())))
    status = cli("rewards", "status", token=token)
    assert status.code == 0, status.err
    assert "can_claim:" in status.out
    first = cli("--json", "rewards", "claim", token=token)
    assert first.code == 0, first.err
    assert first.json()["claimed"] is True
    second = cli("rewards", "claim", token=token)
    assert second.code == 4
    assert second.error_lines == [
        "flowith: HTTP 409 from POST /mkt/daily-rewards/claim: Daily reward already claimed today"
    ]


# -- generation ------------------------------------------------------------------------------------


def test_chat_streams_the_answer(cli: CLI) -> None:
    done = cli("chat", "hello", "there")
    assert done.code == 0, done.err
    assert done.out == "You said: hello there\n"
    assert "continue it with --conv" in done.err


def test_chat_with_stderr_closed_still_succeeds(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    # `flowith chat hello 2>&-` printed the answer, then exited 1: its note of the
    # conversation id went to a sys.stderr of None, an AttributeError.
    monkeypatch.setattr(sys, "stderr", None)
    done = cli("chat", "hello")
    assert done.code == 0
    assert done.out.strip()


def test_chat_json_lines_end_with_the_result(cli: CLI) -> None:
    done = cli("--json", "chat", "count to three")
    assert done.code == 0, done.err
    *steps, result = done.json_lines()
    assert {s["event"] for s in steps} == {"step"}
    assert result["event"] == "result"
    assert result["text"] == "You said: count to three"
    assert "".join(s["text_delta"] for s in steps) == result["text"]
    assert result["conv_id"]
    assert result["model"] == "gpt-4.1-nano"


def test_chat_continues_a_conversation_with_images(cli: CLI, served: Served) -> None:
    first = cli("--json", "chat", "first turn").json_lines()[-1]
    conv = first["conv_id"]
    second = cli(
        "--json", "chat", "second turn", "--conv", conv, "--image", "https://example.com/a.png"
    ).json_lines()[-1]
    assert second["conv_id"] == conv
    turn = served.call(lambda: served.fake.turns[-1])
    content = turn.messages[-1]["content"]
    assert {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}} in content
    # The thread went along (it was a new branch with no history before).
    assert [m["role"] for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.messages[0]["content"] == "first turn"
    canvas = cli("--json", "conversations", "show", conv).json()
    assert [n["type"] for n in canvas["nodes"]] == ["user", "AI", "user", "AI"]
    user_nodes = [n for n in canvas["nodes"] if n["type"] == "user"]
    ai_nodes = [n for n in canvas["nodes"] if n["type"] == "AI"]
    assert user_nodes[1]["parent"] == ai_nodes[0]["id"]


def _script_thinking(served: Served) -> None:
    served.call(
        lambda: served.fake.script(
            chunk("<think>"), chunk("pondering deeply"), chunk("</think>"), chunk("42"), complete()
        )
    )


def test_chat_reasoning_hidden_when_piped_unless_asked(cli: CLI, served: Served) -> None:
    _script_thinking(served)
    hidden = cli("chat", "meaning of life")
    assert hidden.out == "42\n"
    _script_thinking(served)
    shown = cli("chat", "meaning of life", "--reasoning")
    assert shown.out == "[thinking] pondering deeply\n42\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_chat_reasoning_dimmed_on_a_terminal(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _script_thinking(served)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("FLOWITH_TOKEN", served.fake.token)
    monkeypatch.setenv("FLOWITH_EDGE_URL", served.url)
    monkeypatch.setenv("FLOWITH_SUPABASE_URL", served.url)
    assert main(["chat", "meaning of life"]) == 0
    assert terminal.getvalue() == "\x1b[2mpondering deeply\x1b[0m\n42\n"


def test_a_failed_generation_is_a_server_error(cli: CLI, served: Served) -> None:
    served.call(lambda: served.fake.script(chunk("Hal"), fail("the model melted", "timeout")))
    done = cli("chat", "hello")
    assert done.code == 4
    assert len(done.error_lines) == 1
    assert "the model melted" in done.error_lines[0]


def test_image_prints_url_and_saves(cli: CLI, served: Served, tmp_path: Path) -> None:
    done = cli(
        "image", "a red fox", "--aspect-ratio", "16:9", "--size", "1k", "--out", str(tmp_path)
    )
    assert done.code == 0, done.err
    url, saved = done.out.splitlines()
    assert url.startswith(served.url + "/f/")
    assert url.endswith("/image.png")
    path = Path(saved.removeprefix("saved to "))
    assert path.parent == tmp_path
    assert path.read_bytes().startswith(b"\x89PNG")
    assert "image: ready after" in done.err
    options = served.call(lambda: served.fake.turns[-1].options)
    assert options["aspect_ratio"] == "16:9"
    assert options["image_size"] == "1k"
    data = cli("--json", "image", "a blue fox").json()
    assert data["url"].endswith("/image.png")
    assert data["path"] is None


def test_an_unwritable_folder_is_a_local_error(cli: CLI, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = cli("image", "a fox", "--out", str(blocker / "images"))
    assert done.code == 1
    assert len(done.error_lines) == 1


def test_a_taken_name_gives_way_unless_overwrite_is_asked(cli: CLI, tmp_path: Path) -> None:
    """Run twice, the same command refused the second image (made and paid for)."""
    assert cli("image", "a fox", "--out", str(tmp_path)).code == 0
    again = cli("image", "a fox", "--out", str(tmp_path))
    assert again.code == 0, again.err
    assert again.out.splitlines()[1] == f"saved to {tmp_path / 'image-1.png'}"
    replaced = cli("image", "a fox", "--out", str(tmp_path), "--overwrite")
    assert replaced.code == 0, replaced.err
    assert replaced.out.splitlines()[1] == f"saved to {tmp_path / 'image.png'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image-1.png", "image.png"]


def test_video_prints_url_and_saves(cli: CLI, served: Served, tmp_path: Path) -> None:
    done = cli("--json", "video", "waves", "--resolution", "720p", "--out", str(tmp_path))
    assert done.code == 0, done.err
    data = done.json()
    assert data["url"].endswith("/video.mp4")
    assert Path(data["path"]).is_file()
    assert served.call(lambda: served.fake.turns[-1].options)["resolution"] == "720p"
    assert "video: ready after" in done.err


def test_upload_prints_the_cdn_url(cli: CLI, served: Served, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("hello CDN")
    done = cli("upload", str(source))
    assert done.code == 0, done.err
    url = done.out.strip()
    assert url.startswith(served.url + "/f/")
    assert url.endswith("/notes.txt")
    files = served.call(lambda: served.fake.files)
    assert files[url[len(served.url) :]][0] == b"hello CDN"
    # A local file that cannot be read is exit 1, as the help says (it was 2).
    missing = cli("upload", str(tmp_path / "absent.txt"))
    assert missing.code == 1
    assert missing.error_lines == [f"flowith: no such file: {tmp_path / 'absent.txt'}"]
    folder = cli("upload", str(tmp_path))
    assert folder.code == 1
    assert folder.error_lines == [f"flowith: {tmp_path} is a folder, not a file"]
    # It exists: "no such file" sent the user looking for the wrong thing.
    device = cli("upload", os.devnull)
    assert device.code == 1
    assert device.error_lines == [
        f"flowith: {os.devnull} is not a regular file (an upload is read from a file on disk)"
    ]


# -- conversations ---------------------------------------------------------------------------------


def test_conversations_list_show_rename_delete(cli: CLI) -> None:
    conv = cli("--json", "chat", "rename me").json_lines()[-1]["conv_id"]
    listed = cli("conversations", "list", "--limit", "2")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ID", "TITLE", "UPDATED"]
    assert len(rows) == 2
    assert rows[0].startswith(conv)  # the newest first
    assert len(cli("--json", "conversations", "list", "--limit", "3").json()) == 3

    shown = cli("conversations", "show", KYOTO_TRIP)
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"Trip to Kyoto  ({KYOTO_TRIP})")
    assert "1. user: " in shown.out
    assert "2. AI (" in shown.out

    renamed = cli("conversations", "rename", conv, "A", "new", "title")
    assert renamed.code == 0, renamed.err
    assert renamed.out == f"renamed {conv}: A new title\n"
    assert cli("--json", "conversations", "show", conv).json()["title"] == "A new title"
    deleted = cli("conversations", "delete", conv)
    assert deleted.out == f"deleted {conv}\n"
    assert conv not in cli("conversations", "list", "--limit", "100").out
    unknown = cli("conversations", "delete", str(uuid.uuid4()))
    assert unknown.code == 4  # checked first: deleting nothing is not a success
    assert "does not exist" in unknown.err


def test_unknown_conversation_is_a_server_error(cli: CLI) -> None:
    done = cli("conversations", "show", str(uuid.uuid4()))
    assert done.code == 4
    assert len(done.error_lines) == 1
    assert "does not exist" in done.err


def test_a_conversation_id_that_is_not_a_uuid_is_a_usage_error(cli: CLI) -> None:
    done = cli("conversations", "show", "not-a-uuid")
    assert done.code == 2
    assert done.error_lines[0].startswith("flowith: conv_id must be a UUID")


# -- live streams ------------------------------------------------------------------------------


def test_events_sse_as_json_lines(cli: CLI) -> None:
    done = cli("events", "--sse", "--seconds", "0.7")
    assert done.code == 0, done.err
    frames = done.json_lines()
    assert frames[0] == {"status": "connected"}
    assert any("heartbeat" in frame for frame in frames[1:])


def test_events_stream_shows_generation_events(cli: CLI, served: Served) -> None:
    with chatter(served):
        done = cli("events", "--seconds", "1")
    assert done.code == 0, done.err
    kinds = {event.get("type") for event in done.json_lines()}
    assert {"chunks", "complete"} <= kinds
    assert all("heartbeat" not in event for event in done.json_lines())


# -- failures and exit codes -------------------------------------------------------------------


def test_missing_token_is_a_usage_error(cli: CLI) -> None:
    done = cli("credits", token="")
    assert done.code == 2
    assert done.err == "flowith: no token: pass --token or set FLOWITH_TOKEN\n"
    assert done.out == ""


@pytest.mark.parametrize("blank", [" ", "\t  "])
def test_a_token_of_blanks_is_a_missing_token(
    blank: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The client trims it to nothing: it exited 3, "authentication failed", with a
    # hint written for Python code (token=...), though nothing was sent.
    monkeypatch.setenv("FLOWITH_TOKEN", blank)
    assert main(["credits"]) == 2
    assert capsys.readouterr().err == "flowith: no token: pass --token or set FLOWITH_TOKEN\n"
    assert main(["credits", "--token", blank]) == 2


def test_unreachable_host_is_a_connection_failure(cli: CLI) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    done = cli("credits", FLOWITH_EDGE_URL=dead, FLOWITH_SUPABASE_URL=dead)
    assert done.code == 5
    assert done.err.count("\n") == 1
    assert done.error_lines[0].startswith("flowith: ")


def test_expired_token_without_refresh_token_is_an_auth_failure(cli: CLI, served: Served) -> None:
    expired = served.call(lambda: served.fake.issue_token(expires_at=1_000_000_000))
    done = cli("credits", token=expired)
    assert done.code == 3
    assert done.err.count("\n") == 1
    assert done.error_lines == ["flowith: HTTP 401 from GET /user/credits: jwt expired"]


def test_a_refused_token_never_appears_in_the_error(cli: CLI) -> None:
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwZjFlMmQzYy00YjVhIn0.c2lnbmF0dXJlLW5vdC12YWxpZA"
    done = cli("models", token=forged)
    assert done.code == 3
    assert len(done.error_lines) == 1


def test_aiohttp_on_trio_is_a_usage_error(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWITH_TOKEN", served.fake.token)
    assert main(["--transport", "aiohttp", "--backend", "trio", "credits"]) == 2
    assert (
        capsys.readouterr().err == "flowith: aiohttp runs on asyncio only; use --transport httpx\n"
    )


def test_argparse_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conversations", "frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("flowith: argument ACTION: invalid choice: 'frobnicate'")
    assert main(["events", "--seconds", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_global_options_may_follow_the_subcommand(cli: CLI) -> None:
    done = cli("credits", "--json", "--timeout", "5")
    assert done.code == 0, done.err
    assert "total" in done.json()


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("0  success", "2  usage error", "3  authentication failed", "4  server or API"):
        assert line in text
    assert "5  connection failed" in text
    assert "doctor" in text
    assert "FLOWITH_TOKEN" in text


# -- tokens ---------------------------------------------------------------------------------------


def test_save_tokens_writes_renewed_tokens_and_reads_them_back(
    cli: CLI, served: Served, tmp_path: Path
) -> None:
    fake = served.fake
    refresh = served.call(fake.issue_refresh_token)
    expired = served.call(lambda: fake.issue_token(expires_at=1_000_000_000))
    store = tmp_path / "tokens.json"
    first = cli(
        "credits", "--save-tokens", str(store), token=expired, FLOWITH_REFRESH_TOKEN=refresh
    )
    assert first.code == 0, first.err
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    saved = json.loads(store.read_text())
    assert set(saved) == {"access_token", "refresh_token"}
    assert saved["access_token"] != expired
    assert saved["refresh_token"] != refresh
    cli.secrets += saved.values()
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]  # no temporary left over

    # The next run needs nothing but the file: the used-up tokens are gone from
    # the environment, and the file's win over any that remain.
    second = cli(
        "--json", "credits", "--save-tokens", str(store), token=expired, FLOWITH_REFRESH_TOKEN=""
    )
    assert second.code == 0, second.err
    assert json.loads(store.read_text()) == saved  # still valid: nothing renewed
    # Without the file the used refresh token fails: the rotation was real.
    stale = cli("credits", token=expired, FLOWITH_REFRESH_TOKEN=refresh)
    assert stale.code == 3


def test_renewal_without_save_tokens_warns(cli: CLI, served: Served) -> None:
    refresh = served.call(served.fake.issue_refresh_token)
    expired = served.call(lambda: served.fake.issue_token(expires_at=1_000_000_000))
    done = cli("credits", token=expired, FLOWITH_REFRESH_TOKEN=refresh)
    assert done.code == 0, done.err
    assert "pass --save-tokens FILE" in done.err


def test_renewed_tokens_that_cannot_be_saved_fail_the_run(
    cli: CLI, served: Served, tmp_path: Path
) -> None:
    # It printed a warning and exited 0: a script never learned that the refresh
    # token it holds is spent.
    refresh = served.call(served.fake.issue_refresh_token)
    expired = served.call(lambda: served.fake.issue_token(expires_at=1_000_000_000))
    store = tmp_path / "missing-folder" / "tokens.json"
    done = cli("credits", "--save-tokens", str(store), token=expired, FLOWITH_REFRESH_TOKEN=refresh)
    assert done.code == 1
    assert done.out  # the command itself ran
    [line] = done.error_lines
    assert line.startswith(f"flowith: could not save the new tokens to {store}: ")


def test_a_broken_token_file_is_a_local_file_error(cli: CLI, tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    store.write_text("{not json")
    done = cli("credits", "--save-tokens", str(store))
    assert done.code == 1
    assert done.error_lines == [f"flowith: cannot read the tokens in {store}: JSONDecodeError"]


def test_write_tokens_replaces_atomically(tmp_path: Path) -> None:
    store = tmp_path / "t.json"
    store.write_text("old")
    store.chmod(0o644)
    write_tokens(store, "access-1", "refresh-1")
    assert json.loads(store.read_text()) == {
        "access_token": "access-1",
        "refresh_token": "refresh-1",
    }
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_tables_fit_the_width() -> None:
    lines = render_table(("ID", "TEXT"), [["a", "x" * 50], ["bb", "short"]], 30)
    assert max(len(line) for line in lines) <= 30
    assert lines[1].endswith("…")
    assert lines[2].index("short") == lines[0].index("TEXT")


def test_a_table_never_cuts_its_ids() -> None:
    # Ids are pasted into the next command: a cut one is useless.
    conv = "3405095c-8a50-46c1-ac18-8efbd08c1e21"
    lines = render_table(("ID", "TITLE"), [[conv, "word " * 40]], 50)
    assert conv in lines[1]
    assert lines[1].endswith("…")
    assert render_table(("ID",), [[conv * 3]], 40)[1] == conv * 3


# -- the real process ----------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowith_httpx", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_process_lists_models_as_json(served: Served) -> None:
    done = _run(
        ["models", "--json"],
        {
            "FLOWITH_TOKEN": served.fake.token,
            "FLOWITH_EDGE_URL": served.url,
            "FLOWITH_SUPABASE_URL": served.url,
        },
    )
    assert done.returncode == 0, done.stderr
    assert any(m["id"] == "deepseek-r1" for m in json.loads(done.stdout))
    assert served.fake.token not in done.stdout + done.stderr


def test_process_unreachable_host_prints_one_line(served: Served) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    done = _run(
        ["--transport", "aiohttp", "credits"],
        {
            "FLOWITH_TOKEN": served.fake.token,
            "FLOWITH_EDGE_URL": dead,
            "FLOWITH_SUPABASE_URL": dead,
        },
    )
    assert done.returncode == 5
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("flowith: ")


def test_record_then_replay_offline(cli: CLI, tmp_path: Path) -> None:
    cassette = tmp_path / "cassettes" / "models.jsonl"  # its folder is made
    recorded = cli("record", str(cassette), "models", "--json")
    assert recorded.code == 0, recorded.err
    assert cassette.exists()
    text = cassette.read_text(encoding="utf-8")
    assert cli.served.fake.token not in text
    replayed = cli.replay_offline(cassette, "models", "--json")
    assert replayed.code == 0, replayed.err
    assert replayed.json() == recorded.json()


def test_replaying_a_different_command_is_a_clear_error(cli: CLI, tmp_path: Path) -> None:
    cassette = tmp_path / "models.jsonl"
    assert cli("--record", str(cassette), "models").code == 0
    replayed = cli("--replay", str(cassette), "credits", token="")
    assert replayed.code == 4
    assert replayed.error_lines
    assert "recording" in replayed.error_lines[0]


def test_a_prompt_after_double_dash_is_recorded_and_replayed(cli: CLI, tmp_path: Path) -> None:
    # --record FILE went after the user's "--": words of the prompt, nothing recorded,
    # and a replay went online.
    cassette = tmp_path / "dash.jsonl"
    recorded = cli("record", str(cassette), "chat", "--json", "--", "-x")
    assert recorded.code == 0, recorded.err
    assert cassette.exists()
    sent = cli.served.fake.requests_to("POST", "/completion/async")[-1].json()
    assert sent["messages"][-1]["content"] == "-x"
    replayed = cli.replay_offline(cassette, "chat", "--json", "--", "-x")
    assert replayed.code == 0, replayed.err


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "", "models"),
        ("record", "", "models"),
        ("--save-tokens", "", "credits"),
        ("image", "a cat", "--out", ""),
    ],
)
def test_an_empty_file_name_is_a_usage_error(cli: CLI, args: tuple[str, ...]) -> None:
    # Each was taken for the option left out: "replay ''" went online.
    result = cli(*args)
    assert result.code == 2
    assert result.error_lines[0].endswith("needs a file name, not ''")


def test_doctor_is_neither_recorded_nor_replayed(cli: CLI, tmp_path: Path) -> None:
    # Each of its clients started the cassette afresh: the recording could not replay.
    for verb in ("record", "replay"):
        result = cli(verb, str(tmp_path / "doctor.jsonl"), "doctor", "--seconds", "1")
        assert result.code == 2
        assert result.error_lines == ["flowith: doctor cannot be recorded or replayed"]


def test_a_base_url_holding_an_undecodable_byte_is_a_usage_error(cli: CLI) -> None:
    # httpx failed inside build_request with a traceback; aiohttp sent it escaped.
    result = cli("--edge-url", "http://127.0.0.1:9/\udcff", "models")
    assert result.code == 2
    assert "lone surrogate" in result.error_lines[0]


def test_recording_a_replay_is_a_usage_error(cli: CLI, tmp_path: Path) -> None:
    """--record was silently ignored beside --replay: no cassette was written."""
    cassette = tmp_path / "models.jsonl"
    assert cli("--record", str(cassette), "models").code == 0
    both = cli("--replay", str(cassette), "--record", str(tmp_path / "y.jsonl"), "models")
    assert both.code == 2
    assert both.error_lines == [
        "flowith: --record and --replay exclude each other: a replay sends nothing"
    ]


def test_settings_never_show_the_tokens() -> None:
    from flowith_httpx.cli_commands import Settings

    settings = Settings(
        transport="httpx",
        backend="asyncio",
        json=False,
        token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl",
        refresh_token="refresh-secret-value",
        user_id="u",
        edge_url="https://edge.test",
        supabase_url="https://sb.test",
        edge_auth="bare",
        timeout=30.0,
        save_tokens=None,
    )
    assert "c2lnbmF0dXJl" not in repr(settings)
    assert "refresh-secret-value" not in repr(settings)


def test_a_token_is_scrubbed_before_wrapping_or_cutting_could_hide_it() -> None:
    from flowith_httpx.cli_commands import Output

    token = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJ1In0" * 12 + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    out = io.StringIO()
    output = Output(out, io.StringIO(), lambda: [token])
    output.fields({"name": token, "bio": f"see {token} there"})
    output.table(["id", "title"], [["1", f"title {token}"]])
    written = out.getvalue()
    assert "eyJzdWIiOiJ1In0" not in written
    assert "c2lnbmF0dXJl" not in written
    assert written.count("[REDACTED]") == 3


def test_a_reader_going_away_ends_a_command_quietly(served: Served) -> None:
    """``flowith models | head -1`` said "flowith: [Errno 32] Broken pipe", exit 1."""
    from flowith_httpx.cli import _parser
    from flowith_httpx.cli_commands import run_command

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    env = {
        "FLOWITH_TOKEN": served.fake.token,
        "FLOWITH_EDGE_URL": served.url,
        "FLOWITH_SUPABASE_URL": served.url,
    }
    args = _parser().parse_args(["models"])
    assert run_command(args, stdout=ClosedPipe(), stderr=err, env=env) == 141
    assert err.getvalue() == ""


def test_result_timeout_bounds_a_generation(cli: CLI, served: Served) -> None:
    """--timeout bounds each request; a generation waited its 120 s whatever it said."""
    served.call(lambda: served.fake.script(chunk("slow "), pause(30), complete()))
    started = time.monotonic()
    done = cli("chat", "--result-timeout", "1", "hello")
    assert done.code == 4
    assert time.monotonic() - started < 10
    assert "did not finish in time" in done.err or "still generating" in done.err


def test_a_token_no_header_can_carry_is_a_usage_error(cli: CLI) -> None:
    """It was the constructor's ValueError with a traceback, exit 1."""
    done = cli("credits", token="abc\x01def")
    assert done.code == 2
    assert done.error_lines == ["flowith: the token holds a character no HTTP header can carry"]


def test_a_socks_proxy_httpx_cannot_speak_is_one_line_not_a_traceback(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cli.variant[0] != "httpx":
        pytest.skip("aiohttp refuses it per request (test_proxy.py)")
    if importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed: httpx speaks SOCKS")
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:1")
    done = cli("credits")
    assert done.code == 2
    assert done.error_lines == [
        "flowith: a SOCKS proxy (proxy=, or ALL_PROXY, HTTPS_PROXY or HTTP_PROXY in the "
        'environment) needs the socksio package: pip install "httpx[socks]"'
    ]


def test_a_proxy_in_the_environment_httpx_cannot_read_is_one_line_not_a_traceback(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that is no number was httpx's InvalidURL, no ValueError: a traceback."""
    if cli.variant[0] != "httpx":
        pytest.skip("aiohttp reads the environment by its own rules (test_proxy.py)")
    monkeypatch.setenv("ALL_PROXY", "http://alice:s3cretProxyPass@127.0.0.1:notaport")
    done = cli("credits")
    assert done.code == 2
    assert done.error_lines == [
        "flowith: a proxy setting in the environment (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) is "
        "no URL httpx can read: a proxy must be an http://, https://, socks5:// or socks5h:// "
        "URL with a valid host and port"
    ]


def test_a_token_put_where_an_argument_goes_is_not_echoed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # argparse quotes what it refuses: the whole JWT went to stderr.
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"
    refresh = "opaque-refresh-0001"
    monkeypatch.setenv("FLOWITH_REFRESH_TOKEN", refresh)
    for argv in (["models", token], [token], ["--edge-auth", token, "models"], ["models", refresh]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("flowith: ")
        assert token not in err
        assert refresh not in err
        assert "[REDACTED]" in err


@pytest.mark.parametrize("swapped", ["token", "refresh"])
def test_a_token_put_in_flowith_edge_auth_is_not_echoed(
    swapped: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variable's check quoted its value whole: a JWT or a refresh token set in the
    # wrong variable went to the terminal, signature and all.
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"
    refresh = "opaque-refresh-0001"
    monkeypatch.setenv("FLOWITH_TOKEN", token)
    monkeypatch.setenv("FLOWITH_REFRESH_TOKEN", refresh)
    monkeypatch.setenv("FLOWITH_EDGE_AUTH", token if swapped == "token" else refresh)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "flowith: FLOWITH_EDGE_AUTH must be bare or bearer, got '[REDACTED]'\n"
    monkeypatch.setenv("FLOWITH_EDGE_AUTH", "bearr")  # a typo is still quoted
    assert main(["models"]) == 2
    assert "got 'bearr'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", "hello", "--refresh-tokn", "rt_SECRET_abc123XYZ"],  # a misspelt option
        ["chat", "hello", "--refresh-tokn=rt_SECRET_abc123XYZ"],
        ["chat", "--timeout", "rt_SECRET_abc123XYZ", "hello"],  # in another option's place
        ["chat", "--edge-auth", "rt_SECRET_abc123XYZ", "hello"],
        ["chat", "hello", "--tokn", "short-sec1"],
        ["chat", "hello", "--cookie=rt_SECRET_abc123XYZ"],  # an option argparse lacks
        ["chat", "hello", "--set=rt_SECRET_abc123XYZ"],
        ["chat", "hello", "--refresh-tokn", "-rt_SECRET_abc123XYZ"],  # base64url may start so
        ["chat", "hello", "--refresh-tokn", "-rt_SECRET_abc123XYZ=="],
        ["chat", "--timeout", "rt_SECRET_abc123xyz0", "hello"],
        ["chat", "--timeout", "k3xqz9wmh2pa", "hello"],  # GoTrue's: 12 lowercase and digits
    ],
)
def test_a_token_typed_on_the_command_line_is_not_echoed_by_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the environment's tokens and JWTs were masked: an opaque refresh token
    # typed after a misspelt option, or in another option's place, was quoted whole.
    monkeypatch.delenv("FLOWITH_REFRESH_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowith: ")
    assert "rt_SECRET_abc123XYZ" not in err
    assert "rt_SECRET_abc123xyz0" not in err
    assert "short-sec1" not in err
    assert "k3xqz9wmh2pa" not in err
    assert "[REDACTED]" in err


@pytest.mark.parametrize(
    ("argv", "quoted"),
    [
        (["chat", "--edge-auth", "beare", "hello"], "'beare'"),
        (["chat", "hi", "--modle", "gpt-4.1-nano"], "gpt-4.1-nano"),
        (["chat", "hi", "--modle", "claude-3-5-sonnet"], "claude-3-5-sonnet"),
        (["chat", "hi", "--modle", "gpt-4o-mini-2024-07-18"], "gpt-4o-mini-2024-07-18"),
        (
            [
                "conversations",
                "delete",
                "5eed0000-0000-4000-8000-000000000001",
                "5EED0000-0000-4000-8000-000000000002",
            ],
            "5EED0000-0000-4000-8000-000000000002",
        ),
        (
            ["conversations", "show", "5eed0000-0000-4000-8000-000000000001", "photo_2024.png"],
            "photo_2024.png",
        ),
    ],
)
def test_a_usage_error_still_quotes_what_is_not_a_token(
    argv: list[str], quoted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Masking every word of 12 characters with a digit hid model names, conversation
    # ids and file names: the error then said nothing useful.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert quoted in err
    assert "[REDACTED]" not in err


def test_text_from_the_server_cannot_drive_the_terminal() -> None:
    # A title holding an escape sequence reached the terminal as is.
    lines = render_table(("ID", "TITLE"), [["a", "x\x1b[31mred\x07"]], 80)
    assert "\x1b" not in lines[1]
    assert "\x07" not in lines[1]
    assert lines[1].endswith("x\ufffd[31mred\ufffd")


def test_a_table_written_to_a_pipe_is_never_cut() -> None:
    from flowith_httpx.cli_commands import Output

    out = io.StringIO()
    Output(out, io.StringIO(), lambda: ()).table(("ID", "TITLE"), [["a", "word " * 100]])
    assert out.getvalue().splitlines()[1].rstrip().endswith("word")


def test_process_writes_what_the_terminal_cannot_encode_escaped(served: Served) -> None:
    # PYTHONIOENCODING=ascii (a legacy console): a UnicodeEncodeError traceback ended
    # the run after the conversation was made, its id never shown.
    served.fake.script(chunk("日本 🎉 answered"), complete())
    env = {
        "FLOWITH_TOKEN": served.fake.token,
        "FLOWITH_EDGE_URL": served.url,
        "FLOWITH_SUPABASE_URL": served.url,
        "PYTHONIOENCODING": "ascii",
    }
    done = _run(["chat", "日本 🎉"], env)
    assert done.returncode == 0, done.stderr
    assert "\\u65e5\\u672c \\U0001f389 answered" in done.stdout


def test_process_with_stdout_closed_says_so(served: Served) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowith_httpx", "models"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        # Python sets sys.stdout to None when file descriptor 1 is closed.
        preexec_fn=lambda: os.close(1),
        env={**os.environ, "FLOWITH_TOKEN": served.fake.token},
    )
    assert done.returncode == 1
    assert done.stderr == "flowith: standard output is closed\n"


def test_a_cassette_that_cannot_be_read_is_a_local_file_error(cli: CLI, tmp_path: Path) -> None:
    # It was exit 4, the code of a server's error.
    cassette = tmp_path / "notes.txt"
    cassette.write_text("not a cassette\n")
    done = cli("replay", str(cassette), "chat", "hi")
    assert done.code == 1
    assert done.error_lines[0].startswith("flowith: the cassette header is not JSON")


def test_wide_characters_keep_the_columns_aligned() -> None:
    # Widths were counted in characters: a Japanese title pushed the next column right.
    from flowith_httpx.cli_commands import _columns

    rows = [["a", "京都旅行", "today"], ["b", "Kyoto", "now"]]
    lines = render_table(("ID", "TITLE", "UPDATED"), rows, 80)

    def column_of(line: str, word: str) -> int:
        return _columns(line[: line.index(word)])

    assert column_of(lines[1], "today") == column_of(lines[2], "now")
    assert column_of(lines[1], "today") == column_of(lines[0], "UPDATED")
    cut = render_table(("ID", "TITLE"), [["a", "日本語のとても長いタイトルです"]], 20)[1]
    assert cut.endswith("…")
    assert _columns(cut) <= 20


def test_json_output_to_an_ascii_stream_is_still_json() -> None:
    # The stream's own escapes (the C locale without UTF-8 mode) gave \U0001f600,
    # which is no JSON: the JSON now escapes what the stream cannot carry itself.
    import io

    from flowith_httpx.cli_commands import Output

    value = {"title": "caf\u00e9 \U0001f600"}
    for write in (Output.document, Output.json_line):
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="ascii", errors="backslashreplace")
        write(Output(out, io.StringIO(), lambda: ()), value)
        out.flush()
        assert json.loads(raw.getvalue().decode("ascii")) == value
