"""The register stage's logic that needs no bundle: what is checked before anything is registered, the lineage
tags, and `promote` / `rollback` by hand with their notes (a real sqlite MLflow registry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.config import EvaluationConfig, Params, RegistryConfig
from components.registry.register_stage import (
    check_candidate,
    file_md5,
    lineage_tags,
    promote_with_note,
    rollback_with_note,
)
from components.registry.versions import COMPLETE, TAG_STATE, MetricsError


def _params(tmp_path: Path, variant: str = "phase2") -> Params:
    evaluation = EvaluationConfig(models={"phase2": str(tmp_path / "models/phase2")},
                                  metrics_path=str(tmp_path / "reports/metrics.json"))
    return Params(evaluation=evaluation, registry=RegistryConfig(variant=variant))


def test_a_variant_that_was_not_evaluated_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"registry.variant 'dpo' is not an evaluated variant \(evaluation.models or "
                                         r"rounds.schedule: \['phase2', 'round1', 'round2'\]\)"):
        check_candidate(_params(tmp_path, "dpo"))


def test_missing_metrics_are_refused_before_the_bundle_is_read(tmp_path: Path):
    with pytest.raises(MetricsError, match="metrics.json"):
        check_candidate(_params(tmp_path))


def test_lineage_tags(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path)
    Path("params.yaml").write_text("seed: 0\n")
    Path("reports").mkdir()
    Path(params.evaluation.metrics_path).write_text("{}")
    shards = params.data.shards
    Path("dvc.lock").write_text(json.dumps({"stages": {"shard": {"outs": [{"path": shards, "md5": "abc.dir"}]}}}))
    tags = lineage_tags(params, "params.yaml", {"dpo.beta": 10}, "models/phase2", "run123")
    assert tags["talkalign.params_md5"] == file_md5("params.yaml") != "unknown"
    assert tags["talkalign.metrics_md5"] == file_md5(params.evaluation.metrics_path)
    assert tags[f"dvc.md5.{shards}"] == "abc.dir" and tags["talkalign.register_run_id"] == "run123"
    assert json.loads(tags["talkalign.params_overrides"]) == {"dpo.beta": 10}
    assert file_md5("no-such-file") == "unknown"


def test_promote_and_roll_back_by_hand_leave_notes(tmp_path: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("talkalign")
    for _ in range(2):
        (tmp_path / "model").mkdir(exist_ok=True)
        mv = client.create_model_version("talkalign", str(tmp_path / "model"), tags={TAG_STATE: COMPLETE})
        assert mv.status == "READY"

    assert promote_with_note(client, "talkalign", "1", "first") == "talkalign: champion none -> 1 (promoted by hand: first)"
    assert promote_with_note(client, "talkalign", "1", "again").endswith("already is champion; nothing changed")
    assert "-> 2" in promote_with_note(client, "talkalign", "2", "better lips")
    assert "**Promoted by hand**" in client.get_model_version("talkalign", "2").description
    assert rollback_with_note(client, "talkalign", " ") == "talkalign: champion 2 -> 1 (rolled back: rolled back by hand)"
    assert str(client.get_model_version_by_alias("talkalign", "champion").version) == "1"
    assert "**Rolled back**" in client.get_model_version("talkalign", "2").description
