"""The recipes of the DiT stages: pretrain_dit (base image-to-video model), phase 1 (audio modulation, one
temporal variant) and phase 2 (skeleton modulation on top of phase 1's reshape model).

A recipe says which model a stage builds, which of its parameters train and on what data; the flow only opens
the stage's run and hands the result to `save_phase_bundle`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from components.config import FlowTrainConfig, Params, PortraitModelConfig
from components.data.latents import LatentColumn, LatentSplit, latent_split_dir
from components.model.bundle import BundleMeta, ModelBundle, save_bundle
from components.model.checkpoint_checks import check_params_checkpoints
from components.model.device import stage_device
from components.model.i2v_conditioning import image_encoder_for
from components.model.portrait import PortraitModel
from components.model.precision import place_for_training, torch_dtype
from components.model.pretrained_refs import checkpoint_sources
from components.model.text_encoder import TextEncoder
from components.model.vae import load_vae
from components.train.checkpoint_keys import checkpoint_dir, shards_digest
from components.train.fsdp import copy_exported, gather_named, has_sharded_parameters
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


def training_tensors(params: Params, split: str) -> dict[str, LatentColumn]:
    """latents, I2V condition (cond latents, CLIP image_emb when cached), audio (the configured feature) and pose of
    every cached window of a split, as columns of the cache on disk: indexing one (`data["latents"][index]`, as
    global_flow_batch does) reads only those rows, so a step holds its batch, never the split."""
    cache = LatentSplit(latent_split_dir(params.data.latents_dir, split))
    names = {"latents": "latents", "cond": "cond_latents", "image_emb": "image_emb", "pose": "pose",
             "audio": "audio_mel" if params.data.audio_features == "mel" else "audio_wav2vec"}
    return {key: cache.column(name) for key, name in names.items() if name in cache.names}


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
                   data: Mapping[str, torch.Tensor | LatentColumn], log_fn=None, sample_fn=None) -> TrainResult:
    """Flow-matching training of a PortraitModel on cached latents (`training_tensors`: each step reads the rows
    its batch draws), resumable from checkpoints/<stage>/."""
    text_emb = text_embedding(model.cfg, params.data.prompt)
    result = run_training(
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
    if has_sharded_parameters(model):  # FSDP: every rank takes part in gathering what the bundle needs
        result.export = gather_named(model, model.named_modulation_parameters())
    return result


def save_phase_bundle(directory: str | Path, params: Params, model: PortraitModel, variant: str, lineage: dict,
                      export: dict[str, torch.Tensor] | None = None) -> None:
    """Everything `talkalign animate` needs, in one directory (components/model/bundle.py). Main process only.

    `export`: the modulation weights train_portrait gathered after FSDP training (TrainResult.export); the bundle is
    then saved from a plain model of the same config holding them, since the trained model's weights are shards."""
    if export is not None:
        plain = PortraitModel.from_config(model.cfg)
        copy_exported(plain, plain.named_modulation_parameters(), export)
        model = plain
    meta = BundleMeta.from_params(params, variant, lineage)
    image_cfg = model.cfg.image_encoder
    sources = checkpoint_sources(params.vae.pretrained_path, model.cfg.text.pretrained_path,
                                 image_cfg.pretrained_path if image_cfg is not None else None)
    save_bundle(directory, ModelBundle(meta=meta, model=model, vae=stage_vae(params), text_encoder=TextEncoder(model.cfg.text),
                                       image_encoder=image_encoder_for(model.cfg.backbone, image_cfg), sources=sources))


def cache_latents(params: Params) -> dict[str, int]:
    """The latents stage: every window of every split encoded once with the stage VAE (the DiT stages, candidates
    and evaluate all read this cache), streamed: one clip decoded and one part of the cache in memory at a time.
    Returns the number of windows per split."""
    from components.data.windows import iter_windows
    from components.model.latent_encoding import encode_split

    device = stage_device()  # frames stream from the shards on the CPU; the VAE and CLIP compute here
    vae = stage_vae(params).to(device)
    image_encoder = image_encoder_for(params.model.backbone, params.model.image_encoder)  # None: no image tokens
    if image_encoder is not None:
        image_encoder.to(device)
    counts = {}
    for split in ("train", "val", "test"):
        windows = iter_windows(params.data.shards, split, params.data.frames, params.data.window_stride)
        directory = latent_split_dir(params.data.latents_dir, split)
        counts[f"windows_{split}"] = encode_split(vae, windows, directory, 8, image_encoder)
    return counts
