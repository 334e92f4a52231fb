"""Encoding windows into the latent cache with a VAE (the latents stage), and the digests that tie a cache to
the VAE that made it (components/data/latents.py holds the cache format itself).

`encode_split` streams: it encodes batches of windows as they come and hands them to the split writer, so the
latents stage holds one clip, one batch and one part file, never the split; `encode_windows` is the same
encoding into one in-memory cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from components.data.latents import PART_WINDOWS, LatentCache, LatentRows, VaeStamp, write_latent_split
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


def vae_stamp(vae: AutoencoderKLWan) -> VaeStamp:
    """What a cache records of the VAE that encoded it."""
    return VaeStamp(vae_config_digest(vae), vae_weights_digest(vae), [float(v) for v in vae.config.latents_mean],
                    [float(v) for v in vae.config.latents_std])


@torch.no_grad()
def encode_rows(vae: AutoencoderKLWan, windows: Sequence[Window], image_encoder: ImageEncoder | None = None) -> LatentRows:
    """One batch of windows (one frame shape) -> their cache rows: latents (posterior mode, normalised), the Wan
    I2V condition latents ([first frame, zero frames] through the VAE), with an image encoder the first frame's
    CLIP tokens (components/model/i2v_conditioning.py), and the window's audio, pose and ground truth."""
    frames = torch.from_numpy(np.stack([w.frames for w in windows]))
    tensors = {
        "latents": encode_video(vae, frames).float().contiguous(),
        "cond_latents": encode_condition(vae, frames[:, 0], frames.shape[1]).float().contiguous(),
    }
    if image_encoder is not None:
        tensors["image_emb"] = image_encoder(frames[:, 0].numpy()).float().cpu().contiguous()

    def stack(values: list[np.ndarray], dtype: type = np.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(values), dtype=dtype))

    tensors |= {
        "audio_mel": stack([audio_features(w, "mel") for w in windows]),
        "audio_wav2vec": stack([audio_features(w, "wav2vec") for w in windows]),
        "pose": stack([w.pose for w in windows]),
        "mouth_open": stack([w.mouth_open for w in windows]),
        "mouth_box": stack([w.mouth_box for w in windows]),
        "window_start": stack([np.int64(w.start) for w in windows], np.int64),
    }
    return LatentRows(tensors, [w.clip_id for w in windows], [w.identity for w in windows])


def _batches(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive batches of a stream of windows (across clips, as the eager encoding batched them); a window
    whose frame shape differs from the first one's is refused, naming its clip."""
    batch: list[Window] = []
    shape = None
    for w in windows:
        shape = shape or w.frames.shape
        if w.frames.shape != shape:
            raise ValueError(f"clip {w.clip_id} window at frame {w.start}: frames {w.frames.shape}, the earlier "
                             f"windows {shape}: windows must share one frame shape to be stacked")
        batch.append(w)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_split(vae: AutoencoderKLWan, windows: Iterable[Window], directory: str | Path, batch_size: int = 8,
                 image_encoder: ImageEncoder | None = None, part_windows: int = PART_WINDOWS) -> int:
    """Encode a stream of windows batch by batch into a split's cache directory (data/latents.py); returns the
    number of windows. Same numbers as `encode_windows` on the same windows and batch size."""
    was_training = vae.training
    vae.eval()
    try:
        rows = (encode_rows(vae, batch, image_encoder) for batch in _batches(windows, batch_size))
        return write_latent_split(directory, rows, vae_stamp(vae), part_windows)
    finally:
        vae.train(was_training)


def encode_windows(
    vae: AutoencoderKLWan, windows: Sequence[Window], batch_size: int = 8, image_encoder: ImageEncoder | None = None
) -> LatentCache:
    """Encode every window (see `encode_rows`) into one in-memory cache, `batch_size` windows per VAE call."""
    if not windows:
        raise ValueError("encode_windows needs at least one window")
    was_training = vae.training
    vae.eval()
    try:
        batches = [encode_rows(vae, batch, image_encoder) for batch in _batches(windows, batch_size)]
    finally:
        vae.train(was_training)
    position: dict[str, int] = {}
    identities: list[str] = []
    for w in windows:
        if w.clip_id not in position:
            position[w.clip_id] = len(position)
            identities.append(w.identity)
    tensors = {name: torch.cat([b.tensors[name] for b in batches]) for name in batches[0].tensors}
    stamp = vae_stamp(vae)
    cache = LatentCache(
        **tensors,
        clip_index=torch.tensor([position[w.clip_id] for w in windows], dtype=torch.int64),
        clip_ids=list(position),
        identities=identities,
        vae_config_digest=stamp.config_digest,
        vae_weights_digest=stamp.weights_digest,
        latents_mean=stamp.latents_mean,
        latents_std=stamp.latents_std,
    )
    cache.check("encode_windows")
    return cache
