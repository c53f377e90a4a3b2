"""Results as tables and targets, printed as text or written as markdown."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

__all__ = [
    "Section",
    "Table",
    "Target",
    "fmt_bytes",
    "fmt_rate",
    "fmt_ratio",
    "fmt_seconds",
    "machine_line",
    "render_markdown",
    "render_text",
    "versions_line",
]


@dataclass
class Table:
    """One table of results: a title, column names and rows of cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))


@dataclass
class Target:
    """A target of the issue, judged on this run's figures.

    ``met`` is ``None`` when it was not judged (``--quick`` runs make no
    timing claims, or a contender was missing).
    """

    name: str
    met: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not judged"
        return "met" if self.met else "NOT MET"


@dataclass
class Section:
    """What one benchmark section produced."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Correctness failures (a wrong result, a crashed client): the run exits non-zero.
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def machine_line() -> str:
    """Python version, platform and CPU count: what the figures were measured on."""
    implementation = platform.python_implementation()
    version = platform.python_version()
    return (
        f"{implementation} {version} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs ({platform.machine() or 'unknown machine'})"
    )


def versions_line() -> str:
    """The versions of the libraries being compared."""
    from importlib import metadata

    from benchmarks import oldclient

    parts = []
    for name in ("flowith", "httpx", "httpcore", "httpx-sse", "aiohttp", "anyio", "trio"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    if oldclient.available():
        parts.append(f"flowith-webapi {oldclient.version()}")
    else:
        parts.append("flowith-webapi (not installed)")
    return ", ".join(parts)


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_rate(per_second: float, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M{suffix}"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k{suffix}"
    return f"{per_second:.1f}{suffix}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}×"


def fmt_bytes(size: float) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size:.0f} B"


def _text_table(table: Table) -> list[str]:
    widths = [len(c) for c in table.columns]
    for row in table.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [table.title, line(table.columns), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in table.rows)
    out.extend(f"  note: {note}" for note in table.notes)
    return out


def render_text(sections: list[Section]) -> str:
    """The results as plain text for a terminal."""
    out: list[str] = []
    for section in sections:
        out.append("")
        out.append(f"== {section.title} ({section.seconds:.0f} s) ==")
        for table in section.tables:
            out.append("")
            out.extend(_text_table(table))
        for note in section.notes:
            out.append(f"note: {note}")
        for error in section.errors:
            out.append(f"ERROR: {error}")
        if section.targets:
            out.append("")
            out.append("Targets:")
            out.extend(
                f"  [{target.verdict}] {target.name}: {target.detail}" for target in section.targets
            )
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(sections: list[Section], *, header: str, versions: str, command: str) -> str:
    """The results as a markdown document, with the command that produced them."""
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}`.",
        "",
        f"Measured on: {header}.",
        "",
        f"Versions: {versions}.",
        "",
        "Absolute times on a shared machine are noise; the ratios between contenders,",
        "measured in the same run (medians of repeated runs), are what to compare.",
    ]
    targets = [(section, target) for section in sections for target in section.targets]
    if targets:
        out += ["", "## Targets at a glance", "", "| section | target | verdict | measured |"]
        out.append("|---|---|---|---|")
        out.extend(
            f"| {s.name} | {_md_cell(t.name)} | {t.verdict} | {_md_cell(t.detail)} |"
            for s, t in targets
        )
    for section in sections:
        out += ["", f"## {section.title}", ""]
        for table in section.tables:
            out += [f"### {table.title}", ""]
            out.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
            out.append("|" + "|".join("---" for _ in table.columns) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
            if table.notes:
                out.append("")
                out.extend(f"- {note}" for note in table.notes)
            out.append("")
        if section.notes:
            out.extend(f"- {note}" for note in section.notes)
            out.append("")
        if section.errors:
            out.extend(f"- **Error:** {error}" for error in section.errors)
            out.append("")
        if section.targets:
            out += ["**Targets**", ""]
            out.append("| target | verdict | measured |")
            out.append("|---|---|---|")
            out.extend(
                f"| {_md_cell(t.name)} | {t.verdict} | {_md_cell(t.detail)} |"
                for t in section.targets
            )
            out.append("")
    return "\n".join(out).rstrip() + "\n"
