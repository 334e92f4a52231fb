"""Per-window metric values agree with the table's means, and PerWindow pairs variants on windows and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.metrics import (
    centred_truth,
    lip_metrics,
    lip_readings,
    pooled_lip_corr,
    psnr,
    psnr_windows,
    ssim,
    ssim_windows,
)
from components.evaluation.window_scores import PerWindow, WindowScores


def test_per_window_measures_average_to_the_table_values():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 255, (3, 5, 24, 24, 3), dtype=np.uint8)
    video = np.clip(truth.astype(int) + rng.integers(-20, 20, truth.shape), 0, 255).astype(np.uint8)
    assert psnr_windows(video, truth).shape == (3,) and psnr_windows(video, truth).mean() == pytest.approx(psnr(video, truth))
    assert ssim_windows(video, truth).mean() == pytest.approx(ssim(video, truth))
    mouth_open = rng.uniform(0, 1, (3, 5))
    box = np.tile(np.array([4.0, 4.0, 20.0, 20.0]), (3, 5, 1))
    opening, err = lip_readings(video, mouth_open, box)
    assert opening.shape == (3, 4) and np.allclose(opening.mean(1), 0) and err.shape == (3,)
    table = lip_metrics(video, mouth_open, box)
    assert table["lip_err"] == pytest.approx(err.mean())
    assert table["lip_corr"] == pytest.approx(pooled_lip_corr(opening, centred_truth(mouth_open)))


def _truth(windows: int = 12, frames: int = 8) -> np.ndarray:
    return centred_truth(np.random.default_rng(1).uniform(0, 1, (windows, frames + 1)))


def test_lip_corr_difference_is_the_pooled_correlation_recomputed():
    truth = _truth()
    per_window = PerWindow(lip_truth=truth, resamples=300)
    per_window.add("perfect", 0, WindowScores({}, truth * 3))  # reads the truth exactly: corr 1
    per_window.add("frozen", 0, WindowScores({}, np.zeros_like(truth)))  # a still mouth: corr 0
    ci = per_window.compare("perfect", "frozen", "lip_corr")
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((1.0, 1.0, 1.0)) and ci.excludes_zero


def test_comparisons_pair_on_the_seeds_both_variants_have():
    per_window = PerWindow(lip_truth=_truth(4), resamples=300)
    for seed, shift in ((0, 1.0), (1, 1.0), (2, 1.0)):
        per_window.add("dpo", seed, WindowScores({"psnr": np.full(4, 20.0 + shift)}))
        per_window.add("phase2", seed, WindowScores({"psnr": np.full(4, 20.0)}))
    per_window.add("phase1", 0, WindowScores({"psnr": np.full(4, 19.0)}))
    assert per_window.compare("dpo", "phase2", "psnr").n_seeds == 3
    ci = per_window.compare("dpo", "phase1", "psnr")
    assert ci.n_seeds == 1 and ci.estimate == pytest.approx(2.0)
    assert per_window.compare("dpo", "phase2", "sync_c") is None  # not measured
    assert per_window.compare("dpo", "tlpo", "psnr") is None  # no such variant
    assert per_window.compare("dpo", "phase2", "lip_corr") is None  # no openings kept
