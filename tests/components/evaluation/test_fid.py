"""Fréchet distance on known Gaussians; FID/FVD plumbing with a hand-written TorchScript feature function;
what is reported as unavailable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.evaluation.fid import FrechetScorer, frechet_distance, gaussian_stats, unavailable_metrics


def test_identical_gaussians_are_at_distance_zero():
    sigma = np.array([[2.0, 0.3], [0.3, 1.0]])
    assert frechet_distance([1.0, 2.0], sigma, [1.0, 2.0], sigma) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_match_the_closed_form():
    # Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()  # 5 + 1 + 1
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected) == pytest.approx(7.0)


def test_scaled_full_covariance_matches_the_closed_form():
    # S2 = 4 S1: Tr(S1 + 4 S1 - 2 (4 S1^2)^(1/2)) = Tr(S1).
    a = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.3, 0.0, 1.0]])
    s1 = a @ a.T
    assert frechet_distance(np.zeros(3), s1, np.zeros(3), 4 * s1) == pytest.approx(np.trace(s1))


def test_sampled_features_approach_the_population_distance():
    rng = np.random.default_rng(0)
    x = rng.normal([0, 0], [1, 2], size=(20000, 2))
    y = rng.normal([3, 0], [1, 1], size=(20000, 2))
    mu_x, s_x = gaussian_stats(x)
    mu_y, s_y = gaussian_stats(y)
    assert frechet_distance(mu_x, s_x, mu_y, s_y) == pytest.approx(9.0 + 1.0, rel=0.03)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu_x, s_x, np.zeros(3), np.eye(3))


class _ColourStats(torch.nn.Module):
    """A fixed, weightless feature function with the extractors' call signatures: per-channel mean and std."""

    def forward(self, x: torch.Tensor, return_features: bool = True, rescale: bool = False, resize: bool = True) -> torch.Tensor:
        flat = x.float().flatten(2)  # [N, 3, ...]
        return torch.cat([flat.mean(-1), flat.std(-1)], dim=1)


def test_scorers_run_torchscript_extractors_on_uint8_frames_and_videos(tmp_path):
    path = tmp_path / "extractor.pt"
    torch.jit.script(_ColourStats()).save(str(path))
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (6, 4, 16, 16, 3), dtype=np.uint8)  # 6 videos of 4 frames
    fake = (real // 2).astype(np.uint8)

    fid = FrechetScorer.build("fid", path, real.reshape(-1, 16, 16, 3))
    assert fid(real.reshape(-1, 16, 16, 3)) == pytest.approx(0.0, abs=1e-6)
    features = lambda v: np.concatenate([v.reshape(len(v), -1, 3).mean(1), v.reshape(len(v), -1, 3).std(1, ddof=1)], 1)  # noqa: E731
    expected = frechet_distance(*gaussian_stats(features(real.reshape(-1, 16, 16, 3))), *gaussian_stats(features(fake.reshape(-1, 16, 16, 3))))
    assert fid(fake.reshape(-1, 16, 16, 3)) == pytest.approx(expected, rel=1e-4) and expected > 100

    fvd = FrechetScorer.build("fvd", path, real)  # videos: [N, 3, T, H, W] into the extractor
    assert fvd(fake) == pytest.approx(frechet_distance(*gaussian_stats(features(real)), *gaussian_stats(features(fake))), rel=1e-4)


def test_missing_extractors_are_unavailable_never_random(tmp_path):
    none = unavailable_metrics(None, None)
    assert {"fid", "fvd", "e_fid"} <= set(none) and "hkc" not in none  # HKC / HKV: landmark_metrics.py
    assert "never computed with random weights" in none["fid"]
    given = unavailable_metrics("inception.pt", "i3d.pt")
    assert "fid" not in given and "fvd" not in given and "e_fid" in given
    with pytest.raises(FileNotFoundError, match="extractor not found"):
        FrechetScorer.build("fid", tmp_path / "inception-2015-12-05.pt", np.zeros((2, 8, 8, 3), np.uint8))
