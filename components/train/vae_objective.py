"""The toy VAE's pretraining objective and the report that says whether its latents keep the mouth.

Loss per batch of full windows (T = 17 frames, all 1 + 4k of them: the causal decoder must see as many
latent frames in training as it will in use, or its temporal cache drifts from latent frame 2 on):

    recon = mean over pixels and channels of (1 + mouth_weight * mask) * err,  err = |x_hat - x| (L1) or (x_hat - x)^2 (L2)
    kl    = mean over latent elements of 0.5 * (mu^2 + var - 1 - log var)
    loss  = recon + kl_weight * kl

in [-1, 1] pixel space. `mask` is the fraction of each pixel inside the ground-truth mouth box, so the mouth
(a few percent of the frame, but all the lip-sync signal) gets (1 + mouth_weight) times the gradient of
the rest; outside the box the loss is the plain mean. Both terms are means, so their weights do not depend on
the clip size or the latent shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from components.config import VaePretrainConfig
from components.data.mouth_box import mouth_box_centre_size
from components.data.mouth_pixels import mouth_opening_from_pixels, pearson
from components.data.windows import Window
from components.model.vae import decode_latents, encode_video, temporal_ratio, to_uint8_frames, to_vae_input

__all__ = [
    "box_mask",
    "mouth_mask_for",
    "reconstruct",
    "reconstruction_report",
    "vae_loss",
    "window_batch",
]


# ----------------------------------------------------------------------------- masks and batches


def _coverage(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """[T, n]: how much of pixel i = [i, i+1) each interval [lo_t, hi_t] covers (anti-aliased box edges)."""
    cells = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(cells + 1, hi[:, None]) - np.maximum(cells, lo[:, None]), 0.0, 1.0)


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [T, H, W]: the fraction of each pixel inside box_t = (x0, y0, x1, y1); 0 where a box is NaN."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    valid = np.isfinite(boxes).all(axis=1)
    boxes = np.where(valid[:, None], boxes, 0.0)
    cols = _coverage(boxes[:, 0], boxes[:, 2], width)
    rows = _coverage(boxes[:, 1], boxes[:, 3], height)
    return (rows[:, :, None] * cols[:, None, :] * valid[:, None, None]).astype(np.float32)


def mouth_mask_for(window: Window) -> np.ndarray:
    """float32 [T, H, W] mouth mask of a window (all zeros when the clip has no ground truth)."""
    _, height, width, _ = window.frames.shape
    return box_mask(window.mouth_box, height, width)


def window_batch(windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames uint8 [B,T,H,W,3], mouth masks float [B,T,H,W]) of equally long windows."""
    if not windows:
        raise ValueError("window_batch needs at least one window")
    frames = torch.from_numpy(np.stack([w.frames for w in windows]))
    masks = torch.from_numpy(np.stack([mouth_mask_for(w) for w in windows]))
    return frames, masks


# ----------------------------------------------------------------------------- loss


