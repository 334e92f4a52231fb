"""Shared test fixtures. Keep this small: fixtures used by one test file live in that file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with code {proc.returncode} before it was up")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: server not up after {timeout_s} s")


class MotoServer:
    """moto_server on a free loopback port, its output in a log file."""

    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None):
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        binary = Path(sys.executable).parent / "moto_server"
        env = {**os.environ, **FAKE_AWS_ENV, **(extra_env or {})}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
            )
        try:
            _wait_until_up(f"{self.endpoint}/moto-api/", self.proc, timeout_s=20)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (moto) on loopback; yields its endpoint URL.

    Fake AWS credentials are set for the session, so boto3 (and child processes) never reach
    for real ones.
    """
    with pytest.MonkeyPatch.context() as env:
        for key, value in FAKE_AWS_ENV.items():
            env.setenv(key, value)
        server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log")
        try:
            yield server.endpoint
        finally:
            server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake AWS credentials for one test (no server)."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    return FAKE_AWS_ENV


@pytest.fixture
def start_s3_server(tmp_path: Path, aws_env):
    """Start an extra moto server with its own environment (e.g. IAM enforced); stopped after the test."""
    servers: list[MotoServer] = []

    def start(**extra_env: str) -> str:
        servers.append(MotoServer(tmp_path / f"moto-{len(servers)}.log", extra_env))
        return servers[-1].endpoint

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the moto server; S3_ENDPOINT_URL points at the server for this test."""
    import boto3

    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(autouse=True)
def isolated_mlflow_uris():
    """Each test starts and ends with MLflow's process-wide tracking and registry URIs as they were: code that sets
    them (stage_run, `talkalign app --tracking-uri`, set_experiment) would otherwise point later tests at an earlier test's store.
    mlflow.set_registry_uri(None) leaves MLFLOW_REGISTRY_URI in the environment, so the variables are restored too."""
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    env = {name: os.environ.get(name) for name in names}
    before = tracking_state._tracking_uri, registry_state._registry_uri
    yield
    tracking_state._tracking_uri, registry_state._registry_uri = before
    fluent._active_experiment_id = None  # set_experiment's choice belongs to the store of the test that made it
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def stage_metrics() -> dict:
    """A reports/metrics.json as evaluate writes it, small: two variants."""
    return {
        "phase1_reshape": {"lip_corr": 0.31, "psnr": 21.52, "lip_corr_audio_zeroed": 0.02},
        "phase2": {"lip_corr": 0.29, "psnr": 21.9},
    }


@pytest.fixture
def refused_promotion() -> dict:
    """A reports/promotion.json as register writes it when a gate refuses the candidate."""
    return {
        "model": "talkalign",
        "version": "3",
        "decision": "refused",
        "promoted": False,
        "reasons": ["psnr 20.10 is worse than the champion's 21.00 by more than 0.5"],
        "champion_before": "2",
        "champion_after": "2",
        "gates": [{"metric": "psnr", "candidate": 20.1, "champion": 21.0, "passed": False}],
    }
