"""Resumable training checkpoints: safetensors + JSON only (no pickle, no torch.load), written atomically.

Layout of one checkpoint, `<root>/step-000050/` (50 = optimizer steps done):

    model.safetensors      trainable parameters + persistent buffers, by name (frozen parameters are not saved)
    optimizer.safetensors  every tensor leaf of the optimizer state (exp_avg, exp_avg_sq, step, ...)
    optimizer.json         the rest of the optimizer state (param_groups, python numbers), tensors by reference
    scheduler.json         the LR scheduler's state_dict
    rng.safetensors        per process: torch CPU generator state (+ CUDA generator states)
    rng.json               per process: numpy and python `random` states
    state.json             step, stage name, expected parameter names/shapes, caller's extra (written last)

It is written to `<root>/step-000050.tmp-<random>/` and renamed into place with os.replace, then the text file
`<root>/latest` is replaced atomically with the directory name. A crash at any point leaves either the previous
checkpoints or the new complete one: a directory named `step-NNNNNN` is complete by construction, `*.tmp-*`
leftovers are ignored and removed by `clean_partial_checkpoints`. Old checkpoints are pruned the same way
(renamed to `*.deleting-*` first) so a crash during pruning never leaves a half-deleted `step-*` directory.

The optimizer and model states are gathered with torch.distributed.checkpoint's state_dict helpers, which key the
optimizer state by parameter name and work for a plain module, DDP and FSDP2 alike (collectives under FSDP: every
process calls `gather_training_state` and `load_latest_checkpoint`, only the main process writes). RNG states
come from components.train.rng_state; nested states become tensors + JSON through components.train.state_tree.

This "full" layout serves 1 process and DDP. FSDP runs write the "sharded" layout instead (state.json says which;
components/train/sharded_checkpoint.py): the same directory names, `latest` pointer and JSON files, with
model.safetensors + optimizer.safetensors replaced by `sharded/`, one safetensors file per process. Either layout
loads into any process count.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from accelerate.utils import extract_model_from_parallel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from components.train.rng_state import RngState, restore_rng_state
from components.train.state_tree import flatten_state, unflatten_state

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LATEST_FILE = "latest"
MODEL_FILE = "model.safetensors"
OPTIM_TENSORS_FILE = "optimizer.safetensors"
OPTIM_JSON_FILE = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
RNG_TENSORS_FILE = "rng.safetensors"
RNG_JSON_FILE = "rng.json"
STATE_FILE = "state.json"
CHECKPOINT_FILES = (
    MODEL_FILE, OPTIM_TENSORS_FILE, OPTIM_JSON_FILE, SCHEDULER_FILE, RNG_TENSORS_FILE, RNG_JSON_FILE, STATE_FILE
)
# The sharded layout (sharded_checkpoint.py): DCP's safetensors shards under SHARDED_DIR instead of the two tensor files.
SHARDED_DIR = "sharded"
SHARDED_FILES = (OPTIM_JSON_FILE, SCHEDULER_FILE, RNG_TENSORS_FILE, RNG_JSON_FILE, STATE_FILE)
LAYOUTS = ("full", "sharded")
_COMPLETE = re.compile(r"^step-(\d{6,})$")
_PARTIAL = re.compile(r"^step-\d{6,}\.(tmp|deleting)-[0-9a-f]+$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


# ---------------------------------------------------------------- gathering state from live objects


def _full_options(**extra: bool) -> StateDictOptions:
    # Full (unsharded) tensors on CPU; frozen parameters are skipped, so a frozen 14B backbone costs nothing.
    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True, **extra)


def gather_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(trainable params + persistent buffers by name, optimizer state keyed by parameter name).

    Every process must call it (FSDP all-gathers); under torch.distributed only rank 0 receives the states,
    the other ranks get empty dicts.
    """
    model_state = get_model_state_dict(model, options=_full_options())
    optim_state = get_optimizer_state_dict(model, optimizer, options=_full_options())
    return model_state, optim_state


def expected_model_entries(model: nn.Module) -> dict[str, list[int]]:
    """{name: shape} of what model.safetensors must hold for this model: trainable params + persistent buffers."""
    module = extract_model_from_parallel(model)
    params = dict(module.named_parameters())
    out = {}
    for name, value in module.state_dict(keep_vars=True).items():
        param = params.get(name)
        if param is None or param.requires_grad:  # a buffer, or a trainable parameter
            out[name] = list(value.shape)
    return out


