"""Generate the held-out test windows with a model bundle, the same way for every variant.

Every variant samples the same windows from the same noise (one seed per window), conditioned on the window's
true first frame (the reference: the latent cache's Wan I2V condition latents and CLIP image tokens), its audio
and its pose. `audio="zeroed"` replaces the audio
by the model's null condition in both guidance passes: the "same model with audio zeroed" baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from components.config import SamplingConfig
from components.data.latents import LatentCache
from components.model.bundle import ModelBundle
from components.model.flow import sample
from components.model.vae import decode_latents


@dataclass
class GeneratedSet:
    frames: np.ndarray  # uint8 [N, T, H, W, 3]
    window_index: np.ndarray  # int [N]: rows of the latent cache


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """[B,3,T,H,W] in [-1,1] -> uint8 [B,T,H,W,3]."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()


def decode_to_frames(bundle: ModelBundle, latents: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    with torch.no_grad():
        chunks = (latents[i : i + batch_size] for i in range(0, len(latents), batch_size))
        return np.concatenate([_to_uint8(decode_latents(bundle.vae, chunk)) for chunk in chunks])


def window_noise(shape: tuple[int, ...], seed: int, rows: range) -> torch.Tensor:
    """Initial noise [len(rows), *shape] of the given windows: window i's from a generator seeded by (seed, i), so
    every variant and baseline starts window i from the same noise, whatever the batch it is sampled in."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed * 100_003 + row)) for row in rows])


@torch.no_grad()
def generate_test_windows(
    bundle: ModelBundle,
    cache: LatentCache,
    sampling: SamplingConfig,
    audio: Literal["real", "zeroed"] = "real",
    max_windows: int | None = None,
    batch_size: int = 4,
    sample_batch_size: int = 8,
) -> GeneratedSet:
    model = bundle.model.eval()
    bundle.vae.eval()
    n = len(cache.latents) if max_windows is None else min(max_windows, len(cache.latents))
    features = cache.audio_mel if bundle.meta.audio.features == "mel" else cache.audio_wav2vec
    has_audio = "audio" in model.motion
    has_pose = "skeleton" in model.motion
    device = bundle.device  # inputs go where the bundle is (load_bundle(..., device=stage_device()))
    text_emb = bundle.text_encoder([bundle.meta.default_prompt]).to(device)  # what the model was trained with
    guidance = sampling.audio_guidance if has_audio and audio == "real" else 1.0
    latents = []
    for start in range(0, n, sample_batch_size):
        rows = range(start, min(n, start + sample_batch_size))  # windows sampled together: one model call per step
        condition = {k: v.to(device) for k, v in cache.condition(slice(rows.start, rows.stop)).items()}
        feats = features[rows.start : rows.stop].to(device) if has_audio else None
        pose = cache.pose[rows.start : rows.stop].to(device) if has_pose else None
        text = text_emb.expand(len(rows), *text_emb.shape[1:])

        def velocity(x: torch.Tensor, t: torch.Tensor, audio_dropped: bool) -> torch.Tensor:
            drop = torch.full((len(rows),), audio_dropped or audio == "zeroed", device=device) if has_audio else None
            return model(x, t, condition["cond"], feats, pose, text, drop_audio=drop, image_emb=condition.get("image_emb"))

        noise = window_noise(tuple(cache.latents.shape[1:]), sampling.seed, rows)
        latents.append(sample(velocity, tuple(noise.shape), sampling.steps, sampling.shift, guidance, noise=noise,
                              device=device))
    frames = decode_to_frames(bundle, torch.cat(latents), batch_size)
    return GeneratedSet(frames=frames, window_index=np.arange(n))
