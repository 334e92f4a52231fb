"""Training stages as Prefect flows: pretrain_vae -> latents -> pretrain_dit -> phase1 (per variant) -> phase2.

Thin on purpose: load typed params, open the stage's MLflow run, build the model and batches from components,
hand them to `components.train.loop.run_training`, save the result where dvc.yaml expects it.
Checkpoints live in checkpoints/<stage>/<digest of config and inputs>/, so a killed `dvc repro` resumes where
it stopped, while a params change starts a fresh run instead of resuming a stale one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlflow
import torch
import torch.nn as nn
from prefect import flow

from components.config import Params, PortraitModelConfig, load_params
from components.io.atomic import atomic_directory, atomic_file
from components.tracking import is_main_process, stage_run
from flows.logging import log_summary

CHECKPOINTS = Path("checkpoints")
VAE_DIR = Path("models/vae")
BASE_DIR = Path("models/base")


# ----------------------------------------------------------------------------- shared helpers


def checkpoint_dir(stage: str, *parts: Any) -> Path:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return CHECKPOINTS / stage / digest


def files_digest(*paths: Path) -> str:
    """sha256 of the files' bytes, in order (16 hex digits): a checkpoint key that changes with its input files."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def shards_digest(params: Params) -> str:
    index = Path(params.data.shards) / "index.json"
    return json.loads(index.read_text())["digest"] if index.exists() else "unknown"


def mlflow_logger(prefix: str = ""):
    def log(step: int, values: dict[str, float]) -> None:
        mlflow.log_metrics({f"{prefix}{key}": float(value) for key, value in values.items()}, step=step)

    return log


def write_json(path: str | Path, data: dict) -> None:
    text = json.dumps(data, indent=2, default=float)
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def load_vae_for(params: Params):
    """The VAE every DiT stage shares: the pretrained one (wan) or the pretrain_vae stage's output (toy)."""
    from components.model.vae import load_vae

    return load_vae(params.vae.pretrained_path or VAE_DIR).eval().requires_grad_(False)


def text_embedding(model_cfg: PortraitModelConfig, prompt: str) -> torch.Tensor:
    from components.model.portrait import TextEncoder

    with torch.no_grad():
        return TextEncoder(model_cfg.text)([prompt])


def training_tensors(params: Params, split: str) -> dict[str, torch.Tensor]:
    """latents, audio (the configured feature) and pose of every cached window of a split."""
    from components.data.latents import load_latent_cache

    cache = load_latent_cache(Path(params.data.latents_dir) / f"{split}.safetensors")
    audio = cache.audio_mel if params.data.audio_features == "mel" else cache.audio_wav2vec
    return {"latents": cache.latents, "audio": audio, "pose": cache.pose}


class LossModule(nn.Module):
    """Wraps a model so its loss is computed inside forward(): DDP only syncs gradients through forward."""

    def __init__(self, model: nn.Module, loss):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: dict[str, torch.Tensor]):
        return self._loss(self.model, batch)


def train_portrait(stage: str, params: Params, model, cfg, data: dict[str, torch.Tensor]) -> dict:
    """Flow-matching training of a PortraitModel on cached latents; returns the loop's summary."""
    from components.train.loop import run_training, sliced
    from components.train.portrait_objective import flow_loss, global_flow_batch

    text_emb = text_embedding(model.cfg, params.data.prompt)
    wrapped = LossModule(model, lambda m, batch: flow_loss(m, batch, text_emb))
    sample_fn = sample_logger(stage, params, model) if cfg.sample_every else None
    result = run_training(
        name=stage,
        model=wrapped,
        trainable=[p for p in model.parameters() if p.requires_grad],
        batch_fn=sliced(lambda step, micro, rows, g: global_flow_batch(data, cfg, rows, g)),
        loss_fn=lambda m, batch: m(batch),
        cfg=cfg,
        ckpt_dir=checkpoint_dir(stage, cfg.model_dump(), model.cfg.model_dump(), shards_digest(params), params.vae.model_dump()),
        log_fn=mlflow_logger(),
        sample_fn=sample_fn,
    )
    return _training_summary(result)


def sample_logger(stage: str, params: Params, model):
    """sample_fn for the training loop: the first validation window generated now, as an mp4 in MLflow."""
    from components.data.latents import load_latent_cache
    from components.evaluation.generation import generate_test_windows
    from components.io.video import write_video
    from components.model.bundle import BundleMeta, ModelBundle
    from components.model.portrait import TextEncoder

    cache = load_latent_cache(Path(params.data.latents_dir) / "val.safetensors")
    meta = BundleMeta.from_params(params, stage)
    vae = load_vae_for(params)

    def log_sample(_: nn.Module, step: int) -> None:
        bundle = ModelBundle(meta=meta, model=model, vae=vae, text_encoder=TextEncoder(model.cfg.text))
        frames = generate_test_windows(bundle, cache, params.sampling, max_windows=1).frames[0]
        path = CHECKPOINTS / stage / f"sample-step-{step:06d}.mp4"
        write_video(path, frames, fps=params.ingest.fps)
        mlflow.log_artifact(str(path), artifact_path="samples")

    return log_sample


