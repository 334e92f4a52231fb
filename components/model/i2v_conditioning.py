"""Wan2.1 image-to-video conditioning, exactly as diffusers' `WanImageToVideoPipeline` builds it.

The transformer's input is [noisy latents z | mask 4 | condition latents z] in channels:

- condition latents: the VAE encoding (posterior mode, normalised with the VAE's latents_mean/std) of the
  video [reference frame, T-1 zero frames] in [-1, 1] (`encode_condition`). Latent frame 0 is the reference's
  own latent (the causal VAE encodes frame 0 alone); later latent frames are what the VAE makes of grey frames
  after the reference, not zeros.
- mask: 1 for the given video frame 0, 0 for the others, with frame 0 repeated 4x so that every latent frame
  holds 4 mask channels (`i2v_mask`): latent frame 0 is all ones, the rest all zeros.
- image tokens: CLIP vision `hidden_states[-2]` of the reference frame through `image_encoder/` and
  `image_processor/` (`ImageEncoder`), passed as `encoder_hidden_states_image`, only for backbones with
  `image_dim` (Wan2.1-I2V-14B); diffusers then assumes exactly 512 text tokens after them (WAN_TEXT_TOKENS).

tests/components/model/test_i2v_conditioning.py compares all three with the pipeline's own `prepare_latents`
and `encode_image` on a tiny checkpoint in the real directory layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from diffusers import AutoencoderKLWan

from components.config import BackboneConfig, ImageEncoderConfig
from components.config.model import WAN_TEXT_TOKENS
from components.model.vae import encode_video, resolve_component_dir, temporal_ratio, to_vae_input

MASK_CHANNELS = 4  # one mask channel per video frame inside a latent frame (the VAE's 4x temporal compression)
IMAGE_ENCODER_DIR = "image_encoder"
IMAGE_PROCESSOR_DIR = "image_processor"

__all__ = [
    "IMAGE_ENCODER_DIR", "IMAGE_PROCESSOR_DIR", "MASK_CHANNELS", "WAN_TEXT_TOKENS", "ImageEncoder",
    "backbone_image_dim", "condition_video", "encode_condition", "i2v_condition", "i2v_mask", "load_image_encoder",
]


# ---------------------------------------------------------------- condition latents and mask


def condition_video(reference: torch.Tensor, n_frames: int) -> torch.Tensor:
    """float [B, 3, n_frames, H, W] in [-1, 1]: the reference frame followed by n_frames-1 zero frames.

    reference: [B, H, W, 3] / [B, 3, H, W], uint8 in [0, 255] or float in [-1, 1].
    """
    if reference.ndim != 4:
        raise ValueError(f"reference frames must be [B,H,W,3] or [B,3,H,W], got {tuple(reference.shape)}")
    first = to_vae_input(reference.unsqueeze(1) if reference.shape[-1] == 3 else reference.unsqueeze(2))
    batch, channels, _, height, width = first.shape
    return torch.cat([first, first.new_zeros(batch, channels, n_frames - 1, height, width)], dim=2)


@torch.no_grad()
def encode_condition(vae: AutoencoderKLWan, reference: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Normalised condition latents [B, z, T', h, w]: the VAE's posterior mode of `condition_video`."""
    return encode_video(vae, condition_video(reference, n_frames))


def i2v_mask(batch: int, n_latent: int, height: int, width: int, rho: int = MASK_CHANNELS,
             like: torch.Tensor | None = None) -> torch.Tensor:
    """[B, rho, T', h, w]: the pipeline's mask, built the way it builds it (per video frame, frame 0 repeated rho x)."""
    n_frames = rho * (n_latent - 1) + 1
    per_frame = torch.zeros(batch, 1, n_frames, height, width)
    per_frame[:, :, 0] = 1.0
    first = torch.repeat_interleave(per_frame[:, :, :1], repeats=rho, dim=2)
    mask = torch.cat([first, per_frame[:, :, 1:]], dim=2).view(batch, n_latent, rho, height, width).transpose(1, 2)
    return mask if like is None else mask.to(device=like.device, dtype=like.dtype)


