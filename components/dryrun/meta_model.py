"""The profile's models at full size on the meta device: shapes and dtypes, no weights, no memory.

The architecture is the checkpoint's own config.json when the profile's pretrained directory exists here (after
the checkpoint checks), else the profile's dims (`expected_transformer_config`). Placement follows a GPU run
(components/model/precision.py): frozen weights in the profile's dtype, trainable ones in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from components.config import Params, PortraitModelConfig
from components.model.adapters import add_lora
from components.model.checkpoint_checks import check_params_checkpoints, expected_transformer_config
from components.model.gate import TimestepLayerGate, activate_experts
from components.model.portrait import PortraitModel
from components.model.precision import place_for_training, torch_dtype
from components.model.vae import resolve_component_dir
from components.train.phases import phase_model_config

META = torch.device("meta")


def transformer_config(params: Params) -> dict:
    path = params.model.backbone.pretrained_path
    if path is not None and Path(path).exists():
        check_params_checkpoints(params)
        root, sub = resolve_component_dir(path, "transformer")
        return json.loads(((root / sub) if sub else root).joinpath("config.json").read_text())
    return expected_transformer_config(params.model.backbone)


def meta_transformer(params: Params, device: torch.device = META) -> WanTransformer3DModel:
    config = {k: v for k, v in transformer_config(params).items() if not k.startswith("_")}
    with device:
        return WanTransformer3DModel.from_config(config)


def meta_vae(params: Params) -> AutoencoderKLWan:
    v = params.vae
    with META:
        vae = AutoencoderKLWan(base_dim=v.base_dim, z_dim=v.z_dim, dim_mult=list(v.dim_mult),
                               num_res_blocks=v.num_res_blocks, temperal_downsample=list(v.temperal_downsample),
                               latents_mean=[0.0] * v.z_dim, latents_std=[1.0] * v.z_dim)
    vae.requires_grad_(False)
    return place_for_training(vae, torch_dtype(v.dtype))


def meta_portrait(params: Params, phase: int, device: torch.device = META) -> PortraitModel:
    """Phase 1: audio modulation trainable; phase 2: skeleton modulation trainable, audio frozen; backbone frozen."""
    cfg: PortraitModelConfig = phase_model_config(params, phase=phase, variant="reshape")
    transformer = meta_transformer(params, device)
    with device:  # the gpu check builds the same model with random weights on the GPU
        model = PortraitModel(cfg, transformer)
    model.freeze_backbone()
    if phase >= 2:
        for name, parameter in model.named_modulation_parameters():
            parameter.requires_grad_(".skeleton" in f".{name}" or name.startswith("motion.skeleton"))
    return place_for_training(model, torch_dtype(params.model.backbone.dtype))


def meta_dpo_model(params: Params, device: torch.device = META) -> PortraitModel:
    """The phase-2 model with the dpo stage's LoRA adapter as its only trainable weights."""
    model = meta_portrait(params, phase=2, device=device)
    with device:
        add_lora(model, params.dpo.lora_rank, params.dpo.lora_alpha, params.dpo.lora_targets)
    return place_for_training(model, torch_dtype(params.model.backbone.dtype))


def meta_tlpo_model(params: Params, experts: list[str]) -> tuple[PortraitModel, TimestepLayerGate]:
    """Frozen experts (one LoRA each, stored in the frozen dtype) and the float32 gate that fuses them."""
    model = meta_portrait(params, phase=2)
    with META:
        for expert in experts:
            add_lora(model, params.tlpo.lora_rank, params.tlpo.lora_alpha, params.tlpo.lora_targets, adapter_name=expert)
        activate_experts(model, experts)
        gate = TimestepLayerGate(model.cfg.backbone.num_layers, experts)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return place_for_training(model, torch_dtype(params.model.backbone.dtype)), gate
