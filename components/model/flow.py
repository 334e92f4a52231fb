"""The rectified-flow schedule Wan uses, and an Euler sampler with classifier-free guidance on audio.

Conventions (those of diffusers' FlowMatchEulerDiscreteScheduler): sigma in [0, 1] is the noise level,
x_t = (1 - sigma) * x0 + sigma * noise, the model predicts the velocity v = noise - x0, and the model's
timestep input is sigma * 1000. Sigmas are shifted, sigma' = shift*s / (1 + (shift-1)*s), which spends more
steps at high noise for shift > 1. Training (train/flow_matching.py), evaluation, candidates and animate all
share this one schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

NUM_TRAIN_TIMESTEPS = 1000

# (latents, timestep [B], audio_dropped) -> velocity; audio_dropped=True is the unconditional pass of CFG.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The backbone's timestep input for noise level sigma."""
    return sigma * NUM_TRAIN_TIMESTEPS


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target): x_t = (1 - sigma) x0 + sigma noise, target velocity = noise - x0. sigma is [B]."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} and x0 {tuple(x0.shape)} differ in shape")
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


@torch.no_grad()
def sample(
    model_fn: VelocityFn,
    shape: tuple[int, ...],
    steps: int,
    shift: float = 1.0,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate the flow from noise (sigma = 1) to data with diffusers' Euler scheduler.

    guidance != 1 applies classifier-free guidance on audio: v = v_uncond + g * (v_cond - v_uncond).
    The result depends only on the generator's seed, or on `noise` (the initial latents) when given.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    scheduler.set_timesteps(steps, device=device)
    scheduler.set_begin_index(0)  # we start at the first timestep: no value lookup (works on the meta device too)
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    latents = torch.randn(shape, generator=generator, device=device, dtype=dtype) if noise is None else noise.to(device, dtype)
    for t in scheduler.timesteps:
        timestep = t.expand(shape[0]).to(dtype)
        velocity = model_fn(latents, timestep, False)
        if guidance != 1.0:
            uncond = model_fn(latents, timestep, True)
            velocity = uncond + guidance * (velocity - uncond)
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
    return latents