def i2v_condition(cond_latents: torch.Tensor) -> torch.Tensor:
    """Condition latents [B, z, T', h, w] -> the pipeline's `condition` [B, 4 + z, T', h, w] = [mask | latents]."""
    if cond_latents.ndim != 5:
        raise ValueError(f"condition latents must be [B,z,T',h,w], got {tuple(cond_latents.shape)}")
    batch, _, n_latent, height, width = cond_latents.shape
    return torch.cat([i2v_mask(batch, n_latent, height, width, like=cond_latents), cond_latents], dim=1)


def check_vae_for_mask(vae: AutoencoderKLWan) -> None:
    if temporal_ratio(vae) != MASK_CHANNELS:
        raise ValueError(f"the I2V mask has {MASK_CHANNELS} channels per latent frame; the VAE compresses time "
                         f"{temporal_ratio(vae)}x")


# ---------------------------------------------------------------- CLIP image tokens


class ImageEncoder(nn.Module):
    """Frozen CLIP vision encoder + its image processor -> float32 [B, tokens, hidden] (hidden_states[-2])."""

    def __init__(self, model: nn.Module, processor: object):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.processor = processor

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def forward(self, images: np.ndarray | list) -> torch.Tensor:
        """images: uint8 [B, H, W, 3] (or anything the image processor takes, e.g. PIL images)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        device = next(self.model.parameters()).device
        pixels = self.processor(images=list(images), return_tensors="pt").to(device)
        hidden = self.model(pixel_values=pixels["pixel_values"].to(self.model.dtype), output_hidden_states=True)
        return hidden.hidden_states[-2].float()

    def save_pretrained(self, root: str | Path) -> None:
        """`image_encoder/` and `image_processor/` under root: the Wan checkpoint's own layout."""
        self.model.save_pretrained(Path(root) / IMAGE_ENCODER_DIR)
        self.processor.save_pretrained(Path(root) / IMAGE_PROCESSOR_DIR)


def load_image_encoder(root: str | Path, dtype: str = "float32", image_dim: int | None = None) -> ImageEncoder:
    """The CLIP vision model and processor of a checkpoint root (never downloads); a missing part raises naming
    the directory (and, when given, the transformer's image_dim that needs it)."""
    from transformers import CLIPImageProcessor, CLIPVisionModel  # slow to import; only image tokens need it

    root = Path(root)
    need = f" (the transformer has image_dim = {image_dim}: it expects CLIP image tokens)" if image_dim else ""
    for part, file in ((IMAGE_ENCODER_DIR, "config.json"), (IMAGE_PROCESSOR_DIR, "preprocessor_config.json")):
        if not (root / part / file).is_file():
            raise FileNotFoundError(f"{root}: no {part}/{file}{need}; use the full Wan I2V checkpoint root")
    try:
        model = CLIPVisionModel.from_pretrained(root / IMAGE_ENCODER_DIR, local_files_only=True,
                                                torch_dtype=getattr(torch, dtype))
        processor = CLIPImageProcessor.from_pretrained(root / IMAGE_PROCESSOR_DIR, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{root}: could not load the CLIP image encoder: {exc}") from exc
    encoder = ImageEncoder(model, processor)
    if image_dim is not None and encoder.hidden_size != image_dim:
        raise ValueError(f"{root / IMAGE_ENCODER_DIR}: hidden_size {encoder.hidden_size}, the transformer's image_dim "
                         f"is {image_dim}")
    return encoder


def backbone_image_dim(cfg: BackboneConfig) -> int | None:
    """The image_dim of the backbone a config builds: its checkpoint's transformer config, else the config's own."""
    if cfg.pretrained_path is None:
        return cfg.image_dim
    root, subfolder = resolve_component_dir(cfg.pretrained_path, "transformer")
    config = json.loads((root / (subfolder or "") / "config.json").read_text())
    return config.get("image_dim")


def image_encoder_for(backbone: BackboneConfig, cfg: ImageEncoderConfig | None) -> ImageEncoder | None:
    """The image encoder a model config needs: None when its backbone takes no image tokens."""
    image_dim = backbone_image_dim(backbone)
    if image_dim is None:
        return None
    where = cfg.pretrained_path if cfg is not None else backbone.pretrained_path
    if where is None:
        raise ValueError(f"model.image_encoder: the backbone has image_dim = {image_dim} but no image encoder is set")
    return load_image_encoder(where, cfg.dtype if cfg is not None else "float32", image_dim)