def save_bundle_for(directory: Path, params: Params, model, variant: str, lineage: dict) -> None:
    """Everything `talkalign animate` needs, in one directory (components/model/bundle.py)."""
    from components.model.bundle import BundleMeta, ModelBundle, save_bundle
    from components.model.portrait import TextEncoder

    if not is_main_process():  # one writer per stage output in a distributed launch
        return
    meta = BundleMeta.from_params(params, variant, lineage)
    bundle = ModelBundle(meta=meta, model=model, vae=load_vae_for(params), text_encoder=TextEncoder(model.cfg.text))
    save_bundle(directory, bundle)


# ----------------------------------------------------------------------------- stages


@flow(name="pretrain-vae", log_prints=True)
def pretrain_vae_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Train the toy video VAE on full training windows, then measure per-channel latent statistics."""
    from components.data.windows import load_split, make_windows
    from components.model.vae import build_vae, encode_video, latent_stats, per_frame_init, set_latent_stats
    from components.train.loop import run_training, sliced
    from components.train.vae_objective import reconstruction_report, vae_loss, window_batch

    params = load_params(params_path, overrides)
    cfg = params.pretrain_vae
    with stage_run("pretrain_vae", params, inputs=[params.data.shards]):
        if params.vae.pretrained_path:
            print(f"using the pretrained VAE at {params.vae.pretrained_path}; nothing to train")
            VAE_DIR.mkdir(parents=True, exist_ok=True)
            write_json(VAE_DIR / "source.json", {"pretrained_path": params.vae.pretrained_path})
            return {}
        frames = params.data.frames
        train = [w for c in load_split(params.data.shards, "train") for w in make_windows(c, frames, params.data.window_stride)]
        val = [w for c in load_split(params.data.shards, "val") for w in make_windows(c, frames, frames)]
        vae = build_vae(params.vae)
        if cfg.init == "per_frame":
            per_frame_init(vae)

        def global_batch(step: int, micro: int, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            picks = torch.randint(len(train), (rows,), generator=generator).tolist()
            video, mouth_mask = window_batch([train[i] for i in picks])
            return {"frames": video, "mouth_mask": mouth_mask}

        def image_batch(step: int, micro: int, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            picks = torch.randint(len(train), (rows,), generator=generator).tolist()
            at = torch.randint(frames, (rows,), generator=generator).tolist()
            video, mouth_mask = window_batch([train[i] for i in picks])
            rows_ = torch.arange(rows)
            return {"frames": video[rows_, at][:, None], "mouth_mask": mouth_mask[rows_, at][:, None]}

        wrapped = LossModule(vae, lambda m, batch: vae_loss(m, batch["frames"], batch["mouth_mask"], cfg))

        def train_phase(name: str, batch_fn, phase_cfg, log_prefix: str = ""):
            return run_training(
                name=name,
                model=wrapped,
                trainable=list(vae.parameters()),
                batch_fn=sliced(batch_fn),
                loss_fn=lambda m, batch: m(batch),
                cfg=phase_cfg,
                ckpt_dir=checkpoint_dir(name, phase_cfg.model_dump(), params.vae.model_dump(), shards_digest(params)),
                log_fn=mlflow_logger(log_prefix),
            )

        if cfg.image_steps:
            image_optim = cfg.optim.model_copy(update={"lr": cfg.image_lr or cfg.optim.lr})
            image_cfg = cfg.model_copy(update={"steps": cfg.image_steps, "batch_size": cfg.image_batch_size, "optim": image_optim})
            train_phase("pretrain_vae_image", image_batch, image_cfg, "image.")
        result = train_phase("pretrain_vae", global_batch, cfg)  # its cfg includes image_steps: a new recipe restarts it
        if not is_main_process():  # rank 0 measures, saves and reports; the weights are identical on every rank
            return _training_summary(result)
        vae.eval()
        with torch.no_grad():
            sample = [train[i] for i in range(0, len(train), max(1, len(train) // 64))]
            raw = torch.cat([encode_video(vae, window_batch([w])[0]) for w in sample])  # stats still 0/1 here
        set_latent_stats(vae, *latent_stats(raw))
        _save_diffusers(vae, VAE_DIR)
        report = reconstruction_report(vae, val)
        write_json("reports/pretrain_vae.json", {k: v for k, v in report.items() if not isinstance(v, list)})
        summary = {"train_windows": len(train), "val_windows": len(val), **_training_summary(result), **report}
        return log_summary(summary)


@flow(name="latents", log_prints=True)
def latents_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Encode every window of every split once with the stage VAE; all DiT stages train on this cache."""
    from components.data.latents import encode_windows, save_latent_cache
    from components.data.windows import load_split, make_windows

    params = load_params(params_path, overrides)
    with stage_run("latents", params, section="data", inputs=[params.data.shards, str(VAE_DIR)]):
        vae = load_vae_for(params)
        out_dir = Path(params.data.latents_dir)
        counts = {}
        for split in ("train", "val", "test"):
            stride = params.data.window_stride if split == "train" else params.data.frames
            windows = [w for c in load_split(params.data.shards, split) for w in make_windows(c, params.data.frames, stride)]
            save_latent_cache(out_dir / f"{split}.safetensors", encode_windows(vae, windows, batch_size=8))
            counts[f"windows_{split}"] = len(windows)
        return log_summary(counts)


