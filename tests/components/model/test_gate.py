"""TLPO fusion: the gate starts uniform and depends on timestep and layer; gating is the weighted sum of the
experts' LoRA updates and is differentiable in the gate."""

from __future__ import annotations

import pytest
import torch

from components.config import AudioModulationConfig, PortraitModelConfig
from components.model.adapters import add_lora, lora_layers
from components.model.flow import add_noise
from components.model.gate import TimestepLayerGate, activate_experts, gated, layer_index, uniform_weights
from components.model.portrait import PortraitModel

EXPERTS = ["lip_sync", "motion", "quality"]
TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def experts_model() -> PortraitModel:
    torch.manual_seed(0)
    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=8, tokens_per_frame=2))
    model = PortraitModel.from_config(cfg)
    for expert in EXPERTS:
        add_lora(model, rank=2, alpha=2, groups=["attention", "modulation"], adapter_name=expert)
    with torch.no_grad():  # trained-looking experts, each different
        for name, p in model.named_parameters():
            if "lora_B" in name or "motion_attn" in name and "to_out" in name:
                p.normal_(0, 0.1)
    activate_experts(model, EXPERTS)
    return model


def velocity(model: PortraitModel) -> torch.Tensor:
    """The model's velocity on two noisy clips at one noise level (sigma 0.4)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 3, 4, 4, generator=g)
    x_t, _ = add_noise(x0, torch.randn(x0.shape, generator=g), torch.tensor([0.4, 0.4]))
    audio = torch.randn(2, 9, 2, 8, generator=g)
    return model(x_t, torch.tensor([400.0, 400.0]), x0, audio, None, TEXT.expand(2, -1, -1))


def scalings(model: PortraitModel) -> dict[str, dict]:
    return {name: dict(m.scaling) for name, m in model.named_modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}


def test_gate_starts_uniform_then_depends_on_timestep_and_layer():
    gate = TimestepLayerGate(n_layers=4, experts=EXPERTS)
    torch.testing.assert_close(gate(torch.tensor(500.0)), uniform_weights(4, EXPERTS))
    with torch.no_grad():
        gate.out.weight.normal_(0, 1.0)
    early, late = gate(torch.tensor(900.0)), gate(torch.tensor(50.0))
    torch.testing.assert_close(early.sum(-1), torch.ones(5))
    assert not torch.allclose(early, late) and not torch.allclose(early[0], early[1])


def test_sigmoid_gate_starts_as_the_sum_and_scales_each_expert_on_its_own():
    torch.manual_seed(0)  # the gate's MLP and layer embedding draw from the global RNG: the test must not depend on order
    gate = TimestepLayerGate(n_layers=4, experts=EXPERTS, activation="sigmoid")
    start = gate(torch.tensor(500.0))
    torch.testing.assert_close(start, uniform_weights(4, EXPERTS, "sigmoid"))
    torch.testing.assert_close(start, torch.ones(5, len(EXPERTS)))  # every expert at full strength: their sum
    with torch.no_grad():
        gate.out.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        gate.out.bias.fill_(3.0)
    weights = gate(torch.tensor(900.0))
    assert bool(((weights > 0) & (weights <= 2)).all())  # 2 sigmoid in (0, 2); float32 rounds a large logit to 2
    assert bool((weights.sum(-1) > 1.5).all())  # not a convex mix: several experts can be strong at once
    with pytest.raises(ValueError, match="must be one of .'softmax', 'sigmoid'."):
        TimestepLayerGate(n_layers=4, experts=EXPERTS, activation="relu")


def test_layer_index_of_module_names():
    assert layer_index("transformer.blocks.3.block.attn1.to_q", 4) == 3
    assert layer_index("motion.audio.project.proj", 4) == 4


def test_activated_experts_are_all_active_and_frozen():
    model = experts_model()
    assert all(sorted(layer.active_adapters) == sorted(EXPERTS) for layer in lora_layers(model))
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_one_hot_gate_equals_that_expert_alone():
    model = experts_model()
    one_hot = torch.zeros(model.cfg.backbone.num_layers + 1, 3)
    one_hot[:, 1] = 1.0
    with torch.no_grad(), gated(model, one_hot, EXPERTS):
        fused = velocity(model)
    for layer in lora_layers(model):
        layer.set_adapter(["motion"])
    with torch.no_grad():
        alone = velocity(model)
    torch.testing.assert_close(fused, alone)


def test_gating_is_differentiable_and_restores_the_scalings():
    model = experts_model()
    gate = TimestepLayerGate(n_layers=model.cfg.backbone.num_layers, experts=EXPERTS)
    with torch.no_grad():
        gate.out.weight.normal_(0, 0.5)
    before = scalings(model)
    with gated(model, gate(torch.tensor(400.0)), EXPERTS):
        out = velocity(model)
    out.pow(2).mean().backward()
    assert gate.out.weight.grad is not None and gate.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)  # experts frozen
    assert scalings(model) == before


def test_a_missing_expert_is_refused_and_leaves_the_scalings():
    model = experts_model()
    before = scalings(model)
    with pytest.raises(ValueError, match="no expert 'style'"):
        with gated(model, uniform_weights(model.cfg.backbone.num_layers, EXPERTS + ["style"]), EXPERTS + ["style"]):
            pass
    assert scalings(model) == before


def test_a_single_expert_is_not_a_fusion():
    with pytest.raises(ValueError, match="at least two"):
        TimestepLayerGate(n_layers=2, experts=["lip_sync"])
