import socket
import time

import mlflow
import pytest

from components.config import Params
from components.tracking import PARENT_RUN_ENV, TrackingUnavailable, dvc_hashes, stage_run


def _params(uri: str) -> Params:
    return Params.model_validate({"tracking": {"uri": uri, "experiment": "t"}})


def test_stage_run_logs_params_and_lineage_tags(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/ingested\n      md5: abc123.dir\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with stage_run("shard", _params(uri), inputs=["data/ingested"]) as run:
        mlflow.log_metric("n", 3)
    got = mlflow.MlflowClient(uri).get_run(run.info.run_id)
    assert got.data.tags["talkalign.stage"] == "shard"
    assert got.data.tags["dvc.md5.data/ingested"] == "abc123.dir"
    assert "mlflow.source.git.commit" in got.data.tags
    assert got.data.params["shard.maxcount"] == str(Params().shard.maxcount)
    assert got.data.metrics["n"] == 3


def test_stage_run_nests_under_the_pipeline_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("t")
    with mlflow.start_run(run_name="pipeline") as parent:
        pass
    monkeypatch.setenv(PARENT_RUN_ENV, parent.info.run_id)
    with stage_run("ingest", _params(uri)) as child:
        pass
    assert mlflow.MlflowClient(uri).get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_unreachable_tracking_server_fails_fast_naming_the_uri(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=uri):
        with stage_run("ingest", Params()):
            pass
    assert time.monotonic() - start < 10


def test_dvc_hashes_without_lock_is_empty(tmp_path):
    assert dvc_hashes(["data/x"], tmp_path / "dvc.lock") == {}
