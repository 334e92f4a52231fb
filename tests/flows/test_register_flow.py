"""The register stage as a Prefect flow (sqlite tracking): reports, version tags, reruns, and the failures
that must never move `champion` (missing metrics, an unreachable tracking server)."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from components.registry.versions import MetricsError
from components.tracking import TrackingUnavailable
from flows.cli import main as cli_main
from flows.register import register_flow

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
GOOD = {"sync_c": 3.0, "psnr": 20.0, "lip_corr": 0.4, "lip_err": 0.1}


def _save_tiny_bundle(directory: Path, run_id: str) -> None:
    """A tiny random phase-2-like bundle (mel features); run_id changes bundle.json and so the digest."""
    from components.config import (
        AudioModulationConfig,
        Params,
        PortraitModelConfig,
        SamplingConfig,
        TrainingDataConfig,
        VaeConfig,
    )
    from components.model.bundle import BundleMeta, ModelBundle, save_bundle
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.model.vae import build_vae

    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=40, tokens_per_frame=4))
    params = Params(data=TrainingDataConfig(audio_features="mel"), model=cfg, sampling=SamplingConfig(steps=2))
    meta = BundleMeta.from_params(params, variant="phase2", lineage={"run_id": run_id})
    save_bundle(directory, ModelBundle(meta, PortraitModel.from_config(cfg).eval(), build_vae(VaeConfig()), TextEncoder(cfg.text)))


def _write_metrics(metrics: dict | None) -> None:
    data = {"ground_truth": {"lip_corr": 0.99}}
    if metrics is not None:
        data["phase2"] = metrics
    Path("reports").mkdir(exist_ok=True)
    Path("reports/metrics.json").write_text(json.dumps(data))  # NaN is written as NaN, as evaluate would


def _aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model("talkalign").aliases.items()}  # sqlite: ints


@pytest.mark.slow
def test_register_flow(tmp_path, monkeypatch, prefect_api_url, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = yaml.safe_load(REPO_PARAMS.read_text())  # the repository's registry section and gates
    params["evaluation"]["models"] = {"phase2": "models/phase2"}
    params["registry"]["variant"] = "phase2"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  shard:\n    outs:\n    - path: data/shards\n      md5: shards123.dir\n"
    )
    _save_tiny_bundle(Path("models/phase2"), "first")
    client = MlflowClient(uri)

    # No metrics file: a clear error naming it, and nothing registered.
    with pytest.raises(MetricsError, match=r"reports/metrics.json: metrics file not found"):
        register_flow()
    assert client.search_registered_models() == []

    # First registration through the CLI: no champion yet, all gated metrics present -> champion.
    _write_metrics(GOOD)
    assert cli_main(["register"]) == 0
    report = json.loads(Path("reports/promotion.json").read_text())
    assert (report["version"], report["decision"], report["champion_after"]) == ("1", "promoted", "1")
    assert "no champion yet" in report["reasons"][0]
    md = Path("reports/promotion.md").read_text()
    assert "**promoted**: version 1 is now `champion`" in md and "| sync_c | higher | 3 | - |" in md
    mv = client.get_model_version("talkalign", "1")
    assert mv.tags["dvc.md5.data/shards"] == "shards123.dir"
    assert mv.tags["talkalign.params_md5"] and mv.tags["talkalign.git_commit"]
    assert float(mv.tags["talkalign.metric.lip_err"]) == 0.1  # every metric of the variant, not only gated ones
    assert mv.description.startswith("# Promotion decision: talkalign version 1")
    run = client.get_run(mv.run_id)
    assert run.data.tags["talkalign.stage"] == "register" and run.data.tags["talkalign.decision"] == "promoted"

    # Rerun: same bundle -> same version, champion kept, the original reasons stay on the version.
    assert register_flow()["decision"] == "kept"
    assert len(client.search_model_versions("name = 'talkalign'")) == 1
    assert "no champion yet" in client.get_model_version("talkalign", "1").description

    # A new model whose evaluation lacks sync_c (and whose PSNR is NaN): candidate, refused, champion stays 1.
    _save_tiny_bundle(Path("models/phase2"), "second")
    _write_metrics({"psnr": math.nan, "lip_corr": 0.5, "lip_err": 0.1})
    report = register_flow()
    assert (report["version"], report["decision"], report["champion_after"]) == ("2", "refused", "1")
    assert "sync_c: candidate value is missing" in report["reasons"]
    assert "psnr: candidate value is not a finite number (nan)" in report["reasons"]
    assert report["candidate_metrics"]["psnr"] is None  # valid JSON
    assert _aliases(client) == {"candidate": "2", "champion": "1"}

    # The variant missing from the metrics, or an unreachable tracking server: fails before any change.
    _write_metrics(None)
    with pytest.raises(MetricsError, match=r"reports/metrics.json: no metrics for variant 'phase2'"):
        register_flow()
    _write_metrics(GOOD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(TrackingUnavailable, match=dead):
        register_flow()
    capsys.readouterr()
    assert cli_main(["promote", "2", "--reason", "x"]) == 1
    assert f"MLflow tracking server at {dead} is unreachable" in capsys.readouterr().err
    assert _aliases(client) == {"candidate": "2", "champion": "1"}
    assert len(client.search_model_versions("name = 'talkalign'")) == 2
    assert json.loads(Path("reports/promotion.json").read_text())["version"] == "2"  # the last decision stands
    mlflow.set_tracking_uri(None)
