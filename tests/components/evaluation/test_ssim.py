"""SSIM: 1 for identical frames, the closed form for flat frames, lower for worse copies."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.metrics import ssim
from components.evaluation.ssim import ssim_frames


def _texture(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)
    frames = base[None, :, :, None] + rng.normal(0, 10, (n, size, size, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_identical_frames_score_one():
    x = _texture()
    np.testing.assert_allclose(ssim_frames(x, x), 1.0, atol=1e-12)


def test_flat_frames_match_the_closed_form():
    a, b = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim_frames(a, b)[0] == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))


def test_degradation_lowers_it_monotonically():
    x = _texture()
    rng = np.random.default_rng(1)
    noisy = [np.clip(x + rng.normal(0, s, x.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    scores = [ssim_frames(x, y).mean() for y in noisy]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    blurred = ((x.astype(np.float64) + np.roll(x, 1, 1) + np.roll(x, 1, 2)) / 3).astype(np.uint8)
    assert ssim_frames(x, blurred).mean() < 0.99


def test_window_ssim_leaves_out_the_reference_frame():
    truth = _texture(n=4)[None]  # one window of 4 frames
    generated = truth.copy()
    generated[0, 0] = 0  # frame 0 is the given reference: not scored
    assert ssim(generated, truth) == pytest.approx(1.0)
    generated[0, 2] = 255 - generated[0, 2]
    assert ssim(generated, truth) < 0.8
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim_frames(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


def test_separable_window_equals_the_full_11x11_gaussian():
    import torch
    import torch.nn.functional as F

    from components.evaluation.ssim import _gaussian_1d, _gaussian_filter

    g = _gaussian_1d()
    full = (g[:, None] * g[None, :])[None, None]
    stack = torch.from_numpy(_texture(n=3).astype(np.float64)).permute(0, 3, 1, 2).reshape(9, 1, 32, 32)
    torch.testing.assert_close(_gaussian_filter(stack), F.conv2d(stack, full), rtol=1e-12, atol=1e-9)
