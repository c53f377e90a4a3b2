"""The ``flowith`` command's demo: the README's main job."""

from __future__ import annotations

import io
import os
import subprocess
import sys

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


def test_the_demo_reaches_its_fake_where_an_internet_proxy_is_configured() -> None:
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environment["HTTP_PROXY"] = "http://proxy.invalid:3128"  # unreachable
    done = subprocess.run(
        [sys.executable, "-m", "flowith_httpx", "demo", "--transport", "aiohttp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert "flowith> Your name is Alice" in done.stdout


def test_aiohttp_on_trio_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--transport", "aiohttp", "--backend", "trio"]) == 2
    assert "asyncio only" in capsys.readouterr().err
