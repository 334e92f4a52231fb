"""Encoding windows into the latent cache with a VAE (the latents stage), and the digests that tie a cache to
the VAE that made it (components/data/latents.py holds the cache format itself)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from components.data.latents import LatentCache
from components.data.windows import Window, audio_features
from components.model.i2v_conditioning import ImageEncoder, encode_condition
from components.model.vae import encode_video


def vae_config_digest(vae: AutoencoderKLWan) -> str:
    """sha256 of the VAE's public config (latent statistics included; private keys such as paths excluded)."""
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()


def vae_weights_digest(vae: AutoencoderKLWan) -> str:
    """sha256 over the VAE's parameters and buffers (name, dtype, shape, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def encode_windows(
    vae: AutoencoderKLWan, windows: Sequence[Window], batch_size: int = 8, image_encoder: ImageEncoder | None = None
) -> LatentCache:
    """Encode every window (posterior mode, normalised) and stack its conditions into one cache.

    Besides the window's latents: its Wan I2V condition latents ([first frame, zero frames] through the VAE) and,
    with an image encoder, the first frame's CLIP tokens (components/model/i2v_conditioning.py)."""
    if not windows:
        raise ValueError("encode_windows needs at least one window")
    shapes = {w.frames.shape for w in windows}
    if len(shapes) != 1:
        raise ValueError(f"windows must share one frame shape to be stacked, got {sorted(shapes)}")
    was_training = vae.training
    vae.eval()
    chunks, cond_chunks, image_chunks = [], [], []
    try:
        for i in range(0, len(windows), batch_size):
            frames = torch.from_numpy(np.stack([w.frames for w in windows[i : i + batch_size]]))
            chunks.append(encode_video(vae, frames))
            cond_chunks.append(encode_condition(vae, frames[:, 0], frames.shape[1]))
            if image_encoder is not None:
                image_chunks.append(image_encoder(frames[:, 0].numpy()))
    finally:
        vae.train(was_training)
    clip_ids: list[str] = []
    identities: list[str] = []
    position: dict[str, int] = {}
    for w in windows:
        if w.clip_id not in position:
            position[w.clip_id] = len(clip_ids)
            clip_ids.append(w.clip_id)
            identities.append(w.identity)

    def stack(values: list[np.ndarray], dtype: type = np.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(values), dtype=dtype))

    cache = LatentCache(
        latents=torch.cat(chunks).float().contiguous(),
        cond_latents=torch.cat(cond_chunks).float().contiguous(),
        image_emb=torch.cat(image_chunks).float().contiguous() if image_chunks else None,
        audio_mel=stack([audio_features(w, "mel") for w in windows]),
        audio_wav2vec=stack([audio_features(w, "wav2vec") for w in windows]),
        pose=stack([w.pose for w in windows]),
        mouth_open=stack([w.mouth_open for w in windows]),
        mouth_box=stack([w.mouth_box for w in windows]),
        window_start=stack([np.int64(w.start) for w in windows], np.int64),
        clip_index=stack([np.int64(position[w.clip_id]) for w in windows], np.int64),
        clip_ids=clip_ids,
        identities=identities,
        vae_config_digest=vae_config_digest(vae),
        vae_weights_digest=vae_weights_digest(vae),
        latents_mean=[float(v) for v in vae.config.latents_mean],
        latents_std=[float(v) for v in vae.config.latents_std],
    )
    cache.check("encode_windows")
    return cache
