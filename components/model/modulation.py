"""Unified temporal motion modulation (Hallo4, section 3.3, eq. 6-8).

A motion condition C in R^{T x D x d} (T video frames, D tokens per frame, d features) has to meet video
latents that the causal VAE compressed to T' frames. Instead of subsampling C to T', eq. 6 moves the rho = T/T'
frames of each latent frame into the token axis,

    C~ = Reshape(C, (T', rho*D))         [T', rho*D, d]        (eq. 6)
    H  = W C~ + b                         [T', rho*D, dim]      (eq. 7)
    Z' = softmax(Q K^T / sqrt(d)) V + Z,  Q = Z W_Q, K = H W_K, V = H W_V,  H = [H_audio || H_skel]   (eq. 8)

and the cross-attention is frame-aligned: the video tokens of latent frame t' attend only to the motion tokens
of the same latent frame t'.

First frame. The causal VAE encodes frame 0 alone into latent frame 0 and frames 4k-3..4k into latent frame k,
so a clip has T = 4k+1 frames and T' = k+1 latent frames. To give every latent frame rho = 4 motion frames we
pad the start with 3 copies of frame 0: 4(k+1) frames, grouped in fours -> [k+1, 4*D, d]. Latent frame 0 thus
sees frame 0 four times, exactly as its pixels came from frame 0 alone.

Variants (the paper's ablation, tables 6-7), one parameter apart:
  reshape    all rho frames of a group   -> rho*D tokens   ("ours")
  half       2 of every 4 frames         -> (rho/2)*D      ("audio/2": frames 4k-2 and 4k)
  downsample every 4th frame only        -> D tokens       ("audio/4": frame 4k)

Two additions to the paper's equations, both switchable:
  * `slot_embedding`: eq. 7 shares W over the token axis, and attention is permutation-invariant over its keys,
    so without it the rho frames of a latent frame would form an unordered set and the model could not tell
    which of the 4 decoded frames a mouth shape belongs to. A learned embedding per token slot fixes the order.
  * norms: like every attention in Wan, Z is layer-normalised before W_Q and q/k get an RMS norm.
The cross-attention's output projection starts at zero, so a wrapped backbone reproduces the bare one exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

from components.config import (
    AudioModulationConfig,
    NullMode,
    SkeletonModulationConfig,
    TemporalVariant,
)


def kept_slots(variant: TemporalVariant, rho: int) -> list[int]:
    """Positions kept from each group of rho frames; slot rho-1 is the group's last frame (4k)."""
    if variant == "reshape":
        return list(range(rho))
    if variant == "half":
        return list(range(rho - 1, -1, -2))[::-1]  # rho=4 -> [1, 3]: frames 4k-2 and 4k
    if variant == "downsample":
        return [rho - 1]
    raise ValueError(f"unknown temporal variant {variant!r}")


def latent_length(n_frames: int, rho: int) -> int:
    if n_frames < 1 or (n_frames - 1) % rho:
        raise ValueError(f"motion features need {rho}k+1 frames to match the causal VAE, got {n_frames}")
    return (n_frames - 1) // rho + 1


def group_frames(feats: torch.Tensor, rho: int) -> torch.Tensor:
    """[B, T=rho*k+1, D, d] -> [B, k+1, rho, D, d], frame 0 repeated rho times as latent frame 0's group."""
    latent_length(feats.shape[1], rho)
    first = feats[:, :1].expand(-1, rho - 1, *feats.shape[2:])
    return torch.cat([first, feats], dim=1).unflatten(1, (-1, rho))


def temporal_reshape(feats: torch.Tensor, rho: int, variant: TemporalVariant) -> torch.Tensor:
    """Eq. 6: [B, T, D, d] -> [B, T', S*D, d] with S kept slots; tokens ordered (slot, token)."""
    return group_frames(feats, rho)[:, :, kept_slots(variant, rho)].flatten(2, 3)


