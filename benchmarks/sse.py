"""Section ``sse``: decoding a Flowith event stream, flowith against its peers.

The input is a deterministic stream of ``chunks`` frames of about 230 bytes
with a heartbeat every 50 frames (:mod:`benchmarks.streams`), fed in chunks
of several sizes; each contender (:mod:`benchmarks.decoders`) handles the
events of each chunk as they come. Then one huge event, and whether the
decoder's time grows linearly with the events per chunk and the size of one
event.
"""

from __future__ import annotations

import gc
import hashlib
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from benchmarks.decoders import BIG_EVENT_REFERENCES, CONSUMERS, DATAS, REFERENCES, Consumer
from benchmarks.report import (
    Section,
    Table,
    Target,
    fmt_bytes,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
)
from benchmarks.streams import HEARTBEAT_EVERY, WORDS, big_event, by_events, by_size, chunks_stream
from benchmarks.timing import interleaved, median

__all__ = ["run"]

MiB = 1024 * 1024
KiB = 1024

#: Chunkings of the stream, by label; ``None`` is the whole body in one piece.
CHUNKINGS: tuple[tuple[str, int | None], ...] = (
    ("whole body", None),
    ("64 KiB", 64 * KiB),
    ("4 KiB", 4 * KiB),
    ("512 B", 512),
    ("64 B", 64),
    ("1 B", 1),
)
#: The issue's targets: flowith's throughput over httpx-sse's, events only ...
EVENTS_TARGETS = {"64 KiB": 3.0, "4 KiB": 3.0, "512 B": 2.0, "64 B": 2.0, "1 B": 2.0}
#: ... and with a ``json.loads`` of every event, at 4 KiB chunks and up.
JSON_TARGETS = {"whole body": 1.3, "64 KiB": 1.3, "4 KiB": 1.3}
#: Doubling the events per chunk or the size of one event at most doubles the time, ±25 %.
LINEAR_LIMIT = 2.0 * 1.25
BIG_EVENT_SPEED_TARGET = 1.5
BIG_EVENT_MEMORY_TARGET = 2.5


@dataclass(frozen=True)
class Sizes:
    frames: int  # frames of the main stream
    byte_frames: int  # frames fed one byte at a time
    prefix_frames: int  # frames the quadratic str buffer gets as one whole body
    repeat: int  # timed runs per figure (after a warm-up)
    big_repeat: int  # timed runs of the huge event (short, and noisy: page faults)
    budget: float  # seconds after which a slow contender is not run again
    big_event: int  # bytes of the one huge event
    linear_frames: int  # frames cut into chunks of 1, 2, 4, ... events
    linear_event_sizes: tuple[int, ...]  # sizes of one event, doubling
    linear_total: int  # bytes decoded per event-size figure
    linear_repeat: int


FULL = Sizes(
    frames=50_000,
    byte_frames=2_000,
    prefix_frames=5_000,
    repeat=7,
    big_repeat=15,
    budget=3.0,
    big_event=5 * MiB,
    linear_frames=65_536,
    linear_event_sizes=tuple(16 * KiB * 2**i for i in range(10)),  # 16 KiB .. 8 MiB
    linear_total=16 * MiB,
    linear_repeat=11,
)
QUICK = Sizes(
    frames=3_000,
    byte_frames=200,
    prefix_frames=3_000,
    repeat=1,
    big_repeat=1,
    budget=1.0,
    big_event=512 * KiB,
    linear_frames=512,
    linear_event_sizes=(16 * KiB, 32 * KiB, 64 * KiB),
    linear_total=256 * KiB,
    linear_repeat=1,
)


class DecoderMismatch(AssertionError):
    """The contenders disagree on the events of a stream: a correctness bug."""


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


