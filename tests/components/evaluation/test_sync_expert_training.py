"""The sync expert stage's logic: our expert's input spec, failing fast on missing official weights, and the
files it leaves for evaluate (training itself runs in tests/flows/test_train_flows.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.config import EvaluationConfig, Params, SyncExpertConfig
from components.evaluation.sync_expert_training import SyncExpertRun, toy_spec, train_sync_expert, write_sync_expert
from components.evaluation.syncnet import SyncNet, load_expert


def _cfg(tmp_path: Path) -> SyncExpertConfig:
    return SyncExpertConfig(out_dir=str(tmp_path / "models/sync_expert"), metrics_path=str(tmp_path / "reports/sync.json"),
                            width=0.0625, crop_size=51)


def test_toy_spec_follows_the_config(tmp_path: Path):
    spec = toy_spec(_cfg(tmp_path))
    assert (spec.width, spec.crop_size, spec.lip_channels, spec.pixels, spec.mfcc) == (0.0625, 51, 1, "unit", "log_mel")


def test_missing_official_weights_fail_before_anything_is_written(tmp_path: Path):
    params = Params(sync_expert=_cfg(tmp_path),
                    evaluation=EvaluationConfig(syncnet_weights=str(tmp_path / "syncnet_v2.model")))
    with pytest.raises(FileNotFoundError, match="syncnet_v2.model: SyncNet weights not found"):
        train_sync_expert(params)
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports").exists()


def test_official_run_records_where_the_weights_are(tmp_path: Path):
    cfg = _cfg(tmp_path)
    write_sync_expert(cfg, SyncExpertRun(source="official", report={"source": "official"}, official_weights="/w/s.model"))
    assert json.loads((Path(cfg.out_dir) / "source.json").read_text()) == {"syncnet_weights": "/w/s.model"}
    assert json.loads(Path(cfg.metrics_path).read_text()) == {"source": "official"}


def test_our_expert_is_saved_for_evaluate(tmp_path: Path):
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = SyncNet(toy_spec(cfg))
    report = {"val_offset_acc": 0.5, "val_clips": 2, "final_loss": 0.3}
    write_sync_expert(cfg, SyncExpertRun(source="talkalign", report=report, model=model,
                                         meta={**report, "segment_frames": 9}))
    expert = load_expert(cfg.out_dir)
    assert expert.source == "talkalign" and expert.meta["segment_frames"] == 9 and expert.spec == model.spec
    assert all(torch.equal(a, b) for a, b in zip(expert.model.state_dict().values(), model.state_dict().values()))
    assert json.loads(Path(cfg.metrics_path).read_text()) == report
