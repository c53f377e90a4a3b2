"""Section ``e2e``: concurrent streamed generations against the fake Flowith on loopback.

For each configuration (client, N) the fake runs in a process of its own
(:mod:`benchmarks.fakeproc`) and the client in another, fresh one
(:mod:`benchmarks.worker`), so the client's CPU time and peak RSS are its
own. The client runs warm-up rounds, then rounds of N concurrent
``generate_stream`` calls through one client; each generation streams 20
fragments and completes, and its deltas must join to the expected text.

The old client (``flowith_webapi``) opens one stream per generation, and
every one of those streams receives every generation's events, so its cost
grows with N²: it runs up to N = 100.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import oldclient
from benchmarks.fakeproc import ROOT, FakeProcess, python_env
from benchmarks.report import Section, Table, Target, fmt_rate, fmt_ratio, fmt_seconds
from benchmarks.workload import CHUNKS

__all__ = ["run", "run_worker"]

NEW_CLIENTS = ("httpx-asyncio", "httpx-trio", "aiohttp")
OLD_CLIENT = "flowith_webapi"
RSS_LIMIT_MB = 150.0
CPU_GROWTH_LIMIT = 1.5


@dataclass(frozen=True)
class Plan:
    ns: tuple[int, ...]
    old_ns: tuple[int, ...]
    generations: int  # measured generations per process, at least one round
    max_rounds: int
    processes: int  # fresh client processes per configuration (figures: their median)
    timeout: float  # seconds one client process may take


FULL = Plan(
    ns=(1, 10, 100, 1000),
    old_ns=(1, 10, 100),
    generations=200,
    max_rounds=50,
    processes=5,
    timeout=300,
)
QUICK = Plan(ns=(1, 10), old_ns=(1, 10), generations=10, max_rounds=3, processes=1, timeout=60)


class WorkerFailed(RuntimeError):
    """A client process failed or timed out."""


def run_worker(arguments: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.worker ARGUMENTS``; return its JSON line."""
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=python_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerFailed(f"worker {arguments[:3]} timed out after {timeout:.0f} s") from exc
    if finished.returncode != 0:
        tail = finished.stderr.strip().splitlines()[-8:]
        raise WorkerFailed(
            f"worker {arguments[:3]} exited {finished.returncode}: " + " | ".join(tail)
        )
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def _configuration(client: str, n: int, plan: Plan) -> dict[str, Any]:
    rounds = max(1, min(plan.max_rounds, plan.generations // n))
    warmup = min(n, 10)
    with FakeProcess(gated=client == OLD_CLIENT, chunks=CHUNKS) as fake:
        before = fake.stats()
        result = run_worker(
            [
                "generate",
                "--client", client,
                "--url", fake.url,
                "--token", fake.token,
                "--n", str(n),
                "--rounds", str(rounds),
                "--warmup", str(warmup),
                "--warmup-rounds", "2",
                "--chunks", str(CHUNKS),
                "--timeout", str(plan.timeout),
            ],
            plan.timeout + 30,
        )  # fmt: skip
        after = fake.stats()
    result["stream_connections"] = after["stream_connections"]
    result["server_cpu"] = after["cpu_seconds"] - before["cpu_seconds"]
    result["generations_total"] = n * rounds + 2 * warmup
    result["cpu_per_chunk"] = result["cpu_total"] / result["chunks_total"]
    return result


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's figures over its processes: medians, worst cases, sums."""
    per_chunk = [r["cpu_per_chunk"] for r in runs]
    return {
        "rounds": runs[0]["rounds"],
        "processes": len(runs),
        "wall_median": statistics.median(r["wall_median"] for r in runs),
        "cpu_per_chunk": statistics.median(per_chunk),
        "cpu_per_chunk_range": (min(per_chunk), max(per_chunk)),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "stream_connections": max(r["stream_connections"] for r in runs),
        "server_cpu": statistics.median(r["server_cpu"] for r in runs),
        "generations_total": sum(r["generations_total"] for r in runs),
        "wrong": sum(r["wrong"] for r in runs),
        "wrong_examples": [e for r in runs for e in r["wrong_examples"]][:3],
    }


def run(*, quick: bool) -> Section:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    section = Section("e2e", "3. End to end on loopback")
    table = Table(
        f"N concurrent streamed generations through one client ({CHUNKS} chunks each; "
        f"median of {plan.processes} fresh client process"
        f"{'es' if plan.processes != 1 else ''})",
        [
            "client",
            "N",
            "rounds",
            "wall (median round)",
            "chunks/s",
            "stream connections",
            "exact",
            "client CPU per chunk",
            "peak RSS",
            "server CPU",
        ],
    )
    configurations = [(client, n) for client in NEW_CLIENTS for n in plan.ns]
    old_available = oldclient.available()
    if old_available:
        configurations += [(OLD_CLIENT, n) for n in plan.old_ns]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {key: [] for key in configurations}
    failures: dict[tuple[str, int], Exception] = {}
    # Each pass runs every configuration once: a slow patch of a shared machine (they
    # last minutes) then hits every N alike, not the processes of one N, which would
    # skew the ratios between N's.
    for index in range(plan.processes):
        for client, n in configurations:
            if (client, n) in failures:
                continue
            print(f"   e2e: {client}, N={n} ({index + 1} of {plan.processes}) ...", flush=True)
            try:
                runs[client, n].append(_configuration(client, n, plan))
            except (WorkerFailed, RuntimeError, OSError) as exc:
                failures[client, n] = exc
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for client, n in configurations:
        failure = failures.get((client, n))
        if failure is not None:
            section.errors.append(f"{client}, N={n}: {failure}")
            table.add(client, f"{n:,}", "", f"failed: {failure}"[:60], "", "", "", "", "", "")
            continue
        result = results[client, n] = _combine(runs[client, n])
        low, high = result["cpu_per_chunk_range"]
        cpu_cell = fmt_seconds(result["cpu_per_chunk"])
        if plan.processes > 1:
            cpu_cell += f" ({fmt_seconds(low)}–{fmt_seconds(high)})"
        exact = "yes" if result["wrong"] == 0 else f"NO ({result['wrong']} wrong)"
        if result["wrong"]:
            section.errors.append(
                f"{client}, N={n}: {result['wrong']} generations were not exact "
                f"(e.g. {result['wrong_examples']})"
            )
        table.add(
            client,
            f"{n:,}",
            str(result["rounds"]),
            fmt_seconds(result["wall_median"]),
            fmt_rate(n * CHUNKS / result["wall_median"]),
            f"{result['stream_connections']:,}",
            exact,
            cpu_cell,
            f"{result['peak_rss_mb']:.0f} MB",
            f"{result['server_cpu']:.2f} s",
        )
    table.notes += [
        "each process: a fresh fake process and a fresh client process; the processes of "
        "all rows run in turns (every row once, then again), so that a slow patch of the "
        "machine hits every row alike; 2 warm-up rounds "
        "of min(N, 10) generations, then the measured rounds; stream connections are "
        "counted by the fake over a process's whole run (warm-up included; the largest "
        "count of the processes is shown)",
        "client CPU per chunk: the client process's CPU time (time.process_time) over the "
        "measured rounds ÷ chunks streamed (median, and the processes' range); peak RSS: "
        "the client process's own peak (VmHWM; ru_maxrss where /proc is missing: on Linux "
        "ru_maxrss carries the parent's RSS across fork and exec), imports included (the "
        "largest of the processes); "
        "server CPU: the fake's process over a whole run",
    ]
    if old_available:
        table.notes += [
            f"{OLD_CLIENT} {oldclient.version()}: {oldclient.PATCH_NOTE}",
            f"{OLD_CLIENT} opens its stream after POSTing the completion, so against a fake "
            "that answers instantly it would miss its events: for it the fake starts each "
            "generation once every generation POSTed so far has its stream open "
            "(benchmarks.workload.GatedFlowith); compare CPU per chunk rather than wall time",
        ]
    else:
        table.notes.append(
            f"{OLD_CLIENT} is not installed: its rows were skipped (pip install "
            f"--target {oldclient.DEFAULT_PATH} flowith-webapi==1.0.1, or nox -s bench)"
        )
    section.tables.append(table)
    section.tables += _ratio_tables(results, plan)
    section.targets += _targets(results, plan, quick=quick)
    section.seconds = time.perf_counter() - started
    return section


def _ratio_tables(results: dict[tuple[str, int], dict[str, Any]], plan: Plan) -> list[Table]:
    growth = Table(
        "Client CPU per chunk at N ÷ at N = 1 (same client)",
        ["client", *(f"N={n:,}" for n in plan.ns)],
    )
    for client in (*NEW_CLIENTS, OLD_CLIENT):
        single = results.get((client, 1))
        if single is None:
            continue
        cells = []
        for n in plan.ns:
            result = results.get((client, n))
            cells.append(
                ""
                if result is None
                else fmt_ratio(result["cpu_per_chunk"] / single["cpu_per_chunk"])
            )
        growth.add(client, *cells)
    tables = [growth]
    if any(client == OLD_CLIENT for client, _ in results):
        versus = Table(
            f"{OLD_CLIENT} ÷ flowith: client CPU per chunk and wall time at the same N "
            "(above 1: flowith is cheaper)",
            [
                "N",
                *(f"{client} CPU" for client in NEW_CLIENTS),
                *(f"{c} wall" for c in NEW_CLIENTS),
            ],
        )
        for n in plan.old_ns:
            old = results.get((OLD_CLIENT, n))
            if old is None:
                continue
            cpu_cells, wall_cells = [], []
            for client in NEW_CLIENTS:
                new = results.get((client, n))
                cpu_cells.append(
                    "" if new is None else fmt_ratio(old["cpu_per_chunk"] / new["cpu_per_chunk"])
                )
                wall_cells.append(
                    "" if new is None else fmt_ratio(old["wall_median"] / new["wall_median"])
                )
            versus.add(f"{n:,}", *cpu_cells, *wall_cells)
        tables.append(versus)
    return tables


def _targets(
    results: dict[tuple[str, int], dict[str, Any]], plan: Plan, *, quick: bool
) -> list[Target]:
    biggest = max(plan.ns)
    targets: list[Target] = []
    for client in NEW_CLIENTS:
        result = results.get((client, biggest))
        label = f"{biggest:,} concurrent generations, {client}"
        if result is None:
            targets.append(Target(f"{label}: ran", False, "the configuration failed"))
            continue
        connections = result["stream_connections"]
        targets.append(
            Target(f"{label}: one stream connection", connections == 1, f"{connections}")
        )
        targets.append(
            Target(
                f"{label}: all results exact",
                result["wrong"] == 0,
                f"{result['generations_total'] - result['wrong']:,} of "
                f"{result['generations_total']:,} exact",
            )
        )
        rss = result["peak_rss_mb"]
        targets.append(
            Target(
                f"{label}: peak RSS < {RSS_LIMIT_MB:.0f} MB",
                None if quick else rss < RSS_LIMIT_MB,
                f"{rss:.0f} MB",
            )
        )
        single = results.get((client, 1))
        if single is None:
            targets.append(Target(f"{label}: CPU per chunk", False, "no N=1 figure"))
            continue
        growth = result["cpu_per_chunk"] / single["cpu_per_chunk"]
        targets.append(
            Target(
                f"{label}: client CPU per chunk ≤ {CPU_GROWTH_LIMIT:g}× the 1-generation case",
                None if quick else growth <= CPU_GROWTH_LIMIT,
                fmt_ratio(growth),
            )
        )
    return targets
