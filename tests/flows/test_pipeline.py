"""The `pipeline` flow and its deployments, tried as a new user would (README "Running from the Prefect UI"):
`prefect server start` on loopback, `talkalign serve` in a scratch repository, `prefect deployment run
'pipeline/talkalign' --param parameters=...`, then the flow run, the DVC outputs, the experiment and the
artifacts are looked up through the API. Plus the pieces alone: commands, overrides, retries, artifacts."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from prefect import flow

from components.config import Params, ShardConfig
from components.pipeline.dvc_process import ServiceUnreachable
from flows.pipeline import check_services

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port (its own PREFECT_HOME); yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server not up after 120 s:\n{_tail(log)}")
                time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def prefect_api(prefect_server):
    """This process's Prefect client and flows use the started server."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server
        APILogHandler().flush()  # send this test's flow-run logs while the server is still there


# ----------------------------------------------------------------------------- retries


def _count_tracking_probes(monkeypatch) -> list[str]:
    """Count attempts of the real reachability probe. (Task runs read back from the Prefect API are not a
    reliable count: the client records them through an events worker that can drop items under load.)"""
    import components.pipeline.services as services

    calls: list[str] = []
    real_probe = services.check_tracking_reachable

    def counting_probe(uri: str) -> None:
        calls.append(uri)
        real_probe(uri)

    monkeypatch.setattr(services, "check_tracking_reachable", counting_probe)
    return calls


@flow
def _probe_services(params: Params):
    return check_services(params)


