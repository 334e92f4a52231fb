"""LoRA adapters: disabled they give the base model, their weights round-trip, merged they give the adapted
model as plain weights, detached the base weights; unknown target groups are refused."""

from __future__ import annotations

import pytest
import torch

from components.config import AudioModulationConfig, PortraitModelConfig
from components.model.adapters import (
    adapters_disabled,
    add_lora,
    load_lora_state_dict,
    lora_detached,
    lora_layers,
    lora_state_dict,
    merge_lora,
)
from components.model.flow import add_noise, sigma_to_timestep
from components.model.portrait import PortraitModel

B, Z, T_LAT, H, W, T = 3, 16, 3, 4, 4, 9
TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def tiny_model() -> PortraitModel:
    torch.manual_seed(0)
    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=8, tokens_per_frame=2))
    model = PortraitModel.from_config(cfg)
    with torch.no_grad():  # a trained-looking audio path (its output projection starts at zero)
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                attn.attn.to_out[0].weight.normal_(0, 0.2)
    return model


def noisy_inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, Z, T_LAT, H, W, generator=g)
    sigma = torch.tensor([0.2, 0.5, 0.8])
    x_t, _ = add_noise(x0, torch.randn(x0.shape, generator=g), sigma)
    return {"x_t": x_t, "timestep": sigma_to_timestep(sigma), "ref": x0,  # stands in for the I2V condition latents
            "audio": torch.randn(B, T, 2, 8, generator=g)}


@torch.no_grad()
def velocity(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(x["x_t"], x["timestep"], x["ref"], x["audio"], None, TEXT.expand(B, -1, -1))


def randomise_adapters(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


def test_fresh_adapters_are_the_only_trainable_weights_and_change_nothing():
    model = tiny_model()
    x = noisy_inputs(0)
    base = velocity(model, x)
    targets = add_lora(model, rank=4, alpha=4, groups=["attention", "mlp", "modulation"])
    assert any("motion_attn" in t for t in targets) and any("ffn" in t for t in targets)
    assert [n for n, p in model.named_parameters() if p.requires_grad] and all(
        "lora_" in n for n, p in model.named_parameters() if p.requires_grad
    )
    torch.testing.assert_close(velocity(model, x), base)  # B = 0


def test_reference_is_the_base_model_and_adapters_round_trip():
    x = noisy_inputs(2)
    base_v = velocity(tiny_model(), x)
    model = tiny_model()
    add_lora(model, rank=2, alpha=2, groups=["attention"])
    randomise_adapters(model)
    policy_v = velocity(model, x)
    with adapters_disabled(model):
        ref_v = velocity(model, x)
    torch.testing.assert_close(ref_v, base_v)
    assert not torch.allclose(policy_v, base_v)
    torch.testing.assert_close(velocity(model, x), policy_v)  # switched back on after the block

    state = lora_state_dict(model)
    assert state and all("lora_" in k for k in state)
    fresh = tiny_model()
    add_lora(fresh, rank=2, alpha=2, groups=["attention"])
    load_lora_state_dict(fresh, state)
    torch.testing.assert_close(velocity(fresh, x), policy_v)


def test_unknown_target_group_is_refused():
    with pytest.raises(ValueError, match="LoRA target groups"):
        add_lora(tiny_model(), rank=2, alpha=2, groups=["everything"])
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with adapters_disabled(tiny_model()):
            pass


def test_merged_adapters_give_the_policy_as_a_plain_model():
    model = tiny_model()
    add_lora(model, rank=2, alpha=2, groups=["attention", "mlp", "modulation"])
    randomise_adapters(model)
    x, y = noisy_inputs(3), noisy_inputs(4)
    policy_x, policy_y = velocity(model, x), velocity(model, y)
    assert merge_lora(model) > 0 and not lora_layers(model)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(velocity(model, x), policy_x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(velocity(model, y), policy_y, rtol=1e-4, atol=1e-5)


def test_detached_adapters_leave_the_base_weights_and_come_back():
    model = tiny_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, rank=2, alpha=2, groups=["attention", "modulation"])
    randomise_adapters(model)
    x = noisy_inputs(5)
    policy_v = velocity(model, x)
    with lora_detached(model):
        assert not lora_layers(model) and model.state_dict().keys() == base.keys()
        assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
    assert lora_layers(model)
    torch.testing.assert_close(velocity(model, x), policy_v)
