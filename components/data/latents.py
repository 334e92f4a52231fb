"""VAE latents of training windows, encoded once per VAE and shared by every DiT stage.

One safetensors file holds, for N windows of T frames:

    latents        float32 [N, z, T', h, w]  normalised (see components.model.vae), posterior mode
    audio_mel      float32 [N, T, 4, n_mels] normalised log-mel (windows.normalise_mel: what the model sees)
    audio_wav2vec  float32 [N, T, tokens, d]
    pose           float32 [N, T, J, 3]
    mouth_open     float32 [N, T]            ground truth, NaN for clips without it
    mouth_box      float32 [N, T, 4]         x0, y0, x1, y1 pixels, NaN without truth
    window_start   int64   [N]               first frame of the window in its clip
    clip_index     int64   [N]               index into the clip_ids metadata list

and, as JSON strings in the safetensors metadata: format, clip_ids, identities (per clip), the VAE's config
and weights digests (a DiT stage refuses latents of another VAE), the latent mean/std used to normalise.

The reference image's latent is `latents[:, :, :1]`: the causal VAE encodes frame 0 alone (its first chunk
sees no other frame), so latent frame 0 of a window equals the encoding of the window's first frame as a
one-frame video. tests/components/data/test_latents.py checks this equality.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from components.data.windows import Window, audio_features
from components.model.vae import encode_video

__all__ = [
    "LATENT_CACHE_FORMAT",
    "LatentCache",
    "encode_windows",
    "load_latent_cache",
    "save_latent_cache",
    "vae_config_digest",
    "vae_weights_digest",
]

LATENT_CACHE_FORMAT = "talkalign-latents/1"
_TENSORS = ("latents", "audio_mel", "audio_wav2vec", "pose", "mouth_open", "mouth_box", "window_start", "clip_index")


@dataclass
class LatentCache:
    latents: torch.Tensor  # float32 [N, z, T', h, w], normalised
    audio_mel: torch.Tensor  # float32 [N, T, 4, n_mels], normalised
    audio_wav2vec: torch.Tensor  # float32 [N, T, tokens, d]
    pose: torch.Tensor  # float32 [N, T, J, 3]
    mouth_open: torch.Tensor  # float32 [N, T]
    mouth_box: torch.Tensor  # float32 [N, T, 4]
    window_start: torch.Tensor  # int64 [N]
    clip_index: torch.Tensor  # int64 [N]
    clip_ids: list[str]
    identities: list[str]  # per clip, aligned with clip_ids
    vae_config_digest: str
    vae_weights_digest: str
    latents_mean: list[float]
    latents_std: list[float]

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def reference_latents(self) -> torch.Tensor:
        """[N, z, 1, h, w]: the first frame's latent, the image-to-video condition (see the module docstring)."""
        return self.latents[:, :, :1]

    def check(self, where: str = "latent cache") -> None:
        """Raise ValueError naming `where` when the tensors disagree with each other or the clip list."""
        n = len(self.latents)
        bad = {name: tuple(getattr(self, name).shape) for name in _TENSORS if len(getattr(self, name)) != n}
        if bad:
            raise ValueError(f"{where}: {n} latents but first axes {bad}")
        frames = {name: getattr(self, name).shape[1] for name in ("audio_mel", "audio_wav2vec", "pose", "mouth_open")}
        if len(set(frames.values())) > 1 or self.mouth_box.shape[1:] != (frames["mouth_open"], 4):
            raise ValueError(f"{where}: per-frame tensors disagree: {frames}, mouth_box {tuple(self.mouth_box.shape)}")
        if n and (int(self.clip_index.min()) < 0 or int(self.clip_index.max()) >= len(self.clip_ids)):
            raise ValueError(f"{where}: clip_index outside the {len(self.clip_ids)} clip ids")
        if len(self.identities) != len(self.clip_ids):
            raise ValueError(f"{where}: {len(self.identities)} identities for {len(self.clip_ids)} clip ids")


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
def encode_windows(vae: AutoencoderKLWan, windows: Sequence[Window], batch_size: int = 8) -> LatentCache:
    """Encode every window (posterior mode, normalised) and stack its conditions into one cache."""
    if not windows:
        raise ValueError("encode_windows needs at least one window")
    shapes = {w.frames.shape for w in windows}
    if len(shapes) != 1:
        raise ValueError(f"windows must share one frame shape to be stacked, got {sorted(shapes)}")
    was_training = vae.training
    vae.eval()
    try:
        chunks = [
            encode_video(vae, torch.from_numpy(np.stack([w.frames for w in windows[i : i + batch_size]])))
            for i in range(0, len(windows), batch_size)
        ]
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


def save_latent_cache(path: str | Path, cache: LatentCache) -> None:
    """Write the cache as one safetensors file, atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    cache.check(str(path))
    tensors = {name: getattr(cache, name).contiguous() for name in _TENSORS}
    metadata = {
        "format": LATENT_CACHE_FORMAT,
        "clip_ids": json.dumps(cache.clip_ids),
        "identities": json.dumps(cache.identities),
        "vae_config_digest": cache.vae_config_digest,
        "vae_weights_digest": cache.vae_weights_digest,
        "latents_mean": json.dumps(cache.latents_mean),
        "latents_std": json.dumps(cache.latents_std),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_latent_cache(path: str | Path) -> LatentCache:
    """Read a cache written by `save_latent_cache`; a missing, foreign or inconsistent file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no latent cache (run the latent encoding first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != LATENT_CACHE_FORMAT:
                raise ValueError(f"{path}: not a latent cache (format {metadata.get('format')!r}, "
                                 f"expected {LATENT_CACHE_FORMAT})")
            missing = [name for name in _TENSORS if name not in f.keys()]
            if missing:
                raise ValueError(f"{path}: latent cache lacks tensors {missing}")
            tensors = {name: f.get_tensor(name) for name in _TENSORS}
        cache = LatentCache(
            **tensors,
            clip_ids=list(json.loads(metadata["clip_ids"])),
            identities=list(json.loads(metadata["identities"])),
            vae_config_digest=metadata["vae_config_digest"],
            vae_weights_digest=metadata["vae_weights_digest"],
            latents_mean=[float(v) for v in json.loads(metadata["latents_mean"])],
            latents_std=[float(v) for v in json.loads(metadata["latents_std"])],
        )
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable latent cache ({type(exc).__name__}: {exc})") from exc
    cache.check(str(path))
    return cache
