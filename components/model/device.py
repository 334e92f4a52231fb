"""The device a stage computes on: accelerate's (the GPU of this process under `accelerate launch`, else the CPU),
the same rule for the training loop and for the no-grad stages (latents, candidates, evaluate, animate)."""

from __future__ import annotations

import torch
from accelerate import PartialState


def stage_device() -> torch.device:
    return PartialState().device


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
