"""Section ``requests``: the cost of one PostgREST listing of 1,000 rows.

``client.list_conversations(limit=1000)`` (build the request, send it, check
the answer, turn 1,000 rows into records) against a bare GET of the same URL
with the same headers plus ``json.loads``, on the same HTTP library and event
loop, the calls interleaved. The fake (seeded with 1,000 conversations for
the user, through its own PostgREST endpoint) runs in its own process; the
client's wall time includes the fake's answer, its CPU time does not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from benchmarks import oldclient
from benchmarks.e2e import WorkerFailed, run_worker
from benchmarks.fakeproc import FakeProcess
from benchmarks.report import Section, Table, Target, fmt_ratio, fmt_seconds

__all__ = ["run"]

ROWS = 1000
TARGET = 1.3
#: Client -> the bare request it is compared with.
PAIRS = {
    "httpx-asyncio": "httpx.AsyncClient GET + json.loads",
    "httpx-trio": "httpx.AsyncClient GET + json.loads (trio)",
    "aiohttp": "aiohttp GET + json.loads",
    "flowith_webapi": "aiohttp GET + json.loads",
}


@dataclass(frozen=True)
class Plan:
    repeat: int
    warmup: int
    timeout: float


FULL = Plan(repeat=40, warmup=5, timeout=240)
QUICK = Plan(repeat=3, warmup=1, timeout=60)


def run(*, quick: bool) -> Section:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    section = Section("requests", "4. Request overhead")
    table = Table(
        f"list_conversations(limit={ROWS:,}) vs a bare GET + json.loads of the same URL "
        f"(median of {plan.repeat} interleaved calls)",
        [
            "client",
            "wall",
            "client CPU",
            "bare request",
            "bare wall",
            "bare CPU",
            "wall ratio",
            "CPU ratio",
        ],
    )
    clients = ["httpx-asyncio", "httpx-trio", "aiohttp"]
    if oldclient.available():
        clients.append("flowith_webapi")
    results: dict[str, dict[str, Any]] = {}
    with FakeProcess(conversations=ROWS) as fake:
        for client in clients:
            print(f"   requests: {client} ...", flush=True)
            try:
                result = run_worker(
                    [
                        "list",
                        "--client", client,
                        "--url", fake.url,
                        "--token", fake.token,
                        "--rows", str(ROWS),
                        "--repeat", str(plan.repeat),
                        "--warmup", str(plan.warmup),
                        "--timeout", str(plan.timeout),
                    ],
                    plan.timeout + 30,
                )  # fmt: skip
            except WorkerFailed as exc:
                section.errors.append(f"{client}: {exc}")
                continue
            results[client] = result
            wall, cpu = result["wall"], result["cpu"]
            table.add(
                client,
                fmt_seconds(wall["library"]),
                fmt_seconds(cpu["library"]),
                PAIRS[client],
                fmt_seconds(wall["bare"]),
                fmt_seconds(cpu["bare"]),
                fmt_ratio(wall["library"] / wall["bare"]),
                fmt_ratio(cpu["library"] / cpu["bare"]),
            )
    table.notes.append(
        "wall: time.perf_counter around the call, the fake's answer included (the fake "
        "filters, orders and serializes 1,000 rows in Python: a slow server, which dilutes "
        "the wall ratio); client CPU: time.process_time of the client process alone"
    )
    if "flowith_webapi" in results:
        table.notes.append(f"flowith_webapi {oldclient.version()}: {oldclient.PATCH_NOTE}")
    section.tables.append(table)
    main = results.get("httpx-asyncio")
    if main is None:
        section.targets.append(Target("request overhead: ran", False, "httpx-asyncio failed"))
    else:
        wall = main["wall"]["library"] / main["wall"]["bare"]
        cpu = main["cpu"]["library"] / main["cpu"]["bare"]
        section.targets.append(
            Target(
                f"request overhead (httpx-asyncio): within {TARGET:g}× the bare httpx GET "
                "+ json.loads, wall time",
                None if quick else wall <= TARGET,
                fmt_ratio(wall),
            )
        )
        section.targets.append(
            Target(
                f"request overhead (httpx-asyncio): within {TARGET:g}× the bare httpx GET "
                "+ json.loads, client CPU time (stricter: the fake's time left out)",
                None if quick else cpu <= TARGET,
                fmt_ratio(cpu),
            )
        )
    section.seconds = time.perf_counter() - started
    return section
