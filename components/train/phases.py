"""The recipes of the DiT stages: pretrain_dit (base image-to-video model), phase 1 (audio modulation, one
temporal variant) and phase 2 (skeleton modulation on top of phase 1's reshape model).

A recipe says which model a stage builds, which of its parameters train and on what data; the flow only opens
the stage's run and hands the result to `save_phase_bundle`."""

from __future__ import annotations

from pathlib import Path

import torch

from components.config import FlowTrainConfig, Params, PortraitModelConfig
from components.data.latents import load_latent_cache
from components.model.bundle import BundleMeta, ModelBundle, save_bundle
from components.model.checkpoint_checks import check_params_checkpoints
from components.model.i2v_conditioning import image_encoder_for
from components.model.portrait import PortraitModel
from components.model.precision import place_for_training, torch_dtype
from components.model.text_encoder import TextEncoder
from components.model.vae import load_vae
from components.train.checkpoint_keys import checkpoint_dir, shards_digest
from components.train.loop import TrainResult, run_training, sliced
from components.train.objective import Objective
from components.train.portrait_objective import flow_loss, global_flow_batch


def stage_vae(params: Params):
    """The VAE every DiT stage shares, frozen: the pretrained one (wan, in the profile's dtype) or the pretrain_vae
    stage's output (toy). The profile's checkpoints are checked first: a wrong directory fails here, in one message."""
    check_params_checkpoints(params)
    if params.vae.pretrained_path:
        return load_vae(params.vae.pretrained_path, torch_dtype(params.vae.dtype)).eval().requires_grad_(False)
    return load_vae(params.pretrain_vae.output).eval().requires_grad_(False)


def text_embedding(model_cfg: PortraitModelConfig, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return TextEncoder(model_cfg.text)([prompt])


def training_tensors(params: Params, split: str) -> dict[str, torch.Tensor]:
    """latents, I2V condition (cond latents, CLIP image_emb when cached), audio (the configured feature) and pose of
    every cached window of a split."""
    cache = load_latent_cache(Path(params.data.latents_dir) / f"{split}.safetensors")
    audio = cache.audio_mel if params.data.audio_features == "mel" else cache.audio_wav2vec
    return {"latents": cache.latents, **cache.condition(slice(None)), "audio": audio, "pose": cache.pose}


def base_model_config(model: PortraitModelConfig) -> PortraitModelConfig:
    """pretrain_dit's model: the portrait model without any motion modulation."""
    modulation = model.modulation.model_copy(update={
        "audio": model.modulation.audio.model_copy(update={"enabled": False}),
        "skeleton": model.modulation.skeleton.model_copy(update={"enabled": False}),
    })
    return model.model_copy(update={"modulation": modulation})


def phase_model_config(params: Params, phase: int, variant: str) -> PortraitModelConfig:
    """Phase 1: audio modulation of one temporal variant; phase 2 adds the skeleton. The backbone is the
    pretrained one (wan) or pretrain_dit's output (toy)."""
    model = params.model
    modulation = model.modulation.model_copy(update={
        "audio": model.modulation.audio.model_copy(update={"enabled": True, "temporal": variant}),
        "skeleton": model.modulation.skeleton.model_copy(update={"enabled": phase >= 2}),
    })
    backbone = model.backbone.model_copy(update={"pretrained_path": model.backbone.pretrained_path or params.pretrain_dit.output})
    return model.model_copy(update={"modulation": modulation, "backbone": backbone})


def phase1_model(params: Params, variant: str) -> PortraitModel:
    """Audio modulation trainable, backbone frozen."""
    check_params_checkpoints(params)
    model = PortraitModel.from_config(phase_model_config(params, phase=1, variant=variant))
    model.freeze_backbone()
    return place_for_training(model, torch_dtype(params.model.backbone.dtype))


def phase2_model(params: Params) -> tuple[PortraitModel, int]:
    """Phase 1's reshape model plus skeleton modulation: only the tensors phase 1 did not have train.
    Returns the model and the number of trainable tensors."""
    check_params_checkpoints(params)
    model = PortraitModel.from_config(phase_model_config(params, phase=2, variant="reshape"))
    new = model.load_modulation(Path(params.phase2.base_model) / "modulation.safetensors", allow_missing=True)
    for name, parameter in model.named_modulation_parameters():
        parameter.requires_grad_(name in new)
    model.freeze_backbone()
    return place_for_training(model, torch_dtype(params.model.backbone.dtype)), len(new)


def train_portrait(stage: str, params: Params, model: PortraitModel, cfg: FlowTrainConfig,
                   data: dict[str, torch.Tensor], log_fn=None, sample_fn=None) -> TrainResult:
    """Flow-matching training of a PortraitModel on cached latents, resumable from checkpoints/<stage>/."""
    text_emb = text_embedding(model.cfg, params.data.prompt)
    return run_training(
        name=stage,
        model=Objective(lambda m, batch: flow_loss(m, batch, text_emb), model),
        trainable=[p for p in model.parameters() if p.requires_grad],
        batch_fn=sliced(lambda step, micro, rows, g: global_flow_batch(data, cfg, rows, g)),
        cfg=cfg,
        ckpt_dir=checkpoint_dir(stage, cfg.model_dump(), model.cfg.model_dump(), shards_digest(params.data.shards),
                                params.vae.model_dump()),
        log_fn=log_fn,
        sample_fn=sample_fn if cfg.sample_every else None,
    )


def save_phase_bundle(directory: str | Path, params: Params, model: PortraitModel, variant: str, lineage: dict) -> None:
    """Everything `talkalign animate` needs, in one directory (components/model/bundle.py)."""
    meta = BundleMeta.from_params(params, variant, lineage)
    save_bundle(directory, ModelBundle(meta=meta, model=model, vae=stage_vae(params), text_encoder=TextEncoder(model.cfg.text),
                                       image_encoder=image_encoder_for(model.cfg.backbone, model.cfg.image_encoder)))


def cache_latents(params: Params) -> dict[str, int]:
    """The latents stage: every window of every split encoded once with the stage VAE (the DiT stages, candidates
    and evaluate all read this cache). Returns the number of windows per split."""
    from components.data.latents import save_latent_cache
    from components.data.windows import split_windows
    from components.model.latent_encoding import encode_windows

    vae = stage_vae(params)
    image_encoder = image_encoder_for(params.model.backbone, params.model.image_encoder)  # None: no image tokens
    counts = {}
    for split in ("train", "val", "test"):
        windows = split_windows(params.data.shards, split, params.data.frames, params.data.window_stride)
        save_latent_cache(Path(params.data.latents_dir) / f"{split}.safetensors", encode_windows(vae, windows, 8, image_encoder))
        counts[f"windows_{split}"] = len(windows)
    return counts
