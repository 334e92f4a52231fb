"""A real `mlflow server` on loopback and two tiny bundles, shared by the registry tests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.model.bundle import save_bundle


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """`mlflow server` with a sqlite backend and proxied artifacts in a temporary directory."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    # No background job runner (a dozen huey consumer processes the registry does not need on 2 cores).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                log_tail = (root / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {log_tail}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after 90 s: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield uri
    finally:
        # The server runs uvicorn as a child: stop its whole process group (its own session, started above).
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture
def client(mlflow_server, monkeypatch, tmp_path) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("talkalign-registry-test")
    yield MlflowClient(mlflow_server, registry_uri=mlflow_server)
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, make_tiny_bundle) -> tuple[Path, Path]:
    """Two tiny bundles that differ (in bundle.json), so they digest differently."""
    root = tmp_path_factory.mktemp("bundles")
    first = make_tiny_bundle("mel")
    second = dataclasses.replace(first, meta=first.meta.model_copy(update={"lineage": {"run_id": "second"}}))
    return save_bundle(root / "a", first), save_bundle(root / "b", second)
