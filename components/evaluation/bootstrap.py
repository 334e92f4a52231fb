"""Bootstrap confidence intervals for paired comparisons of two variants on the same held-out windows.

Both variants generated the same windows from the same noise (per sampling seed), so a comparison is a paired
difference: we resample *windows* with replacement (the same windows for both sides), and, when several sampling
seeds were drawn, the *seeds* too (the same seeds for both sides), and read the 2.5 / 97.5 percentiles of the
resampled statistic (the percentile bootstrap). A difference is "beyond noise" when its interval excludes 0.

- `paired_bootstrap(a, b)`: the mean of a - b for per-window measures (PSNR, SSIM, lip error, Sync-C, ...);
  a and b are [windows] or [seeds, windows].
- `pooled_bootstrap(statistic, n_windows, n_seeds)`: any statistic of a set of (seed, window) indices, recomputed
  on every resample; for pooled measures like lip corr, a correlation over all frames of all windows, which has
  no per-window value to average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "paired_bootstrap", "pooled_bootstrap"]

Statistic = Callable[[np.ndarray, np.ndarray], float]  # (seed indices [S], window indices [W]) -> value


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic on the data as measured (no resampling)
    lo: float  # lower bound of the interval
    hi: float  # upper bound
    n_windows: int
    n_seeds: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"diff": self.estimate, "ci_lo": self.lo, "ci_hi": self.hi, "beyond_noise": self.excludes_zero,
                "n_windows": self.n_windows, "n_seeds": self.n_seeds}


def pooled_bootstrap(statistic: Statistic, n_windows: int, n_seeds: int = 1, n: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """Percentile interval of `statistic(seed_idx, window_idx)` over n resamples of windows (and of seeds when
    n_seeds > 1), each drawn with replacement; the estimate is the statistic on all seeds and windows."""
    if n_windows < 1 or n_seeds < 1:
        raise ValueError(f"bootstrap needs >= 1 window and >= 1 seed, got {n_windows} windows, {n_seeds} seeds")
    if not 0 < level < 1 or n < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1 and n >= 1 resamples, got level {level}, n {n}")
    rng = np.random.default_rng(seed)
    every_seed, every_window = np.arange(n_seeds), np.arange(n_windows)
    estimate = float(statistic(every_seed, every_window))
    draws = np.empty(n)
    for i in range(n):
        seeds = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else every_seed
        draws[i] = statistic(seeds, rng.integers(0, n_windows, n_windows))
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(estimate) or len(draws) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n_windows, n_seeds, level)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Interval(estimate, float(lo), float(hi), n_windows, n_seeds, level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of a - b with its bootstrap interval; a, b: one value per window [W], or per seed and window [S, W]
    (row s of a and of b generated from the same noise)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"paired_bootstrap needs a and b of one shape [windows] or [seeds, windows], got {a.shape} "
                         f"and {b.shape}")
    diff = np.atleast_2d(a - b)
    if not np.isfinite(diff).all():
        raise ValueError("paired_bootstrap needs finite values (a window without a value cannot be paired)")
    return pooled_bootstrap(lambda s, w: float(diff[np.ix_(s, w)].mean()), diff.shape[1], diff.shape[0], n, seed, level)
