"""`talkalign label-studio export|import`, `talkalign app --export-ratings` and `talkalign app --log-compare`,
run through the real command line (flows.cli.main): files written, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from components.app.compare import CompareStore, load_compare_set
from components.app.pool import write_pool
from components.app.rating_store import RatingStore
from components.config import DIMENSIONS
from components.preference.ratings import read_ratings
from flows import cli
from tests.components.app.conftest import WINDOWS, tiny_mp4, write_compare_set


@pytest.fixture
def pool_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("GRADIO_ANALYTICS_ENABLED", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test, whatever the CLI sets
        monkeypatch.delenv(name)
    videos = {cid: tiny_mp4(tmp_path / f"{k}.mp4", 40 * k) for k, cid in enumerate(c for ids in WINDOWS.values() for c in ids)}
    write_pool(tmp_path / "pool", WINDOWS, videos)
    yield tmp_path / "pool"
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_label_studio_export_then_import(pool_dir, tmp_path, capsys):
    assert cli.main(["label-studio", "export", "--candidates", str(pool_dir), "--base-url", "http://ls:8081/pool",
                     "-o", str(tmp_path / "ls")]) == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == 6 and (tmp_path / "ls" / "labeling_config.xml").is_file()
    assert all(t["data"]["video"].startswith("http://ls:8081/pool/videos/") for t in tasks)
    export = [{"id": k, "data": t["data"], "annotations": [
        {"id": 10 * k + user, "completed_by": user, "was_cancelled": False,
         "result": [{"from_name": d, "to_name": "video", "type": "rating", "value": {"rating": 1 + (k + user) % 5}}
                    for d in DIMENSIONS]} for user in (1, 2)]} for k, t in enumerate(tasks, start=1)]
    (tmp_path / "export.json").write_text(json.dumps(export))
    capsys.readouterr()
    assert cli.main(["label-studio", "import", str(tmp_path / "export.json"), "-o", str(tmp_path / "human.jsonl"),
                     "--candidates", str(pool_dir)]) == 0
    assert "36 ratings from 12 annotations of 6 tasks (0 cancelled)" in capsys.readouterr().out
    rows = read_ratings(tmp_path / "human.jsonl")
    assert len(rows) == 36 and set(rows["rater_id"]) == {"ls-1", "ls-2"}

    export[0]["data"]["candidate_id"] = "w9.genz.s0"  # a candidate the pool does not have
    (tmp_path / "bad.json").write_text(json.dumps(export))
    assert cli.main(["label-studio", "import", str(tmp_path / "bad.json"), "-o", str(tmp_path / "bad.jsonl"),
                     "--candidates", str(pool_dir)]) == 1
    line = one_error_line(capsys)
    assert line.startswith("talkalign label-studio: ") and "bad.json" in line and "w9.genz.s0" in line
    assert not (tmp_path / "bad.jsonl").exists()


def test_app_export_ratings(pool_dir, tmp_path, capsys):
    db = tmp_path / "human.sqlite"
    store = RatingStore(db, list(WINDOWS), WINDOWS)
    for rater in ("alice", "bob"):
        for w, ids in WINDOWS.items():
            store.rate_window(rater, w, {c: {d: 2 + k for d in DIMENSIONS} for k, c in enumerate(ids)})
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"ratings.{suffix}"
        assert cli.main(["app", "--candidates", str(pool_dir), "--db", str(db), "--export-ratings", str(out)]) == 0
        assert len(read_ratings(out)) == 2 * 6 * 3
    capsys.readouterr()
    assert cli.main(["app", "--candidates", str(pool_dir), "--db", str(db), "--export-ratings", "r.parquet"]) == 1
    assert "r.parquet: export to .jsonl or .csv" in one_error_line(capsys)
    assert cli.main(["app", "--db", str(db), "--export-ratings", "r.jsonl"]) == 1
    assert "--export-ratings needs --candidates" in one_error_line(capsys)


def test_app_log_compare_into_the_newer_version_run(pool_dir, tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("talkalign")
    experiment = client.create_experiment("register", artifact_location=str(tmp_path / "mlruns"))
    runs = {}
    for version in ("1", "2", "3"):
        run = client.create_run(experiment)
        (tmp_path / f"src{version}").mkdir()
        client.create_model_version("talkalign", str(tmp_path / f"src{version}"), run_id=run.info.run_id)
        runs[version] = run.info.run_id
    compare_dir = write_compare_set(tmp_path / "compare", tmp_path, n_items=4)  # talkalign/3 vs talkalign/2
    db = tmp_path / "human.sqlite"
    store = CompareStore(db, load_compare_set(compare_dir))
    for item in store.set.item_ids:  # version 2 wins three, one tie
        store.choose("dan", item, "tie" if item == "item0" else ("A" if store.shown_as_a("dan", item) == "second" else "B"))
    capsys.readouterr()
    argv = ["app", "--compare", str(compare_dir), "--db", str(db), "--tracking-uri", uri, "--log-compare"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "talkalign/3 vs talkalign/2: win rate 0.125" in out and runs["3"] in out
    metrics = client.get_run(runs["3"]).data.metrics
    assert metrics["human_win_rate_vs_v2"] == pytest.approx(0.5 / 4) and metrics["human_win_rate_n_vs_v2"] == 4

    # building a compare set from a registry alias that does not exist: one line, nothing built, no hang
    argv = ["app", "--compare", str(tmp_path / "new-set"), "--db", str(db), "--tracking-uri", uri,
            "--compare-models", "models:/talkalign@nope", "models:/talkalign/2", "--compare-inputs", str(tmp_path)]
    assert cli.main(argv) == 1
    assert "models:/talkalign@nope: not found in the registry" in one_error_line(capsys)
    assert not (tmp_path / "new-set").exists()
