"""Sharded checkpoints in one process (the 2-process writes and resumes: test_fsdp.py): round trip, safetensors +
JSON only, atomic publish, missing shards and mismatched models refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import components.train.checkpoint as ckpt
from components.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from components.train.rng_state import capture_rng_state
from components.train.sharded_checkpoint import load_sharded_checkpoint, save_sharded_checkpoint


class Tiny(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, 2)
        self.register_buffer("calls", torch.zeros(()))
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.frozen(x)))


def _trained(steps: int = 3):
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


def _save(root: Path, step: int, model, opt, sched, **kw) -> Path:
    return save_sharded_checkpoint(root, step, model, opt, sched.state_dict(), [capture_rng_state()],
                                   {"name": "test"}, **kw)


def test_round_trip_restores_weights_optimizer_and_scheduler(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)
    assert path == tmp_path / "step-000003" and (tmp_path / "latest").read_text().strip() == "step-000003"
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == ["optimizer.json", "rng.json", "rng.safetensors", "scheduler.json",
                     "sharded/shard-00001-model-00001-of-00001.safetensors", "state.json"]
    state = json.loads((path / "state.json").read_text())
    assert state["layout"] == "sharded" and set(state["model_entries"]) == {"head.weight", "head.bias", "calls"}

    fresh, opt2, sched2 = _trained(steps=1)
    assert load_sharded_checkpoint(path, fresh, opt2, sched2) == 3
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    assert sched2.state_dict() == sched.state_dict()
    for p, q in zip(model.head.parameters(), fresh.head.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[q][key]), key
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_crash_before_state_json_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    model, opt, sched = _trained()
    _save(tmp_path, 2, model, opt, sched)
    real = ckpt.write_json_synced

    def crash_on_state(path: Path, obj) -> None:
        if path.name == "state.json":
            raise OSError("disk full (simulated)")
        real(path, obj)

    monkeypatch.setattr(ckpt, "write_json_synced", crash_on_state)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 4, model, opt, sched)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000002"]


def test_missing_or_truncated_shard_is_an_incomplete_checkpoint(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched, keep=1)
    shard = path / "sharded/shard-00001-model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match=r"step-000003: incomplete checkpoint, missing \['sharded/shard-00001"):
        load_sharded_checkpoint(path, *_trained(steps=1))
    shard.unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_sharded_checkpoint(path, *_trained(steps=1))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003"]


def test_model_mismatch_and_wrong_loader_are_refused_by_name(tmp_path: Path):
    model, opt, sched = _trained()
    path = _save(tmp_path, 3, model, opt, sched)
    wider = Tiny(hidden=16)
    opt3 = torch.optim.AdamW([p for p in wider.parameters() if p.requires_grad])
    sched3 = torch.optim.lr_scheduler.LambdaLR(opt3, lambda s: 1.0)
    with pytest.raises(CheckpointError, match=rf"{path}.*head.weight: checkpoint \[2, 8\] vs model \[2, 16\]"):
        load_sharded_checkpoint(path, wider, opt3, sched3)
    with pytest.raises(CheckpointError, match="a sharded checkpoint: load it with sharded_checkpoint"):
        load_checkpoint(path, *_trained(steps=1))
