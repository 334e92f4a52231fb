"""Fixtures for flow tests: one Prefect test server for the session (prefect_test_harness)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """A real Prefect API (the test harness's subprocess server); flows in this process and in
    subprocesses (DVC stage commands, given PREFECT_API_URL) report to it."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


# ----------------------------------------------------------------------------- scratch repositories

TINY_WORLD = {
    "world.n_identities": 3,
    "world.clips_per_identity": 1,
    "world.duration_s": 1.2,
    "world.speech": "syllables",
    "shard.maxcount": 2,
}


@pytest.fixture
def scratch_repo(tmp_path):
    """A git + DVC repository in tmp_path/repo with this checkout's code, dvc.yaml, .dvc/config and params.yaml
    (tiny world), committed once (`dvc exp run` needs a commit). Returns (repo, env): env runs the venv's dvc and
    `talkalign` with this checkout's code, git identity set, MLflow in tmp_path, AWS_ENDPOINT_URL unset."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    source = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(source / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(source / name, repo / name)
    params = yaml.safe_load((source / "params.yaml").read_text())
    for dotted, value in TINY_WORLD.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("__pycache__/\nmlflow.db\n.prefect/\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo),  # stage commands import the scratch copy, not an editable install elsewhere
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "talkalign tests", "GIT_AUTHOR_EMAIL": "tests@talkalign.invalid",
        "GIT_COMMITTER_NAME": "talkalign tests", "GIT_COMMITTER_EMAIL": "tests@talkalign.invalid",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    dvc = str(bin_dir / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    shutil.copy(source / ".dvc" / "config", repo / ".dvc" / "config")  # the committed remotes
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "scratch"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    return repo, env