def _digest(datas: Iterator[str]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for data in datas:
        digest.update(data.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
        count += 1
    return count, digest.hexdigest()


def _cell(seconds: list[float], size: int, events: int, repeat: int) -> str:
    best = median(seconds)
    text = f"{size / best / 1e6:.1f} MB/s, {fmt_rate(events / best, 'ev/s')}"
    if len(seconds) < repeat:
        text += f" ({len(seconds)} run{'s' if len(seconds) > 1 else ''})"
    return text


def _throughput(
    sizes: Sizes,
    bodies: dict[str, bytes],
    events_of: dict[str, int],
    *,
    parse: bool,
    quick: bool,
    targets: dict[str, float],
) -> tuple[Table, list[Target]]:
    what = "with json.loads of every event" if parse else "events only"
    runs = _runs(sizes.repeat)
    runners = {**CONSUMERS, **REFERENCES}
    table = Table(
        f"Stream decoding, {what}: throughput (median of {runs})",
        ["chunking", "chunks", *runners, "× httpx-sse", "× str buffer", "÷ unchecked"],
    )
    checks: list[Target] = []
    for label, size in CHUNKINGS:
        inputs: dict[str, str] = {}
        for name in runners:
            if size == 1:
                inputs[name] = "bytes"
            elif size is None and name == "str buffer":
                inputs[name] = "prefix"
            else:
                inputs[name] = "main"
        chunked = {key: by_size(bodies[key], size) for key in set(inputs.values())}
        counts: dict[str, int] = {}

        def bind(
            name: str, consumer: Consumer, chunks: list[bytes], counts: dict[str, int] = counts
        ) -> Callable[[], None]:
            def run() -> None:
                counts[name] = consumer(chunks, parse)

            return run

        samples = interleaved(
            {
                name: bind(name, consumer, chunked[inputs[name]])
                for name, consumer in runners.items()
            },
            sizes.repeat,
            budget=sizes.budget,
        )
        for name, count in counts.items():
            expected = events_of[inputs[name]]
            if count != expected:
                raise DecoderMismatch(f"{name} saw {count} events at {label}, not {expected}")
        speed = {name: len(bodies[inputs[name]]) / median(samples[name]) for name in runners}
        cells = []
        for name in runners:
            key = inputs[name]
            cell = _cell(samples[name], len(bodies[key]), events_of[key], sizes.repeat)
            if key == "prefix" and bodies["prefix"] != bodies["main"]:
                cell += " †"
            cells.append(cell)
        versus_httpx = speed["flowith"] / speed["httpx-sse"]
        versus_buffer = speed["flowith"] / speed["str buffer"]
        table.add(
            label,
            str(len(chunked[inputs["flowith"]])),
            *cells,
            fmt_ratio(versus_httpx),
            fmt_ratio(versus_buffer),
            fmt_ratio(speed["flowith"] / speed["unchecked"]),
        )
        goal = targets.get(label)
        if goal is not None:
            checks.append(
                Target(
                    f"SSE {what}, {label} chunks: ≥ {goal:g}× httpx-sse",
                    None if quick else versus_httpx >= goal,
                    f"{fmt_ratio(versus_httpx)}",
                )
            )
    table.notes.append(_size_note(bodies, events_of))
    table.notes.append(
        "unchecked: not a decoder but the fewest steps from these bytes to one str and one "
        "event object per event (benchmarks.decoders): no spec checks, no state. "
        "÷ unchecked: flowith's speed over its; below 1, what spec-exactness costs (the "
        "line-break and CR checks, the held event, the calls); above 1 at 1 B chunks, where "
        "it re-joins the held bytes of an event on every chunk"
    )
    if bodies["prefix"] != bodies["main"]:
        table.notes.append(
            f"† str buffer, whole body: measured on the first {events_of['prefix']:,} events "
            f"({fmt_bytes(len(bodies['prefix']))}) only. Its time grows with the square of "
            "the body (each split copies the rest of the buffer, a UCS-4 str here because "
            "of the emoji): the full body took minutes. Its throughput on the full body is "
            "lower still, so its ratio is a lower bound."
        )
    return table, checks


def _size_note(bodies: dict[str, bytes], events_of: dict[str, int]) -> str:
    main, small = bodies["main"], bodies["bytes"]
    return (
        f"stream: {events_of['main']:,} events ({fmt_bytes(len(main))}, "
        f"{len(main) / events_of['main']:.0f} B per event on average); "
        f"1 B chunks: the first {events_of['bytes']:,} events ({fmt_bytes(len(small))})"
    )


def _verify(bodies: dict[str, bytes]) -> None:
    """Every contender yields the same data fields (checked once per chunking;
    the slow ``str buffer`` only at 4 KiB and 1 B chunks)."""
    for label, size in CHUNKINGS:
        body = bodies["bytes" if size == 1 else "main"]
        chunks = by_size(body, size)
        names = ["flowith", "httpx-sse", "unchecked"]
        if size in (1, 4 * KiB):
            names.append("str buffer")
        digests = {name: _digest(DATAS[name](chunks)) for name in names}
        if len(set(digests.values())) != 1:
            raise DecoderMismatch(f"the decoders disagree at {label}: {digests}")


def _peak_memory(consumer: Consumer, chunks: list[bytes]) -> int:
    """Peak bytes allocated while ``consumer`` decodes ``chunks`` (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        consumer(chunks, False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _minor_faults() -> int:
    """Minor page faults of this process so far: pages the kernel had to map afresh."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _big_event(sizes: Sizes, *, quick: bool) -> tuple[Table, list[Target]]:
    table = Table(
        f"One {fmt_bytes(sizes.big_event)} event in 4 KiB chunks (median of "
        f"{_runs(sizes.big_repeat)})",
        [
            "text",
            "decoder",
            "time",
            "MB/s",
            "× httpx-sse speed",
            "page faults",
            "peak memory",
            "÷ event size",
        ],
    )
    checks: list[Target] = []
    for text_label, words in (("Latin-1", None), ("CJK + emoji", WORDS)):
        event = (
            big_event(sizes.big_event) if words is None else big_event(sizes.big_event, words=words)
        )
        chunks = by_size(event, 4 * KiB)
        runners = {**CONSUMERS, **BIG_EVENT_REFERENCES}
        faults: dict[str, list[int]] = {name: [] for name in runners}

        def bind(
            consumer: Consumer, faulted: list[int], chunks: list[bytes] = chunks
        ) -> Callable[[], None]:
            def run() -> None:
                before = _minor_faults()
                if consumer(chunks, False) != 1:
                    raise DecoderMismatch("the big event was not decoded as one event")
                faulted.append(_minor_faults() - before)

            return run

        samples = interleaved(
            {name: bind(consumer, faults[name]) for name, consumer in runners.items()},
            sizes.big_repeat,
            budget=sizes.budget,
        )
        peaks = {name: _peak_memory(consumer, chunks) for name, consumer in runners.items()}
        httpx_time = median(samples["httpx-sse"])
        for name in runners:
            seconds = median(samples[name])
            runs = len(samples[name])
            table.add(
                text_label,
                name,
                fmt_seconds(seconds) + ("" if runs == sizes.big_repeat else f" ({_runs(runs)})"),
                f"{len(event) / seconds / 1e6:.1f}",
                fmt_ratio(httpx_time / seconds),
                f"{median(faults[name]):,.0f}",
                fmt_bytes(peaks[name]),
                fmt_ratio(peaks[name] / len(event)),
            )
        if words is None:
            speed = httpx_time / median(samples["flowith"])
            memory = peaks["flowith"] / len(event)
            checks.append(
                Target(
                    f"the {fmt_bytes(sizes.big_event)} event: ≥ {BIG_EVENT_SPEED_TARGET:g}× "
                    "httpx-sse's speed",
                    None if quick else speed >= BIG_EVENT_SPEED_TARGET,
                    fmt_ratio(speed),
                )
            )
            checks.append(
                Target(
                    f"the {fmt_bytes(sizes.big_event)} event: peak memory ≤ "
                    f"{BIG_EVENT_MEMORY_TARGET:g}× its size",
                    memory <= BIG_EVENT_MEMORY_TARGET,
                    f"{fmt_ratio(memory)} ({fmt_bytes(peaks['flowith'])})",
                )
            )
    table.notes.append(
        "decode only: not a decoder but the step every decoder of this event takes: each "
        "chunk through an incremental UTF-8 decoder and the pieces joined into one str "
        "(benchmarks.decoders). Its time is a floor: a decoder's is this and whatever it "
        "does besides, so no decoder is faster than httpx-sse by more than this row's ratio"
    )
    table.notes.append(
        "page faults: the median of minor page faults per run (getrusage): pages of fresh "
        "memory the kernel had to map while a decoder ran (about 2 µs each, measured on "
        "this 2-CPU virtual machine). How many a run takes depends on the heap its "
        "predecessor left: what malloc kept mapped of the memory freed before"
    )
    table.notes.append(
        "peak memory: tracemalloc's peak while decoding (the input chunks excluded); "
        "Latin-1 text decodes to a one-byte-per-character str, CJK + emoji text to a "
        "four-byte one, so any decoder holding the event's bytes and its str needs "
        "about 2× (Latin-1) or 5× (CJK + emoji) the event's size at the end"
    )
    return table, checks


def _time_figures(
    figures: Sequence[Mapping[str, Callable[[], object]]], repeat: int
) -> list[dict[str, float]]:
    """Median seconds of each figure's contenders, all figures timed in the same rounds.

    A linearity ratio divides one figure by the previous one. Timed one figure after
    the other, the two come from moments up to a minute apart, and this shared machine
    drifts by a third over that (the same httpx-sse run: 136, then 180, then 150 ms);
    interleaved, every figure sees the same moments.
    """
    keyed = {
        f"{index} {name}": function
        for index, figure in enumerate(figures)
        for name, function in figure.items()
    }
    samples = interleaved(keyed, repeat)
    return [
        {name: median(samples[f"{index} {name}"]) for name in figure}
        for index, figure in enumerate(figures)
    ]


def _decoders_on(chunks: list[bytes]) -> dict[str, Callable[[], object]]:
    """flowith and httpx-sse, each decoding ``chunks``."""
    ours, theirs = CONSUMERS["flowith"], CONSUMERS["httpx-sse"]
    return {"flowith": lambda: ours(chunks, False), "httpx-sse": lambda: theirs(chunks, False)}


def _bare_decode(events: list[bytes]) -> Callable[[], None]:
    """``bytes.decode`` over every one of ``events``."""

    def decode_all() -> None:
        for event in events:
            event.decode("utf-8", "replace")

    return decode_all


#: Fewest chunks one events-per-chunk figure is timed on: one or two chunks of
#: megabytes make a figure that one allocation or collection can double.
_MIN_CHUNKS = 4


def _linearity(sizes: Sizes, body: bytes, *, quick: bool) -> tuple[list[Table], list[Target]]:
    per_chunk = Table(
        "Linearity: events per chunk (whole events per chunk, full chunks only, at least "
        f"{_MIN_CHUNKS} per figure, from {sizes.linear_frames:,} frames; median of "
        f"{_runs(sizes.linear_repeat)})",
        [
            "events per chunk",
            "chunks",
            "flowith time per chunk",
            "time per event",
            "× previous chunk",
            "httpx-sse × previous",
        ],
    )
    total_events = body.count(b"\n\n")
    counts = [2**i for i in range(total_events.bit_length()) if 2**i * _MIN_CHUNKS <= total_events]
    # A trailing partial chunk would skew the time per chunk: only full ones are fed.
    chunkings = [by_events(body, events)[: total_events // events] for events in counts]
    timed = _time_figures([_decoders_on(chunks) for chunks in chunkings], sizes.linear_repeat)
    worst_events = 0.0
    worst_events_at = ""
    previous: tuple[float, ...] | None = None
    for events, chunks, medians in zip(counts, chunkings, timed, strict=True):
        now: tuple[float, ...] = (
            medians["flowith"] / len(chunks),
            medians["httpx-sse"] / len(chunks),
        )
        growth = ["", ""]
        if previous is not None:
            if now[0] / previous[0] > worst_events:
                worst_events = now[0] / previous[0]
                worst_events_at = f"{events // 2:,} → {events:,} events per chunk"
            growth = [fmt_ratio(now[i] / previous[i]) for i in (0, 1)]
        per_chunk.add(
            f"{events:,}",
            f"{len(chunks):,}",
            fmt_seconds(now[0]),
            fmt_seconds(now[0] / events),
            *growth,
        )
        previous = now
    del chunkings
    per_size = Table(
        f"Linearity: size of one event (4 KiB chunks, {fmt_bytes(sizes.linear_total)} of "
        f"distinct such events per figure; median of {_runs(sizes.linear_repeat)})",
        [
            "event size",
            "events",
            "flowith time per event",
            "MB/s",
            "× previous event",
            "httpx-sse × previous",
            "bytes.decode × previous",
        ],
    )
    # Distinct texts, as a real stream's. One event repeated let the CPU's branch
    # predictor learn the branches of a small one: the 128 KiB figure ran ~1.7x
    # faster per byte than the larger ones, a step of the input, not the decoder.
    events_of = [
        [big_event(size, seed=index) for index in range(max(1, sizes.linear_total // size))]
        for size in sizes.linear_event_sizes
    ]
    figures = []
    for distinct in events_of:
        figure = _decoders_on(by_size(b"".join(distinct), 4 * KiB))
        figure["bytes.decode"] = _bare_decode(distinct)
        figures.append(figure)
    timed = _time_figures(figures, sizes.linear_repeat)
    del figures
    worst_size = 0.0
    worst_size_at = ""
    previous = None
    previous_size = 0
    for distinct, medians in zip(events_of, timed, strict=True):
        count = len(distinct)
        one = distinct[0]
        now = tuple(medians[name] / count for name in ("flowith", "httpx-sse", "bytes.decode"))
        growth = ["", "", ""]
        if previous is not None:
            if now[0] / previous[0] > worst_size:
                worst_size = now[0] / previous[0]
                worst_size_at = f"{fmt_bytes(previous_size)} → {fmt_bytes(len(one))}"
            growth = [fmt_ratio(now[i] / previous[i]) for i in (0, 1, 2)]
        per_size.add(
            fmt_bytes(len(one)),
            f"{count:,}",
            fmt_seconds(now[0]),
            f"{sum(map(len, distinct)) / medians['flowith'] / 1e6:.1f}",
            *growth,
        )
        previous = now
        previous_size = len(one)
    limit = f"≤ {LINEAR_LIMIT:g}× per doubling"
    checks = [
        Target(
            f"linear: doubling the events per chunk at most doubles the time (±25 %: {limit})",
            None if quick else worst_events <= LINEAR_LIMIT,
            f"worst doubling {fmt_ratio(worst_events)} ({worst_events_at})",
        ),
        Target(
            f"linear: doubling the size of one event at most doubles the time (±25 %: {limit})",
            None if quick else worst_size <= LINEAR_LIMIT,
            f"worst doubling {fmt_ratio(worst_size)} ({worst_size_at})",
        ),
    ]
    for table in (per_chunk, per_size):
        table.notes.append(
            "every figure of this table is timed in the same rounds (interleaved), so each "
            "× previous compares runs of the same moments, not of moments a minute apart"
        )
    per_size.notes.append(
        "each figure's events have distinct texts (seeded), as a real stream's would; "
        "bytes.decode: a bare decode of each whole event, the floor any decoder pays"
    )
    return [per_chunk, per_size], checks


def run(*, quick: bool) -> Section:
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    section = Section("sse", "1. SSE decoding")
    frames = {"main": sizes.frames, "bytes": sizes.byte_frames, "prefix": sizes.prefix_frames}
    bodies = {key: chunks_stream(count)[0] for key, count in frames.items()}
    events_of = {key: count + count // HEARTBEAT_EVERY for key, count in frames.items()}
    _verify(bodies)
    for parse, targets in ((False, EVENTS_TARGETS), (True, JSON_TARGETS)):
        table, checks = _throughput(
            sizes, bodies, events_of, parse=parse, quick=quick, targets=targets
        )
        section.tables.append(table)
        section.targets += checks
    table, checks = _big_event(sizes, quick=quick)
    section.tables.append(table)
    section.targets += checks
    linear_body, _ = chunks_stream(sizes.linear_frames)
    tables, checks = _linearity(sizes, linear_body, quick=quick)
    section.tables += tables
    section.targets += checks
    section.notes.append(
        "flowith = flowith_proto.sse.SSEDecoder; httpx-sse = httpx-sse 0.4.3's SSELineDecoder "
        "+ SSEDecoder over an incremental UTF-8 decoder, as EventSource.iter_sse drives them; "
        "str buffer = the old client's approach (str buffer, CR/CRLF replaced over the whole "
        "buffer, one split per event), written for this benchmark. All three agree on every "
        "event's data (checked)."
    )
    section.seconds = time.perf_counter() - started
    return section
