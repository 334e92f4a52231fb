"""Sharded training checkpoints for FSDP runs: every process writes its own shards, no full copy is ever gathered.

Layout of `<root>/step-000050/` (the same directory names, `latest` pointer, pruning and JSON files as the full
layout of checkpoint.py; state.json says `"layout": "sharded"`):

    sharded/shard-0000R-model-00001-of-00001.safetensors   process R-1's shards of the trainable parameters,
                                                            persistent buffers and optimizer tensors
    optimizer.json   the optimizer state's skeleton (param_groups, python numbers), tensors by reference
    scheduler.json, rng.safetensors, rng.json             as in the full layout (main process)
    state.json       step, layout, num_processes, model_entries (global shapes), shards {file: bytes}, extra

The shards are written by torch.distributed.checkpoint (DCP) with its safetensors storage (`HuggingFaceStorage
Writer`, save_distributed=True): each file is a plain safetensors file whose header records where each chunk
sits in the global tensor. No pickle anywhere: DCP's default FileSystemWriter pickles its `.metadata` file and
torch.save()s every non-tensor value, and its reader unpickles both; the safetensors storage has no `.metadata`
file (the reader rebuilds the index from the safetensors headers) and we hand DCP tensors only (the optimizer's
non-tensor state goes to optimizer.json through state_tree). Loading reshards: a checkpoint written by N
processes loads into M processes, FSDP or not.

Atomic like the full layout: everything goes to `step-NNNNNN.tmp-<token>/` (token chosen by rank 0 and
broadcast), all ranks write their shards, a barrier, then rank 0 writes the JSON files (state.json last) and
renames the directory into place. The shard files and their sizes are listed in state.json, so a missing or
truncated shard is an incomplete checkpoint, never a silently partial load. The checkpoint directory must be on
a filesystem every process sees (one node, or a shared mount on a cluster).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from components.train import checkpoint as ckpt
from components.train.checkpoint import (
    FORMAT_VERSION,
    OPTIM_JSON_FILE,
    SHARDED_DIR,
    STATE_FILE,
    CheckpointError,
    compare_model_entries,
    drop_unsaved_optimizer_state,
)
from components.train.rng_state import RngState
from components.train.state_tree import flatten_state, unflatten_state

log = logging.getLogger(__name__)

MODEL_PREFIX, OPTIM_PREFIX = "model/", "optim/"


def _world() -> tuple[bool, int, int]:
    distributed = dist.is_available() and dist.is_initialized()
    return distributed, (dist.get_rank() if distributed else 0), (dist.get_world_size() if distributed else 1)


def _barrier() -> None:
    if _world()[0]:
        dist.barrier()


def _shared_token(device: torch.device) -> str:
    """A random hex token chosen by rank 0, the same on every rank (a tensor broadcast: no pickle)."""
    distributed, rank, _ = _world()
    value = torch.tensor([uuid.uuid4().int & 0x7FFFFFFF if rank == 0 else 0], dtype=torch.int64, device=device)
    if distributed:
        dist.broadcast(value, src=0)
    return f"{int(value.item()):08x}"


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state) as this process holds them: DTensor shards under FSDP, frozen params left out.
    Initialises the optimizer state (a zero-gradient step at lr 0) if it has none yet."""
    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def _leaf(tree: Any, key: str) -> Any:
    """The node at a flatten_state key ("state/<fqn>/exp_avg", "param_groups/0/lr"): fqns never hold "/"."""
    node = tree
    for part in key.split("/"):
        node = node[int(part)] if isinstance(node, (list, tuple)) or part not in node else node[part]
    return node


def _flat_tensors(model_state: Mapping[str, torch.Tensor], optim_state: Mapping[str, Any]) -> tuple[Any, dict]:
    """(optimizer skeleton, {key: tensor}) with every tensor leaf of both states under one flat key. The tensors
    are the live ones (DTensor shards on their device), not the CPU copies flatten_state makes."""
    skeleton, optim_tensors = flatten_state(dict(optim_state))
    tensors = {MODEL_PREFIX + k: v for k, v in model_state.items()}
    tensors.update({OPTIM_PREFIX + k: _leaf(optim_state, k) for k in optim_tensors})
    return skeleton, tensors