def test_unreachable_mlflow_is_retried_then_fails_naming_the_uri(prefect_api, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    probes = _count_tracking_probes(monkeypatch)
    start = time.monotonic()
    state = _probe_services(Params(), return_state=True)
    assert state.is_failed()
    with pytest.raises(ServiceUnreachable, match=f"MLflow tracking server at {dead} is unreachable"):
        state.result()
    assert time.monotonic() - start < 60  # two retries, 2 s and 5 s apart
    assert probes == [dead] * 3  # the first try and two retries


def test_a_missing_bucket_is_not_retried(prefect_api, s3_server, monkeypatch, tmp_path):
    from components.io.storage import StorageError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    probes = _count_tracking_probes(monkeypatch)
    state = _probe_services(Params(shard=ShardConfig(output="s3://no-such-bucket/shards")), return_state=True)
    with pytest.raises(StorageError, match="s3://no-such-bucket/shards: bucket 'no-such-bucket' does not exist"):
        state.result()
    assert len(probes) == 1  # a deterministic failure: no retry


# ----------------------------------------------------------------------------- end to end


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_served_pipeline_deployment_runs_a_dvc_experiment(prefect_api, scratch_repo, tmp_path, stage_metrics,
                                                         refused_promotion):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    repo, env = scratch_repo
    env = {**env, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect-client")}
    # Reports of earlier stages (evaluate, register) that this run leaves alone: the artifacts show them.
    (repo / "reports").mkdir()
    (repo / "reports/metrics.json").write_text(json.dumps(stage_metrics))
    (repo / "reports/promotion.json").write_text(json.dumps(refused_promotion))

    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The pipeline and every stage flow become deployments (registered one after the other).
        stage_flows = ("synthesize", "shard", "phase1", "evaluate")
        wanted = ["pipeline/talkalign", *(f"{name}/talkalign" for name in stage_flows)]
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 180
            while wanted:
                assert serve.poll() is None, f"talkalign serve exited:\n{_tail(serve_log)}"
                try:
                    client.read_deployment_by_name(wanted[-1])
                    wanted.pop()
                except Exception:
                    assert time.monotonic() < deadline, f"{wanted[-1]} not deployed after 180 s:\n{_tail(serve_log)}"
                    time.sleep(1)

        # Exactly what the README tells a new user to type.
        parameters = {"stages": ["synthesize"], "overrides": {"world.n_identities": 2}}
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "pipeline/talkalign",
             "--param", f"parameters={json.dumps(parameters)}", "--watch", "--watch-timeout", "600"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=700,
        )
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\nserve:\n{_tail(serve_log)}"
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)

        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        assert flow_run.state.is_completed() and flow_run.parameters == {"parameters": parameters}
    finally:
        _stop(serve)

    # DVC ran the stage as an experiment with the override, and recorded its output.
    clips = sorted((repo / "data/raw").rglob("*.mp4"))
    assert len(clips) == 2
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["synthesize"]
    assert lock["outs"][0]["path"] == "data/raw" and lock["outs"][0]["md5"].endswith(".dir")
    assert lock["params"]["params.yaml"]["world"]["n_identities"] == 2
    shown = _run([str(BIN / "dvc"), "exp", "show", "--csv"], repo, env).stdout
    experiments = [row for row in csv.DictReader(io.StringIO(shown)) if row.get("Experiment")]
    assert [row["world.n_identities"] for row in experiments] == ["2"]

    # The artifacts: the summary, the metrics table, the promotion decision.
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == {"talkalign-pipeline", "talkalign-metrics", "talkalign-promotion"}
    summary = by_key["talkalign-pipeline"].data
    assert "dvc exp run -S ++world.n_identities=2 synthesize" in summary
    assert f"DVC experiment: `{experiments[0]['Experiment']}`" in summary and "stages run: synthesize" in summary
    table = by_key["talkalign-metrics"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert [row["model"] for row in table] == ["phase1_reshape", "phase2"]
    promotion = by_key["talkalign-promotion"].data
    assert "**refused**" in promotion and refused_promotion["reasons"][0] in promotion

    # MLflow: the stage run is nested under the pipeline run, which knows the experiment and logged the lock.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("talkalign").experiment_id])
    (pipeline_run,) = [r for r in runs if r.data.tags.get("talkalign.stage") == "pipeline"]
    (stage_run,) = [r for r in runs if r.data.tags.get("talkalign.stage") == "synthesize"]
    assert stage_run.data.tags["mlflow.parentRunId"] == pipeline_run.info.run_id
    assert pipeline_run.info.status == "FINISHED"
    assert pipeline_run.data.tags["dvc.experiment"] == experiments[0]["Experiment"]
    assert pipeline_run.data.tags["prefect.flow_run_id"] == flow_run_id
    assert pipeline_run.data.metrics["phase1_reshape.psnr"] == pytest.approx(21.52)
    logged = {a.path for a in client.list_artifacts(pipeline_run.info.run_id)}
    assert {"dvc.lock", "params.yaml", "metrics.json", "promotion.json"} <= logged


@pytest.mark.slow
def test_prefect_yaml_deploys_to_a_process_and_a_kubernetes_pool(prefect_api, scratch_repo, tmp_path):
    from prefect import get_client

    repo, env = scratch_repo
    env = {
        **env, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "TALKALIGN_IMAGE": "registry.example.com/talkalign:0123abc",
    }
    prefect = str(BIN / "prefect")
    _run([prefect, "work-pool", "create", "talkalign-process", "--type", "process"], repo, env)
    _run([prefect, "work-pool", "create", "talkalign-k8s", "--type", "kubernetes"], repo, env)
    _run([prefect, "--no-prompt", "deploy", "--all"], repo, env, timeout=600)

    spec = yaml.safe_load((repo / "prefect.yaml").read_text())["deployments"]
    with get_client(sync_client=True) as client:
        for entry in spec:
            flow_name = _flow_name(repo, entry["entrypoint"])
            deployment = client.read_deployment_by_name(f"{flow_name}/{entry['name']}")
            assert deployment.work_pool_name == entry["work_pool"]["name"]
            assert deployment.entrypoint == entry["entrypoint"]
            assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]
        process = client.read_deployment_by_name("pipeline/talkalign-process")
        k8s = client.read_deployment_by_name("pipeline/talkalign-k8s")
    assert process.parameters == k8s.parameters == {"parameters": {"pull": True, "push": True}}
    assert k8s.job_variables["image"] == "registry.example.com/talkalign:0123abc"


def _flow_name(repo: Path, entrypoint: str) -> str:
    """The flow name of a `path.py:function` entrypoint, read from its @flow decorator."""
    path, function = entrypoint.split(":")
    source = (repo / path).read_text()
    match = re.search(rf'@flow\(name="([^"]+)"[^)]*\)\s*\ndef {function}\(', source)
    assert match, f"{entrypoint}: no @flow(name=...) above def {function}"
    return match.group(1)
