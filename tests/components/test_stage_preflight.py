"""A stage whose S3 input cannot be reached fails at its start, in seconds, naming the URI (MLflow: test_tracking)."""

from __future__ import annotations

import socket
import time

import mlflow
import pytest

from components.config import Params
from components.io.storage import StorageError
from components.tracking import stage_run


def test_unreachable_s3_input_fails_the_stage_at_start_naming_the_uri(aws_env, monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("S3_ENDPOINT_URL", dead)
    import boto3  # noqa: F401 - imports are not what is timed

    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"s3://bucket/shards: cannot reach S3 endpoint {dead}"):
        with stage_run("pretrain_vae", Params(), inputs=["s3://bucket/shards", "data/local"]):
            pytest.fail("the stage body must not run")
    assert time.monotonic() - start < 10
    assert mlflow.MlflowClient(tracking).search_experiments(filter_string="name = 'talkalign'") == []  # no run opened


def test_reachable_s3_input_lets_the_stage_start(s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run("pretrain_vae", Params(), inputs=[f"s3://{s3_bucket}/shards"]) as run:
        assert run.info.run_id
