"""A client's side of a loopback benchmark, in a fresh process per configuration.

``python -m benchmarks.worker generate --client NAME --url URL --token T --n N ...``
runs rounds of ``N`` concurrent streamed generations through one client;
``python -m benchmarks.worker list --client NAME --url URL --token T ...``
times ``list_conversations(limit=1000)`` against a bare GET of the same URL.
Each prints one JSON line: its timings, the process's CPU time and its peak
RSS (``ru_maxrss``), which a fresh process makes the client's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from benchmarks.workload import expected_text, prompt

__all__ = ["CLIENTS", "main"]

#: Client name -> (library, anyio backend).
CLIENTS: dict[str, tuple[str, str]] = {
    "httpx-asyncio": ("httpx", "asyncio"),
    "httpx-trio": ("httpx", "trio"),
    "aiohttp": ("aiohttp", "asyncio"),
    "flowith_webapi": ("webapi", "asyncio"),
}


def _peak_rss_mb() -> float:
    """This process's peak resident set size, in MB (MiB).

    Linux's ``ru_maxrss`` carries the parent's RSS across fork and exec (the
    kernel keeps the larger of the old and new address spaces' peaks), so a
    worker started by a large benchmark process would report the parent's
    size. ``VmHWM`` in ``/proc/self/status`` is the peak of this process's
    own address space; ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _new_client(name: str, url: str, token: str, timeout: float | None = None) -> Any:
    """A client of ``name`` pointed at ``url``; ``timeout``: its per-request
    limit (``None``: the client's default)."""
    library = CLIENTS[name][0]
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if library == "httpx":
        import flowith_httpx

        return flowith_httpx.FlowithClient(token, edge_url=url, supabase_url=url, **options)
    if library == "aiohttp":
        import flowith_aiohttp

        return flowith_aiohttp.FlowithClient(token, edge_url=url, supabase_url=url, **options)
    from benchmarks.oldclient import load

    if timeout is not None:
        options["timeout"] = int(timeout)
    return load(url).FlowithClient(token, **options)


async def _close(client: Any) -> None:
    if hasattr(client, "aclose"):
        await client.aclose()
    else:
        await client.close()


# -- generate -------------------------------------------------------------------


async def _one(client: Any, text_prompt: str, chunks: int, wrong: list[str]) -> None:
    deltas: list[str] = []
    steps: AsyncIterator[Any] = client.generate_stream(text_prompt)
    async for step in steps:
        deltas.append(step.text_delta)
    if "".join(deltas) != expected_text(text_prompt, chunks):
        wrong.append(text_prompt)


async def _round(client: Any, round_index: int, n: int, chunks: int, wrong: list[str]) -> None:
    async with anyio.create_task_group() as group:
        for index in range(n):
            group.start_soon(_one, client, prompt(round_index, index), chunks, wrong)


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    client = _new_client(args.client, args.url, args.token, args.client_timeout)
    wrong: list[str] = []
    walls: list[float] = []
    cpu = 0.0
    try:
        with anyio.fail_after(args.timeout):
            for warm in range(args.warmup_rounds):
                await _round(client, -1 - warm, args.warmup, args.chunks, wrong)
            for round_index in range(args.rounds):
                cpu_start = time.process_time()
                started = time.perf_counter()
                await _round(client, round_index, args.n, args.chunks, wrong)
                walls.append(time.perf_counter() - started)
                cpu += time.process_time() - cpu_start
        connections = getattr(client, "stream_connections", None)
    finally:
        await _close(client)
    return {
        "client": args.client,
        "n": args.n,
        "rounds": args.rounds,
        "wall_median": statistics.median(walls),
        "wall_total": sum(walls),
        "cpu_total": cpu,
        "chunks_total": args.n * args.rounds * args.chunks,
        "wrong": len(wrong),
        "wrong_examples": wrong[:3],
        "client_stream_connections": connections,
        "peak_rss_mb": _peak_rss_mb(),
    }


# -- list -------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> dict[str, Any]:
    library = CLIENTS[args.client][0]
    client = _new_client(args.client, args.url, args.token, args.client_timeout)
    expected = args.rows
    bare_close: Callable[[], Awaitable[None]]
    if library == "webapi":
        import aiohttp

        headers = {**client._sb_headers()}
        session = aiohttp.ClientSession()
        url = (
            f"{args.url}/rest/v1/conversation?select=*&user_id=eq.{client._user_id}"
            f"&is_delete=neq.true&project_id=is.null&order=updated_at.desc"
            f"&offset=0&limit={expected}"
        )
    else:
        request = client._state.endpoints.list_conversations(limit=expected)
        url = request.url
        headers = dict(request.headers)
    if library == "httpx":
        import httpx

        bare_httpx = httpx.AsyncClient()

        async def bare() -> int:
            response = await bare_httpx.get(url, headers=headers)
            response.raise_for_status()
            return len(json.loads(response.content))

        bare_close = bare_httpx.aclose
    else:
        import aiohttp

        session = aiohttp.ClientSession()

        async def bare() -> int:
            async with session.get(url, headers=headers) as response:
                response.raise_for_status()
                return len(json.loads(await response.read()))

        bare_close = session.close

    async def library_call() -> int:
        if library == "webapi":
            return len(await client.list_conversations(limit=expected))
        return len(await client.list_conversations(limit=expected))

    contenders = {"library": library_call, "bare": bare}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        with anyio.fail_after(args.timeout):
            for index in range(args.warmup + args.repeat):
                for name, function in contenders.items():
                    cpu_start = time.process_time()
                    started = time.perf_counter()
                    rows = await function()
                    wall = time.perf_counter() - started
                    cpu = time.process_time() - cpu_start
                    if rows != expected:
                        raise AssertionError(f"{name} got {rows} rows, not {expected}")
                    if index >= args.warmup:
                        walls[name].append(wall)
                        cpus[name].append(cpu)
    finally:
        await _close(client)
        await bare_close()
    return {
        "client": args.client,
        "repeat": args.repeat,
        "wall": {name: statistics.median(values) for name, values in walls.items()},
        "cpu": {name: statistics.median(values) for name, values in cpus.items()},
        "url": url,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate")
    generate.add_argument("--n", type=int, required=True)
    generate.add_argument("--rounds", type=int, default=1)
    generate.add_argument("--warmup", type=int, default=1, help="generations per warm-up round")
    generate.add_argument("--warmup-rounds", type=int, default=1)
    generate.add_argument("--chunks", type=int, default=20)
    listing = commands.add_parser("list")
    listing.add_argument("--rows", type=int, default=1000)
    listing.add_argument("--repeat", type=int, default=20)
    listing.add_argument("--warmup", type=int, default=3)
    for command in (generate, listing):
        command.add_argument("--client", choices=list(CLIENTS), required=True)
        command.add_argument("--url", required=True)
        command.add_argument("--token", required=True)
        command.add_argument("--timeout", type=float, default=300.0, help="for the whole run")
        command.add_argument(
            "--client-timeout",
            type=float,
            default=None,
            help="the client's per-request timeout (default: the client's own)",
        )
        command.add_argument(
            "--profile", metavar="PATH", help="write a cProfile of the run (pstats) here"
        )
    args = parser.parse_args()
    backend = CLIENTS[args.client][1]
    work = _generate if args.command == "generate" else _list

    def go() -> dict[str, Any]:
        return anyio.run(work, args, backend=backend)

    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(go)
        profiler.dump_stats(args.profile)
    else:
        result = go()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
