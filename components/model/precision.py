"""Where weights sit and in which dtype, the same on a GPU run and in the meta-device dry run.

Frozen pretrained weights are stored in the profile's dtype (bfloat16 on the cluster), except the modules a
diffusers model keeps in float32 (`_keep_in_fp32_modules`: Wan's time embedder, adaLN tables and norms);
trainable weights (modulation, LoRA, the TLPO gate) are float32 so AdamW's updates are not lost to bf16
rounding. Compute runs under bf16 autocast on the accelerator, which casts at every matmul.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn as nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown weight dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def keep_fp32_names(model: nn.Module) -> set[str]:
    """Names of the parameters inside any diffusers submodule's `_keep_in_fp32_modules` (by module-name part)."""
    keep: set[str] = set()
    for prefix, module in model.named_modules():
        patterns = getattr(module, "_keep_in_fp32_modules", None) or []
        if not patterns:
            continue
        for name, _ in module.named_parameters():
            parts = name.split(".")
            if any(p in parts for p in patterns):
                keep.add(f"{prefix}.{name}" if prefix else name)
    return keep


def place_for_training(model: nn.Module, frozen_dtype: torch.dtype,
                       also_fp32: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """Trainable parameters (requires_grad) and those `also_fp32(name)` names (TLPO's experts, trained one at a
    time) to float32, frozen ones to `frozen_dtype` (fp32-kept modules stay fp32). Returns the model (in place)."""
    keep = keep_fp32_names(model)
    for name, parameter in model.named_parameters():
        fp32 = parameter.requires_grad or name in keep or also_fp32(name)
        target = torch.float32 if fp32 else frozen_dtype
        if parameter.dtype != target:
            parameter.data = parameter.data.to(target)
    return model


def dtype_counts(model: nn.Module) -> dict[tuple[bool, torch.dtype], int]:
    """Parameters per (trainable, dtype): what a placement check and the memory report read."""
    counts: dict[tuple[bool, torch.dtype], int] = {}
    for parameter in model.parameters():
        key = (parameter.requires_grad, parameter.dtype)
        counts[key] = counts.get(key, 0) + parameter.numel()
    return counts


def frozen_precision_autocast(module: nn.Module, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on `device` when the module's weights include bf16 ones (a bf16 profile's frozen backbone) and no
    autocast is active yet: every stage's forward then runs the same whether the training loop's accelerator wrapped
    it (GPU, mixed_precision bf16) or not (candidates, evaluate, animate, sampling in training, a CPU run). fp32
    models (the toy profile) and the meta device (the dry run emulates autocast itself) are left as they are."""
    if device.type == "meta" or torch.is_autocast_enabled(device.type):
        return nullcontext()
    if not any(p.dtype == torch.bfloat16 for p in module.parameters()):
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
