"""One step of every stage on the meta device, measured: FLOPs, saved activations, placement.

Activation memory (per process, one micro-batch) is estimated from what autograd keeps, without running anything:
a forward pass with gradient checkpointing off records every tensor saved for backward
(`torch.autograd.graph.saved_tensors_hooks`, counted once per storage, parameters excluded) and which block it
belongs to. With per-block checkpointing the step then holds the tensors saved outside the blocks, every block's
input (the checkpoint boundaries) and one block's saved tensors during its recompute + backward:
`outside + boundaries + max(block)`. Transient buffers (attention workspaces, gradients in flight) are not in it.
FLOPs are torch.utils.flop_counter's count of the real step (forward, the recompute when checkpointing, backward).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from components.config import DIMENSIONS, Params
from components.dryrun.guard import MetaGuard, guarded
from components.dryrun.meta_model import META, meta_dpo_model, meta_portrait, meta_tlpo_model, meta_vae
from components.model.flow import sample
from components.model.portrait import ModulatedWanBlock, PortraitModel
from components.model.vae import decode_latents, encode_video
from components.train.dpo import dpo_step_loss
from components.train.portrait_objective import flow_loss
from components.train.tlpo import gated_dpo_loss

STAGES = ("phase1", "phase2", "dpo", "tlpo_gate", "sample", "vae")
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + class token (Wan I2V's image context)


@dataclass
class StepMeasure:
    stage: str
    total_params: int
    trainable_params: int
    frozen_bytes: int  # parameter bytes of the frozen weights, in their stored dtypes
    largest_unit_bytes: int  # the biggest FSDP unit (one block with its modulation / adapters), unsharded
    largest_unit_trainable: int  # trainable parameters in that unit (their fp32 gradients are unsharded too)
    flops: int  # one step of this process's micro-batch
    clips: int  # clips in this process's micro-batch (a DPO pair is 2)
    tokens_per_clip: int
    activation_bytes: int  # estimate (module docstring); 0 for no-grad stages
    activation_bytes_no_ckpt: int
    checkpointing: bool
    seconds: float  # wall-clock of the dry step here
    trains: bool = True
    sharded: bool = True  # trained under FSDP over the GPUs; False: one process (the critic, the sync expert)


@dataclass(frozen=True)
class Shapes:
    frames: int
    height: int
    width: int
    latent_frames: int
    latent_h: int
    latent_w: int
    tokens_per_clip: int

    @classmethod
    def of(cls, params: Params) -> Shapes:
        spatial = 2 ** (len(params.vae.dim_mult) - 1)
        side = params.ingest.resolution  # ingest crops square today
        t = 1 + (params.data.frames - 1) // 4
        h = w = side // spatial
        patch = params.model.backbone.patch_size
        return cls(params.data.frames, side, side, t, h, w, (t // patch[0]) * (h // patch[1]) * (w // patch[2]))


class SavedTensorCounter:
    """Bytes autograd saves for backward, once per storage, parameters excluded; attributed to the current block."""

    def __init__(self, model: nn.Module):
        self.exclude = {p.untyped_storage()._cdata for p in model.parameters()}
        self.seen: set[int] = set()
        self.block: int | None = None
        self.outside = 0
        self.per_block: dict[int, int] = {}
        self.boundaries = 0
        self._boundary_seen: set[int] = set()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.seen and key not in self.exclude:
            self.seen.add(key)
            if self.block is None:
                self.outside += storage.nbytes()
            else:
                self.per_block[self.block] = self.per_block.get(self.block, 0) + storage.nbytes()
        return tensor

    def hooks(self, model: nn.Module) -> list:
        handles = []
        for i, block in enumerate(m for m in model.modules() if isinstance(m, ModulatedWanBlock)):
            def enter(_module, args, i=i):
                self.block = i
                key = args[0].untyped_storage()._cdata
                if key not in self._boundary_seen:
                    self._boundary_seen.add(key)
                    self.boundaries += args[0].untyped_storage().nbytes()

            def leave(_module, _args, _out):
                self.block = None

            handles += [block.register_forward_pre_hook(enter), block.register_forward_hook(leave)]
        return handles


def _activations(model: PortraitModel, loss_fn: Callable[[], torch.Tensor], autocast: bool) -> tuple[int, int]:
    """(with per-block checkpointing, without): see the module docstring."""
    was = model.transformer.gradient_checkpointing
    model.disable_gradient_checkpointing()
    counter = SavedTensorCounter(model)
    handles = counter.hooks(model)
    try:
        with MetaGuard(autocast=autocast), torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            loss_fn()
    finally:
        for h in handles:
            h.remove()
        if was:
            model.enable_gradient_checkpointing()
    blocks = sum(counter.per_block.values())
    largest = max(counter.per_block.values(), default=0)
    return counter.outside + counter.boundaries + largest, counter.outside + blocks


def _units(model: nn.Module) -> tuple[int, int]:
    best = (0, 0)
    for block in (m for m in model.modules() if isinstance(m, ModulatedWanBlock)):
        size = sum(p.numel() * p.element_size() for p in block.parameters())
        best = max(best, (size, sum(p.numel() for p in block.parameters() if p.requires_grad)))
    return best


def _measure(stage: str, model: nn.Module, trainable: list[nn.Parameter], step: Callable[[], torch.Tensor | None],
             autocast: bool, clips: int, shapes: Shapes, checkpointing: bool,
             activations: Callable[[], tuple[int, int]] | None) -> StepMeasure:
    t0 = time.perf_counter()
    counter = FlopCounterMode(display=False)
    with guarded(autocast), counter:
        loss = step()
        if loss is not None:
            loss.backward()
    if trainable:  # the optimizer's own step, on the meta states (AdamW fp32 m and v)
        torch.optim.AdamW(trainable, lr=1e-5).step()
    acts = activations() if activations is not None else (0, 0)
    ids = {id(p) for p in trainable}
    params = list(model.parameters())
    unit, unit_trainable = _units(model)
    return StepMeasure(
        stage=stage, total_params=sum(p.numel() for p in params), trainable_params=sum(p.numel() for p in trainable),
        frozen_bytes=sum(p.numel() * p.element_size() for p in params if id(p) not in ids),
        largest_unit_bytes=unit, largest_unit_trainable=unit_trainable, flops=counter.get_total_flops(), clips=clips,
        tokens_per_clip=shapes.tokens_per_clip, activation_bytes=acts[0], activation_bytes_no_ckpt=acts[1],
        checkpointing=checkpointing, seconds=time.perf_counter() - t0, trains=loss is not None,
    )


# ---------------------------------------------------------------- inputs


def _conditions(params: Params, shapes: Shapes, rows: int) -> dict[str, torch.Tensor]:
    audio, skel = params.model.modulation.audio, params.model.modulation.skeleton
    out = {
        "audio": torch.empty(rows, shapes.frames, audio.tokens_per_frame, audio.in_dim, device=META),
        "pose": torch.empty(rows, shapes.frames, skel.n_joints, 3, device=META),
    }
    if params.model.backbone.image_dim:
        out["image_emb"] = torch.empty(rows, IMAGE_TOKENS, params.model.backbone.image_dim, device=META)
    return out


def _latents(params: Params, shapes: Shapes, rows: int) -> torch.Tensor:
    return torch.empty(rows, params.vae.z_dim, shapes.latent_frames, shapes.latent_h, shapes.latent_w, device=META)


def text_embedding(params: Params) -> torch.Tensor:
    """What TextEncoder hands on: [1, max_length, d_model] in float32."""
    return torch.empty(1, params.model.text.max_length, params.model.text.d_model, device=META)


def _micro(batch_size: int, gpus: int) -> int:
    return max(1, batch_size // gpus)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------- the stages


def phase_step(params: Params, phase: int, gpus: int) -> StepMeasure:
    cfg = params.phase1 if phase == 1 else params.phase2
    shapes, rows = Shapes.of(params), _micro(cfg.batch_size, gpus)
    model = meta_portrait(params, phase).train()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    latents = _latents(params, shapes, rows)
    batch = {"latents": latents, "cond": torch.empty_like(latents), "noise": torch.empty_like(latents),
             "sigma": torch.empty(rows, device=META),
             "drop_audio": torch.empty(rows, dtype=torch.bool, device=META),
             "drop_pose": torch.empty(rows, dtype=torch.bool, device=META), **_conditions(params, shapes, rows)}
    text = text_embedding(params)
    autocast = cfg.mixed_precision == "bf16"
    return _measure(f"phase{phase}", model, _trainable(model), lambda: flow_loss(model, batch, text)[0], autocast,
                    rows, shapes, cfg.gradient_checkpointing,
                    lambda: _activations(model, lambda: flow_loss(model, batch, text)[0], autocast))


def _pair_batch(params: Params, shapes: Shapes, pairs: int) -> dict[str, torch.Tensor]:
    winner = _latents(params, shapes, pairs)
    return {"winner": winner, "loser": torch.empty_like(winner), "noise": torch.empty_like(winner),
            "cond": torch.empty_like(winner), "sigma": torch.empty(pairs, device=META), "ref": winner[:, :, :1],
            **_conditions(params, shapes, pairs)}


def dpo_step(params: Params, gpus: int) -> StepMeasure:
    cfg = params.dpo
    shapes, pairs = Shapes.of(params), _micro(cfg.batch_size, gpus)
    model = meta_dpo_model(params).train()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    batch, text = _pair_batch(params, shapes, pairs), text_embedding(params)
    autocast = cfg.mixed_precision == "bf16"
    loss = lambda: dpo_step_loss(model, batch, text, cfg.beta)[0]  # noqa: E731
    return _measure("dpo", model, _trainable(model), loss, autocast, 2 * pairs, shapes, cfg.gradient_checkpointing,
                    lambda: _activations(model, loss, autocast))


def tlpo_gate_step(params: Params, gpus: int) -> StepMeasure:
    cfg = params.tlpo
    shapes, pairs = Shapes.of(params), _micro(cfg.batch_size, gpus)
    model, gate = meta_tlpo_model(params, list(DIMENSIONS))
    model.train()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    batch, text = _pair_batch(params, shapes, pairs), text_embedding(params)
    autocast = cfg.mixed_precision == "bf16"
    loss = lambda: gated_dpo_loss(model, gate, batch, text, cfg.beta)[0]  # noqa: E731
    holder = nn.ModuleDict({"model": model, "gate": gate})
    return _measure("tlpo_gate", holder, list(gate.parameters()), loss, autocast, 2 * pairs, shapes,
                    cfg.gradient_checkpointing, lambda: _activations(model, loss, autocast))


def sample_step(params: Params) -> StepMeasure:
    """One Euler step with audio CFG (2 forwards) of one clip, as candidates / evaluate / animate run it (autocast)."""
    shapes = Shapes.of(params)
    model = meta_portrait(params, phase=2).eval().requires_grad_(False)
    cond = _conditions(params, shapes, 1)
    text = text_embedding(params)
    cond_latents = _latents(params, shapes, 1)  # the I2V condition: normalised VAE latents of [reference, zeros]
    shape = tuple(cond_latents.shape)

    def velocity(latents: torch.Tensor, timestep: torch.Tensor, drop: bool) -> torch.Tensor:
        drop_audio = torch.full((latents.shape[0],), drop, device=latents.device)
        return model(latents, timestep, cond_latents, cond["audio"], cond["pose"], text.to(latents.device), drop_audio=drop_audio,
                     image_emb=cond.get("image_emb"))

    def step() -> None:
        with torch.no_grad():
            sample(velocity, shape, steps=1, shift=params.sampling.shift, guidance=params.sampling.audio_guidance,
                   device=META, noise=torch.empty(shape, device=META))

    return _measure("sample", model, [], step, True, 1, shapes, False, None)


def vae_step(params: Params) -> StepMeasure:
    """Encode one window (the latents stage) and decode its latents (every sampled clip), no grad, no autocast."""
    shapes = Shapes.of(params)
    vae = meta_vae(params)
    frames = torch.empty(1, 3, shapes.frames, shapes.height, shapes.width, device=META)

    def step() -> None:
        with torch.no_grad():
            latents = encode_video(vae, frames)
            decode_latents(vae, latents)

    return _measure("vae", vae, [], step, False, 1, shapes, False, None)


def run_stage(params: Params, stage: str, gpus: int) -> StepMeasure:
    if stage in ("phase1", "phase2"):
        return phase_step(params, int(stage[-1]), gpus)
    runners = {"dpo": lambda: dpo_step(params, gpus), "tlpo_gate": lambda: tlpo_gate_step(params, gpus),
               "sample": lambda: sample_step(params), "vae": lambda: vae_step(params)}
    if stage not in runners:
        raise ValueError(f"unknown dry-run stage {stage!r}; expected some of {list(STAGES)}")
    return runners[stage]()

