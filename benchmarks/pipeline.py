"""Section ``pipeline``: bytes to routed, typed, think-split events.

What a client does with the bytes of its shared stream, minus the socket: a
:class:`~flowith_proto.stream.StreamRouter` decodes the events, parses each
payload into a typed event (envelope unwrapped) and queues it for its node
in a :class:`~flowith_proto.demux.Demultiplexer`; each woken node's chunk
events then go through that node's :class:`~flowith_proto.thinking.ThinkSplitter`.
The stream interleaves 1 or 1,000 subscribed nodes, each opening with a
``<think>`` block whose closing tag is split across two fragments.

The baseline is the decoder alone plus a ``json.loads`` of every event: the
gap between the two is what envelope parsing, routing and splitting cost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from benchmarks.report import Section, Table, fmt_rate, fmt_ratio, fmt_seconds
from benchmarks.streams import HEARTBEAT_EVERY, by_size, chunks_stream
from benchmarks.timing import interleaved, median
from flowith_proto.demux import Demultiplexer
from flowith_proto.events import Chunks
from flowith_proto.sse import SSEDecoder
from flowith_proto.stream import StreamRouter
from flowith_proto.thinking import ThinkSplitter, split_think_raw

__all__ = ["run"]

KiB = 1024
CHUNK_SIZES = (4 * KiB, 64 * KiB)


@dataclass(frozen=True)
class Sizes:
    frames: int
    node_counts: tuple[int, ...]
    repeat: int


FULL = Sizes(frames=50_000, node_counts=(1, 1_000), repeat=5)
QUICK = Sizes(frames=3_000, node_counts=(1, 1_000), repeat=1)


class PipelineMismatch(AssertionError):
    """The pipeline's output differs from the reference split: a correctness bug."""


def _router(nodes: list[str]) -> tuple[StreamRouter, dict[str, ThinkSplitter]]:
    demux = Demultiplexer()
    splitters: dict[str, ThinkSplitter] = {}
    for node in nodes:
        demux.subscribe(node)
        splitters[node] = ThinkSplitter()
    return StreamRouter(demux), splitters


def pipeline_consume(chunks: list[bytes], nodes: list[str]) -> int:
    """Feed the router, split every routed chunk event; return the events seen."""
    router, splitters = _router(nodes)
    feed = router.feed
    pop = router.demux.pop
    for chunk in chunks:
        for node in feed(chunk):
            split = splitters[node].feed
            while (item := pop(node)) is not None:
                if isinstance(item, Chunks):
                    for fragment in item.chunks:
                        split(fragment)
    return router.events_seen


def baseline_consume(chunks: list[bytes]) -> int:
    """The decoder alone plus ``json.loads`` of every event's data."""
    decoder = SSEDecoder()
    feed = decoder.feed
    loads = json.loads
    count = 0
    for chunk in chunks:
        for event in feed(chunk):
            loads(event.data)
            count += 1
    return count


def _verify(chunks: list[bytes], fragments: dict[str, list[str]]) -> None:
    """Each node's visible and reasoning text is what the one-shot split gives."""
    nodes = list(fragments)
    router, splitters = _router(nodes)
    visible: dict[str, list[str]] = {node: [] for node in nodes}
    reasoning: dict[str, list[str]] = {node: [] for node in nodes}
    for chunk in chunks:
        for node in router.feed(chunk):
            while (item := router.demux.pop(node)) is not None:
                if isinstance(item, Chunks):
                    for fragment in item.chunks:
                        shown, thought = splitters[node].feed(fragment)
                        visible[node].append(shown)
                        reasoning[node].append(thought)
    for node in nodes:
        shown, thought = splitters[node].flush()
        got = ("".join(visible[node]) + shown, "".join(reasoning[node]) + thought)
        if got != split_think_raw("".join(fragments[node])):
            raise PipelineMismatch(f"node {node}: the streamed split differs from the one-shot")


def run(*, quick: bool) -> Section:
    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    section = Section("pipeline", "2. Stream pipeline")
    table = Table(
        f"Bytes to routed, think-split events (median of {sizes.repeat} "
        f"run{'s' if sizes.repeat > 1 else ''})",
        [
            "nodes",
            "chunks",
            "pipeline",
            "time",
            "decode + json.loads",
            "pipeline ÷ baseline time",
        ],
    )
    events = sizes.frames + sizes.frames // HEARTBEAT_EVERY
    for node_count in sizes.node_counts:
        body, fragments = chunks_stream(sizes.frames, nodes=node_count, think=True)
        nodes = list(fragments)
        for chunk_size in CHUNK_SIZES:
            chunks = by_size(body, chunk_size)
            _verify(chunks, fragments)

            def piped(chunks: list[bytes] = chunks, nodes: list[str] = nodes) -> None:
                if pipeline_consume(chunks, nodes) != events:
                    raise PipelineMismatch("the pipeline saw a different number of events")

            def base(chunks: list[bytes] = chunks) -> None:
                if baseline_consume(chunks) != events:
                    raise PipelineMismatch("the baseline saw a different number of events")

            samples = interleaved({"pipeline": piped, "baseline": base}, sizes.repeat)
            ours = median(samples["pipeline"])
            baseline = median(samples["baseline"])
            table.add(
                f"{node_count:,} interleaved",
                f"{len(chunks):,} × {chunk_size // KiB} KiB",
                fmt_rate(events / ours, "events/s"),
                fmt_seconds(ours),
                fmt_rate(events / baseline, "events/s"),
                fmt_ratio(ours / baseline),
            )
    table.notes.append(
        f"{sizes.frames:,} chunks frames + {sizes.frames // HEARTBEAT_EVERY:,} heartbeats "
        "(~230 B each); every node subscribed; each routed chunk event's fragments go "
        "through the node's ThinkSplitter; outputs checked against split_think_raw"
    )
    section.tables.append(table)
    section.seconds = time.perf_counter() - started
    return section
