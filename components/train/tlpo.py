"""TLPO (FantasyTalking2) training: one LoRA expert per preference dimension, then the gate that fuses them.

Each expert is a peft LoRA adapter (model/adapters.py) trained with Flow-DPO on its own dimension's pairs
(train/dpo.py), the only active and trainable adapter while it trains. The fusion itself, the
(timestep, layer) gate and `gated`, is part of the saved model (model/gate.py): here it is trained with
Flow-DPO on composite pairs while the experts stay frozen. One gate batch shares one noise level, since the
gate gives one weight per (layer, expert) for one timestep.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from components.model.adapters import adapters_disabled, lora_layers
from components.model.flow import sigma_to_timestep
from components.model.gate import TimestepLayerGate, set_gate_scaling
from components.train.dpo import flow_dpo_loss, pair_velocity_errors


def train_only_expert(model: nn.Module, expert: str) -> list[nn.Parameter]:
    """Expert training: `expert` the only active adapter (the others contribute nothing) and the only trainable
    weights. Returns its parameters."""
    for layer in lora_layers(model):
        layer.set_adapter(expert)
    marks = (f"lora_A.{expert}.", f"lora_B.{expert}.")
    params = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(m in name for m in marks))
        if parameter.requires_grad:
            params.append(parameter)
    return params


def shared_noise_level(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with every pair at the first pair's noise level (the gate gives one weight per layer and expert)."""
    return {**batch, "sigma": batch["sigma"][:1].expand_as(batch["sigma"]).clone()}


def gated_dpo_loss(
    model: nn.Module, gate: TimestepLayerGate, batch: dict[str, torch.Tensor], text_emb: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The gate's objective (train.objective.Objective(gated_dpo_loss..., model, gate=gate)): the frozen experts
    fused by the gate (policy) vs every adapter off (reference), Flow-DPO on one batch that shares one noise level."""
    sigma = batch["sigma"]
    if not bool((sigma == sigma[0]).all()):
        raise ValueError("TLPO gate batches share one noise level (shared_noise_level)")
    text_emb = text_emb.to(sigma.device)
    with torch.no_grad(), adapters_disabled(model):
        ref_w, ref_l = pair_velocity_errors(model, batch, text_emb)
    for name, parameter in model.named_parameters():  # re-enabling the adapters made them trainable
        if "lora_" in name:
            parameter.requires_grad_(False)
    # persistent until the next batch (not `gated`): gradient checkpointing re-runs the blocks in backward
    set_gate_scaling(model, gate(sigma_to_timestep(sigma[0])), gate.experts)
    policy_w, policy_l = pair_velocity_errors(model, batch, text_emb)
    return flow_dpo_loss(policy_w, policy_l, ref_w, ref_l, beta)
