"""The one training loop of every stage (VAE pretrain, DiT pretrain, phase 1/2, DPO, TLPO).

Runs the same on 1 CPU process, 2 CPU processes (`accelerate launch` + gloo) and N GPUs, with DDP or FSDP2
(cfg.parallelism; both tested on 2 gloo processes). A stage supplies an objective (objective.py) and a batch function:

- Batches. `batch_fn(step, micro, rows, generator)` returns this process's rows of the GLOBAL micro-batch
  number `micro` of optimizer step `step`. The global micro-batch has `cfg.batch_size` rows; process r of N owns
  the contiguous rows `rows.start:rows.stop` (= r*B/N : (r+1)*B/N). `generator` is a CPU torch.Generator seeded
  from (cfg.seed, step, micro) only, the same on every process: draw every random quantity (sample choice,
  noise, timesteps, dropout masks) at the global size and keep your rows (`rows.take(x)`, or wrap a function
  that builds the whole global batch with `sliced`). Then the data of a step does not depend on the number of
  processes, and a resumed run sees exactly the batches the interrupted one would have seen (the data position
  is a function of the step). `rows.sample_ids` numbers samples globally across steps, for data that is indexed
  rather than drawn: with it, batch 8 x accum 1 and batch 4 x accum 2 see the same samples.
- Loss. `model(batch) -> (scalar loss, {name: float})` with the batch on the device: the model is an
  `Objective` (or any module with that forward), so the loss is computed inside the prepared (DDP/FSDP) module's
  forward. The loss must be a mean over this process's rows (the gradients are then averaged over processes and
  micro-batches, so a step sees the mean over batch_size * grad_accum samples). Use the batch's random draws,
  not the global RNG, for anything that must match across process counts.
- Optimiser. AdamW over the trainable parameters (cfg.optim), LambdaLR schedule (linear warmup, then constant or
  cosine, stepped once per optimizer step), gradient clipping on the global norm, non-finite gradient norm ->
  FloatingPointError (every process sees the same all-reduced norm, so all stop together).
- Checkpoints every `checkpoint_every` steps and at the last step; a call on a ckpt_dir that holds checkpoints
  resumes from the newest (weights, optimizer, scheduler, RNG, step). 1 process / DDP: the main process writes the
  full state (checkpoint.py); FSDP: every process writes its shards (sharded_checkpoint.py). Either loads into both.
- FSDP (fsdp.py): with cfg.parallelism == "fsdp" (or a launch with accelerate's FSDP config) and more than one
  process, the model is sharded by torch's fully_shard, one unit per transformer block plus the root. On return
  its parameters are shards: export weights through fsdp.gather_named / gather_full_state on every process.
  sample_fn is refused there (it runs on the main process only; a sharded forward needs every process).
- Logging every `log_every` steps and at the last step via log_fn (main process only): loss and the
  objective's metrics averaged over the window's micro-batches and over processes, lr, grad_norm, samples/s, s/step.

The process-level contract: the launched script ends with `end_distributed()` (gloo otherwise sometimes aborts
at exit); run_training itself never tears the process group down, so one process can run several stages.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, extract_model_from_parallel, set_seed
from tqdm.auto import tqdm

from components.config import OptimConfig, TrainLoopConfig
from components.train.checkpoint import (
    CheckpointError,
    clean_partial_checkpoints,
    find_latest_checkpoint,
    gather_training_state,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from components.train.fsdp import clip_grad_norm, has_sharded_parameters, shard_model
from components.train.rng_state import RngState, capture_rng_state, restore_rng_state
from components.train.sharded_checkpoint import load_sharded_checkpoint, save_sharded_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSlice:
    """Which rows of the global micro-batch (step, micro) this process builds."""

    step: int  # optimizer step being computed (0-based; = steps already done)
    micro: int  # micro-batch within the step, 0 .. grad_accum-1
    start: int  # this process's rows [start, stop) of the global micro-batch
    stop: int
    total: int  # rows in the global micro-batch (cfg.batch_size)
    first_sample: int  # running global index of row 0 of this micro-batch: (step * grad_accum + micro) * total

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def sample_ids(self) -> range:
        """Global sample indices of this process's rows; consecutive over micro-batches and steps."""
        return range(self.first_sample + self.start, self.first_sample + self.stop)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor drawn at the global micro-batch size."""
        if x.shape[0] != self.total:
            raise ValueError(f"expected {self.total} rows (the global micro-batch), got shape {tuple(x.shape)}")
        return x[self.start : self.stop]


BatchFn = Callable[[int, int, BatchSlice, torch.Generator], dict[str, torch.Tensor]]
GlobalBatchFn = Callable[[int, int, int, torch.Generator], dict[str, torch.Tensor]]


def sliced(global_fn: GlobalBatchFn) -> BatchFn:
    """A BatchFn from `global_fn(step, micro, total_rows, generator)` that builds the whole global micro-batch.

    Simple and exactly process-count invariant; each process builds all rows and keeps its own, so prefer a
    BatchFn that builds only its rows when loading a batch is expensive.
    """

    def batch_fn(step: int, micro: int, rows: BatchSlice, generator: torch.Generator) -> dict[str, torch.Tensor]:
        full = global_fn(step, micro, rows.total, generator)
        return {k: rows.take(v) if isinstance(v, torch.Tensor) else v for k, v in full.items()}

    return batch_fn


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """The CPU generator handed to batch_fn for (step, micro): a hash of (seed, step, micro), same on every process."""
    state = np.random.SeedSequence([seed, step, micro]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class TrainResult:
    steps_done: int  # optimizer steps run by this call (0 when the checkpoint was already at cfg.steps)
    resumed_from: int | None  # step of the checkpoint resumed from
    final_loss: float  # mean loss of the last logging window (over processes and micro-batches)
    samples_per_s: float  # global samples / seconds spent in training steps (no checkpoint/sample time)
    seconds: float  # wall-clock of the whole call
    history: list[dict] = field(default_factory=list)  # one entry per log: {"step": n, "loss": ..., ...}
    # Under FSDP: the weights a recipe exports, gathered from every rank to full CPU tensors on the main process
    # (fsdp.gather_named; the recipe fills it right after training, every rank taking part). None otherwise.
    export: dict | None = None

    def summary(self) -> dict[str, float]:
        """What a stage reports of its training run."""
        return {"final_loss": self.final_loss, "samples_per_s": self.samples_per_s, "seconds": self.seconds}


# ---------------------------------------------------------------- helpers


def make_accelerator(cfg: TrainLoopConfig, cpu: bool | None = None) -> Accelerator:
    """The Accelerator for a training stage.

    cpu=None picks the CPU when no GPU is visible: that is what makes `accelerate launch` on a CPU box use gloo
    across its processes (without cpu=True / ACCELERATE_USE_CPU each process silently trains alone).
    bf16 autocast only with cfg.mixed_precision == "bf16" and a GPU.
    """
    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    mixed = "bf16" if cfg.mixed_precision == "bf16" and not use_cpu and torch.cuda.is_available() else "no"
    if cfg.mixed_precision == "bf16" and mixed == "no":
        log.info("mixed_precision=bf16 needs a GPU: training in fp32 on the CPU")
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)
    return Accelerator(cpu=use_cpu, mixed_precision=mixed, kwargs_handlers=[ddp])


def end_distributed() -> None:
    """Tear down the process group once, at the end of a launched script (what accelerator.end_training does)."""
    PartialState().destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / torch.compile wrappers."""
    return extract_model_from_parallel(model)


