"""TLPO's fusion of LoRA experts (FantasyTalking2): every expert active, scaled per (timestep, layer) by a gate.

    W x + sum_k g[l, k](t) * (alpha / r) * B_k A_k x,    g[l, :](t) = act(MLP(emb(t) + e_l))

with e_l a learned layer embedding (blocks 0..L-1, plus one slot for the adapted layers outside the blocks)
and emb(t) the sinusoidal timestep embedding the backbone also uses. The activation says what the gate may do:

- softmax: a convex mix, rows sum to 1. It starts as the plain average of the experts, and it can give one expert
  its full strength only by taking the others' away.
- sigmoid: 2 * sigmoid, each expert scaled on its own in (0, 2). It starts as the plain sum of the experts, each
  at full strength, and learns which to turn down (or up).

The last layer starts at zero, so the gate starts as `uniform_weights` (the baseline it is compared against).

One call shares one noise level: the gate's weights are then one number per (layer, expert), which applies to
any layer whatever shape its input has (samplers step a whole batch at one t anyway). The gate is part of a
saved TLPO model (tlpo_bundle.py); train/tlpo.py trains it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import get_args

import torch
import torch.nn as nn
from peft.tuners.tuners_utils import BaseTunerLayer

from components.config import GateActivation
from components.model.adapters import lora_layers

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [dim] of a scalar timestep (0..1000), as in DiT/Wan."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half)
    angles = timestep.float().reshape(()) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)])


class TimestepLayerGate(nn.Module):
    """(timestep, layer) -> fusion weights over experts, [n_layers + 1, n_experts] (see the module docstring)."""

    def __init__(self, n_layers: int, experts: Sequence[str], freq_dim: int = 32, hidden: int = 64,
                 activation: GateActivation = "softmax"):
        super().__init__()
        if len(experts) < 2:
            raise ValueError(f"TLPO fuses at least two experts, got {list(experts)}")
        if activation not in get_args(GateActivation):
            raise ValueError(f"gate activation must be one of {get_args(GateActivation)}, got {activation!r}")
        self.activation = activation
        self.experts = list(experts)
        self.n_layers = n_layers
        self.freq_dim = freq_dim
        self.time = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layer = nn.Embedding(n_layers + 1, hidden)
        self.out = nn.Linear(hidden, len(self.experts))
        nn.init.zeros_(self.out.weight)  # uniform_weights at the start
        nn.init.zeros_(self.out.bias)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        timestep = timestep.to(self.layer.weight.device)  # the gate may sit on another device than the sampler's t
        h = self.time(timestep_embedding(timestep, self.freq_dim))[None] + self.layer.weight
        logits = self.out(torch.nn.functional.silu(h))
        return torch.softmax(logits, dim=-1) if self.activation == "softmax" else 2.0 * torch.sigmoid(logits)


def layer_index(module_name: str, n_layers: int) -> int:
    """Block index of an adapted module; modules outside the blocks share slot n_layers."""
    match = _BLOCK.search(module_name)
    return int(match.group(1)) if match else n_layers


def activate_experts(model: nn.Module, experts: Sequence[str]) -> None:
    """Every expert active in every adapted layer, all of them frozen."""
    for layer in lora_layers(model):
        layer.set_adapter(list(experts))
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(False)


@contextmanager
def gated(model: nn.Module, weights: torch.Tensor, experts: Sequence[str]) -> Iterator[nn.Module]:
    """Run the model with expert k of layer l scaled by weights[l, k] (differentiable); restored on exit."""
    n_layers = weights.shape[0] - 1
    saved = []
    try:  # inside the try: a missing expert half-way still restores the layers scaled so far
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                row = weights[layer_index(name, n_layers)]
                original = dict(module.scaling)
                saved.append((module, original))
                for k, expert in enumerate(experts):
                    if expert not in original:
                        raise ValueError(f"{name} has no expert {expert!r} (has {sorted(original)})")
                    module.scaling[expert] = original[expert] * row[k]
        yield model
    finally:
        for module, original in saved:
            module.scaling.clear()
            module.scaling.update(original)


def set_gate_scaling(model: nn.Module, weights: torch.Tensor, experts: Sequence[str]) -> None:
    """Like `gated`, but the scaling stays until the next call or `clear_gate_scaling`: gate training needs it to
    outlive the forward, since gradient checkpointing re-runs the blocks during backward (a context manager would
    have restored the plain scaling by then, and the recompute would record a different graph)."""
    n_layers = weights.shape[0] - 1
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            base = module.__dict__.setdefault("_ungated_scaling", dict(module.scaling))
            row = weights[layer_index(name, n_layers)]
            for k, expert in enumerate(experts):
                if expert not in base:
                    raise ValueError(f"{name} has no expert {expert!r} (has {sorted(base)})")
                module.scaling[expert] = base[expert] * row[k]


def clear_gate_scaling(model: nn.Module) -> None:
    """Undo `set_gate_scaling`: every layer's own LoRA scaling again."""
    for module in model.modules():
        base = module.__dict__.pop("_ungated_scaling", None)
        if base is not None:
            module.scaling.clear()
            module.scaling.update(base)


def uniform_weights(n_layers: int, experts: Sequence[str], activation: GateActivation = "softmax") -> torch.Tensor:
    """The baseline fusion, where a gate of that activation starts: in every layer and at every timestep the plain
    average of the experts (softmax) or their plain sum (sigmoid)."""
    return torch.full((n_layers + 1, len(experts)), 1.0 / len(experts) if activation == "softmax" else 1.0)
