"""Training stages as Prefect flows: pretrain_vae -> latents -> pretrain_dit -> phase1 (per variant) -> phase2.

Each flow: load typed params, open the stage's MLflow run, call the recipe (components/train/vae_pretrain.py,
components/train/phases.py), log, write the outputs dvc.yaml names (their paths are params). Checkpoints live
in checkpoints/<stage>/<digest of config and inputs>/ (components/train/checkpoint_keys.py), so a killed
`dvc repro` resumes where it stopped, while a params change starts a fresh run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from components.config import load_params
from components.io.atomic import write_json
from components.tracking import is_main_process, metrics_logger, stage_run
from flows.logging import log_summary


def _pretrained(path: str, output: str) -> dict:
    """The wan profile brings its weights: the stage output only records where they are."""
    print(f"using the pretrained weights at {path}; nothing to train")
    write_json(Path(output) / "source.json", {"pretrained_path": path})
    return {}


def _samples(stage: str, params, model, cfg):
    """sample_fn for the loop when the stage's cfg asks for samples: mp4s logged to the stage's MLflow run."""
    if not cfg.sample_every or not is_main_process():
        return None
    from components.evaluation.training_samples import sample_writer
    from components.train.checkpoint_keys import CHECKPOINTS

    log_video = lambda path: mlflow.log_artifact(str(path), artifact_path="samples")  # noqa: E731
    return sample_writer(stage, params, model, CHECKPOINTS / stage, log_video)


@flow(name="pretrain-vae", log_prints=True)
def pretrain_vae_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Train the toy video VAE on full training windows, then measure per-channel latent statistics."""
    from components.train.vae_pretrain import pretrain_vae

    params = load_params(params_path, overrides)
    cfg = params.pretrain_vae
    with stage_run("pretrain_vae", params, inputs=[params.data.shards]):
        if params.vae.pretrained_path:
            return _pretrained(params.vae.pretrained_path, cfg.output)
        summary, report = pretrain_vae(params, log_fn_for=metrics_logger, is_main=is_main_process())
        if report:
            write_json(cfg.metrics_path, {k: v for k, v in report.items() if not isinstance(v, list)})
        return log_summary({**summary, **report})


@flow(name="latents", log_prints=True)
def latents_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Encode every window of every split once with the stage VAE; all DiT stages train on this cache."""
    from components.train.phases import cache_latents

    params = load_params(params_path, overrides)
    vae_dir = params.vae.pretrained_path or params.pretrain_vae.output
    with stage_run("latents", params, section="data", inputs=[params.data.shards, vae_dir]):
        return log_summary(cache_latents(params))


@flow(name="pretrain-dit", log_prints=True)
def pretrain_dit_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """The base image-to-video DiT (no motion modulation): learns to continue a reference frame."""
    from components.io.atomic import atomic_directory
    from components.model.portrait import PortraitModel
    from components.train.phases import base_model_config, train_portrait, training_tensors

    params = load_params(params_path, overrides)
    output = params.pretrain_dit.output
    with stage_run("pretrain_dit", params, inputs=[params.data.latents_dir]):
        if params.model.backbone.pretrained_path:
            return _pretrained(params.model.backbone.pretrained_path, output)
        model = PortraitModel.from_config(base_model_config(params.model))
        result = train_portrait("pretrain_dit", params, model, params.pretrain_dit, training_tensors(params, "train"),
                                log_fn=metrics_logger(), sample_fn=_samples("pretrain_dit", params, model, params.pretrain_dit))
        if is_main_process():
            with atomic_directory(output) as tmp:
                model.save_pretrained(tmp)
        return log_summary(result.summary())


@flow(name="phase1", log_prints=True)
def phase1_flow(params_path: str = "params.yaml", overrides: dict | None = None, variant: str = "reshape") -> dict:
    """Audio modulation only (backbone and VAE frozen), for one temporal variant of the ablation."""
    from components.train.phases import phase1_model, save_phase_bundle, train_portrait, training_tensors

    params = load_params(params_path, overrides)
    backbone = params.model.backbone.pretrained_path or params.pretrain_dit.output
    with stage_run("phase1", params, inputs=[params.data.latents_dir, backbone],
                   extra_tags={"talkalign.variant": variant}) as run:
        if run is not None:
            mlflow.log_param("variant", variant)
        stage = f"phase1_{variant}"
        model = phase1_model(params, variant)
        result = train_portrait(stage, params, model, params.phase1, training_tensors(params, "train"),
                                log_fn=metrics_logger(), sample_fn=_samples(stage, params, model, params.phase1))
        if is_main_process():  # one writer per stage output in a distributed launch
            save_phase_bundle(Path(params.phase1.output) / variant, params, model, stage, {"stage": "phase1"}, result.export)
        return log_summary(result.summary())


@flow(name="phase2", log_prints=True)
def phase2_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Skeleton modulation only, starting from the phase-1 (reshape) model; everything else frozen."""
    from components.train.phases import phase2_model, save_phase_bundle, train_portrait, training_tensors

    params = load_params(params_path, overrides)
    base = params.phase2.base_model
    with stage_run("phase2", params, inputs=[params.data.latents_dir, base]):
        model, n_trained = phase2_model(params)
        result = train_portrait("phase2", params, model, params.phase2, training_tensors(params, "train"),
                                log_fn=metrics_logger(), sample_fn=_samples("phase2", params, model, params.phase2))
        if is_main_process():
            save_phase_bundle(params.phase2.output, params, model, "phase2", {"stage": "phase2", "from": base}, result.export)
        return log_summary({**result.summary(), "trained_tensors": n_trained})
