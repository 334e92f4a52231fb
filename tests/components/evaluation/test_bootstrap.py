"""Paired bootstrap CIs on hand-made differences whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from components.data.mouth_pixels import pearson
from components.evaluation.bootstrap import paired_bootstrap, pooled_bootstrap


def test_a_constant_shift_has_a_zero_width_interval_beyond_noise():
    b = np.random.default_rng(0).normal(size=30)
    ci = paired_bootstrap(b + 0.5, b)
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((0.5, 0.5, 0.5))
    assert ci.excludes_zero and ci.n_windows == 30 and ci.n_seeds == 1


def test_identical_variants_differ_by_nothing():
    a = np.linspace(10, 30, 12)
    ci = paired_bootstrap(a, a.copy())
    assert (ci.estimate, ci.lo, ci.hi) == (0.0, 0.0, 0.0) and not ci.excludes_zero


def test_two_windows_known_distribution():
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5 / 97.5 percentiles are 0 and 1
    ci = paired_bootstrap(np.array([0.0, 1.0]), np.zeros(2), n=4000)
    assert ci.estimate == 0.5 and ci.lo == 0.0 and ci.hi == 1.0 and not ci.excludes_zero


def test_pairing_removes_the_windows_own_spread():
    # windows differ a lot (some are easy, some hard); the variant is better by 0.1 on every one of them
    rng = np.random.default_rng(1)
    hardness = rng.uniform(0, 10, 48)
    b = hardness
    a = hardness + 0.1 + rng.normal(0, 0.01, 48)
    ci = paired_bootstrap(a, b)
    assert ci.excludes_zero and ci.hi - ci.lo < 0.02
    assert ci.lo < 0.1 < ci.hi


def test_interval_matches_the_normal_theory_width_for_many_windows():
    diffs = np.random.default_rng(2).normal(1.0, 2.0, 400)
    ci = paired_bootstrap(diffs, np.zeros_like(diffs), n=4000)
    assert ci.estimate == pytest.approx(diffs.mean())
    expected_half_width = 1.96 * diffs.std(ddof=1) / np.sqrt(400)
    assert (ci.hi - ci.lo) / 2 == pytest.approx(expected_half_width, rel=0.12)
    assert ci.lo < diffs.mean() < ci.hi


def test_seeds_are_resampled_too():
    # the variant wins every window with seed 0 and loses every window with seed 1 by the same amount: over
    # windows alone the difference looks exactly 0, over seeds it is anywhere in [-1, 1]
    diff = np.array([[1.0] * 6, [-1.0] * 6])
    ci = paired_bootstrap(diff, np.zeros_like(diff), n=4000)
    assert ci.n_seeds == 2 and ci.estimate == 0.0
    assert ci.lo == -1.0 and ci.hi == 1.0 and not ci.excludes_zero


def test_same_seed_same_interval_and_bad_input_is_refused():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:10])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.array([1.0, np.nan]), np.zeros(2))


def test_pooled_statistic_is_recomputed_on_every_resample():
    x = np.random.default_rng(4).normal(size=(10, 8))  # 10 windows of 8 frames

    def corr(seeds, windows):  # a perfect reading: correlation 1 whatever windows are drawn
        return pearson(x[windows].ravel(), 2 * x[windows].ravel() + 3)

    ci = pooled_bootstrap(corr, n_windows=10)
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((1.0, 1.0, 1.0))
    seen = []
    pooled_bootstrap(lambda s, w: seen.append(len(w)) or 0.0, n_windows=10, n=5)
    assert seen == [10] * 6  # the estimate, then 5 resamples of all 10 windows