# ---------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_synced(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    # safetensors refuses tensors sharing memory (tied weights, views): give each its own storage.
    seen: set[int] = set()
    own = {}
    for key, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        own[key] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    save_file(own, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    root: str | Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any],
    scheduler_state: Mapping[str, Any],
    rng_states: list[RngState],
    extra: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write `<root>/step-NNNNNN/` atomically, point `<root>/latest` at it, keep the newest `keep` checkpoints.

    Single writer: call it on the main process only, with the states of `gather_training_state` and one
    RngState per process (index = process rank). `extra` must be JSON-able (stage name, config, ...).
    Returns the checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(root, step, uuid.uuid4().hex[:8])
    tmp.mkdir()
    try:
        _save_tensors(tmp / MODEL_FILE, model_state)
        optim_skeleton, optim_tensors = flatten_state(dict(optimizer_state))
        _save_tensors(tmp / OPTIM_TENSORS_FILE, optim_tensors)
        write_json_synced(tmp / OPTIM_JSON_FILE, optim_skeleton)
        write_side_files(tmp, scheduler_state, rng_states)
        state = {
            "format": FORMAT_VERSION,
            "layout": "full",
            "step": step,
            "num_processes": len(rng_states),
            "model_entries": {k: list(v.shape) for k, v in model_state.items()},
            "extra": dict(extra or {}),
        }
        write_json_synced(tmp / STATE_FILE, state)  # last: documents a complete directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_checkpoint(root, tmp, step, keep)


def write_side_files(
    directory: Path, scheduler_state: Mapping[str, Any], rng_states: list[RngState]
) -> None:
    """scheduler.json, rng.safetensors and rng.json: the part both layouts write the same way."""
    sched_skeleton, sched_tensors = flatten_state(dict(scheduler_state))
    if sched_tensors:
        raise TypeError(f"scheduler state holds tensors {list(sched_tensors)}: not supported")
    write_json_synced(directory / SCHEDULER_FILE, sched_skeleton)
    rng_tensors: dict[str, torch.Tensor] = {}
    for rank, rng in enumerate(rng_states):
        rng_tensors.update(rng.to_tensors(prefix=f"rank{rank}/"))
    _save_tensors(directory / RNG_TENSORS_FILE, rng_tensors)
    write_json_synced(directory / RNG_JSON_FILE, [{"numpy": r.numpy, "python": r.python} for r in rng_states])


def partial_name(root: Path, step: int, token: str) -> Path:
    """Where a checkpoint is assembled before `publish_checkpoint` renames it (ignored and cleaned if left over)."""
    return root / f"{checkpoint_name(step)}.tmp-{token}"


def publish_checkpoint(root: Path, tmp: Path, step: int, keep: int | None) -> Path:
    """Rename a fully written `tmp` (state.json last) to `step-NNNNNN`, point `latest` at it, prune to `keep`."""
    final = root / checkpoint_name(step)
    try:
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. a resumed run re-checkpointing it): retire the old copy
            _retire(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(root / LATEST_FILE, final.name + "\n")
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            _retire(old)
    return final


def _retire(path: Path) -> None:
    """Rename out of the `step-*` namespace first (atomic), then delete."""
    trash = path.with_name(f"{path.name}.deleting-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- reading


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _COMPLETE.match(p.name))]
    return [p for _, p in sorted(found)]


def clean_partial_checkpoints(root: str | Path) -> list[Path]:
    """Delete leftovers of interrupted saves/prunes (`*.tmp-*`, `*.deleting-*`); returns what was removed.

    Call it from one process, when no save is running on this root.
    """
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if _PARTIAL.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.name.startswith(f"{LATEST_FILE}.tmp-"):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint. A `step-*` directory only exists once fully written, so the highest one
    wins even if a crash came between its rename and the update of the `latest` pointer."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_checkpoint_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint file: {exc}") from exc


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """state.json of a checkpoint (step, layout, num_processes, model_entries, extra), after checking its files.

    `layout` is "full" (also for checkpoints written before layouts existed) or "sharded"."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {[STATE_FILE]}")
    state = read_checkpoint_json(path / STATE_FILE)
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}")
    state.setdefault("layout", "full")
    if state["layout"] not in LAYOUTS:
        raise CheckpointError(f"{path}: unknown checkpoint layout {state['layout']!r}, expected one of {LAYOUTS}")
    files = CHECKPOINT_FILES if state["layout"] == "full" else SHARDED_FILES
    missing = [name for name in files if not (path / name).is_file()]
    if state["layout"] == "sharded":  # every shard file the writer listed, at its written size
        shards = state.get("shards") or {}
        missing += [f"{SHARDED_DIR}/{name}" for name, size in sorted(shards.items())
                    if not (path / SHARDED_DIR / name).is_file() or (path / SHARDED_DIR / name).stat().st_size != size]
        if not shards:
            missing.append(f"{SHARDED_DIR}/ (no shard files listed in {STATE_FILE})")
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return state


def check_model_entries(path: Path, model: nn.Module) -> None:
    """Raise CheckpointError unless model.safetensors holds exactly the model's trainable params and buffers."""
    try:
        with safe_open(str(path / MODEL_FILE), framework="pt") as f:
            stored = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable: {exc}") from exc
    compare_model_entries(path, stored, model)