@flow(name="pretrain-dit", log_prints=True)
def pretrain_dit_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """The base image-to-video DiT (no motion modulation): learns to continue a reference frame."""
    from components.model.portrait import PortraitModel

    params = load_params(params_path, overrides)
    with stage_run("pretrain_dit", params, inputs=[params.data.latents_dir]):
        if params.model.backbone.pretrained_path:
            print(f"using the pretrained backbone at {params.model.backbone.pretrained_path}; nothing to train")
            BASE_DIR.mkdir(parents=True, exist_ok=True)
            write_json(BASE_DIR / "source.json", {"pretrained_path": params.model.backbone.pretrained_path})
            return {}
        cfg = base_model_config(params.model)
        model = PortraitModel.from_config(cfg)
        summary = train_portrait("pretrain_dit", params, model, params.pretrain_dit, training_tensors(params, "train"))
        if is_main_process():
            model.save_pretrained(BASE_DIR)
        return log_summary(summary)


@flow(name="phase1", log_prints=True)
def phase1_flow(params_path: str = "params.yaml", overrides: dict | None = None, variant: str = "reshape") -> dict:
    """Audio modulation only (backbone and VAE frozen), for one temporal variant of the ablation."""
    from components.model.portrait import PortraitModel

    params = load_params(params_path, overrides)
    with stage_run("phase1", params, inputs=[params.data.latents_dir, str(BASE_DIR)], extra_tags={"talkalign.variant": variant}) as run:
        if run is not None:
            mlflow.log_param("variant", variant)
        cfg = phase_model_config(params, phase=1, variant=variant)
        model = PortraitModel.from_config(cfg)
        model.freeze_backbone()
        summary = train_portrait(f"phase1_{variant}", params, model, params.phase1, training_tensors(params, "train"))
        save_bundle_for(Path("models/phase1") / variant, params, model, f"phase1_{variant}", {"stage": "phase1"})
        return log_summary(summary)


@flow(name="phase2", log_prints=True)
def phase2_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Skeleton modulation only, starting from the phase-1 (reshape) model; everything else frozen."""
    from components.model.portrait import PortraitModel

    params = load_params(params_path, overrides)
    phase1_dir = Path("models/phase1/reshape")
    with stage_run("phase2", params, inputs=[params.data.latents_dir, str(phase1_dir)]):
        model = PortraitModel.from_config(phase_model_config(params, phase=2, variant="reshape"))
        new = model.load_modulation(phase1_dir / "modulation.safetensors", allow_missing=True)
        for name, parameter in model.named_modulation_parameters():
            parameter.requires_grad_(name in new)
        model.freeze_backbone()
        summary = train_portrait("phase2", params, model, params.phase2, training_tensors(params, "train"))
        save_bundle_for(Path("models/phase2"), params, model, "phase2", {"stage": "phase2", "from": str(phase1_dir)})
        return log_summary({**summary, "trained_tensors": len(new)})


# ----------------------------------------------------------------------------- model configs per stage


def base_model_config(model: PortraitModelConfig) -> PortraitModelConfig:
    modulation = model.modulation.model_copy(
        update={
            "audio": model.modulation.audio.model_copy(update={"enabled": False}),
            "skeleton": model.modulation.skeleton.model_copy(update={"enabled": False}),
        }
    )
    return model.model_copy(update={"modulation": modulation})


def phase_model_config(params: Params, phase: int, variant: str) -> PortraitModelConfig:
    model = params.model
    backbone_path = model.backbone.pretrained_path or str(BASE_DIR)
    modulation = model.modulation.model_copy(
        update={
            "audio": model.modulation.audio.model_copy(update={"enabled": True, "temporal": variant}),
            "skeleton": model.modulation.skeleton.model_copy(update={"enabled": phase >= 2}),
        }
    )
    backbone = model.backbone.model_copy(update={"pretrained_path": backbone_path})
    return model.model_copy(update={"modulation": modulation, "backbone": backbone})


def _training_summary(result) -> dict:
    return {"final_loss": result.final_loss, "samples_per_s": result.samples_per_s, "seconds": result.seconds}


def _save_diffusers(model, directory: Path) -> None:
    """save_pretrained without ever leaving half a model on disk."""
    with atomic_directory(directory) as tmp:
        model.save_pretrained(tmp)