def save_sharded_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler_state: Mapping[str, Any],
    rng_states: list[RngState],
    extra: Mapping[str, Any] | None = None,
    keep: int | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """Write `<root>/step-NNNNNN/` in the sharded layout; collective: EVERY process calls it with its own
    model/optimizer (and the same scheduler state, RNG list and extra). `device` holds the small tensor that
    agrees on the temporary name (the accelerator under NCCL). Returns the checkpoint directory."""
    _, rank, world = _world()
    root = Path(root)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.partial_name(root, step, _shared_token(torch.device(device)))
    model_state, optim_state = _sharded_state(model, optimizer)
    skeleton, tensors = _flat_tensors(model_state, optim_state)
    (tmp / SHARDED_DIR).mkdir(parents=True, exist_ok=True)  # every rank: the mount may be per-node
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDED_DIR), save_distributed=True),
             no_dist=not _world()[0])
    _barrier()  # every shard is written and fsynced (DCP syncs its files) before rank 0 publishes
    final = root / ckpt.checkpoint_name(step)
    if rank == 0:
        try:
            ckpt.write_json_synced(tmp / OPTIM_JSON_FILE, skeleton)
            ckpt.write_side_files(tmp, scheduler_state, rng_states)
            state = {
                "format": FORMAT_VERSION,
                "layout": "sharded",
                "step": step,
                "num_processes": world,
                "model_entries": {k: list(v.shape) for k, v in model_state.items()},  # global shapes
                "shards": {p.name: p.stat().st_size for p in sorted((tmp / SHARDED_DIR).iterdir())},
                "extra": dict(extra or {}),
            }
            ckpt.write_json_synced(tmp / STATE_FILE, state)  # last: documents a complete directory
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = ckpt.publish_checkpoint(root, tmp, step, keep)
    _barrier()  # nobody reads or saves again before the rename
    return final


def _tensor_keys(skeleton: Any) -> list[str]:
    """The tensor references of a flatten_state skeleton."""
    if isinstance(skeleton, list):
        return [k for v in skeleton for k in _tensor_keys(v)]
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return [skeleton["__tensor__"]]
        return [k for v in skeleton.values() for k in _tensor_keys(v)]
    return []


def load_sharded_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    restore_rng: bool = True,
) -> int:
    """Restore model (trainable part), optimizer, scheduler and this process's RNG from a sharded checkpoint.

    Collective under torch.distributed (every process calls it; each reads the chunks of its own shards); also
    loads into one plain process. The RNG of rank r is restored only when as many processes saved it.
    Returns the checkpoint's step."""
    path = Path(path)
    state = ckpt.read_checkpoint_state(path)
    if state["layout"] != "sharded":
        raise CheckpointError(f"{path}: a {state['layout']} checkpoint: load it with checkpoint.load_checkpoint")
    compare_model_entries(path, state["model_entries"], model)
    skeleton = ckpt.read_checkpoint_json(path / OPTIM_JSON_FILE)
    model_state, optim_state = _sharded_state(model, optimizer)
    _, live = _flat_tensors(model_state, optim_state)
    wanted = [MODEL_PREFIX + k for k in model_state] + [OPTIM_PREFIX + k for k in _tensor_keys(skeleton)]
    absent = [k for k in wanted if k not in live]
    if absent:
        raise CheckpointError(f"{path}: optimizer state for entries this optimizer does not have: {absent[:5]}")
    # DCP fills the tensors in place, each process only its own shards (in place for the model's parameters).
    targets = {k: live[k] for k in wanted}
    try:
        dcp.load(targets, storage_reader=HuggingFaceStorageReader(str(path / SHARDED_DIR)), no_dist=not _world()[0])
    except Exception as exc:  # DCP wraps every rank's failure in its own CheckpointException
        raise CheckpointError(f"{path / SHARDED_DIR}: could not read the shards: {exc}") from exc
    loaded_model = {k: targets[MODEL_PREFIX + k] for k in model_state}
    loaded_optim = unflatten_state(skeleton, {k[len(OPTIM_PREFIX):]: v for k, v in targets.items()
                                              if k.startswith(OPTIM_PREFIX)})
    try:
        # DCP already wrote into the live parameters; this also covers state dicts that are copies. Non-strict:
        # the frozen parameters are absent by design (the names were compared above).
        set_model_state_dict(model, loaded_model, options=StateDictOptions(ignore_frozen_params=True, strict=False))
        # Non-strict as in the full layout: a parameter that never had a gradient has no AdamW state.
        set_optimizer_state_dict(model, optimizer, loaded_optim,
                                 options=StateDictOptions(ignore_frozen_params=True, strict=False))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: could not load the model/optimizer state: {exc}") from exc
    drop_unsaved_optimizer_state(model, optimizer, set(skeleton.get("state", {})))
    _, rank, world = _world()
    ckpt.restore_scheduler_and_rng(path, scheduler, rank, world, restore_rng)
    return int(state["step"])
