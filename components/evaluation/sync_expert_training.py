"""The sync expert behind Sync-C / Sync-D: the official SyncNet weights, or our own one trained here.

With `evaluation.syncnet_weights` there is nothing to train: `train_sync_expert` checks that they load (so a bad
path fails here, not after an hour of generation in evaluate) and records where they are. Otherwise it trains
the SyncNet architecture at sync_expert.width on the training split (contrastive, in-sync vs shifted pairs,
components/evaluation/sync_objective.py) and measures on the validation split how often it finds the true offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from components.config import Params, SyncExpertConfig
from components.evaluation.syncnet import SyncNet, SyncNetSpec
from components.io.atomic import atomic_directory, write_json

if TYPE_CHECKING:
    from components.evaluation.sync_objective import SyncClip


def toy_spec(cfg: SyncExpertConfig) -> SyncNetSpec:
    """Our expert's inputs: grey mouth crops on [-1, 1] and the DCT of the log-mel the shards carry."""
    return SyncNetSpec(width=cfg.width, lip_channels=1, crop_size=cfg.crop_size, crop_scale=cfg.crop_scale,
                       crop_mouth_y=0.5, pixels="unit", mfcc="log_mel")


@dataclass
class SyncExpertRun:
    source: Literal["official", "talkalign"]
    report: dict  # what sync_expert.metrics_path holds
    model: SyncNet | None = None  # ours (None with the official weights)
    meta: dict = field(default_factory=dict)  # saved with our expert; evaluate's report quotes it
    official_weights: str | None = None


def stream_sync_clips(shards: str, split: str, spec: SyncNetSpec, keep_frames: bool) -> Iterator[SyncClip]:
    """The split's clips prepared for the expert (sync_objective.prepare_sync_clips), decoded one at a time.
    Without `keep_frames` a clip keeps only its crops and MFCC (what training pairs are cut from): its decoded
    frames, ~100x larger than the crops, are freed with the clip."""
    from components.data.windows import iter_split
    from components.evaluation.sync_objective import prepare_sync_clips

    for clip in iter_split(shards, split):
        for prepared in prepare_sync_clips([clip], spec):
            yield prepared if keep_frames else replace(prepared, frames=np.zeros((0, *prepared.frames.shape[1:]), np.uint8))


def train_sync_expert(params: Params, log_fn: Callable[[int, dict], None] | None = None) -> SyncExpertRun:
    from components.evaluation.sync_metrics import offset_accuracy
    from components.evaluation.sync_objective import contrastive_loss, sync_batch, validation_videos
    from components.evaluation.syncnet import load_official_syncnet
    from components.train.checkpoint_keys import checkpoint_dir, shards_digest
    from components.train.loop import run_training, sliced
    from components.train.objective import Objective

    cfg = params.sync_expert
    official = params.evaluation.syncnet_weights
    if official:
        load_official_syncnet(official)
        print(f"using the official SyncNet weights at {official}; nothing to train")
        return SyncExpertRun(source="official", report={"source": "official"}, official_weights=official)

    spec = toy_spec(cfg)
    train = list(stream_sync_clips(params.data.shards, "train", spec, keep_frames=False))
    # Validation re-crops from the frames (as evaluation does): the split is streamed again after training, one
    # clip's frames at a time; this first pass only counts the usable clips, so a bad split fails before training.
    n_val = sum(1 for _ in stream_sync_clips(params.data.shards, "val", spec, keep_frames=False))
    if not train or not n_val:
        raise ValueError(f"{params.data.shards}: the sync expert needs training and validation clips with ground-"
                         f"truth mouth boxes (have {len(train)} and {n_val}); give evaluation.syncnet_weights")
    with torch.random.fork_rng():  # the initial weights depend on the config's seed only
        torch.manual_seed(cfg.seed)
        model = SyncNet(spec)
    digest = shards_digest(params.data.shards)
    result = run_training(
        name="sync_expert",
        model=Objective(partial(contrastive_loss, margin=cfg.margin), model),
        trainable=list(model.parameters()),
        batch_fn=sliced(lambda step, micro, rows, g: sync_batch(train, rows, g, cfg.min_shift, cfg.max_shift)),
        cfg=cfg,
        ckpt_dir=checkpoint_dir("sync_expert", cfg.model_dump(), digest),
        log_fn=log_fn,
    )
    model.eval()
    with torch.no_grad():
        val = stream_sync_clips(params.data.shards, "val", spec, keep_frames=True)
        videos = (video for clip in val for video in validation_videos(model, [clip], params.data.frames))
        val_scores = offset_accuracy(model, videos)
    report = {
        **{f"val_{k}": v for k, v in val_scores.items()},
        "val_clips": n_val,
        "train_clips": len(train),
        "final_loss": result.final_loss,
        "train_seconds": result.seconds,
    }
    meta = {**report, "trained_on": "train split", "shards_digest": digest, "segment_frames": params.data.frames}
    print("sync expert on val: " + ", ".join(f"{k}={v:.3f}" for k, v in val_scores.items()))
    return SyncExpertRun(source="talkalign", report=report, model=model, meta=meta)


def write_sync_expert(cfg: SyncExpertConfig, run: SyncExpertRun) -> None:
    """sync_expert.out_dir (our expert, or source.json naming the official weights) and sync_expert.metrics_path."""
    from components.evaluation.syncnet import save_expert

    if run.source == "official":
        with atomic_directory(Path(cfg.out_dir)) as tmp:
            write_json(tmp / "source.json", {"syncnet_weights": run.official_weights})
    else:
        save_expert(cfg.out_dir, run.model, run.meta)
    write_json(cfg.metrics_path, run.report)
