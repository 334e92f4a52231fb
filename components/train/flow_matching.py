"""Rectified flow matching as Wan trains it: noise levels drawn for training, and the velocity loss.

The schedule itself (x_t, the velocity target, the shift, the timestep input) is the model's and lives in
components/model/flow.py; training draws sigma uniformly and shifts it like the sampler does.
"""

from __future__ import annotations

from typing import Literal

import torch

from components.model.flow import shift_sigma


def sample_timesteps(
    batch: int, shift: float = 1.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Noise levels sigma [batch] in (0, 1): uniform, then shifted."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
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
