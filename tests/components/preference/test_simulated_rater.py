"""The simulated rater: ground-truth errors of a candidate -> Likert scores with documented noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.preference.simulated_rater import ground_truth_errors, simulate_ratings


class _ExactReader:
    """Reads the opening painted into pixel (0, 0), red channel / 255."""

    def read(self, frames, box):
        return frames[:, 0, 0, 0] / 255.0


def _video(opening: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((len(opening), 8, 8, 3), 100.0) + np.arange(len(opening))[:, None, None, None]  # a slow drift
    frames += rng.normal(0, noise, frames.shape)
    frames[:, 0, 0, 0] = opening * 255
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_errors_measure_lips_motion_and_pixels_against_the_truth():
    opening = np.abs(np.sin(np.arange(9) / 2))
    truth = _video(opening)
    box = np.zeros((9, 4))
    perfect = ground_truth_errors(truth, truth, opening, box, _ExactReader())
    assert perfect == {"lip_sync": perfect["lip_sync"], "motion": 0.0, "quality": 0.0} and perfect["lip_sync"] < 0.01
    still = np.repeat(truth[:1], 9, axis=0)
    frozen = ground_truth_errors(still, truth, opening, box, _ExactReader())
    noisy = ground_truth_errors(_video(opening, noise=20), truth, opening, box, _ExactReader())
    assert frozen["lip_sync"] > 0.2 and frozen["motion"] > 0.5  # closed mouth, no drift
    assert noisy["quality"] > 10 and noisy["motion"] > 5  # shimmering pixels are both ugly and jittery


def test_ratings_follow_the_errors_with_rater_noise_and_are_deterministic():
    errors = pd.DataFrame({d: np.linspace(0, 1, 40) for d in ("lip_sync", "motion", "quality")},
                          index=[f"c{i}" for i in range(40)])
    rows = simulate_ratings(errors, raters=3, noise=0.5, bias=0.3, seed=0)
    assert rows.equals(simulate_ratings(errors, raters=3, noise=0.5, bias=0.3, seed=0))
    assert len(rows) == 40 * 3 * 3 and set(rows["score"]) <= {1, 2, 3, 4, 5}
    mean = rows[rows.dimension == "lip_sync"].groupby("candidate_id")["score"].mean()
    assert mean["c0"] > mean["c39"] and np.corrcoef(mean[errors.index], errors["lip_sync"])[0, 1] < -0.9
    exact = simulate_ratings(errors, raters=1, noise=0.0, bias=0.0, seed=0)
    assert exact[exact.candidate_id == "c0"]["score"].tolist() == [5, 5, 5]  # smallest error: the top score
    assert exact[exact.candidate_id == "c39"]["score"].tolist() == [1, 1, 1]
