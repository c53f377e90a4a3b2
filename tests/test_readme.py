"""Every Python block of the README runs, against the fake Flowith, so the docs cannot rot.

Whole programs (they call ``asyncio.run`` or ``trio.run``) run as they are;
the other blocks run in order inside one event loop with ``client`` open, as
the README says. ``FlowithClient`` is pointed at a fake served on loopback
from a background thread, and ``TOKEN`` / ``REFRESH`` are the fake's.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

import flowith_aiohttp
import flowith_httpx
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.fake import FakeFlowith

README = Path(__file__).parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def pointed_at(base: type[Any], url: str) -> type[Any]:
    """``base`` with the fake's URL as its default hosts."""

    class Pointed(base):  # type: ignore[misc]
        def __init__(self, token: str = "", **options: Any) -> None:
            options.setdefault("edge_url", url)
            options.setdefault("supabase_url", url)
            options.setdefault("poll_interval", 0.05)
            super().__init__(token, **options)

    return Pointed


def test_every_python_block_of_the_readme_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 10
    programs = [b for b in blocks if "asyncio.run(" in b or "trio.run(" in b]
    fragments = [b for b in blocks if b not in programs]
    fake = FakeFlowith()
    monkeypatch.chdir(tmp_path)
    with _served(fake) as url:
        monkeypatch.setattr(
            flowith_httpx, "FlowithClient", pointed_at(flowith_httpx.FlowithClient, url)
        )
        monkeypatch.setattr(
            flowith_aiohttp, "FlowithClient", pointed_at(flowith_aiohttp.FlowithClient, url)
        )
        secrets = {"TOKEN": fake.token, "REFRESH": fake.refresh_token}
        for program in programs:
            exec(compile(program, str(README), "exec"), {"__name__": "readme", **secrets})
        anyio.run(_run_fragments, fragments, secrets)
    assert (tmp_path / "outputs").is_dir()
    assert (tmp_path / "tokens.json").exists()


async def _run_fragments(fragments: list[str], secrets: dict[str, str]) -> None:
    async with flowith_httpx.FlowithClient(secrets["TOKEN"]) as client:
        namespace: dict[str, Any] = {
            "__name__": "readme",
            "client": client,
            "FlowithClient": flowith_httpx.FlowithClient,
            **secrets,
        }
        for fragment in fragments:
            code = compile(fragment, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            outcome = eval(code, namespace)
            if inspect.iscoroutine(outcome):
                await outcome


@contextmanager
def _served(fake: FakeFlowith) -> Iterator[str]:
    """Serve ``fake`` in a background thread with its own event loop, so the
    README's programs can start event loops of their own."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(FakeFlowithServer(fake)) as server,
    ):
        yield server.url
