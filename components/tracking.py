"""MLflow runs for pipeline stages, with lineage tags (git commit, DVC hashes of inputs).

Every stage opens one run. When a pipeline run is the caller (TALKALIGN_PARENT_RUN_ID set), the stage run
is nested under it even though it lives in another process (DVC starts each stage as a subprocess).
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.config.dotted import flatten

PARENT_RUN_ENV = "TALKALIGN_PARENT_RUN_ID"


def is_main_process() -> bool:
    """True outside distributed launches and on global rank 0 of one (`accelerate launch` / torchrun set RANK).

    Read from the environment, not from torch.distributed, so it is known before the process group exists:
    a stage launched on N processes opens one MLflow run and one Prefect flow run, and writes its outputs once.
    """
    return int(os.environ.get("RANK", "0")) == 0


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server named by the URI cannot be reached."""


def resolve_tracking_uri(params: Params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri


def check_tracking_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, instead of letting MLflow retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server at {uri} answered HTTP {response.status} on /health")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnavailable(f"MLflow tracking server at {uri} is unreachable: {exc}") from exc


def check_inputs_reachable(inputs: list[str]) -> None:
    """Every s3:// input of a stage: its endpoint answers and its bucket exists, else a StorageError naming the URI
    (in seconds: a dead endpoint is probed with a short timeout, not the full retry budget of the readers)."""
    from components.io.storage import open_storage

    for uri in inputs:
        if str(uri).startswith("s3://"):
            open_storage(str(uri)).ensure_ready()


def git_commit(repo: Path = Path(".")) -> str:
    """HEAD commit, with '-dirty' when the work tree has uncommitted changes to tracked files."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=repo, capture_output=True).returncode != 0
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def dvc_hashes(paths: list[str], lock_path: Path = Path("dvc.lock")) -> dict[str, str]:
    """The md5 DVC recorded for each path as an output of an upstream stage (read from dvc.lock)."""
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    wanted = {os.path.normpath(p) for p in paths}
    found: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs", []) + stage.get("deps", []):
            path = os.path.normpath(entry.get("path", ""))
            if path in wanted and "md5" in entry:
                found.setdefault(path, entry["md5"])
    return found


@contextmanager
def stage_run(
    stage: str,
    params: Params,
    *,
    section: str | None = None,
    inputs: list[str] = (),
    extra_tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Open the MLflow run of one stage; logs its params section (default: the stage name) and lineage tags.

    On the non-main processes of a distributed launch it opens nothing and yields None: rank 0 logs for all.
    """
    import mlflow

    if not is_main_process():
        yield None
        return

    uri = resolve_tracking_uri(params)
    check_tracking_reachable(uri)
    check_inputs_reachable(list(inputs))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(params.tracking.experiment)
    tags = {
        "talkalign.stage": stage,
        "talkalign.profile": params.profile,
        "mlflow.source.git.commit": git_commit(),
        **{f"dvc.md5.{path}": md5 for path, md5 in dvc_hashes(list(inputs)).items()},
        **(extra_tags or {}),
    }
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        name = section or stage
        values = getattr(params, name, None)
        if hasattr(values, "model_dump"):
            mlflow.log_params(flatten(values.model_dump(), prefix=f"{name}."))
        mlflow.log_param("seed", params.seed)
        yield run


def metrics_logger(prefix: str = ""):
    """log_fn for the training loop: the loop's metrics as MLflow metrics of the active run, names prefixed."""

    def log(step: int, values: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics({f"{prefix}{key}": float(value) for key, value in values.items()}, step=step)

    return log
