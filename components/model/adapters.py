"""LoRA adapters on a PortraitModel (peft): which layers they wrap, switching them off, their weights, merging.

They are part of a saved model (a DPO export merges them, a TLPO bundle keeps one per expert), so they live
here, below the training code that fits them (train/dpo.py, train/tlpo.py). Adapters start at B = 0: a freshly
adapted model computes exactly what the base model does.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

# LoRA target groups (regexes over PortraitModel's module names, full match as peft applies them).
LORA_TARGETS: dict[str, str] = {
    "attention": r"transformer\.blocks\.\d+\.block\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
    "mlp": r"transformer\.blocks\.\d+\.block\.ffn\.net\.(0\.proj|2)",
    "modulation": r"transformer\.blocks\.\d+\.motion_attn\.\w+\.attn\.(to_q|to_k|to_v|to_out\.0)|motion\.\w+\.project\.proj",
}


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


@contextmanager
def lora_detached(model: nn.Module) -> Iterator[nn.Module]:
    """The model with every LoRA wrapper swapped for its base layer (restored on exit): saves as plain weights.

    Several adapters on one layer share one wrapper, so wrappers never nest."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            swapped.append((parent, child, module))
            setattr(parent, child, module.get_base_layer())
    try:
        yield model
    finally:
        for parent, child, module in reversed(swapped):
            setattr(parent, child, module)


def lora_state_dict(model: nn.Module, adapter_name: str = "dpo") -> dict[str, torch.Tensor]:
    """The adapter's weights only (peft's naming, adapter name stripped): what a checkpoint stores."""
    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], adapter_name: str = "dpo") -> None:
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"LoRA state has keys the model does not: {unexpected[:5]}")


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
    if merged and getattr(model, "backbone_source", None) is not None:
        model.backbone_source = None  # merged weights are no longer the checkpoint's: bundles must copy them
    return merged
