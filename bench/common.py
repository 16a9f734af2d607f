"""Small helpers shared by the benchmarks: percentiles, memory of a process, timing."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default method). Raises ValueError for no values or p outside 0..100."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: Sequence[float],
                ps: Sequence[float] = (50, 90, 99)) -> dict[float, float]:
    return {p: percentile(values, p) for p in ps}


@dataclass(frozen=True)
class Summary:
    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def format(self, unit: str = "ms", scale: float = 1000.0, digits: int = 1) -> str:
        """E.g. `n=20 min 1.2 p50 1.5 p90 2.0 p99 2.4 max 2.5 ms` (seconds * scale)."""
        def f(value: float) -> str:
            return f"{value * scale:.{digits}f}"
        return (f"n={self.count} min {f(self.min)} p50 {f(self.p50)} p90 {f(self.p90)} "
                f"p99 {f(self.p99)} max {f(self.max)} {unit}")


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(count=len(values), min=min(values), mean=statistics.fmean(values),
                   p50=percentile(values, 50), p90=percentile(values, 90),
                   p99=percentile(values, 99), max=max(values))


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # "VmRSS:     12345 kB"
    raise ValueError(f"/proc/{pid}/status has no {field} (a kernel thread or a zombie?)")


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory (VmRSS) of process `pid` (default: this process), in bytes."""
    return _status_kib(os.getpid() if pid is None else pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak resident memory (VmHWM) of process `pid` (default: this process), in bytes."""
    return _status_kib(os.getpid() if pid is None else pid, "VmHWM") * 1024


def format_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError("unreachable")


class Timer:
    """Elapsed wall-clock time (perf_counter); `seconds` is live until the block ends."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ended: float | None = None

    @property
    def seconds(self) -> float:
        end = self.ended if self.ended is not None else time.perf_counter()
        return end - self.started

    def stop(self) -> float:
        self.ended = time.perf_counter()
        return self.seconds


@contextmanager
def timed(samples: list[float] | None = None) -> Iterator[Timer]:
    """`with timed(samples) as t: ...` — measures the block (also around awaits in async
    code); appends the seconds to `samples` when given, also if the block raises."""
    timer = Timer()
    try:
        yield timer
    finally:
        timer.stop()
        if samples is not None:
            samples.append(timer.seconds)
