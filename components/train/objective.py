"""The one training contract: a module whose forward(batch) returns (scalar loss, {name: float}).

The loss is computed inside forward() because DDP and FSDP only synchronise gradients (and FSDP only gathers
parameters) through the wrapped module's forward. `Objective` makes such a module out of a loss function and
the modules it trains; `run_training` (loop.py) takes nothing else."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

Metrics = dict[str, float]
Batch = dict[str, torch.Tensor]


class Objective(nn.Module):
    """`Objective(loss, model, gate=gate, ...)`: forward(batch) = loss(model, gate, ..., batch).

    The modules are submodules (`model`, then the named ones, in order), so their parameters and checkpoint keys
    are the Objective's."""

    def __init__(self, loss: Callable[..., tuple[torch.Tensor, Metrics]], model: nn.Module, **more: nn.Module):
        super().__init__()
        self.model = model
        self._more = list(more)
        for name, module in more.items():
            self.add_module(name, module)
        self._loss = loss

    def parts(self) -> list[nn.Module]:
        return [self.model, *(getattr(self, name) for name in self._more)]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        return self._loss(*self.parts(), batch)

    def enable_gradient_checkpointing(self) -> None:
        able = [m for m in self.parts() if hasattr(m, "enable_gradient_checkpointing")]
        if not able:
            raise ValueError(f"gradient_checkpointing=true but none of {[type(m).__name__ for m in self.parts()]} "
                             "has enable_gradient_checkpointing()")
        for module in able:
            module.enable_gradient_checkpointing()
