"""``python -m benchmarks [--quick] [--only sse,pipeline,e2e,requests] [--markdown PATH]``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.report import Section, machine_line, render_markdown, render_text, versions_line

__all__ = ["SECTIONS", "main"]


def _sse(quick: bool) -> Section:
    from benchmarks import sse

    return sse.run(quick=quick)


def _pipeline(quick: bool) -> Section:
    from benchmarks import pipeline

    return pipeline.run(quick=quick)


def _e2e(quick: bool) -> Section:
    from benchmarks import e2e

    return e2e.run(quick=quick)


def _requests(quick: bool) -> Section:
    from benchmarks import overhead

    return overhead.run(quick=quick)


#: The sections in the order they run.
SECTIONS: dict[str, Callable[[bool], Section]] = {
    "sse": _sse,
    "pipeline": _pipeline,
    "e2e": _e2e,
    "requests": _requests,
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the flowith library side by side with its peers, in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced sizes, one run each, no timing targets judged (a smoke test, < 1 min)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--markdown",
        metavar="PATH",
        type=Path,
        help="also write the results as a markdown document (e.g. benchmarks/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        parser.error(f"--only takes a comma-separated list of {', '.join(SECTIONS)}")
    args.sections = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    header = machine_line()
    versions = versions_line()
    mode = "quick (reduced sizes, timing targets not judged)" if args.quick else "full"
    print(f"flowith benchmarks, {mode}: {header}", flush=True)
    print(f"versions: {versions}", flush=True)
    started = time.perf_counter()
    sections: list[Section] = []
    for name in args.sections:
        print(f"-- running {name} ...", flush=True)
        section = SECTIONS[name](args.quick)
        sections.append(section)
        print(render_text([section]), flush=True)
    elapsed = time.perf_counter() - started
    print(f"\nall sections done in {elapsed:.0f} s", flush=True)
    targets = [target for section in sections for target in section.targets]
    if targets:
        met = sum(1 for t in targets if t.met is True)
        missed = sum(1 for t in targets if t.met is False)
        print(f"targets: {met} met, {missed} not met, {len(targets) - met - missed} not judged")
    if args.markdown is not None:
        command = "python -m benchmarks " + shlex.join(
            arg for arg in (sys.argv[1:] if argv is None else argv)
        )
        args.markdown.write_text(
            render_markdown(sections, header=header, versions=versions, command=command.strip()),
            encoding="utf-8",
        )
        print(f"wrote {args.markdown}")
    errors = [error for section in sections for error in section.errors]
    if errors:
        print(f"{len(errors)} error(s): the results above are not all valid", file=sys.stderr)
        return 1
    return 0
