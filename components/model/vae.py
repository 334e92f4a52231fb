"""The video VAE: diffusers `AutoencoderKLWan`, tiny and random (toy) or a Wan2.1 checkpoint (wan).

Latents returned by `encode_video` are *normalised*: `(mu - latents_mean) / latents_std` per channel, with
the statistics read from the VAE's own config (Wan2.1 ships them; a toy VAE starts with mean 0 / std 1 and the
pretrain stage replaces them with measured values via `set_latent_stats`). `decode_latents` undoes it.
The Wan pipelines use the same convention, so latents are interchangeable with theirs.

Time: the causal VAE encodes frame 0 alone and then every 4 frames together, so T = 4k + 1 frames give
T' = k + 1 latent frames. Space is compressed 2^(len(dim_mult) - 1)x: 8x for Wan2.1, 4x for the toy profile
(64 px frames -> a 16 x 16 latent, where the mouth spans several latent pixels). Read the ratios from the VAE
(`spatial_ratio`, `temporal_ratio`), never assume them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from components.config import VaeConfig


def resolve_component_dir(local_dir: str | Path, subfolder: str) -> tuple[Path, str | None]:
    """(root, subfolder) for from_pretrained: a checkpoint root with `subfolder/`, or the component dir itself."""
    root = Path(local_dir)
    if (root / subfolder / "config.json").is_file():
        return root, subfolder
    if (root / "config.json").is_file():
        return root, None
    raise FileNotFoundError(f"{root}: no diffusers config.json here or in {root / subfolder}")


def load_vae(local_dir: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderKLWan:
    """A pretrained AutoencoderKLWan from a local directory (never downloads), its weights stored in `dtype`."""
    root, subfolder = resolve_component_dir(local_dir, "vae")
    try:
        return AutoencoderKLWan.from_pretrained(root, subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{local_dir}: could not load AutoencoderKLWan: {exc}") from exc


def build_vae(cfg: VaeConfig) -> AutoencoderKLWan:
    """The configured VAE: loaded from `cfg.pretrained_path`, else tiny and seeded (global RNG untouched)."""
    if cfg.pretrained_path is not None:
        return load_vae(cfg.pretrained_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return AutoencoderKLWan(
            base_dim=cfg.base_dim,
            z_dim=cfg.z_dim,
            dim_mult=list(cfg.dim_mult),
            num_res_blocks=cfg.num_res_blocks,
            temperal_downsample=list(cfg.temperal_downsample),
            # Identity normalisation until the pretrain stage measures the real statistics.
            latents_mean=[0.0] * cfg.z_dim,
            latents_std=[1.0] * cfg.z_dim,
            # diffusers does not derive these from the blocks (its default is 8 / 4): say them, so that
            # spatial_compression_ratio, and the config saved with the weights, are the network's real ratios.
            scale_factor_spatial=2 ** (len(cfg.dim_mult) - 1),
            scale_factor_temporal=2 ** sum(cfg.temperal_downsample),
        )


@torch.no_grad()
def per_frame_init(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Make a fresh VAE start as an image autoencoder applied frame by frame (inflation, as I3D and video LDMs
    start from image models), with residual branches at zero:

    - every causal 3D conv keeps only its last (current-frame) temporal tap;
    - the temporal down/upsampling convs copy the current frame (identity on the last tap);
    - each residual block's second conv and each attention block's output projection start at zero, so every
      block starts as the identity and the network trains quickly from a short, well-conditioned path.
    Training then learns the temporal mixing the 4x compression needs on top of a working image model.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import (
        WanAttentionBlock,
        WanCausalConv3d,
        WanResample,
        WanResidualBlock,
    )

    time_convs = set()
    for module in vae.modules():
        if isinstance(module, WanResample) and module.mode in ("downsample3d", "upsample3d"):
            weight, channels = module.time_conv.weight, module.time_conv.weight.shape[1]
            weight.zero_()
            module.time_conv.bias.zero_()
            for group in range(weight.shape[0] // channels):
                weight[group * channels : (group + 1) * channels, :, -1, 0, 0] = torch.eye(channels)
            time_convs.add(id(module.time_conv))
    for module in vae.modules():
        if isinstance(module, WanCausalConv3d) and id(module) not in time_convs and module.weight.shape[2] > 1:
            module.weight[:, :, :-1].zero_()
        if isinstance(module, WanResidualBlock):
            torch.nn.init.zeros_(module.conv2.weight)
            torch.nn.init.zeros_(module.conv2.bias)
        if isinstance(module, WanAttentionBlock):
            torch.nn.init.zeros_(module.proj.weight)
            torch.nn.init.zeros_(module.proj.bias)
    return vae


def temporal_ratio(vae: AutoencoderKLWan) -> int:
    return 2 ** sum(vae.config.temperal_downsample)


def spatial_ratio(vae: AutoencoderKLWan) -> int:
    return int(vae.spatial_compression_ratio)


def latent_frames(n_frames: int, rho: int = 4) -> int:
    """Latent frames for `n_frames` video frames (n_frames = rho*k + 1 -> k + 1)."""
    if n_frames < 1 or (n_frames - 1) % rho:
        raise ValueError(f"the causal VAE needs {rho}k+1 frames, got {n_frames}")
    return (n_frames - 1) // rho + 1


def to_vae_input(frames: torch.Tensor) -> torch.Tensor:
    """[B,T,H,W,3] or [B,3,T,H,W], uint8 in [0,255] or float in [-1,1] -> float [B,3,T,H,W] in [-1,1]."""
    if frames.ndim != 5:
        raise ValueError(f"frames must be 5-D [B,T,H,W,3] or [B,3,T,H,W], got shape {tuple(frames.shape)}")
    last_is_rgb, second_is_rgb = frames.shape[-1] == 3, frames.shape[1] == 3
    if last_is_rgb == second_is_rgb:
        raise ValueError(f"cannot tell the channel axis of frames with shape {tuple(frames.shape)}")
    if last_is_rgb:
        frames = frames.permute(0, 4, 1, 2, 3)
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1.0
    if not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 or float, got {frames.dtype}")
    return frames.float()


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """float [B,3,T,H,W] in [-1,1] -> uint8 [B,T,H,W,3]."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