def lr_factor(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Multiplier of optim.lr at optimizer step `step` (0-based)."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    span = max(1, total_steps - optim.warmup_steps - 1)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _check_world(acc: Accelerator) -> None:
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    if acc.num_processes != expected:
        raise RuntimeError(
            f"WORLD_SIZE={expected} but the Accelerator runs {acc.num_processes} process(es): each process would "
            "train alone. On a CPU box pass cpu=True (or set ACCELERATE_USE_CPU=true) so accelerate uses gloo."
        )


def uses_fsdp(cfg: TrainLoopConfig, acc: Accelerator) -> bool:
    """Shard with FSDP2: asked for (cfg.parallelism or accelerate's FSDP launch config) and more than one process."""
    asked = cfg.parallelism == "fsdp" or acc.distributed_type == DistributedType.FSDP
    return asked and acc.num_processes > 1


def _select_trainable(model: nn.Module, trainable: list[nn.Parameter] | None) -> list[str]:
    """Set requires_grad to exactly the trainable set; return the trainable names in model order."""
    named = list(model.named_parameters())
    if trainable is None:
        chosen = {id(p) for _, p in named if p.requires_grad}
    else:
        chosen = {id(p) for p in trainable}
        unknown = chosen - {id(p) for _, p in named}
        if unknown:
            raise ValueError(f"{len(unknown)} of the trainable parameters are not parameters of the model")
    for _, p in named:
        p.requires_grad_(id(p) in chosen)
    names = [n for n, p in named if id(p) in chosen]
    if not names:
        raise ValueError("no trainable parameters: pass `trainable` or set requires_grad on some parameters")
    return names


def _gather_rng(acc: Accelerator) -> list[RngState]:
    """Every process's RngState on every process (tensors only: no pickle between processes)."""
    blob = capture_rng_state().to_bytes()
    if acc.num_processes == 1:
        return [RngState.from_bytes(blob)]
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(acc.device)
    lengths = acc.gather(torch.tensor([data.numel()], device=acc.device)).tolist()
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=acc.device)
    padded[: data.numel()] = data
    everyone = acc.gather(padded).view(acc.num_processes, -1).cpu()
    return [RngState.from_bytes(everyone[r, :n].numpy().tobytes()) for r, n in enumerate(lengths)]


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "steps":
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


