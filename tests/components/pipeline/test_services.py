"""The services a run needs, checked before any stage: an unreachable one is worth a retry, a missing bucket is not."""

from __future__ import annotations

import socket

import pytest

from components.config import Params, ShardConfig
from components.io.storage import StorageError
from components.pipeline.dvc_process import ServiceUnreachable
from components.pipeline.services import check_services_reachable, s3_uris


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_mlflow_is_a_service_error(monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(ServiceUnreachable, match=f"MLflow tracking server at {dead} is unreachable"):
        check_services_reachable(Params())


def test_every_s3_location_is_checked(s3_server, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    params = Params(shard=ShardConfig(output=f"s3://{s3_bucket}/shards"))
    assert s3_uris(params) == [f"s3://{s3_bucket}/shards"]
    assert check_services_reachable(params)[f"s3://{s3_bucket}/shards"] == "ok"
    missing = Params(shard=ShardConfig(output="s3://no-such-bucket/shards"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        check_services_reachable(missing)
