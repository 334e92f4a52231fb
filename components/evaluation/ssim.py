"""SSIM (Wang et al. 2004) with the standard settings: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
data range 255, population statistics; computed per colour channel over the valid region (no padding) and
averaged, like scikit-image's structural_similarity(gaussian_weights=True, use_sample_covariance=False,
channel_axis=-1) away from the borders."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ssim_frames"]

WINDOW, SIGMA, K1, K2, DATA_RANGE = 11, 1.5, 0.01, 0.03, 255.0


def _gaussian_1d() -> torch.Tensor:
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    return g / g.sum()


def _gaussian_filter(stack: torch.Tensor) -> torch.Tensor:
    """The 11x11 Gaussian window (valid region) as two 1-D passes: the same sums, 2 x 11 instead of 121 products
    per pixel (float64 convolutions get no fast kernels on CPU)."""
    g = _gaussian_1d()
    return F.conv2d(F.conv2d(stack, g.view(1, 1, 1, WINDOW)), g.view(1, 1, WINDOW, 1))


def ssim_frames(a: np.ndarray, b: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """SSIM of each frame pair: a, b [N, H, W, C] on the 0-255 scale (H, W >= 11) -> [N] float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 4 or min(a.shape[1:3]) < WINDOW:
        raise ValueError(f"frames must be two [N,H,W,C] arrays of one shape with H, W >= {WINDOW}, got {a.shape}, {b.shape}")
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    out = []
    for i in range(0, len(a), batch_size):
        x = torch.from_numpy(a[i : i + batch_size].astype(np.float64)).permute(0, 3, 1, 2)
        y = torch.from_numpy(b[i : i + batch_size].astype(np.float64)).permute(0, 3, 1, 2)
        n, c, h, w = x.shape
        # Channels become batch entries: one filter for all.
        stack = torch.cat([x, y, x * x, y * y, x * y]).reshape(5 * n * c, 1, h, w)
        mu_x, mu_y, xx, yy, xy = _gaussian_filter(stack).reshape(5, n, c, h - WINDOW + 1, w - WINDOW + 1)
        var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        out.append(ssim_map.mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()
