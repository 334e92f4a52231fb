"""The dry run's steps of the two judges: one Talking-Critic pair step and one sync-expert step, on the meta device at
the profile's window, resolution and batch (their inputs are what critic.video_inputs and sync_objective.sync_batch
build from decoded clips). Both train in fp32 (small models; no autocast), one process each."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn as nn

from components.config import DIMENSIONS, Params
from components.dryrun.guard import MetaGuard
from components.dryrun.meta_model import META
from components.dryrun.steps import Shapes, StepMeasure, _measure
from components.evaluation.mouth_reader import GRID
from components.evaluation.sync_expert_training import toy_spec
from components.evaluation.sync_objective import contrastive_loss
from components.evaluation.syncnet import AUDIO_STEPS, N_MFCC, VIDEO_FRAMES, SyncNet
from components.preference.critic import POOL, SIGNALS, TalkingCritic, pair_loss

JUDGE_STAGES = ("critic", "sync_expert")
MOUTH_DIM = 2 * GRID * GRID * 3  # critic.video_inputs: the RGB mouth crop and its change from frame 0


def _saved_bytes(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """Bytes autograd saves for backward in one forward (once per storage, parameters excluded); no checkpointing."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return tensor

    with MetaGuard(autocast=False), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return sum(seen.values()), sum(seen.values())


def _judge(stage: str, model: nn.Module, loss_fn: Callable[[], torch.Tensor], clips: int, shapes: Shapes) -> StepMeasure:
    shapes = dataclasses.replace(shapes, tokens_per_clip=shapes.frames)  # a judge reads frames, not DiT tokens
    measure = _measure(stage, model, list(model.parameters()), loss_fn, False, clips, shapes, False,
                       lambda: _saved_bytes(model, loss_fn))
    return dataclasses.replace(measure, sharded=False)


def critic_step(params: Params) -> StepMeasure:
    """One Bradley-Terry step on critic.batch_size pairs of the profile's windows (both sides in one forward)."""
    shapes, cfg = Shapes.of(params), params.critic
    n, t, mels = cfg.batch_size, shapes.frames, params.ingest.audio.n_mels
    with torch.device(META):
        critic = TalkingCritic(cfg.width, MOUTH_DIM, 4 * mels)
        side = {"mouth": torch.empty(n, t, MOUTH_DIM), "mel": torch.empty(n, t, 4 * mels),
                "frames": torch.zeros(n, t, 3, shapes.height // POOL, shapes.width // POOL, dtype=torch.uint8),
                "signals": torch.empty(n, t, len(SIGNALS))}
        batch = {"dim": torch.zeros(n, dtype=torch.long) % len(DIMENSIONS),
                 **{f"{s}_{k}": v for s in ("w", "l") for k, v in side.items()}}
    return _judge("critic", critic, lambda: pair_loss(critic, batch)[0], 2 * n, shapes)


def sync_expert_step(params: Params) -> StepMeasure:
    """One contrastive step on sync_expert.batch_size (MFCC, 5-frame lip crop) pairs."""
    shapes, cfg = Shapes.of(params), params.sync_expert
    spec = toy_spec(cfg)
    with torch.device(META):
        model = SyncNet(spec)
        batch = {"mfcc": torch.empty(cfg.batch_size, 1, N_MFCC, AUDIO_STEPS),
                 "lips": torch.empty(cfg.batch_size, spec.lip_channels, VIDEO_FRAMES, spec.crop_size, spec.crop_size),
                 "in_sync": torch.empty(cfg.batch_size)}
    return _judge("sync_expert", model, lambda: contrastive_loss(model, batch, cfg.margin)[0], cfg.batch_size, shapes)


def run_judge_stage(params: Params, stage: str) -> StepMeasure:
    return {"critic": critic_step, "sync_expert": sync_expert_step}[stage](params)
