"""Flow-DPO (Hallo4 eq. 5) on preference pairs, with peft LoRA adapters (model/adapters.py) as the policy's only
trainable weights.

For a pair (winner x_w, loser x_l) with the same conditions, one noise eps and one noise level sigma are shared:
x_t = (1 - sigma) x0 + sigma eps, target v = eps - x0 (model/flow.py add_noise). With per-sample velocity MSEs
err_* of the policy and ref_* of the reference,

    loss = -log sigmoid(-beta * w(sigma) * [(err_w - ref_w) - (err_l - ref_l)])

Beta convention: beta multiplies the difference of MSE *differences* directly, as Hallo4 eq. 5 writes it. The
Diffusion-DPO reference code (and diffusers' DPO example) puts a 0.5 inside (`-0.5 * beta_dpo * ...`), so its
beta_dpo = 2 * our beta: its default 5000 is our 2500, the value Hallo4 reports.
Weighting: w(sigma) = 1 (`constant`, what Diffusion-DPO uses); the MSE is a mean over every latent element, so
beta does not depend on the clip's size. Two optional terms (0 / off by default, Hallo4 has neither):

    loss = mean_pairs(g_p * -log sigmoid(...)) + sft_weight * mean_pairs(err_w)

g_p: a per-pair weight (the reward gap, normalised to mean 1: VideoDPO; else 1). sft_weight: Reg-DPO's supervised
term, the policy's flow-matching error on the winners, which holds the policy near what it already renders well;
with `sft_target="real"` the error is on the window's real clip instead (same noise and sigma as its pair): the
policy is held near the truth rather than near a generated winner, at one more forward per pair.

The reference costs no second copy of the weights: it is the same model with its adapters disabled
(`adapters_disabled`), run without gradients. Adapters start at B = 0, so at step 0 policy == reference, the
loss is log 2 and the implicit accuracy 0.5 (ties count half).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from components.config import SftTarget
from components.model.adapters import adapters_disabled
from components.model.flow import add_noise, sigma_to_timestep
from components.train.flow_matching import flow_matching_loss

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- the loss


def flow_dpo_loss(
    policy_err_w: torch.Tensor,
    policy_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
    weight: torch.Tensor | float = 1.0,
    pair_weight: torch.Tensor | None = None,
    sft_weight: float = 0.0,
    sft_err: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean Flow-DPO loss over pairs (all inputs [P]) and what to log about it (module docstring: the weights).
    The SFT term is on `sft_err` [P] when given (the real clips' errors), else on the winners' `policy_err_w`.

    implicit_acc: share of pairs whose implicit reward prefers the winner (ties count half);
    reward_margin: mean of -((err_w - ref_w) - (err_l - ref_l)), > 0 when the policy moved towards the winner.
    """
    diff = (policy_err_w - ref_err_w) - (policy_err_l - ref_err_l)
    inside = -beta * weight * diff
    per_pair = -F.logsigmoid(inside)
    loss = (per_pair if pair_weight is None else pair_weight.to(per_pair) * per_pair).mean()
    if sft_weight:
        loss = loss + sft_weight * (policy_err_w if sft_err is None else sft_err).mean()
    with torch.no_grad():
        acc = ((inside > 0).float() + 0.5 * (inside == 0).float()).mean()
        stats = {
            "loss": float(loss),
            "implicit_acc": float(acc),
            "reward_margin": float(-diff.mean()),
            "policy_err_w": float(policy_err_w.mean()),
            "policy_err_l": float(policy_err_l.mean()),
            "ref_err_w": float(ref_err_w.mean()),
            "ref_err_l": float(ref_err_l.mean()),
            **({} if sft_err is None else {"policy_err_real": float(sft_err.mean())}),
        }
    return loss, stats


# ----------------------------------------------------------------------------- one batch of pairs


def pair_velocity_errors(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    text_emb: torch.Tensor,
    keys: tuple[str, ...] = ("winner", "loser"),
) -> tuple[torch.Tensor, ...]:
    """Per-sample velocity MSE ([P] each) of the latents batch[key] for each key (default winners and losers), all
    under the shared noise and sigma of each pair, in one forward.

    batch: `winner`, `loser` latents [P,z,T',h,w] (and `real`, the window's true clip, when loaded), `noise`
    [P,z,T',h,w], `sigma` [P], `audio` [P,...], `pose` [P,...] and the I2V condition both were generated from:
    `cond` [P,z,T',h,w] (the window's condition latents) and, for backbones with image tokens, `image_emb`
    [P,tokens,d]."""
    k, p = len(keys), batch[keys[0]].shape[0]
    x0 = torch.cat([batch[key] for key in keys])
    repeat = lambda t: None if t is None else torch.cat([t] * k)  # noqa: E731
    x_t, target = add_noise(x0, repeat(batch["noise"]), repeat(batch["sigma"]))
    modulation = getattr(model, "module", model).cfg.modulation
    velocity = model(
        x_t,
        timestep=sigma_to_timestep(repeat(batch["sigma"])),
        cond_latents=repeat(batch["cond"]),
        audio_feats=repeat(batch.get("audio")) if modulation.audio.enabled else None,
        pose=repeat(batch.get("pose")) if modulation.skeleton.enabled else None,
        text_emb=text_emb.to(x_t.device).expand(k * p, -1, -1),  # the loop moves only the batch
        image_emb=repeat(batch.get("image_emb")),
    )
    err = flow_matching_loss(velocity, target, reduction="per_sample")
    return tuple(err[i * p : (i + 1) * p] for i in range(k))


def dpo_step_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], text_emb: torch.Tensor, beta: float, sft_weight: float = 0.0,
    sft_target: SftTarget = "winners",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy errors with gradients through the adapters; reference errors with the adapters off, no grad.
    A batch's `pair_weight` [P], when it has one, weights each pair's loss; `sft_target="real"` needs its `real`."""
    on_real = bool(sft_weight) and sft_target == "real"
    if on_real and "real" not in batch:
        raise KeyError("dpo.sft_target is 'real' but the pair batch has no `real` latents (load_pair_tensors(real=True))")
    policy = pair_velocity_errors(model, batch, text_emb, ("winner", "loser", "real") if on_real else ("winner", "loser"))
    with torch.no_grad(), adapters_disabled(getattr(model, "module", model)):
        ref_w, ref_l = pair_velocity_errors(model, batch, text_emb)
    return flow_dpo_loss(policy[0], policy[1], ref_w, ref_l, beta, pair_weight=batch.get("pair_weight"),
                         sft_weight=sft_weight, sft_err=policy[2] if on_real else None)
