"""Expert models the evaluation needs, as stage flows. Today: the sync expert behind Sync-C / Sync-D.

sync_expert: with `evaluation.syncnet_weights` (the official SyncNet weights) there is nothing to train: the stage
checks that they load and records where they are. Otherwise it trains our SyncNet-architecture expert on the
training split (contrastive, in-sync vs shifted pairs, components/train/sync_objective.py) and measures on the
validation split how often it finds the true audio offset.
"""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import flow

from components.config import SyncExpertConfig, load_params
from components.tracking import stage_run
from flows.logging import log_summary
from flows.train import LossModule, checkpoint_dir, mlflow_logger, shards_digest, write_json


def toy_spec(cfg: SyncExpertConfig):
    """Our expert's inputs: grey mouth crops on [-1, 1] and the DCT of the log-mel the shards carry."""
    from components.evaluation.syncnet import SyncNetSpec

    return SyncNetSpec(width=cfg.width, lip_channels=1, crop_size=cfg.crop_size, crop_scale=cfg.crop_scale,
                       crop_mouth_y=0.5, pixels="unit", mfcc="log_mel")


@flow(name="sync-expert", log_prints=True)
def sync_expert_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.data.windows import load_split
    from components.evaluation.sync_metrics import offset_accuracy
    from components.evaluation.syncnet import SyncNet, load_official_syncnet, save_expert
    from components.io.atomic import atomic_directory
    from components.train.loop import run_training, sliced
    from components.train.sync_objective import contrastive_loss, prepare_sync_clips, sync_batch, validation_videos

    params = load_params(params_path, overrides)
    cfg = params.sync_expert
    with stage_run("sync_expert", params, inputs=[params.data.shards]):
        official = params.evaluation.syncnet_weights
        if official:
            load_official_syncnet(official)  # fail here, not after an hour of generation in evaluate
            print(f"using the official SyncNet weights at {official}; nothing to train")
            with atomic_directory(Path(cfg.out_dir)) as tmp:
                write_json(tmp / "source.json", {"syncnet_weights": official})
            write_json(cfg.metrics_path, {"source": "official"})
            return {}

        spec = toy_spec(cfg)
        train = prepare_sync_clips(load_split(params.data.shards, "train"), spec)
        val = prepare_sync_clips(load_split(params.data.shards, "val"), spec)
        if not train or not val:
            raise ValueError(f"{params.data.shards}: the sync expert needs training and validation clips with ground-"
                             f"truth mouth boxes (have {len(train)} and {len(val)}); give evaluation.syncnet_weights")
        with torch.random.fork_rng():  # the initial weights depend on the config's seed only
            torch.manual_seed(cfg.seed)
            model = SyncNet(spec)
        wrapped = LossModule(model, lambda m, batch: contrastive_loss(m, batch, cfg.margin))
        result = run_training(
            name="sync_expert",
            model=wrapped,
            trainable=list(model.parameters()),
            batch_fn=sliced(lambda step, micro, rows, g: sync_batch(train, rows, g, cfg.min_shift, cfg.max_shift)),
            loss_fn=lambda m, batch: m(batch),
            cfg=cfg,
            ckpt_dir=checkpoint_dir("sync_expert", cfg.model_dump(), shards_digest(params)),
            log_fn=mlflow_logger(),
        )
        model.eval()
        with torch.no_grad():
            val_scores = offset_accuracy(model, validation_videos(model, val, params.data.frames))
        report = {
            **{f"val_{k}": v for k, v in val_scores.items()},
            "val_clips": len(val),
            "train_clips": len(train),
            "final_loss": result.final_loss,
            "train_seconds": result.seconds,
        }
        meta = {**report, "trained_on": "train split", "shards_digest": shards_digest(params), "segment_frames": params.data.frames}
        save_expert(cfg.out_dir, model, meta)
        write_json(cfg.metrics_path, report)
        print("sync expert on val: " + ", ".join(f"{k}={v:.3f}" for k, v in val_scores.items()))
        return log_summary(report)