# ---------------------------------------------------------------- the loop


def run_training(
    *,
    name: str,
    model: nn.Module,
    trainable: list[nn.Parameter] | None = None,
    batch_fn: BatchFn,
    cfg: TrainLoopConfig,
    ckpt_dir: Path | str,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
    sample_fn: Callable[[nn.Module, int], None] | None = None,
    accelerator: Accelerator | None = None,
    cpu: bool | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` for cfg.steps optimizer steps, resuming from ckpt_dir; see the module docstring.

    `trainable` = the parameters to optimise (None: those with requires_grad); every other parameter is set to
    requires_grad=False and is neither updated nor checkpointed. Every process calls this; log_fn and sample_fn
    run on the main process only (sample_fn(unwrapped_model, step) in eval mode, without grad, and with the
    RNG states saved and restored around it so sampling never changes training). On return the model holds the
    weights of step cfg.steps (also when there was nothing left to train); under FSDP as shards (fsdp.py).
    """
    t_call = time.perf_counter()
    ckpt_dir = Path(ckpt_dir)
    acc = accelerator or make_accelerator(cfg, cpu)
    _check_world(acc)
    if accelerator is not None:
        if acc.gradient_accumulation_steps != 1:
            raise ValueError("pass an Accelerator with gradient_accumulation_steps=1: run_training accumulates")
        if (cfg.mixed_precision == "bf16") != (acc.mixed_precision == "bf16") and torch.cuda.is_available():
            log.warning("%s: mixed_precision=%s in the config, the given Accelerator uses %s (the Accelerator wins)",
                        name, cfg.mixed_precision, acc.mixed_precision)
    fsdp = uses_fsdp(cfg, acc)
    if fsdp and sample_fn is not None and cfg.sample_every:
        raise ValueError(f"{name}: sample_every={cfg.sample_every} with FSDP: sample_fn runs on the main process "
                         "only, and a sharded model's forward needs every process; set sample_every: 0 for this "
                         "stage (sample from the exported model instead)")
    n_proc, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % n_proc:
        raise ValueError(f"{name}: batch_size {cfg.batch_size} (global micro-batch) must divide by the "
                         f"{n_proc} processes")
    rows_per_proc = cfg.batch_size // n_proc

    names = _select_trainable(model, trainable)
    if cfg.gradient_checkpointing:
        if not hasattr(model, "enable_gradient_checkpointing"):
            raise ValueError(f"{name}: gradient_checkpointing=true but {type(model).__name__} has no "
                             "enable_gradient_checkpointing()")
        model.enable_gradient_checkpointing()
    model.train()
    set_seed(cfg.seed, device_specific=True)  # seed + process index: per-process RNG (dropout) differs

    o = cfg.optim
    if has_sharded_parameters(model):
        raise ValueError(f"{name}: this model was already sharded by an earlier FSDP run (fully_shard works in place "
                         "and cannot be applied twice): train each stage on a freshly built model, or use "
                         "parallelism: ddp for a stage that trains one model in several runs (tlpo)")
    if fsdp:  # in place, with new (sharded) parameter objects: before the optimizer. Accelerate then only
        wrapped = shard_model(model, acc.device)  # gives the device, autocast and the collectives
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if not fsdp:
        wrapped, optimizer = acc.prepare(model, optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
    # The scheduler stays ours (not prepared): accelerate's wrapper would step it once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, o, cfg.steps))

    # ---- resume
    if acc.is_main_process:
        for leftover in clean_partial_checkpoints(ckpt_dir):
            log.warning("%s: removed partial checkpoint %s", name, leftover)
    acc.wait_for_everyone()
    start, resumed_from, last_log = 0, None, None
    latest = find_latest_checkpoint(ckpt_dir)
    if latest is not None:
        state = read_checkpoint_state(latest)
        saved_name = state["extra"].get("name")
        if saved_name != name:
            raise CheckpointError(f"{latest}: checkpoint of stage {saved_name!r}, not {name!r}")
        if state["step"] > cfg.steps:
            raise CheckpointError(f"{latest}: checkpoint at step {state['step']} is past steps={cfg.steps}")
        changed = _config_differences(state["extra"].get("config", {}), cfg.model_dump(mode="json"))
        if changed and acc.is_main_process:
            log.warning("%s: resuming with a changed config: %s", name, "; ".join(changed))
        load = load_sharded_checkpoint if state["layout"] == "sharded" else load_checkpoint
        start = resumed_from = load(latest, wrapped, optimizer, scheduler)
        last_log = state["extra"].get("last_log")
        if acc.is_main_process:
            log.info("%s: resumed from %s", name, latest)

    def checkpoint(steps_done: int, last: dict | None) -> None:
        rngs = _gather_rng(acc)
        extra = {"name": name, "config": cfg.model_dump(mode="json"), "last_log": last, "trainable": names}
        if fsdp:  # every process writes its own shards
            save_sharded_checkpoint(ckpt_dir, steps_done, wrapped, optimizer, scheduler.state_dict(), rngs, extra,
                                    keep=cfg.keep_checkpoints, device=acc.device)
        else:
            model_state, optim_state = gather_training_state(wrapped, optimizer)
            if acc.is_main_process:
                save_checkpoint(ckpt_dir, steps_done, model_state, optim_state, scheduler.state_dict(), rngs,
                                extra, keep=cfg.keep_checkpoints)
        acc.wait_for_everyone()

    # ---- train
    history: list[dict] = []
    bar = tqdm(total=cfg.steps, initial=start, desc=name, disable=not (progress and acc.is_main_process),
               dynamic_ncols=True)
    global_per_step = cfg.batch_size * cfg.grad_accum
    train_seconds, window_seconds, window_steps = 0.0, 0.0, 0
    loss_sum = torch.zeros((), device=acc.device)
    metric_sums: dict[str, float] = {}
    n_micro = 0
    grad_norm = float("nan")
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        for micro in range(cfg.grad_accum):
            rows = BatchSlice(step, micro, rank * rows_per_proc, (rank + 1) * rows_per_proc, cfg.batch_size,
                              (step * cfg.grad_accum + micro) * cfg.batch_size)
            batch = batch_fn(step, micro, rows, step_generator(cfg.seed, step, micro))
            batch = {k: v.to(acc.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}
            last_micro = micro == cfg.grad_accum - 1
            if fsdp:  # reduce-scatter once per step, after the last micro-batch
                wrapped.set_requires_gradient_sync(last_micro)
            with nullcontext() if last_micro or fsdp else acc.no_sync(wrapped):
                with acc.autocast():
                    loss, metrics = wrapped(batch)
                if loss.dim() != 0:
                    raise ValueError(f"{name}: the objective must return a scalar loss, got shape {tuple(loss.shape)}")
                acc.backward(loss / cfg.grad_accum)
            loss_sum += loss.detach().float()
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
            n_micro += 1
        max_norm = o.grad_clip if o.grad_clip is not None else float("inf")
        grad_norm = clip_grad_norm(params, max_norm) if fsdp else float(acc.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            raise FloatingPointError(f"{name}: non-finite gradient norm ({grad_norm}) at step {step}; the last "
                                     f"good state is the newest checkpoint in {ckpt_dir}")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds = time.perf_counter() - t0
        train_seconds += step_seconds
        window_seconds += step_seconds
        window_steps += 1
        done = step + 1
        bar.update(1)

        if done % cfg.log_every == 0 or done == cfg.steps:
            keys = sorted(metric_sums)
            packed = torch.stack([loss_sum, torch.tensor(float(n_micro), device=acc.device),
                                  *[torch.tensor(metric_sums[k], device=acc.device) for k in keys]])
            packed = acc.reduce(packed, reduction="sum")  # same keys on every process (same objective)
            count = packed[1].item()
            entry = {"step": done, "loss": packed[0].item() / count}
            entry.update({k: v / count for k, v in zip(keys, packed[2:].tolist())})
            entry.update({"lr": lr, "grad_norm": grad_norm, "samples_per_s": window_steps * global_per_step /
                          window_seconds, "step_s": window_seconds / window_steps})
            history.append(entry)
            last_log = entry
            if acc.is_main_process:
                if log_fn is not None:
                    log_fn(done, {k: v for k, v in entry.items() if k != "step"})
                bar.set_postfix(loss=f"{entry['loss']:.4g}", lr=f"{lr:.2g}")
            loss_sum.zero_()
            metric_sums, n_micro, window_seconds, window_steps = {}, 0, 0.0, 0

        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            checkpoint(done, last_log)

        if sample_fn is not None and cfg.sample_every and done % cfg.sample_every == 0:
            if acc.is_main_process:
                module = unwrap(wrapped)
                rng = capture_rng_state()
                module.eval()
                try:
                    with torch.no_grad():
                        sample_fn(module, done)
                finally:
                    module.train()
                    restore_rng_state(rng)
            acc.wait_for_everyone()
    bar.close()

    steps_done = cfg.steps - start
    return TrainResult(
        steps_done=steps_done,
        resumed_from=resumed_from,
        final_loss=float(last_log["loss"]) if last_log else float("nan"),
        samples_per_s=steps_done * global_per_step / train_seconds if train_seconds else float("nan"),
        seconds=time.perf_counter() - t_call,
        history=history,
    )
