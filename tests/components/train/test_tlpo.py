"""TLPO training: an expert trains alone, gate batches share one noise level, and the gate's policy starts at
the uniform fusion (Flow-DPO against every adapter off) and sends gradients to the gate only."""

from __future__ import annotations

import pytest
import torch

from components.config import AudioModulationConfig, PortraitModelConfig
from components.model.adapters import adapters_disabled, add_lora, lora_layers
from components.model.gate import TimestepLayerGate, activate_experts, gated, uniform_weights
from components.model.portrait import PortraitModel
from components.train.dpo import flow_dpo_loss, pair_velocity_errors
from components.train.objective import Objective
from components.train.tlpo import gated_dpo_loss, shared_noise_level, train_only_expert

EXPERTS = ["lip_sync", "motion"]
TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def experts_model() -> PortraitModel:
    torch.manual_seed(0)
    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=8, tokens_per_frame=2))
    model = PortraitModel.from_config(cfg)
    for expert in EXPERTS:
        add_lora(model, rank=2, alpha=2, groups=["attention"], adapter_name=expert)
    return model


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 16, 3, 4, 4, generator=g)
    return {"winner": w, "loser": w + 0.3, "cond": w.flip(2), "audio": torch.randn(2, 9, 2, 8, generator=g),
            "noise": torch.randn(2, 16, 3, 4, 4, generator=g), "sigma": torch.tensor([0.4, 0.7])}


def test_an_expert_trains_alone():
    model = experts_model()
    params = train_only_expert(model, "motion")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert params and len(params) == len(names) and all(".motion." in n for n in names)
    assert all(layer.active_adapters == ["motion"] for layer in lora_layers(model))


def test_gate_batches_share_the_first_noise_level():
    b = batch()
    shared = shared_noise_level(b)
    assert shared["sigma"].tolist() == pytest.approx([0.4, 0.4]) and b["sigma"].tolist() == pytest.approx([0.4, 0.7])
    assert shared["winner"] is b["winner"]


def test_gated_policy_starts_as_the_uniform_fusion_and_trains_only_the_gate():
    model = experts_model()
    with torch.no_grad():  # trained-looking experts
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    activate_experts(model, EXPERTS)
    gate = TimestepLayerGate(model.cfg.backbone.num_layers, EXPERTS)
    policy = Objective(lambda m, g, b: gated_dpo_loss(m, g, b, TEXT, 500.0), model, gate=gate)
    with pytest.raises(ValueError, match="share one noise level"):
        policy(batch())
    b = shared_noise_level(batch())
    with torch.no_grad():
        with adapters_disabled(model):
            ref_w, ref_l = pair_velocity_errors(model, b, TEXT)
        with gated(model, uniform_weights(model.cfg.backbone.num_layers, EXPERTS), EXPERTS):
            uni_w, uni_l = pair_velocity_errors(model, b, TEXT)
    expected, _ = flow_dpo_loss(uni_w, uni_l, ref_w, ref_l, beta=500.0)
    loss, stats = policy(b)
    torch.testing.assert_close(loss.detach(), expected)
    assert stats["loss"] == pytest.approx(float(expected)) and not torch.allclose(uni_w, ref_w)
    loss.backward()
    assert gate.out.weight.grad is not None and gate.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)  # experts frozen
    assert "gate.out.weight" in dict(policy.named_parameters())  # a submodule: DDP syncs it
