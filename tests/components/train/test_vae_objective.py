"""The toy VAE objective: mouth masks, weighted loss that trains, and the per-latent-frame report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.config import VaeConfig, VaePretrainConfig, WorldConfig
from components.data.mouth_box import mouth_box_centre_size
from components.data.synthetic.world import make_clip
from components.data.windows import ClipSample, make_windows
from components.model.vae import build_vae
from components.train.vae_objective import (
    box_mask,
    mouth_mask_for,
    reconstruct,
    reconstruction_report,
    vae_loss,
    window_batch,
)

TINY_VAE = VaeConfig(base_dim=8, z_dim=4)


def _windows(frames: int, resolution: int, duration_s: float = 1.0):
    world = WorldConfig(resolution=resolution, duration_s=duration_s, speech="syllables", seed=5)
    clip = make_clip(world, 0, 0)
    n = len(clip.frames)
    sample = ClipSample(
        clip_id=clip.clip_id,
        identity="id000",
        frames=clip.frames,
        audio=clip.audio,
        sample_rate=16000,
        fps=25.0,
        wav2vec=np.zeros((n, 2, 4), np.float32),
        mel=np.zeros((n, 4, 8), np.float32),
        pose=np.zeros((n, 10, 3), np.float32),
        truth=clip.truth,
    )
    return make_windows(sample, frames=frames, stride=frames - 1)


def test_box_mask_covers_fractional_pixels():
    mask = box_mask(np.array([[1.5, 2.0, 4.0, 3.25], [np.nan] * 4]), height=5, width=6)
    assert mask.shape == (2, 5, 6) and mask.dtype == np.float32
    assert mask[0].sum() == pytest.approx(2.5 * 1.25)  # area of the box
    assert mask[0, 2, 1] == pytest.approx(0.5) and mask[0, 2, 2] == 1.0 and mask[0, 3, 2] == pytest.approx(0.25)
    assert mask[0, 0].sum() == 0 and (mask[1] == 0).all()  # NaN box (no truth): no weighting


def test_mouth_mask_sits_on_the_mouth():
    (w, *_) = _windows(5, 32)
    mask = mouth_mask_for(w)
    assert mask.shape == (5, 32, 32)
    centre, _ = mouth_box_centre_size(w.mouth_box)  # its own tests: tests/components/data/test_mouth_box.py
    ys, xs = np.nonzero(mask[0] > 0.5)
    assert abs(xs.mean() + 0.5 - centre[0, 0]) < 1 and abs(ys.mean() + 0.5 - centre[0, 1]) < 1
    # At the widest opening every pixel of the mouth's dark interior colour lies inside the mask.
    t = int(np.argmax(w.mouth_open))
    interior = np.abs(w.frames[t].astype(int) - (45, 10, 20)).sum(-1) < 25  # pupils (10, 10, 10) are 45 away
    assert interior.sum() >= 4 and (mask[t][interior] > 0).all()


def test_loss_decreases_on_a_tiny_batch():
    frames, masks = window_batch(_windows(5, 32)[:2])
    assert frames.shape == (2, 5, 32, 32, 3) and masks.shape == (2, 5, 32, 32)
    vae = build_vae(TINY_VAE)
    cfg = VaePretrainConfig(mouth_weight=4.0, kl_weight=1e-6)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        loss, logs = vae_loss(vae, frames, masks, cfg, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
        assert set(logs) == {"loss", "recon", "kl", "err_mouth", "err_rest", "psnr"}
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


@pytest.mark.parametrize("recon_loss", ["l1", "l2"])
def test_mouth_weight_adds_exactly_the_in_box_error(recon_loss):
    frames, masks = window_batch(_windows(5, 32)[:1])
    vae = build_vae(TINY_VAE).eval()

    def loss_with(weight: float) -> float:
        cfg = VaePretrainConfig(mouth_weight=weight, kl_weight=0.0, recon_loss=recon_loss)
        with torch.no_grad():
            return float(vae_loss(vae, frames, masks, cfg, torch.Generator().manual_seed(0))[0])

    base, weighted = loss_with(0.0), loss_with(4.0)
    # Same posterior sample, so the difference is 4 * mean(mask * err): positive, and linear in the weight.
    assert weighted > base
    assert loss_with(8.0) - base == pytest.approx(2 * (weighted - base), rel=1e-4)
    # Moving the box off the mouth onto flat background changes how much the weight adds.
    shifted = torch.roll(masks, shifts=12, dims=2)
    cfg = VaePretrainConfig(mouth_weight=4.0, kl_weight=0.0, recon_loss=recon_loss)
    with torch.no_grad():
        elsewhere = float(vae_loss(vae, frames, shifted, cfg, torch.Generator().manual_seed(0))[0])
    assert elsewhere != pytest.approx(weighted)


def test_bad_shapes_are_refused():
    frames, masks = window_batch(_windows(5, 32)[:1])
    vae = build_vae(TINY_VAE)
    with pytest.raises(ValueError, match="mouth_mask must be"):
        vae_loss(vae, frames, masks[:, :4], VaePretrainConfig())
    with pytest.raises(ValueError, match="4k\\+1 frames"):
        vae_loss(vae, frames[:, :4], masks[:, :4], VaePretrainConfig())


def test_reconstruction_report_per_latent_frame(monkeypatch):
    windows = _windows(9, 64, duration_s=1.0)[:2]
    vae = build_vae(TINY_VAE)
    recon = reconstruct(vae, window_batch(windows)[0])
    assert recon.shape == (2, 9, 64, 64, 3) and recon.dtype == torch.uint8
    report = reconstruction_report(vae, windows, batch_size=2)
    assert report["n_windows"] == 2
    assert len(report["mouth_corr_by_latent_frame"]) == 3 and len(report["psnr_by_latent_frame"]) == 3
    assert all(np.isfinite(v) for v in [report["psnr"], report["psnr_mouth"], report["mouth_corr_per_frame"]])
    assert report["input_mouth_corr_vs_truth"] > 0.9  # the measurement itself works on these windows
    assert report["psnr"] < 25  # an untrained VAE does not reconstruct

    # A VAE that returned its input would score perfectly on every latent frame.
    monkeypatch.setattr("components.train.vae_objective.reconstruct", lambda vae, frames: frames)
    perfect = reconstruction_report(vae, windows, batch_size=1)
    assert perfect["psnr"] > 100 and perfect["mouth_corr_per_frame"] == pytest.approx(1.0)
    assert perfect["mouth_corr_by_latent_frame"] == pytest.approx([1.0, 1.0, 1.0])
    assert perfect["mouth_corr_vs_truth"] == pytest.approx(report["input_mouth_corr_vs_truth"])
