"""FSDP2 for the training loop: torch's `fully_shard` applied by us, one unit per transformer block plus the root.

Why our own call and not accelerate's FSDP plugin: accelerate 1.15 only turns FSDP on for GPU-like distributed
types; on a CPU box (gloo) it silently falls back to DDP, so the plugin path could never be tested here. Sharding
ourselves is the same torch API on CPU/gloo and GPU/NCCL, so the path the tests run is the path the cluster runs.
A launch with accelerate's FSDP config (infra/accelerate/fsdp_*.yaml) takes this path too (loop.uses_fsdp); the
fsdp_config options of that file (wrap policy, state-dict type, ...) are not read: what is written here is what runs.
Compute precision is the loop's autocast (bf16 on GPU); parameters, gradients and their reductions stay fp32.

Units: the blocks a model's forward loops over. A block is an element of an `nn.ModuleList` that is, or holds, a
class the model names in `_no_split_modules` (the diffusers / transformers convention for "keep together"):
for the portrait model each `transformer.blocks[i]` (a ModulatedWanBlock around diffusers' WanTransformerBlock,
LoRA layers included). Everything else (patch and condition embedders, motion projections, output head) is the
root unit. A model without such blocks (a small MLP) is one root unit.

Contract (what FSDP adds to the loop's): every rank runs the same forwards in the same order, and a trainable
parameter gets a gradient on every rank or on none (FSDP reduce-scatters the parameters that have one, so ranks
that disagree would exchange different tensors). Gradient checkpointing must call the checkpointed block through
its module call (`block(...)`, as components/model/portrait.py does) so FSDP's pre-forward hook gathers the block's
weights again for the recomputation.

After training the parameters are DTensor shards: anything that writes weights goes through `gather_full_state`
or `gather_named` on EVERY rank (collective), and the main process writes what it receives.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor


def block_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become their own FSDP unit: outermost ModuleList elements holding a `_no_split_modules` class."""
    keep_together = set()
    for module in model.modules():
        keep_together.update(getattr(module, "_no_split_modules", None) or ())
    candidates = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            candidates += [child for child in module
                           if any(type(m).__name__ in keep_together for m in child.modules())]
    inner = {id(m) for unit in candidates for m in unit.modules() if m is not unit}
    return [unit for unit in candidates if id(unit) not in inner]


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """fully_shard every block unit, then the root, over all processes (in place; returns `model`).

    Parameters move to `device` shard by shard (a full copy never lands on the accelerator). Call it after the
    trainable set and gradient checkpointing are chosen and before the optimizer is built: sharding replaces the
    parameter objects.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("FSDP needs torch.distributed: launch the script with `accelerate launch` or torchrun")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in block_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def has_sharded_parameters(model: nn.Module) -> bool:
    """True when any parameter is a DTensor shard: the module (or a wrapper around it) went through shard_model."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def copy_exported(target: nn.Module, named: Iterable[tuple[str, nn.Parameter]], export: dict[str, torch.Tensor]) -> None:
    """Load what gather_named exported into the same-named parameters of a plain (unsharded) model, on the main
    process, so the recipes save that model: names and shapes must match exactly."""
    named = dict(named)
    if named.keys() != export.keys():
        raise ValueError(f"exported weights do not match the model: missing {sorted(named.keys() - export.keys())[:3]}, "
                         f"unexpected {sorted(export.keys() - named.keys())[:3]}")
    with torch.no_grad():
        for name, parameter in named.items():
            if parameter.shape != export[name].shape:
                raise ValueError(f"{name}: exported shape {tuple(export[name].shape)}, model has {tuple(parameter.shape)}")
            parameter.copy_(export[name])


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip to the global L2 norm over all ranks' shards and return that norm (the same number on every rank)."""
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(total, DTensor):  # a partial norm per shard: all-reduce it before clipping
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)


def gather_full_state(model: nn.Module, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """{name: full CPU tensor} of the trainable parameters and persistent buffers (all parameters with
    trainable_only=False) on rank 0, {} on the other ranks. Collective under FSDP: every rank calls it.
    Without torch.distributed (one process) it returns a detached CPU copy."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return {k: v.detach().cpu() for k, v in get_model_state_dict(model, options=options).items()}


def gather_named(model: nn.Module, named: Iterable[tuple[str, nn.Parameter]]) -> dict[str, torch.Tensor]:
    """Full CPU tensors of the `named` parameters under the caller's names (e.g. the portrait model's
    `named_modulation_parameters()`, trainable or not): rank 0 gets them, the other ranks {}.

    Collective under FSDP: every rank calls it with the same parameters in the same order (one all-gather per
    sharded parameter, so only the named ones travel, never the frozen backbone). Read `named` from the model
    after training: fully_shard replaces the parameter objects, the old ones keep the initial weights."""
    named = list(named)
    live = {id(p) for p in model.parameters()}
    stale = [name for name, p in named if id(p) not in live]
    if stale:  # e.g. read before run_training sharded the model: those objects hold the initial weights
        raise ValueError(f"{len(stale)} parameters are not (or no longer) parameters of {type(model).__name__}, "
                         f"e.g. {stale[:3]}: read them from the model after training (sharding replaces them)")
    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    out = {}
    for name, p in named:
        full = p.full_tensor() if isinstance(p, DTensor) else p
        if main:
            out[name] = full.detach().cpu().clone()
    return out
