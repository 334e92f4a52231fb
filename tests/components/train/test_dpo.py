"""Flow-DPO: the loss by hand, log 2 at zero adapters, one step moves the policy towards the winner, and the
reference is the same weights with the adapters off (the adapters themselves: tests/components/model/test_adapters.py)."""

from __future__ import annotations

import math

import pytest
import torch

from components.config import AudioModulationConfig, PortraitModelConfig
from components.model.adapters import adapters_disabled, add_lora
from components.model.portrait import PortraitModel
from components.train.dpo import LN2, dpo_step_loss, flow_dpo_loss, pair_velocity_errors

P, Z, T_LAT, H, W, T = 3, 16, 3, 4, 4, 9


def tiny_model() -> PortraitModel:
    torch.manual_seed(0)
    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=8, tokens_per_frame=2))
    model = PortraitModel.from_config(cfg)
    with torch.no_grad():  # a trained-looking audio path (its output projection starts at zero)
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                attn.attn.to_out[0].weight.normal_(0, 0.2)
    return model


def pair_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    winner = torch.randn(P, Z, T_LAT, H, W, generator=g)
    loser = winner + 0.5 * torch.randn(P, Z, T_LAT, H, W, generator=g)
    loser[:, :, :1] = winner[:, :, :1]  # a pair shares its reference frame
    return {
        "winner": winner, "loser": loser,
        "cond": torch.randn(P, Z, T_LAT, H, W, generator=g),  # the window's I2V condition latents, shared by the pair
        "audio": torch.randn(P, T, 2, 8, generator=g),
        "noise": torch.randn(P, Z, T_LAT, H, W, generator=g),
        "sigma": torch.tensor([0.2, 0.5, 0.8]),
    }


TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def test_loss_on_fixed_numbers_matches_the_hand_computation():
    pw, pl = torch.tensor([0.50, 0.30]), torch.tensor([0.70, 0.20])
    rw, rl = torch.tensor([0.40, 0.30]), torch.tensor([0.40, 0.30])
    beta = 10.0
    # pair 1: (0.5-0.4) - (0.7-0.4) = -0.2 -> inside = +2 ; pair 2: (0.3-0.3) - (0.2-0.3) = 0.1 -> inside = -1
    expected = (-math.log(1 / (1 + math.exp(-2.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    loss, stats = flow_dpo_loss(pw, pl, rw, rl, beta)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert stats["implicit_acc"] == pytest.approx(0.5)
    assert stats["reward_margin"] == pytest.approx((0.2 - 0.1) / 2)
    weighted, _ = flow_dpo_loss(pw, pl, rw, rl, beta=5.0, weight=torch.tensor([2.0, 2.0]))
    assert float(weighted) == pytest.approx(expected, rel=1e-6)  # w(t) multiplies beta


def test_pair_weights_and_the_sft_term_by_hand():
    pw, pl = torch.tensor([0.50, 0.30]), torch.tensor([0.70, 0.20])
    rw, rl = torch.tensor([0.40, 0.30]), torch.tensor([0.40, 0.30])
    per_pair = torch.tensor([-math.log(1 / (1 + math.exp(-2.0))), -math.log(1 / (1 + math.exp(1.0)))])
    weighted, _ = flow_dpo_loss(pw, pl, rw, rl, 10.0, pair_weight=torch.tensor([1.5, 0.5]))
    assert float(weighted) == pytest.approx(float((torch.tensor([1.5, 0.5]) * per_pair).mean()), rel=1e-6)
    regularised, _ = flow_dpo_loss(pw, pl, rw, rl, 10.0, sft_weight=0.5)
    assert float(regularised) == pytest.approx(float(per_pair.mean()) + 0.5 * 0.40, rel=1e-6)  # 0.5 x mean err_w


def test_the_step_loss_adds_the_sft_term_and_weights_pairs():
    """At zero adapters: DPO + sft_weight x the policy's winner error; pair weights of mean 1 keep log 2."""
    model = tiny_model()
    add_lora(model, rank=4, alpha=4.0, groups=["attention", "mlp"])
    batch = pair_batch()
    plain, _ = dpo_step_loss(model, batch, TEXT, beta=1.0)
    loss, _ = dpo_step_loss(model, batch, TEXT, beta=1.0, sft_weight=1.0)
    policy_w, _ = pair_velocity_errors(model, batch, TEXT)
    assert float(loss) == pytest.approx(float(plain) + float(policy_w.mean()), rel=1e-5)
    weighted, _ = dpo_step_loss(model, {**batch, "pair_weight": torch.tensor([3.0, 0.0, 0.0])}, TEXT, beta=1.0)
    assert float(weighted) == pytest.approx(LN2, rel=1e-5)  # log 2 per pair at zero adapters, weights of mean 1



def test_the_sft_term_on_real_clips_uses_the_real_latents_under_the_pairs_noise():
    """sft_target="real": the SFT error is the policy's on the window's true clip with the pair's noise and sigma
    (here a clip far from the winner, so the two targets give different losses); without `real` it says so."""
    model = tiny_model()
    add_lora(model, rank=4, alpha=4.0, groups=["attention", "mlp"])
    batch = pair_batch()
    batch["real"] = batch["winner"] + 2.0 * torch.randn(batch["winner"].shape, generator=torch.Generator().manual_seed(9))
    plain, _ = dpo_step_loss(model, batch, TEXT, beta=1.0)
    on_real, stats = dpo_step_loss(model, batch, TEXT, beta=1.0, sft_weight=1.0, sft_target="real")
    on_winners, _ = dpo_step_loss(model, batch, TEXT, beta=1.0, sft_weight=1.0)
    (real_err,) = pair_velocity_errors(model, batch, TEXT, keys=("real",))
    assert float(on_real) == pytest.approx(float(plain) + float(real_err.mean()), rel=1e-5)
    assert stats["policy_err_real"] == pytest.approx(float(real_err.mean()), rel=1e-5)
    assert abs(float(on_real) - float(on_winners)) > 1e-3
    on_real.backward()  # the real-clip term reaches the adapters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    with pytest.raises(KeyError, match="sft_target"):
        dpo_step_loss(model, {k: v for k, v in batch.items() if k != "real"}, TEXT, 1.0, 1.0, "real")

def test_zero_adapters_give_log2_and_half_accuracy():
    model = tiny_model()
    targets = add_lora(model, rank=4, alpha=4, groups=["attention", "mlp", "modulation"])
    assert any("motion_attn" in t for t in targets) and any("ffn" in t for t in targets)
    loss, stats = dpo_step_loss(model, pair_batch(), TEXT, beta=500.0)
    assert float(loss.detach()) == pytest.approx(LN2, abs=1e-6)
    assert stats["implicit_acc"] == 0.5
    assert [n for n, p in model.named_parameters() if p.requires_grad] and all(
        "lora_" in n for n, p in model.named_parameters() if p.requires_grad
    )


def test_one_step_lowers_the_winner_error_relative_to_the_loser():
    model = tiny_model()
    add_lora(model, rank=4, alpha=4, groups=["attention", "modulation"])
    batch = pair_batch(1)
    with torch.no_grad():
        w0, l0 = pair_velocity_errors(model, batch, TEXT)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss, _ = dpo_step_loss(model, batch, TEXT, beta=500.0)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        w1, l1 = pair_velocity_errors(model, batch, TEXT)
    assert float((w1 - l1).mean()) < float((w0 - l0).mean())
    after, stats = dpo_step_loss(model, batch, TEXT, beta=500.0)
    assert float(after.detach()) < LN2 and stats["implicit_acc"] > 0.5


def test_reference_is_the_base_model():
    base = tiny_model()
    batch = pair_batch(2)
    with torch.no_grad():
        base_w, _ = pair_velocity_errors(base, batch, TEXT)
    model = tiny_model()
    add_lora(model, rank=2, alpha=2, groups=["attention"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
        policy_w, _ = pair_velocity_errors(model, batch, TEXT)
        with adapters_disabled(model):
            ref_w, _ = pair_velocity_errors(model, batch, TEXT)
    torch.testing.assert_close(ref_w, base_w)
    assert not torch.allclose(policy_w, base_w)
