"""VAE latents of training windows, encoded once per VAE and shared by every DiT stage.

One safetensors file holds, for N windows of T frames:

    latents        float32 [N, z, T', h, w]  normalised (see components.model.vae), posterior mode
    cond_latents   float32 [N, z, T', h, w]  the Wan I2V condition: [first frame, T-1 zero frames] encoded alike
    image_emb      float32 [N, tokens, d]    CLIP hidden_states[-2] of the first frame; only with an image encoder
    audio_mel      float32 [N, T, 4, n_mels] normalised log-mel (windows.normalise_mel: what the model sees)
    audio_wav2vec  float32 [N, T, tokens, d]
    pose           float32 [N, T, J, 3]
    mouth_open     float32 [N, T]            ground truth, NaN for clips without it
    mouth_box      float32 [N, T, 4]         x0, y0, x1, y1 pixels, NaN without truth
    window_start   int64   [N]               first frame of the window in its clip
    clip_index     int64   [N]               index into the clip_ids metadata list

and, as JSON strings in the safetensors metadata: format, clip_ids, identities (per clip), the VAE's config
and weights digests (a DiT stage refuses latents of another VAE), the latent mean/std used to normalise.

The reference image is the window's first frame. Its latent is `latents[:, :, :1]` (the causal VAE encodes
frame 0 alone, so latent frame 0 of a window equals the encoding of the first frame as a one-frame video, and
equals `cond_latents[:, :, :1]`); `cond_latents` and `image_emb` are what WanImageToVideoPipeline would condition
on for that reference (components/model/i2v_conditioning.py), computed once here for every DiT stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from components.io.atomic import atomic_file

__all__ = [
    "LATENT_CACHE_FORMAT",
    "LatentCache",
    "load_latent_cache",
    "save_latent_cache",
]

LATENT_CACHE_FORMAT = "talkalign-latents/2"  # 2: cond_latents (+ image_emb)
_TENSORS = ("latents", "cond_latents", "audio_mel", "audio_wav2vec", "pose", "mouth_open", "mouth_box", "window_start", "clip_index")


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
    cond_latents: torch.Tensor | None = None  # float32 [N, z, T', h, w]; required (None only while building)
    image_emb: torch.Tensor | None = None  # float32 [N, tokens, d] CLIP tokens; None without an image encoder

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def reference_latents(self) -> torch.Tensor:
        """[N, z, 1, h, w]: the first frame's latent (see the module docstring)."""
        return self.latents[:, :, :1]

    def condition(self, rows: slice | torch.Tensor) -> dict[str, torch.Tensor]:
        """The I2V conditioning of some windows: `cond` latents and, with an image encoder, `image_emb`."""
        out = {"cond": self.cond_latents[rows]}
        if self.image_emb is not None:
            out["image_emb"] = self.image_emb[rows]
        return out

    def check(self, where: str = "latent cache") -> None:
        """Raise ValueError naming `where` when the tensors disagree with each other or the clip list."""
        n = len(self.latents)
        if self.cond_latents is None or self.cond_latents.shape != self.latents.shape:
            found = None if self.cond_latents is None else tuple(self.cond_latents.shape)
            raise ValueError(f"{where}: cond_latents {found} must have the latents' shape {tuple(self.latents.shape)}")
        if self.image_emb is not None and (self.image_emb.ndim != 3 or len(self.image_emb) != n):
            raise ValueError(f"{where}: image_emb {tuple(self.image_emb.shape)} must be [{n}, tokens, dim]")
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


def save_latent_cache(path: str | Path, cache: LatentCache) -> None:
    """Write the cache as one safetensors file, atomically (components.io.atomic)."""
    path = Path(path)
    cache.check(str(path))
    tensors = {name: getattr(cache, name).contiguous() for name in _TENSORS}
    if cache.image_emb is not None:
        tensors["image_emb"] = cache.image_emb.contiguous()
    metadata = {
        "format": LATENT_CACHE_FORMAT,
        "clip_ids": json.dumps(cache.clip_ids),
        "identities": json.dumps(cache.identities),
        "vae_config_digest": cache.vae_config_digest,
        "vae_weights_digest": cache.vae_weights_digest,
        "latents_mean": json.dumps(cache.latents_mean),
        "latents_std": json.dumps(cache.latents_std),
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_latent_cache(path: str | Path) -> LatentCache:
    """Read a cache written by `save_latent_cache`; a missing, foreign or inconsistent file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no latent cache (run the latent encoding first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            found = metadata.get("format") or ""
            if found.startswith("talkalign-latents/") and found != LATENT_CACHE_FORMAT:
                raise ValueError(f"{path}: latent cache format {found}, expected {LATENT_CACHE_FORMAT} "
                                 "(re-run the latents stage)")
            if metadata.get("format") != LATENT_CACHE_FORMAT:
                raise ValueError(f"{path}: not a latent cache (format {metadata.get('format')!r}, "
                                 f"expected {LATENT_CACHE_FORMAT})")
            missing = [name for name in _TENSORS if name not in f.keys()]
            if missing:
                raise ValueError(f"{path}: latent cache lacks tensors {missing}")
            tensors = {name: f.get_tensor(name) for name in _TENSORS}
            image_emb = f.get_tensor("image_emb") if "image_emb" in f.keys() else None
        cache = LatentCache(
            **tensors,
            clip_ids=list(json.loads(metadata["clip_ids"])),
            identities=list(json.loads(metadata["identities"])),
            vae_config_digest=metadata["vae_config_digest"],
            vae_weights_digest=metadata["vae_weights_digest"],
            latents_mean=[float(v) for v in json.loads(metadata["latents_mean"])],
            latents_std=[float(v) for v in json.loads(metadata["latents_std"])],
            image_emb=image_emb,
        )
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable latent cache ({type(exc).__name__}: {exc})") from exc
    cache.check(str(path))
    return cache
