"""Timing: medians of repeated runs, contenders interleaved.

Contenders are run in turns rather than one after the other, so a slow
patch of a shared machine hits them all alike, and each round starts one
contender later (A B C, B C A, C A B, ...): a run inherits the heap the
previous one left (freed arenas, malloc's trimmed or untrimmed top, its
dynamic mmap threshold), which moved one decoder's time by up to 40 % on
the 5 MiB event, so no contender may always follow the same one. Each
figure is the median of its runs.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["interleaved", "median", "time_once"]


def time_once(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes (after a collection, so garbage
    left by the previous run is not charged to this one)."""
    gc.collect()
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    repeat: int,
    *,
    budget: float | None = None,
    warmup: bool = True,
) -> dict[str, list[float]]:
    """Run each contender ``repeat`` times, in turns; return every run's seconds.

    A first, untimed round warms caches up (``warmup``). With ``budget``, a
    contender whose runs so far took longer than that many seconds in all is
    not run again (a quadratic peer on a large input gets one run, not five;
    a warm-up that slow counts as that run): it has fewer samples, which the
    report shows.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    if warmup:
        for name, function in contenders.items():
            seconds = time_once(function)
            if budget is not None and seconds > budget:
                samples[name].append(seconds)
    names = list(contenders)
    for round_ in range(repeat):
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            function = contenders[name]
            if budget is not None and samples[name] and sum(samples[name]) > budget:
                continue
            samples[name].append(time_once(function))
    return samples


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)
