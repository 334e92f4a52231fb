"""End to end: `dvc repro` runs synthesize -> ingest -> validate -> shard on tiny params, in a scratch repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY = {
    "world.n_identities": 5,
    "world.clips_per_identity": 2,
    "world.duration_s": 1.2,
    "world.speech": "syllables",
    "shard.maxcount": 2,
}


def _scratch_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in TINY.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=repo, check=True)
    return repo


def _run(cmd: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_dvc_repro_data_stages(tmp_path, prefect_api_url):
    repo = _scratch_repo(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_api_url,
        "MLFLOW_TRACKING_URI": tracking,
    }
    dvc = str(BIN / "dvc")

    first = _run([dvc, "repro", "shard"], repo, env)  # the data stages; training has its own tests
    for stage in ("synthesize", "ingest", "validate", "shard"):
        assert f"Running stage '{stage}'" in first.stdout

    index = json.loads((repo / "data/shards/index.json").read_text())
    counts = {split: info["n_samples"] for split, info in index["splits"].items()}
    assert sum(counts.values()) == 10 and all(n > 0 for n in counts.values())
    shard_root = repo / "data/shards"
    listed = {shard["name"] for info in index["splits"].values() for shard in info["shards"]}
    assert listed and listed == {str(p.relative_to(shard_root)) for p in shard_root.rglob("*.tar")}
    assert (repo / "reports/data_report.md").exists()

    second = _run([dvc, "repro", "shard"], repo, env)
    assert "Data and pipelines are up to date" in second.stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["shard"]["maxcount"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run([dvc, "repro", "shard"], repo, env)
    assert "Running stage 'shard'" in third.stdout
    for stage in ("synthesize", "ingest", "validate"):
        assert f"Running stage '{stage}'" not in third.stdout

    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("talkalign")
    runs = client.search_runs([experiment.experiment_id])
    assert {"synthesize", "ingest", "validate", "shard"} <= {run.data.tags.get("talkalign.stage") for run in runs}
    shard_runs = [run for run in runs if run.data.tags.get("talkalign.stage") == "shard"]
    assert len(shard_runs) == 2  # the first repro and the maxcount change
    assert index["digest"] in {run.data.tags["talkalign.dataset_digest"] for run in shard_runs}
    assert all("dvc.md5.data/ingested" in run.data.tags for run in shard_runs)  # lineage: ingest output's DVC hash
