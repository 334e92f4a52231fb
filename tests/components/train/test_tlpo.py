"""TLPO fusion: the gate starts uniform and depends on timestep and layer; gating is the weighted sum of the
experts' LoRA updates and is differentiable in the gate."""

from __future__ import annotations

import pytest
import torch

from components.config import AudioModulationConfig, ModulationConfig, PortraitModelConfig
from components.model.portrait import PortraitModel
from components.train.dpo import add_lora, pair_velocity_errors
from components.train.tlpo import TimestepLayerGate, activate_experts, gated, layer_index, uniform_weights

EXPERTS = ["lip_sync", "motion", "quality"]
TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def experts_model() -> PortraitModel:
    torch.manual_seed(0)
    cfg = PortraitModelConfig(modulation=ModulationConfig(audio=AudioModulationConfig(in_dim=8, tokens_per_frame=2)))
    model = PortraitModel.from_config(cfg)
    for expert in EXPERTS:
        add_lora(model, rank=2, alpha=2, groups=["attention", "modulation"], adapter_name=expert)
    with torch.no_grad():  # trained-looking experts, each different
        for name, p in model.named_parameters():
            if "lora_B" in name or "motion_attn" in name and "to_out" in name:
                p.normal_(0, 0.1)
    activate_experts(model, EXPERTS)
    return model


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 16, 3, 4, 4, generator=g)
    return {"winner": w, "loser": w + 0.3, "audio": torch.randn(2, 9, 2, 8, generator=g),
            "noise": torch.randn(2, 16, 3, 4, 4, generator=g), "sigma": torch.tensor([0.4, 0.4])}


def test_gate_starts_uniform_then_depends_on_timestep_and_layer():
    gate = TimestepLayerGate(n_layers=4, experts=EXPERTS)
    torch.testing.assert_close(gate(torch.tensor(500.0)), uniform_weights(4, EXPERTS))
    with torch.no_grad():
        gate.out.weight.normal_(0, 1.0)
    early, late = gate(torch.tensor(900.0)), gate(torch.tensor(50.0))
    torch.testing.assert_close(early.sum(-1), torch.ones(5))
    assert not torch.allclose(early, late) and not torch.allclose(early[0], early[1])


def test_layer_index_of_module_names():
    assert layer_index("transformer.blocks.3.block.attn1.to_q", 4) == 3
    assert layer_index("motion.audio.project.proj", 4) == 4


def test_one_hot_gate_equals_that_expert_alone():
    model, b = experts_model(), batch()
    one_hot = torch.zeros(model.cfg.backbone.num_layers + 1, 3)
    one_hot[:, 1] = 1.0
    with torch.no_grad(), gated(model, one_hot, EXPERTS):
        fused, _ = pair_velocity_errors(model, b, TEXT)
    for layer in [m for m in model.modules() if hasattr(m, "set_adapter") and hasattr(m, "scaling")]:
        layer.set_adapter(["motion"])
    with torch.no_grad():
        alone, _ = pair_velocity_errors(model, b, TEXT)
    torch.testing.assert_close(fused, alone)


def test_gating_is_differentiable_and_restores_the_scalings():
    model, b = experts_model(), batch()
    gate = TimestepLayerGate(n_layers=model.cfg.backbone.num_layers, experts=EXPERTS)
    with torch.no_grad():
        gate.out.weight.normal_(0, 0.5)
    before = {name: dict(m.scaling) for name, m in model.named_modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}
    with gated(model, gate(torch.tensor(400.0)), EXPERTS):
        err_w, err_l = pair_velocity_errors(model, b, TEXT)
    (err_w - err_l).mean().backward()
    assert gate.out.weight.grad is not None and gate.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)  # experts frozen
    after = {name: dict(m.scaling) for name, m in model.named_modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}
    assert after == before


def test_a_single_expert_is_not_a_fusion():
    with pytest.raises(ValueError, match="at least two"):
        TimestepLayerGate(n_layers=2, experts=["lip_sync"])
