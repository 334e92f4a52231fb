"""Held-out generation: windows sampled in batches come out as when sampled one by one (same noise per window)."""

from __future__ import annotations

import numpy as np
import torch

from components.config import SamplingConfig
from components.data.latents import LatentCache
from components.evaluation.generation import generate_test_windows, window_noise
from components.model.vae import spatial_ratio

FRAMES = 17
RES = 32  # decoded frame side of the fabricated latents


def _cache(bundle, n: int = 3) -> LatentCache:
    g = torch.Generator().manual_seed(0)
    z, side = bundle.vae.config.z_dim, RES // spatial_ratio(bundle.vae)
    return LatentCache(
        latents=torch.randn(n, z, 5, side, side, generator=g),
        audio_mel=torch.randn(n, FRAMES, 4, 40, generator=g),
        audio_wav2vec=torch.randn(n, FRAMES, 2, 32, generator=g),
        pose=torch.rand(n, FRAMES, 10, 3, generator=g),
        mouth_open=torch.rand(n, FRAMES, generator=g),
        mouth_box=torch.rand(n, FRAMES, 4, generator=g),
        window_start=torch.zeros(n, dtype=torch.int64),
        clip_index=torch.arange(n),
        clip_ids=[f"c{i}" for i in range(n)],
        identities=[f"p{i}" for i in range(n)],
        vae_config_digest="x", vae_weights_digest="y", latents_mean=[0.0] * z, latents_std=[1.0] * z,
        cond_latents=torch.randn(n, z, 5, side, side, generator=g),
    )


def test_batched_sampling_matches_one_window_at_a_time(make_tiny_bundle):
    bundle = make_tiny_bundle(features="mel", skeleton=True)
    cache = _cache(bundle)
    sampling = SamplingConfig(steps=3, audio_guidance=2.0, seed=0)
    alone = generate_test_windows(bundle, cache, sampling, sample_batch_size=1).frames
    batched = generate_test_windows(bundle, cache, sampling, sample_batch_size=2).frames  # a batch of 2, then 1
    assert alone.shape == (3, FRAMES, RES, RES, 3)
    assert np.abs(alone.astype(int) - batched.astype(int)).max() <= 1  # float rounding of batched kernels only
    other_seed = generate_test_windows(bundle, cache, sampling.model_copy(update={"seed": 1}), sample_batch_size=2).frames
    assert np.abs(other_seed.astype(int) - batched.astype(int)).mean() > 1.0


def test_window_noise_depends_on_seed_and_window_not_on_batch():
    shape = (4, 5, 2, 2)
    both = window_noise(shape, seed=3, rows=range(0, 2))
    assert torch.equal(both[1:], window_noise(shape, seed=3, rows=range(1, 2)))
    assert not torch.equal(both[:1], window_noise(shape, seed=4, rows=range(0, 1)))
