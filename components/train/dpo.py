"""Flow-DPO (Hallo4 eq. 5) on preference pairs, with peft LoRA adapters as the policy's only trainable weights.

For a pair (winner x_w, loser x_l) with the same conditions, one noise eps and one noise level sigma are shared:
x_t = (1 - sigma) x0 + sigma eps, target v = eps - x0 (flow_matching.add_noise). With per-sample velocity MSEs
err_* of the policy and ref_* of the reference,

    loss = -log sigmoid(-beta * w(sigma) * [(err_w - ref_w) - (err_l - ref_l)])

Beta convention: beta multiplies the difference of MSE *differences* directly, as Hallo4 eq. 5 writes it. The
Diffusion-DPO reference code (and diffusers' DPO example) puts a 0.5 inside (`-0.5 * beta_dpo * ...`), so its
beta_dpo = 2 * our beta: its default 5000 is our 2500, the value Hallo4 reports.
Weighting: w(sigma) = 1 (`constant`, what Diffusion-DPO uses); the MSE is a mean over every latent element, so
beta does not depend on the clip's size.

The reference costs no second copy of the weights: it is the same model with its adapters disabled
(`adapters_disabled`), run without gradients. Adapters start at B = 0, so at step 0 policy == reference, the
loss is log 2 and the implicit accuracy 0.5 (ties count half).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from components.train.flow_matching import add_noise, flow_matching_loss, sigma_to_timestep

# LoRA target groups (regexes over PortraitModel's module names, full match as peft applies them).
LORA_TARGETS: dict[str, str] = {
    "attention": r"transformer\.blocks\.\d+\.block\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
    "mlp": r"transformer\.blocks\.\d+\.block\.ffn\.net\.(0\.proj|2)",
    "modulation": r"transformer\.blocks\.\d+\.motion_attn\.\w+\.attn\.(to_q|to_k|to_v|to_out\.0)|motion\.\w+\.project\.proj",
}
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- the loss


def flow_dpo_loss(
    policy_err_w: torch.Tensor,
    policy_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
    weight: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean Flow-DPO loss over pairs (all inputs [P]) and what to log about it.

    implicit_acc: share of pairs whose implicit reward prefers the winner (ties count half);
    reward_margin: mean of -((err_w - ref_w) - (err_l - ref_l)), > 0 when the policy moved towards the winner.
    """
    diff = (policy_err_w - ref_err_w) - (policy_err_l - ref_err_l)
    inside = -beta * weight * diff
    loss = -F.logsigmoid(inside).mean()
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
        }
    return loss, stats


# ----------------------------------------------------------------------------- adapters


def lora_target_regex(groups: Sequence[str]) -> str:
    unknown = sorted(set(groups) - set(LORA_TARGETS))
    if unknown or not groups:
        raise ValueError(f"LoRA target groups must be a non-empty subset of {sorted(LORA_TARGETS)}, got {list(groups)}")
    return "|".join(f"(?:{LORA_TARGETS[g]})" for g in groups)


def add_lora(model: nn.Module, rank: int, alpha: float, groups: Sequence[str], adapter_name: str = "dpo") -> list[str]:
    """Inject a LoRA adapter (B = 0: the model's output is unchanged) and make it the only trainable weights.

    Returns the names of the adapted modules."""
    regex = lora_target_regex(groups)
    targets = [  # plain Linear layers, or layers that already carry another adapter (TLPO's experts)
        name for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, BaseTunerLayer)) and re.fullmatch(regex, name)
    ]
    if not targets:
        raise ValueError(f"no module of {type(model).__name__} matches the LoRA targets {list(groups)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=regex, lora_dropout=0.0, init_lora_weights=True)
    with warnings.catch_warnings():
        # TLPO puts one adapter per expert on the same layers on purpose; peft warns at every adapter after the first
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(f"lora_A.{adapter_name}." in name or f"lora_B.{adapter_name}." in name)
    return targets


def lora_layers(model: nn.Module) -> list[BaseTunerLayer]:
    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The reference policy: the same weights, every adapter off (restored on exit, even after an error)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters: the reference would equal the policy")
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def lora_state_dict(model: nn.Module, adapter_name: str = "dpo") -> dict[str, torch.Tensor]:
    """The adapter's weights only (peft's naming, adapter name stripped): what a checkpoint stores."""
    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], adapter_name: str = "dpo") -> None:
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"LoRA state has keys the model does not: {unexpected[:5]}")


# ----------------------------------------------------------------------------- one batch of pairs


def pair_velocity_errors(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    text_emb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample velocity MSE on winners and losers ([P] each) under the shared noise and sigma of each pair.

    batch: `winner`, `loser` latents [P,z,T',h,w], `noise` [P,z,T',h,w], `sigma` [P], `audio` [P,...], `pose`
    [P,...] and optionally `ref` [P,z,1,h,w], the reference-frame latent both were generated from (default:
    the winner's latent frame 0)."""
    winner, loser = batch["winner"], batch["loser"]
    p = winner.shape[0]
    x0 = torch.cat([winner, loser])
    noise = torch.cat([batch["noise"], batch["noise"]])
    sigma = torch.cat([batch["sigma"], batch["sigma"]])
    x_t, target = add_noise(x0, noise, sigma)
    modulation = getattr(model, "module", model).cfg.modulation
    twice = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
    velocity = model(
        x_t,
        timestep=sigma_to_timestep(sigma),
        ref_latents=twice(batch.get("ref", winner[:, :, :1])),
        audio_feats=twice(batch.get("audio")) if modulation.audio.enabled else None,
        pose=twice(batch.get("pose")) if modulation.skeleton.enabled else None,
        text_emb=text_emb.expand(2 * p, -1, -1),
    )
    err = flow_matching_loss(velocity, target, reduction="per_sample")
    return err[:p], err[p:]


def dpo_step_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], text_emb: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy errors with gradients through the adapters; reference errors with the adapters off, no grad."""
    policy_w, policy_l = pair_velocity_errors(model, batch, text_emb)
    with torch.no_grad(), adapters_disabled(getattr(model, "module", model)):
        ref_w, ref_l = pair_velocity_errors(model, batch, text_emb)
    return flow_dpo_loss(policy_w, policy_l, ref_w, ref_l, beta)


def merge_lora(model: nn.Module) -> int:
    """Fold the active adapters into the base weights and drop the LoRA wrappers: a plain model again, which saves
    and loads like any other (the DPO variant exports as merged weights). Returns the number of merged layers."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged += 1
    if hasattr(model, "peft_config"):
        del model.peft_config
    return merged
