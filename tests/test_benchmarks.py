"""The benchmarks keep working: ``python -m benchmarks --quick`` runs every section.

Quick mode uses reduced sizes and judges no timing target; the old client's
rows appear only where ``flowith_webapi`` is installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import oldclient
from benchmarks.timing import interleaved

ROOT = Path(__file__).resolve().parent.parent

SECTION_TITLES = (
    "== 1. SSE decoding",
    "== 2. Stream pipeline",
    "== 3. End to end on loopback",
    "== 4. Request overhead",
)


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], str]:
    markdown = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--markdown", str(markdown)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return finished, markdown.read_text(encoding="utf-8") if markdown.exists() else ""


def test_quick_run_exits_0_and_prints_every_section(
    quick_run: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    finished, _ = quick_run
    assert finished.returncode == 0, finished.stderr[-4000:]
    out = finished.stdout
    assert out.startswith("flowith benchmarks, quick")
    for title in SECTION_TITLES:
        assert title in out
    for contender in ("flowith", "httpx-sse", "str buffer"):
        assert contender in out
    for client in ("httpx-asyncio", "httpx-trio", "aiohttp"):
        assert client in out
    assert "ERROR" not in out


def test_quick_run_writes_the_markdown_table(
    quick_run: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    _, markdown = quick_run
    assert markdown.startswith("# Benchmark results")
    assert "python -m benchmarks --quick --markdown" in markdown
    assert "| chunking | chunks | flowith | httpx-sse | str buffer |" in markdown
    for title in ("1. SSE decoding", "2. Stream pipeline", "3. End to end", "4. Request overhead"):
        assert f"## {title}" in markdown


def test_quick_run_includes_the_old_client_when_installed(
    quick_run: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    if not oldclient.available():
        pytest.skip("flowith_webapi is not installed: the old client's rows are skipped")
    finished, _ = quick_run
    assert "flowith_webapi" in finished.stdout
    assert "patched" in finished.stdout  # the output says its URL constants were patched


def test_only_and_bad_arguments() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert "--only" in finished.stderr


def test_interleaved_rounds_start_one_contender_later() -> None:
    # A run inherits the heap its predecessor left: no contender may always follow the same one.
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "ABC"}
    samples = interleaved(contenders, 4)
    assert "".join(calls) == "ABC" + "ABC" + "BCA" + "CAB" + "ABC"
    assert {name: len(runs) for name, runs in samples.items()} == {"A": 4, "B": 4, "C": 4}


def test_interleaved_budget_stops_a_slow_contender_in_any_position() -> None:
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "AB"}
    samples = interleaved(contenders, 3, budget=-1.0, warmup=False)
    assert calls == ["A", "B"]  # one run each: past the budget at once
    assert {name: len(runs) for name, runs in samples.items()} == {"A": 1, "B": 1}
