"""The fake Flowith in a process of its own, so a client's CPU and memory are measured alone.

``python -m benchmarks.fakeproc [--gated] [--conversations N] [--chunks N]``
serves a fake on a loopback port under anyio and prints one JSON line,
``{"url": ..., "token": ...}``. It then reads commands on stdin, one per
line: ``stats`` prints a JSON line of counters (stream connections opened,
requests, the server's CPU seconds); ``quit`` or end of input stops it.
:class:`FakeProcess` drives it from the benchmark's process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ROOT", "FakeProcess", "python_env"]

#: The project's root: where ``python -m benchmarks.*`` runs from.
ROOT = Path(__file__).resolve().parent.parent


def python_env() -> dict[str, str]:
    """The environment of a benchmark subprocess: the project importable."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"
    return env


class FakeProcess:
    """A running ``benchmarks.fakeproc``, for the length of a ``with`` block."""

    def __init__(self, *, gated: bool = False, conversations: int = 0, chunks: int = 20) -> None:
        command = [sys.executable, "-m", "benchmarks.fakeproc", "--chunks", str(chunks)]
        if gated:
            command.append("--gated")
        if conversations:
            command += ["--conversations", str(conversations)]
        self._command = command
        self._process: subprocess.Popen[str] | None = None
        self.url = ""
        self.token = ""

    def __enter__(self) -> FakeProcess:
        process = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=python_env(),
        )
        self._process = process
        hello = self._read_line()
        self.url, self.token = hello["url"], hello["token"]
        return self

    def _read_line(self) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake's process ended (exit {process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stats(self) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        process.stdin.write("stats\n")
        process.stdin.flush()
        return self._read_line()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()


async def _serve(args: argparse.Namespace) -> None:
    import anyio.to_thread

    from benchmarks.workload import make_fake, seed_conversations
    from flowith_httpx.fake_server import FakeFlowithServer

    fake = make_fake(gated=args.gated, chunks=args.chunks, seed_rows=not args.conversations)
    if args.conversations:
        seed_conversations(fake, args.conversations)
    async with FakeFlowithServer(fake) as server:
        print(json.dumps({"url": server.url, "token": fake.token}), flush=True)
        while True:
            command = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
            if command == "stats":
                stats = {
                    "stream_connections": fake.stream_connections,
                    "requests": len(fake.requests),
                    "turns": len(fake.turns),
                    "cpu_seconds": time.process_time(),
                }
                print(json.dumps(stats), flush=True)
            elif command in ("", "quit"):
                return


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fakeproc")
    parser.add_argument("--gated", action="store_true", help="see workload.GatedFlowith")
    parser.add_argument("--conversations", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    import anyio

    anyio.run(_serve, args)


if __name__ == "__main__":
    main()
