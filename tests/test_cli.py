"""The ``flowith`` command's demo: the README's main job."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from importlib.machinery import ModuleSpec

import anyio
import pytest

from flowith_httpx.cli import main, run_demo


@pytest.mark.parametrize(
    ("transport", "backend"), [("httpx", "asyncio"), ("httpx", "trio"), ("aiohttp", "asyncio")]
)
def test_demo_streams_a_multi_turn_chat_with_reasoning(transport: str, backend: str) -> None:
    out = io.StringIO()
    anyio.run(run_demo, transport, backend, out, backend=backend)
    text = out.getvalue()
    assert "a fake Flowith is serving on http://127.0.0.1:" in text
    assert "you> Hi! My name is Alice and I love async Python." in text
    assert "[thinking] The user is introducing themselves" in text
    assert "flowith> Nice to meet you, Alice!" in text
    # The second answer depends on the history the client really sent.
    assert "flowith> Your name is Alice, and you love async Python." in text
    assert "flowith> image ready: http://127.0.0.1:" in text
    assert "flowith> video ready: http://127.0.0.1:" in text
    assert text.count("saved to ") == 2
    assert "the canvas of this conversation: 10 nodes" in text
    assert "credits left:" in text
    assert "titled the conversation: " in text
    assert "5 turns in conversation" in text
    assert "over 1 shared event stream connection" in text


def test_console_entry_point_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowith_httpx", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "flowith> Your name is Alice" in done.stdout


@pytest.mark.parametrize(
    ("transport", "variable", "proxy"),
    [
        ("aiohttp", "HTTP_PROXY", "http://proxy.invalid:3128"),  # unreachable
        # httpx sets up a SOCKS proxy's transport even for hosts NO_PROXY exempts: the
        # demo failed with a traceback where socksio is not installed.
        ("httpx", "ALL_PROXY", "socks5://127.0.0.1:1"),
        # A host httpx cannot read in NO_PROXY, which only proxies need: a traceback.
        ("httpx", "NO_PROXY", "127.0.0.1:notaport"),
    ],
)
def test_the_demo_reaches_its_fake_where_an_internet_proxy_is_configured(
    transport: str, variable: str, proxy: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environment[variable] = proxy
    done = subprocess.run(
        [sys.executable, "-m", "flowith_httpx", "demo", "--transport", transport],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert "flowith> Your name is Alice" in done.stdout


@pytest.mark.parametrize("command", ["demo", "fake"])
def test_json_output_of_a_command_that_has_none_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # After the command argparse refused it; before, it was taken and ignored.
    assert main(["--json", command]) == 2
    assert capsys.readouterr().err == (
        f"flowith: {command} has no JSON output: leave out --json\n"
    )


def test_aiohttp_on_trio_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--transport", "aiohttp", "--backend", "trio"]) == 2
    assert "asyncio only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "missing"),
    [(["--backend", "trio"], "trio"), (["--transport", "aiohttp"], "aiohttp")],
)
def test_a_choice_whose_extra_is_not_installed_is_a_usage_error(
    options: list[str],
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With only the README's ``.[httpx]`` install, say which extra to add."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == missing else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for argv in (["demo", *options], [*options, "credits", "--token", "t"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            f"flowith: {options[0]} {missing} needs the {missing} extra ({missing} not installed):"
            f' pip install "flowith[{missing}]"\n'
        )


def test_a_reader_going_away_ends_the_demo_quietly() -> None:
    """``flowith demo | head -2`` printed a BrokenPipeError traceback."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "flowith_httpx", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert demo.stdout is not None
    assert demo.stdout.readline().startswith(b"flowith demo: a fake Flowith is serving")
    demo.stdout.close()
    _, err = demo.communicate(timeout=60)
    assert (demo.returncode, err) == (141, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_ends_the_demo_in_one_line() -> None:
    """``flowith demo > /dev/full`` printed a traceback; other commands say one line."""
    with open("/dev/full", "wb") as full:
        demo = subprocess.run(
            [sys.executable, "-m", "flowith_httpx", "demo"],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert demo.returncode == 1
    assert demo.stderr.decode().splitlines() == ["flowith: [Errno 28] No space left on device"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("signal_name", "code", "said"),
    [("SIGINT", 130, "flowith: interrupted\n"), ("SIGTERM", 143, "flowith: terminated\n")],
)
def test_a_signal_ends_the_demo_with_its_exit_code(
    backend: str, signal_name: str, code: int, said: str
) -> None:
    """On Python 3.10 Ctrl-C ended the demo with a CancelledError traceback; SIGTERM
    ended it on the spot (-15), closing nothing."""
    import signal

    demo = subprocess.Popen(
        [sys.executable, "-m", "flowith_httpx", "demo", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    assert demo.stdout.readline().startswith("flowith demo: a fake Flowith is serving")
    demo.send_signal(getattr(signal, signal_name))
    _, err = demo.communicate(timeout=60)
    assert (demo.returncode, err) == (code, said)


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["demo"], 130, "flowith: interrupted\n"),
        (["fake"], 0, "flowith fake: stopped\n"),
        (["--token", "t" * 40, "models"], 130, "flowith: interrupted\n"),
    ],
)
def test_a_cancelled_run_is_an_interruption(
    argv: list[str],
    code: int,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What Python 3.10's asyncio runner raises for Ctrl-C: the main task's CancelledError."""
    import asyncio

    def cancelled(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(anyio, "run", cancelled)
    assert main(argv) == code
    assert capsys.readouterr().err == said


def test_the_fake_command_serves_what_the_other_commands_can_use() -> None:
    """A newcomer without an account tries ``flowith chat`` against ``flowith fake``."""
    import signal

    served = subprocess.Popen(
        [sys.executable, "-m", "flowith_httpx", "fake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert served.stdout is not None
        assert served.stdout.readline().startswith("flowith fake: a fake Flowith is serving")
        env = dict(os.environ)
        for line in iter(served.stdout.readline, ""):
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").rstrip("\n").partition("=")
                env[name] = value
                if name == "no_proxy":
                    break
        assert {"FLOWITH_EDGE_URL", "FLOWITH_TOKEN"} <= env.keys()
        chat = subprocess.run(
            [sys.executable, "-m", "flowith_httpx", "chat", "hello"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert (chat.returncode, chat.stdout) == (0, "You said: hello\n"), chat.stderr
    finally:
        served.send_signal(signal.SIGINT)
        _, err = served.communicate(timeout=30)
    assert served.returncode == 0
    assert err == "flowith fake: stopped\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"flowith {importlib.metadata.version('flowith')}\n"


def test_the_fake_command_refuses_a_port_that_is_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fake", "--port", "70000"]) == 2
    assert "not a port (0 to 65535): '70000'" in capsys.readouterr().err


def test_sigterm_stops_the_fake_as_ctrl_c_does() -> None:
    import signal

    served = subprocess.Popen(
        [sys.executable, "-m", "flowith_httpx", "fake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert served.stdout is not None
    assert served.stdout.readline().startswith("flowith fake: a fake Flowith is serving")
    served.send_signal(signal.SIGTERM)
    _, err = served.communicate(timeout=30)
    assert (served.returncode, err) == (0, "flowith fake: stopped\n")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_a_fake_started_with_ctrl_c_ignored() -> None:
    """A shell's background job (`flowith fake &`) starts with SIGINT ignored: the
    event loops then installed no handler for SIGTERM to borrow, and it raised
    KeyboardInterrupt wherever the run stood, printing a traceback."""
    import signal

    served = subprocess.Popen(
        [sys.executable, "-m", "flowith_httpx", "fake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert served.stdout is not None
    assert served.stdout.readline().startswith("flowith fake: a fake Flowith is serving")
    served.send_signal(signal.SIGTERM)
    _, err = served.communicate(timeout=30)
    assert (served.returncode, err) == (0, "flowith fake: stopped\n")


def test_a_failure_of_the_fake_command_is_shown_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its 500 said "see the server log", which the library's loggers, without a
    handler, never wrote anywhere."""
    import functools
    import io
    import re

    import anyio
    import httpx

    from flowith_httpx.cli import serve_fake
    from flowith_proto.fake import FakeFlowith

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(FakeFlowith, "handle", broken)
    out = io.StringIO()

    async def main() -> int:
        started = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(serve_fake, 0, out, started=started))
            await started.wait()
            found = re.search(r"serving on (\S+)", out.getvalue())
            assert found is not None
            async with httpx.AsyncClient(trust_env=False) as http:
                answer = await http.get(found.group(1) + "/models")
            group.cancel_scope.cancel()
        return answer.status_code

    assert anyio.run(main) == 500
    err = capsys.readouterr().err
    assert "flowith fake: the fake Flowith failed on b'/models'" in err
    assert "RuntimeError: a bug in the model" in err


def test_ctrl_c_in_a_task_of_a_task_group_on_trio_is_an_interruption(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """trio raises Ctrl-C in whichever task runs; in a task group's it came out in an
    exception group: `flowith image` or `doctor` on trio printed a long traceback and
    exited 1, where asyncio's said one line and 130."""

    async def interrupted_in_a_task(*args: object) -> None:
        async def task() -> None:
            raise KeyboardInterrupt

        async with anyio.create_task_group() as group:
            group.start_soon(task)
            await anyio.sleep(10)

    monkeypatch.setattr("flowith_httpx.cli.run_demo", interrupted_in_a_task)
    assert main(["demo", "--backend", "trio"]) == 130
    assert capsys.readouterr().err == "flowith: interrupted\n"


def test_a_library_error_inside_a_task_group_ends_the_demo_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a bare OSError was one line: one in an exception group (too many open
    files), or any library error, went out as a traceback."""
    from flowith_proto.errors import APIError

    async def failing(*args: object) -> None:
        async def task() -> None:
            raise APIError("HTTP 500 from GET /user/credits: down", 500)

        async with anyio.create_task_group() as group:
            group.start_soon(task)
            await anyio.sleep(10)

    monkeypatch.setattr("flowith_httpx.cli.run_demo", failing)
    assert main(["demo"]) == 4
    assert capsys.readouterr().err == "flowith: HTTP 500 from GET /user/credits: down\n"


def test_the_demo_runs_in_the_c_locale_without_utf8_mode() -> None:
    """stdout is then ASCII with surrogateescape errors, which only strict errors were
    switched from: the first em dash ended the demo with a UnicodeEncodeError."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG")}
    environment.update(LC_ALL="C", PYTHONUTF8="0")
    demo = subprocess.run(
        [sys.executable, "-m", "flowith_httpx", "demo"],
        capture_output=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert demo.returncode == 0, demo.stderr
    assert b"\\u2014" in demo.stdout  # the em dash, escaped


def test_the_escaping_keeps_the_bytes_of_the_command_line() -> None:
    from flowith_httpx.cli import _ESCAPED

    text = "caf\udce9 \u2014 ok"  # a Latin-1 argument read in the C locale, and a dash
    assert text.encode("ascii", _ESCAPED) == b"caf\xe9 \\u2014 ok"
