"""Checkpoints: safetensors + JSON round trip, atomic writes, partial leftovers, trainable-only validation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

import components.train.checkpoint as ckpt
from components.train.checkpoint import (
    CheckpointError,
    clean_partial_checkpoints,
    find_latest_checkpoint,
    gather_training_state,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from components.train.rng_state import capture_rng_state


class Tiny(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, 2)
        self.register_buffer("calls", torch.zeros(()))  # a persistent buffer travels with the trainable state
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.frozen(x)))


def _trained(steps: int = 3) -> tuple[Tiny, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    model = Tiny()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    for _ in range(steps):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        model.calls += 1
    return model, opt, sched


def _save(root: Path, step: int, model: nn.Module, opt, sched, **kw) -> Path:
    model_state, optim_state = gather_training_state(model, opt)
    return save_checkpoint(root, step, model_state, optim_state, sched.state_dict(), [capture_rng_state()],
                           {"name": "test"}, **kw)


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)
    expected_rand = (torch.rand(5), np.random.rand(3), [random.random() for _ in range(3)])
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    adam = {k: v.clone() for k, v in opt.state[model.head.weight].items()}

    # Disturb everything, then restore into fresh objects.
    model2, opt2, sched2 = _trained(steps=1)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    assert load_latest_checkpoint(tmp_path, model2, opt2, sched2) == 3

    for key, value in weights.items():
        assert torch.equal(model2.state_dict()[key], value), key
    for key, value in adam.items():
        assert torch.equal(opt2.state[model2.head.weight][key], value), key
    assert sched2.last_epoch == sched.last_epoch == 3
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(torch.rand(5), expected_rand[0])
    assert np.array_equal(np.random.rand(3), expected_rand[1])
    assert [random.random() for _ in range(3)] == expected_rand[2]
    assert (tmp_path / "latest").read_text().strip() == path.name == "step-000003"


def test_checkpoint_is_only_safetensors_and_json_with_trainable_entries(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)
    assert sorted(p.suffix for p in path.iterdir()) == sorted([".safetensors"] * 3 + [".json"] * 4)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["calls", "head.bias", "head.weight"]  # frozen.* is not saved
    optim_json = json.loads((path / "optimizer.json").read_text())
    assert optim_json["param_groups"][0]["params"] == ["head.weight", "head.bias"]
    assert optim_json["state"]["head.weight"]["exp_avg"] == {"__tensor__": "state/head.weight/exp_avg"}
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 3 and state["extra"] == {"name": "test"}
    assert state["model_entries"]["head.weight"] == [2, 8]


def test_crash_inside_save_leaves_previous_checkpoint_and_nothing_partial(tmp_path: Path, monkeypatch):
    model, opt, sched = _trained()
    _save(tmp_path, 5, model, opt, sched)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    real_write_json = ckpt.write_json_synced

    def crash_on_scheduler(path: Path, obj) -> None:
        if path.name == "scheduler.json":
            raise OSError("disk full (simulated)")
        real_write_json(path, obj)

    monkeypatch.setattr(ckpt, "write_json_synced", crash_on_scheduler)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 10, model, opt, sched)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000005"]
    fresh, opt2, sched2 = _trained(steps=1)
    assert load_latest_checkpoint(tmp_path, fresh, opt2, sched2) == 5
    assert torch.equal(fresh.head.weight, good["head.weight"])


def test_killed_save_leftover_is_ignored_and_cleaned(tmp_path: Path):
    model, opt, sched = _trained()
    _save(tmp_path, 5, model, opt, sched)
    # What a kill -9 in the middle of a save leaves: a tmp dir with some files, and a half-pruned old one.
    partial = tmp_path / "step-000010.tmp-0123abcd"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    (tmp_path / "step-000001.deleting-89abcdef").mkdir()
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step-000005"
    removed = clean_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in removed) == ["step-000001.deleting-89abcdef", "step-000010.tmp-0123abcd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000005"]


def test_crash_between_rename_and_latest_pointer_still_finds_complete_checkpoint(tmp_path: Path, monkeypatch):
    model, opt, sched = _trained()
    _save(tmp_path, 5, model, opt, sched)

    def crash(path: Path, text: str) -> None:
        raise OSError("killed before the pointer update (simulated)")

    monkeypatch.setattr(ckpt, "_atomic_write_text", crash)
    with pytest.raises(OSError):
        _save(tmp_path, 10, model, opt, sched)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text().strip() == "step-000005"
    fresh, opt2, sched2 = _trained(steps=1)
    assert load_latest_checkpoint(tmp_path, fresh, opt2, sched2) == 10  # the renamed dir is complete


def test_keeps_the_newest_k(tmp_path: Path):
    model, opt, sched = _trained()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, opt, sched, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000003", "step-000004"]


def test_load_into_model_with_other_trainable_params_names_the_checkpoint(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)

    other = Tiny()
    other.frozen.requires_grad_(True)  # now frozen.* is trainable too
    opt2 = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad])
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0)
    with pytest.raises(CheckpointError, match=r"step-000003.*not in the checkpoint: frozen.bias, frozen.weight"):
        load_latest_checkpoint(tmp_path, other, opt2, sched2)

    wider = Tiny(hidden=16)
    opt3 = torch.optim.AdamW([p for p in wider.parameters() if p.requires_grad])
    sched3 = torch.optim.lr_scheduler.LambdaLR(opt3, lambda s: 1.0)
    with pytest.raises(CheckpointError, match=rf"{path}.*head.weight: checkpoint \[2, 8\] vs model \[2, 16\]"):
        load_latest_checkpoint(tmp_path, wider, opt3, sched3)


def test_damaged_checkpoint_gives_a_clear_error(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"step-000003/model.safetensors: unreadable"):
        load_latest_checkpoint(tmp_path, *_trained(steps=1))
    (path / "optimizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"step-000003: incomplete checkpoint, missing \['optimizer.json'\]"):
        load_latest_checkpoint(tmp_path, *_trained(steps=1))


def test_no_checkpoint_returns_none(tmp_path: Path):
    assert load_latest_checkpoint(tmp_path / "absent", *_trained(steps=1)) is None