def compare_model_entries(path: Path, stored: Mapping[str, list[int]], model: nn.Module) -> None:
    """Raise CheckpointError naming `path` unless `stored` ({name: shape}) is exactly the model's trainable
    params and persistent buffers, at the same (global) shapes."""
    expected = expected_model_entries(model)
    stored = {k: list(v) for k, v in stored.items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    reshaped = sorted(f"{k}: checkpoint {stored[k]} vs model {expected[k]}"
                      for k in set(expected) & set(stored) if stored[k] != expected[k])
    if missing or unexpected or reshaped:
        def head(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        problems = []
        if missing:
            problems.append(f"trainable in the model but not in the checkpoint: {head(missing)}")
        if unexpected:
            problems.append(f"in the checkpoint but not trainable in the model: {head(unexpected)}")
        if reshaped:
            problems.append(f"different shapes: {head(reshaped)}")
        raise CheckpointError(f"{path}: checkpoint does not match the model's trainable parameters; "
                              + "; ".join(problems))


def load_rng_states(path: Path) -> list[RngState]:
    tensors = load_file(str(path / RNG_TENSORS_FILE))
    states = read_checkpoint_json(path / RNG_JSON_FILE)
    return [RngState.from_tensors(tensors, s["numpy"], s["python"], prefix=f"rank{r}/")
            for r, s in enumerate(states)]


def drop_unsaved_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: set[str]) -> None:
    """Loading initialises AdamW state for every parameter (a zero-gradient step); a parameter that had no state
    when saved must have none now, or its first real update would use a different bias correction."""
    for name, param in extract_model_from_parallel(model).named_parameters():
        if param.requires_grad and name not in saved:
            optimizer.state.pop(param, None)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    restore_rng: bool = True,
) -> int:
    """Restore model (trainable part), optimizer, scheduler and this process's RNG from one checkpoint dir.

    Under torch.distributed every process must call it (it is collective): rank 0 reads the tensors and
    broadcasts them. The RNG of rank r is restored only when the checkpoint was saved by as many processes.
    Returns the checkpoint's step.
    """
    path = Path(path)
    state = read_checkpoint_state(path)
    if state["layout"] != "full":
        raise CheckpointError(f"{path}: a {state['layout']} checkpoint: load it with sharded_checkpoint.load_sharded_checkpoint")
    check_model_entries(path, model)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    optim_skeleton = read_checkpoint_json(path / OPTIM_JSON_FILE)
    if rank == 0:
        model_state = load_file(str(path / MODEL_FILE))
        optim_state = unflatten_state(optim_skeleton, load_file(str(path / OPTIM_TENSORS_FILE)))
    else:  # filled by the broadcast from rank 0
        model_state, optim_state = {}, {}
    options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True, broadcast_from_rank0=distributed)
    # Non-strict for the optimizer only: a trainable parameter that never had a gradient yet (e.g. a learned
    # null embedding) has no AdamW state, in the saved run as in the resumed one. Names were checked above.
    optim_options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True,
                                     broadcast_from_rank0=distributed, strict=False)
    try:
        set_model_state_dict(model, model_state, options=options)
        set_optimizer_state_dict(model, optimizer, optim_state, options=optim_options)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: could not load the model/optimizer state: {exc}") from exc
    drop_unsaved_optimizer_state(model, optimizer, set(optim_skeleton.get("state", {})))
    restore_scheduler_and_rng(path, scheduler, rank, world, restore_rng)
    return int(state["step"])


def restore_scheduler_and_rng(path: Path, scheduler, rank: int, world: int, restore_rng: bool) -> None:
    """The last part of loading either layout: the LR scheduler, and this process's RNG states when the checkpoint
    was written by as many processes (otherwise the run is seeded afresh, with a warning)."""
    scheduler.load_state_dict(unflatten_state(read_checkpoint_json(path / SCHEDULER_FILE), {}))
    if not restore_rng:
        return
    rngs = load_rng_states(path)
    if len(rngs) == world:
        restore_rng_state(rngs[rank])
    else:
        log.warning("%s: saved by %d processes, loading into %d: RNG states not restored (seeded afresh)",
                    path, len(rngs), world)


def load_latest_checkpoint(
    root: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    restore_rng: bool = True,
) -> int | None:
    """Restore the newest complete checkpoint under root; returns its step, or None when there is none.

    Partial checkpoints (`*.tmp-*`) are ignored; remove them with clean_partial_checkpoints.
    """
    latest = find_latest_checkpoint(root)
    if latest is None:
        return None
    return load_checkpoint(latest, model, optimizer, scheduler, restore_rng=restore_rng)