def vae_loss(
    vae: AutoencoderKLWan,
    frames: torch.Tensor,
    mouth_mask: torch.Tensor,
    cfg: VaePretrainConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mouth-weighted reconstruction + kl_weight * KL of a batch (see the module docstring).

    frames: uint8 [B,T,H,W,3] with T = 4k + 1; mouth_mask: float [B,T,H,W] in [0, 1].
    The latent is a posterior sample (drawn with `generator`), as a VAE is trained.
    """
    x = to_vae_input(frames).to(vae.dtype)  # [B,3,T,H,W]
    b, _, t, h, w = x.shape
    if tuple(mouth_mask.shape) != (b, t, h, w):
        raise ValueError(f"mouth_mask must be [B,T,H,W] = {(b, t, h, w)}, got {tuple(mouth_mask.shape)}")
    if (t - 1) % temporal_ratio(vae):
        raise ValueError(f"the causal VAE needs {temporal_ratio(vae)}k+1 frames per window, got {t}")
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample

    err = (recon - x).abs() if cfg.recon_loss == "l1" else (recon - x) ** 2
    weight = 1.0 + cfg.mouth_weight * mouth_mask.to(err.dtype).unsqueeze(1)  # broadcast over channels
    recon_loss = (weight * err).mean()
    kl = 0.5 * (posterior.mean**2 + posterior.var - 1.0 - posterior.logvar).mean()
    loss = recon_loss + cfg.kl_weight * kl

    with torch.no_grad():
        inside = mouth_mask.unsqueeze(1).expand_as(err)
        mse = ((recon - x) ** 2).mean()
        logs = {
            "loss": float(loss),
            "recon": float(recon_loss),
            "kl": float(kl),
            "err_mouth": float((err * inside).sum() / inside.sum().clamp_min(1e-6)),
            "err_rest": float((err * (1 - inside)).sum() / (1 - inside).sum().clamp_min(1e-6)),
            "psnr": float(10 * torch.log10(4.0 / mse.clamp_min(1e-10))),  # peak-to-peak 2 in [-1, 1]
        }
    return loss, logs


# ----------------------------------------------------------------------------- report


@torch.no_grad()
def reconstruct(vae: AutoencoderKLWan, frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B,T,H,W,3] -> the VAE's deterministic reconstruction (posterior mode), uint8 [B,T,H,W,3]."""
    return to_uint8_frames(decode_latents(vae, encode_video(vae, frames)))


def _latent_frame_of(n_frames: int, rho: int) -> np.ndarray:
    """Which latent frame each video frame belongs to: frame 0 -> 0, frames 1..rho -> 1, ..."""
    return np.concatenate([[0], 1 + np.arange(n_frames - 1) // rho])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@torch.no_grad()
def reconstruction_report(vae: AutoencoderKLWan, windows: Sequence[Window], batch_size: int = 4) -> dict:
    """How well the VAE reconstructs frames and, above all, the mouth, per frame and per latent frame.

    mouth_corr_per_frame: Pearson correlation, pooled over every frame of every window, between the mouth
      opening measured from pixels (`mouth_opening_from_pixels`, at the truth's mouth box) on the
      reconstruction and on the input frames.
    mouth_corr_by_latent_frame: the same restricted to the video frames of latent frame k (k = 0 is frame 0
      alone, k >= 1 is frames 4k-3..4k): a causal decoder that drifts shows up as falling values along k.
    mouth_corr_vs_truth: reconstruction's measured opening vs the ground-truth mouth_open.
    psnr (dB over all pixels, 0-255), psnr_mouth (inside the mouth boxes), psnr_by_latent_frame.
    Windows without ground truth count for PSNR only.
    """
    if not windows:
        raise ValueError("reconstruction_report needs at least one window")
    vae.eval()
    rho = temporal_ratio(vae)
    inputs, outputs, truths, measured_in, measured_out, masks = [], [], [], [], [], []
    for i in range(0, len(windows), batch_size):
        chunk = list(windows[i : i + batch_size])
        frames, mask = window_batch(chunk)
        recon = reconstruct(vae, frames).numpy()
        for window, rec, m in zip(chunk, recon, mask.numpy()):
            inputs.append(window.frames)
            outputs.append(rec)
            masks.append(m)
            if window.has_truth:
                centre, size = mouth_box_centre_size(window.mouth_box)
                measured_in.append(mouth_opening_from_pixels(window.frames, centre, size))
                measured_out.append(mouth_opening_from_pixels(rec, centre, size))
                truths.append(window.mouth_open)
    x, y, mask = np.stack(inputs), np.stack(outputs), np.stack(masks)
    latent_of = _latent_frame_of(x.shape[1], rho)
    n_latent = int(latent_of.max()) + 1
    inside = mask[..., None] > 0.5
    report: dict = {
        "n_windows": len(windows),
        "psnr": _psnr(x, y),
        "psnr_mouth": _psnr(x[np.broadcast_to(inside, x.shape)], y[np.broadcast_to(inside, y.shape)])
        if inside.any()
        else float("nan"),
        "psnr_by_latent_frame": [_psnr(x[:, latent_of == k], y[:, latent_of == k]) for k in range(n_latent)],
    }
    if measured_in:
        m_in, m_out, truth = np.stack(measured_in), np.stack(measured_out), np.stack(truths)
        report["mouth_corr_per_frame"] = pearson(m_out, m_in)
        report["mouth_corr_by_latent_frame"] = [
            pearson(m_out[:, latent_of == k], m_in[:, latent_of == k]) for k in range(n_latent)
        ]
        report["mouth_corr_vs_truth"] = pearson(m_out, truth)
        report["input_mouth_corr_vs_truth"] = pearson(m_in, truth)  # the measure's own ceiling
    return report
