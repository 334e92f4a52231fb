"""Rectified flow matching as Wan trains it: noise levels drawn for training, and the velocity loss.

The schedule itself (x_t, the velocity target, the shift, the timestep input) is the model's and lives in
components/model/flow.py; training draws sigma uniformly and shifts it like the sampler does.
"""

from __future__ import annotations

from typing import Literal

import torch

from components.config import TimestepSampling
from components.model.flow import shift_sigma


def sample_timesteps(
    batch: int, shift: float = 1.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    sampling: TimestepSampling = "uniform",
) -> torch.Tensor:
    """Noise levels sigma [batch] in (0, 1), then shifted: uniform, or logit-normal (sigmoid of a standard normal,
    SD3's and flow_grpo's choice: fewer draws at the nearly clean and nearly pure-noise ends)."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    if sampling == "logit_normal":
        return shift_sigma(torch.sigmoid(torch.randn(batch, generator=generator, device=device)), shift)
    if sampling != "uniform":
        raise ValueError(f"timestep sampling must be uniform or logit_normal, got {sampling!r}")
    return shift_sigma(torch.rand(batch, generator=generator, device=device), shift)


def flow_matching_loss(
    model_out: torch.Tensor,
    target: torch.Tensor,
    reduction: Literal["mean", "per_sample"] = "mean",
) -> torch.Tensor:
    """MSE between predicted and target velocity; `per_sample` gives [B] (what DPO compares)."""
    per_sample = (model_out.float() - target.float()).pow(2).flatten(1).mean(1)
    if reduction == "per_sample":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}")