def frame_window(feats: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T, D, d] -> [B, T, (2w+1)*D, d]: each frame's tokens plus those of w neighbours per side (edges clamp)."""
    if window == 0:
        return feats
    n_frames = feats.shape[1]
    offsets = torch.arange(-window, window + 1, device=feats.device)
    idx = (torch.arange(n_frames, device=feats.device)[:, None] + offsets).clamp(0, n_frames - 1)
    return feats[:, idx].flatten(2, 3)


class MotionProjection(nn.Module):
    """Eq. 6-7 for one modality: per-frame features [B,T,D,d] -> motion tokens [B,T',S*D,dim]."""

    def __init__(
        self,
        in_dim: int,
        tokens_per_frame: int,
        dim: int,
        rho: int,
        temporal: TemporalVariant,
        slot_embedding: bool,
        null: NullMode,
    ):
        super().__init__()
        self.in_dim, self.tokens_per_frame, self.rho, self.temporal = in_dim, tokens_per_frame, rho, temporal
        self.n_tokens = len(kept_slots(temporal, rho)) * tokens_per_frame
        self.proj = nn.Linear(in_dim, dim)
        self.slot_embedding = nn.Parameter(torch.randn(self.n_tokens, dim) * 0.02) if slot_embedding else None
        self.null = nn.Parameter(torch.randn(self.n_tokens, dim) * 0.02) if null == "learned" else None

    def null_tokens(self, batch: int, n_latent: int, like: torch.Tensor) -> torch.Tensor:
        if self.null is None:
            return like.new_zeros(batch, n_latent, self.n_tokens, self.proj.out_features)
        return self.null.to(like.dtype).expand(batch, n_latent, -1, -1)

    def forward(self, feats: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        if feats.ndim != 4 or feats.shape[2:] != (self.tokens_per_frame, self.in_dim):
            raise ValueError(
                f"motion features must be [B, T, {self.tokens_per_frame}, {self.in_dim}], got {tuple(feats.shape)}"
            )
        tokens = self.proj(temporal_reshape(feats, self.rho, self.temporal))
        if self.slot_embedding is not None:
            tokens = tokens + self.slot_embedding
        if drop is not None:
            null = self.null_tokens(tokens.shape[0], tokens.shape[1], tokens)
            tokens = torch.where(drop.view(-1, 1, 1, 1).to(tokens.device), null, tokens)
        return tokens


class AudioModulation(nn.Module):
    """wav2vec2 tokens per frame [B,T,N_a,d_a] -> audio motion tokens H_audio [B,T',S*(2w+1)*N_a,dim]."""

    def __init__(self, cfg: AudioModulationConfig, dim: int, rho: int):
        super().__init__()
        self.window = cfg.window
        tokens = cfg.tokens_per_frame * (2 * cfg.window + 1)
        self.project = MotionProjection(cfg.in_dim, tokens, dim, rho, cfg.temporal, cfg.slot_embedding, cfg.null)

    def forward(self, feats: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        if feats.ndim != 4:
            raise ValueError(f"audio features must be [B, T, N_a, d_a], got {tuple(feats.shape)}")
        return self.project(frame_window(feats, self.window), drop)


def render_heatmaps(pose: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Keypoints [..., J, 3] as (x, y, confidence), x and y in [0, 1] of the image -> Gaussians [..., J, H, W].

    NaN coordinates (undetected joints) give an empty map; joints outside the image fade out naturally.
    """
    visible = torch.isfinite(pose[..., :2]).all(-1)
    pose = torch.nan_to_num(pose)
    conf = pose[..., 2].clamp(0, 1) * visible
    px = pose[..., 0] * width - 0.5  # pixel centres sit at (i + 0.5) / width
    py = pose[..., 1] * height - 0.5
    xs = torch.arange(width, device=pose.device, dtype=pose.dtype)
    ys = torch.arange(height, device=pose.device, dtype=pose.dtype)
    gx = torch.exp(-((xs - px[..., None]) ** 2) / (2 * sigma**2))  # [..., J, W]
    gy = torch.exp(-((ys - py[..., None]) ** 2) / (2 * sigma**2))  # [..., J, H]
    return conf[..., None, None] * gy[..., :, None] * gx[..., None, :]


class SkeletonEncoder(nn.Module):
    """The paper's "efficient convolutional network": keypoints [B,T,J,3] -> C_skel [B,T,gh*gw,d_k].

    Keypoints become Gaussian heatmaps, a small strided conv stack brings them to the latent grid, and a
    learned position embedding tells the attention where each of the gh*gw tokens sits.
    """

    def __init__(self, cfg: SkeletonModulationConfig):
        super().__init__()
        self.cfg = cfg
        gh, gw = cfg.grid
        self.heatmap_size = (gh * 2**cfg.n_down, gw * 2**cfg.n_down)
        layers: list[nn.Module] = [nn.Conv2d(cfg.n_joints, cfg.channels, 3, padding=1), nn.SiLU()]
        for _ in range(cfg.n_down):
            layers += [nn.Conv2d(cfg.channels, cfg.channels, 3, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(cfg.channels, cfg.feat_dim, 1))
        self.net = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.randn(gh * gw, cfg.feat_dim) * 0.02)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.ndim != 4 or pose.shape[2:] != (self.cfg.n_joints, 3):
            raise ValueError(f"pose must be [B, T, {self.cfg.n_joints}, 3] (x, y, conf), got {tuple(pose.shape)}")
        batch, n_frames = pose.shape[:2]
        maps = render_heatmaps(pose.float(), *self.heatmap_size, self.cfg.sigma).flatten(0, 1)
        feats = self.net(maps.to(self.position.dtype))  # [B*T, d_k, gh, gw]
        tokens = feats.flatten(2).transpose(1, 2) + self.position
        return tokens.unflatten(0, (batch, n_frames))


class SkeletonModulation(nn.Module):
    """Keypoints [B,T,J,3] -> skeleton motion tokens H_skel [B,T',S*gh*gw,dim]."""

    def __init__(self, cfg: SkeletonModulationConfig, dim: int, rho: int):
        super().__init__()
        self.encoder = SkeletonEncoder(cfg)
        gh, gw = cfg.grid
        self.project = MotionProjection(cfg.feat_dim, gh * gw, dim, rho, cfg.temporal, cfg.slot_embedding, cfg.null)

    def forward(self, pose: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.encoder(pose), drop)


class FrameAlignedCrossAttention(nn.Module):
    """Eq. 8 without the residual: the update softmax(QK^T/sqrt(d))V that the caller adds to Z.

    Video tokens [B, T'*L, dim] (frame-major, as Wan's patchify with temporal patch 1 orders them) attend to
    motion tokens [B, T', M, dim] of their own latent frame only: both are folded to a batch of B*T' frames.
    """

    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model width {dim} is not divisible by {heads} heads")
        self.norm = nn.LayerNorm(dim, eps=eps)
        head_dim = dim // heads
        self.attn = WanAttention(
            dim=dim,
            heads=heads,
            dim_head=head_dim,
            eps=eps,
            cross_attention_dim_head=head_dim,
            processor=WanAttnProcessor(),
        )
        # Zero output projection: the wrapped model equals the base model at step 0.
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, motion_tokens: torch.Tensor) -> torch.Tensor:
        batch, seq_len, dim = hidden_states.shape
        n_latent, n_motion = motion_tokens.shape[1], motion_tokens.shape[2]
        if motion_tokens.shape[0] != batch or seq_len % n_latent:
            raise ValueError(
                f"cannot align {seq_len} video tokens (batch {batch}) with motion tokens {tuple(motion_tokens.shape)}"
            )
        query = self.norm(hidden_states).reshape(batch * n_latent, seq_len // n_latent, dim)
        context = motion_tokens.reshape(batch * n_latent, n_motion, dim).to(query.dtype)
        return self.attn(query, context).reshape(batch, seq_len, dim)