def _stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1, 1)
    return mean, std


@contextmanager
def channels_last_on_cpu(vae: AutoencoderKLWan) -> Iterator[None]:
    """Inference with the 3D convolutions' weights in channels-last layout on CPU: oneDNN then convolves without
    layout conversions and the Wan blocks' channel-wise RMS norms read contiguous memory, so decoding runs ~2x
    faster here (same values to float rounding). The weights go back to the default layout afterwards, because
    safetensors saves only contiguous tensors."""
    convs = [m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
    if not convs or convs[0].weight.device.type != "cpu":
        yield
        return
    for conv in convs:
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last_3d)
    try:
        yield
    finally:
        for conv in convs:
            conv.weight.data = conv.weight.data.contiguous()


@contextmanager
def single_frame_convs(vae: AutoencoderKLWan) -> Iterator[None]:
    """Single-frame inputs (T = 1, the image phase of pretrain_vae) through each causal 3D conv's current-frame
    tap alone. A causal conv pads the past with zeros, so on one frame with no cache its earlier taps multiply
    zeros: the output and every gradient are exactly those of the full conv, at a third of its work for 3-tap
    kernels. Any other input takes the conv's own path."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    def current_tap_forward(conv: WanCausalConv3d):
        full = conv.forward

        def forward(x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
            if x.shape[2] != 1 or cache_x is not None or conv.stride[0] != 1:
                return full(x, cache_x)
            spatial = list(conv._padding[:4])  # (w, w, h, h); the time padding is what the last tap skips
            return torch.nn.functional.conv3d(torch.nn.functional.pad(x, spatial), conv.weight[:, :, -1:],
                                              conv.bias, conv.stride, 0, conv.dilation, conv.groups)

        return forward

    convs = [m for m in vae.modules() if isinstance(m, WanCausalConv3d)]
    for conv in convs:
        conv.forward = current_tap_forward(conv)
    try:
        yield
    finally:
        for conv in convs:
            del conv.forward  # back to the class's method


def encode_video(
    vae: AutoencoderKLWan,
    frames: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised latents [B, z, T', H/s, W/s] of frames (s = spatial_ratio) (see `to_vae_input` for accepted layouts).

    `sample=False` takes the posterior mode (deterministic, what the Wan I2V pipeline does for its condition).
    """
    x = to_vae_input(frames)
    _, _, n_frames, height, width = x.shape
    latent_frames(n_frames, temporal_ratio(vae))
    s = spatial_ratio(vae)
    if height % s or width % s:
        raise ValueError(f"frame size {height}x{width} is not a multiple of the VAE's {s}x compression")
    with channels_last_on_cpu(vae):  # computed on the VAE's device, returned on the frames' device
        dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    mean, std = _stats(vae, z)
    return ((z - mean) / std).to(x.device)


def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents [B, z, T', h, w] -> float video [B, 3, 4(T'-1)+1, s*h, s*w] in [-1, 1] (s = spatial_ratio)."""
    if latents.ndim != 5 or latents.shape[1] != vae.config.z_dim:
        raise ValueError(f"latents must be [B,{vae.config.z_dim},T',h,w], got shape {tuple(latents.shape)}")
    mean, std = _stats(vae, latents)
    with channels_last_on_cpu(vae):  # computed on the VAE's device, returned on the latents' device
        return vae.decode((latents * std + mean).to(vae.device, vae.dtype)).sample.to(latents.device)


def latent_stats(raw_latents: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of *unnormalised* latents [N, z, T', h, w] (for `set_latent_stats`)."""
    flat = raw_latents.transpose(0, 1).flatten(1).double()
    return flat.mean(1).tolist(), flat.std(1).clamp_min(1e-6).tolist()


def set_latent_stats(vae: AutoencoderKLWan, mean: list[float], std: list[float]) -> None:
    """Store latent statistics in the VAE config, so they are saved with it and used by encode/decode."""
    z = vae.config.z_dim
    if len(mean) != z or len(std) != z or min(std) <= 0:
        raise ValueError(f"need {z} means and {z} positive stds, got {len(mean)} and {len(std)}")
    vae.register_to_config(latents_mean=[float(m) for m in mean], latents_std=[float(v) for v in std])
