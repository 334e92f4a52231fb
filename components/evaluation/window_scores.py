"""Per-window measures of every generation run, and paired comparisons of two variants with bootstrap CIs.

A run is one variant sampled once over the held-out test windows with one sampling seed. Every variant of a seed
starts from the same noise, so `PerWindow.compare(variant, baseline, metric)` pairs the two on the same windows and
the sampling seeds both have (bootstrap.py): the mean per-window difference for per-window measures, and the
pooled statistic recomputed on each resample for lip corr (a correlation over every frame of the resampled
windows, not a mean of per-window correlations, which are undefined for silent windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from components.evaluation.bootstrap import Interval, paired_bootstrap, pooled_bootstrap
from components.evaluation.metrics import pooled_lip_corr

__all__ = ["PER_WINDOW_METRICS", "POOLED_METRICS", "PerWindow", "WindowScores"]

# Measures with one value per window (their table value is the mean over windows) and pooled ones (one value over
# all windows, bootstrapped by recomputing it). Distribution distances (FID / FVD) and mediapipe measures have
# neither here, so they are shown without an interval.
PER_WINDOW_METRICS = ("sync_c", "sync_d", "sync_abs_offset", "lip_err", "psnr", "ssim", "critic_lip_sync",
                      "critic_motion", "critic_quality", "critic_composite")
POOLED_METRICS = ("lip_corr",)


@dataclass
class WindowScores:
    """One run: metric -> value per window [W], and the centred mouth openings read from the pixels [W, T-1]."""

    values: dict[str, np.ndarray]
    lip_opening: np.ndarray | None = None

    def metrics(self) -> set[str]:
        return set(self.values) | ({"lip_corr"} if self.lip_opening is not None else set())


@dataclass
class PerWindow:
    """Every run of the evaluation: variant -> sampling seed -> WindowScores; lip_truth: the true openings
    [W, T-1], centred per window (metrics.centred_truth)."""

    lip_truth: np.ndarray | None = None
    runs: dict[str, dict[int, WindowScores]] = field(default_factory=dict)
    resamples: int = 2000
    seed: int = 0  # of the bootstrap's resampling, so the report is reproducible

    def add(self, variant: str, sampling_seed: int, scores: WindowScores) -> None:
        self.runs.setdefault(variant, {})[sampling_seed] = scores

    def shared_seeds(self, variant: str, baseline: str) -> list[int]:
        return sorted(set(self.runs.get(variant, {})) & set(self.runs.get(baseline, {})))

    def compare(self, variant: str, baseline: str, metric: str) -> Interval | None:
        """variant - baseline on `metric`, paired on windows and shared seeds; None when either lacks it."""
        seeds = self.shared_seeds(variant, baseline)
        a = [self.runs[variant][s] for s in seeds]
        b = [self.runs[baseline][s] for s in seeds]
        if not seeds or not all(metric in r.metrics() for r in a + b):
            return None
        if metric == "lip_corr":
            if self.lip_truth is None:
                return None
            truth = self.lip_truth

            def corr_diff(s: np.ndarray, w: np.ndarray) -> float:
                return float(np.mean([pooled_lip_corr(a[i].lip_opening[w], truth[w])
                                      - pooled_lip_corr(b[i].lip_opening[w], truth[w]) for i in s]))

            return pooled_bootstrap(corr_diff, len(truth), len(seeds), self.resamples, self.seed)
        return paired_bootstrap(np.stack([r.values[metric] for r in a]), np.stack([r.values[metric] for r in b]),
                                self.resamples, self.seed)
