"""The one way every benchmark row is timed: warm-up calls, then >= 5 timed repeats; a row reports their median with
the min and max, and says when the spread is too wide to read ((max - min) / median > MAX_SPREAD).

Ratios never divide two figures timed at different moments (a busy neighbour can make either side slow): both
sides are timed interleaved in one process (A B A B ...), and the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEATS = 5
WARMUP = 1
MAX_SPREAD = 0.3  # (max - min) / median above this: too noisy to read


@dataclass(frozen=True)
class Samples:
    """Repeated measurements of one quantity (seconds, or a ratio per round)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def spread(self) -> float:
        return (self.hi - self.lo) / self.median if self.median else float("inf")

    @property
    def readable(self) -> bool:
        return self.spread <= MAX_SPREAD

    def scaled(self, f: Callable[[float], float]) -> Samples:
        """The same samples through a monotone map (e.g. seconds -> samples/s)."""
        return Samples(tuple(f(v) for v in self.values))


@dataclass(frozen=True)
class Row:
    figure: str
    samples: Samples | None  # None: a single measured value (e.g. peak memory), not a timing
    value: float
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.samples is None:
            return "single value"
        return "ok" if self.samples.readable else f"spread {self.samples.spread:.0%} > {MAX_SPREAD:.0%}: too noisy to read"


def time_calls(fns: dict[str, Callable[[], object]], repeats: int = REPEATS, warmup: int = WARMUP) -> dict[str, Samples]:
    """Seconds per call of each function, timed round-robin (A B C A B C ...) after `warmup` rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: Samples(tuple(v)) for name, v in seconds.items()}


def time_call(fn: Callable[[], object], repeats: int = REPEATS, warmup: int = WARMUP) -> Samples:
    return time_calls({"fn": fn}, repeats, warmup)["fn"]


def ratio(numerator: Samples, denominator: Samples) -> Samples:
    """Per-round ratios of two interleaved timings (time_calls): round i's A over round i's B."""
    if len(numerator.values) != len(denominator.values):
        raise ValueError("a ratio needs two timings of the same rounds (time_calls)")
    return Samples(tuple(a / b for a, b in zip(numerator.values, denominator.values)))


def rate_row(figure: str, seconds: Samples, units_per_call: float, note: str = "") -> Row:
    """units per second (e.g. samples/s): median units / median seconds; min and max from the slowest / fastest."""
    rate = seconds.scaled(lambda s: units_per_call / s)
    return Row(figure, rate, rate.median, note)


def seconds_row(figure: str, seconds: Samples, per: float = 1.0, note: str = "") -> Row:
    """seconds per call, divided by `per` (e.g. seconds per window)."""
    value = seconds.scaled(lambda s: s / per)
    return Row(figure, value, value.median, note)


def ratio_row(figure: str, ratios: Samples, note: str = "") -> Row:
    return Row(figure, ratios, ratios.median, note)


def value_row(figure: str, value: float, note: str = "") -> Row:
    return Row(figure, None, value, note)
