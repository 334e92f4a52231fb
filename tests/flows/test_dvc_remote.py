"""`dvc push` / `dvc pull` round trips: the committed local-directory remote, and S3 (dvc-s3) against a local
S3-compatible server, with the endpoint in .dvc/config.local and the keys in the environment only."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from configobj import ConfigObj

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def _dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _forget_outputs(repo: Path) -> None:
    """What a fresh clone lacks: the stage outputs and the DVC cache."""
    shutil.rmtree(repo / "data" / "raw")
    shutil.rmtree(repo / ".dvc" / "cache")


def test_committed_config_names_a_local_default_remote_and_no_secrets():
    path = Path(__file__).resolve().parents[2] / ".dvc" / "config"
    config = ConfigObj(str(path))  # DVC's own config reader
    assert config["core"]["remote"] == "local"
    # DVC resolves it relative to .dvc/: a directory beside the checkout.
    assert config['remote "local"']["url"] == "../../talkalign-dvc-remote"
    text = path.read_text().lower()
    assert "secret" not in text and "access_key" not in text and "endpointurl" not in text


@pytest.mark.slow
def test_push_and_pull_local_and_s3(scratch_repo, prefect_api_url, s3_bucket, s3_server, tmp_path):
    repo, env = scratch_repo
    env = {**env, "PREFECT_API_URL": prefect_api_url}
    _dvc(repo, env, "repro", "synthesize")
    raw = repo / "data" / "raw"
    before = _digests(raw)
    assert any(name.endswith(".mp4") for name in before)

    # The committed default remote: ../../talkalign-dvc-remote from .dvc/, i.e. beside the checkout.
    remote_dir = tmp_path / "talkalign-dvc-remote"
    _dvc(repo, env, "push", "synthesize")
    assert any(p.is_file() for p in remote_dir.rglob("*"))
    _forget_outputs(repo)
    _dvc(repo, env, "pull", "synthesize")  # the stage's outputs, as a fresh clone would
    assert _digests(raw) == before
    assert "up to date" in _dvc(repo, env, "status", "synthesize").lower()

    # S3: the remote (bucket/prefix) may be committed; the endpoint is per machine (.dvc/config.local); the keys
    # come from the environment (the s3_server fixture's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    assert "AWS_ENDPOINT_URL" not in env and env["AWS_ACCESS_KEY_ID"]
    _dvc(repo, env, "remote", "add", "s3", f"s3://{s3_bucket}/dvcstore")
    _dvc(repo, env, "remote", "modify", "--local", "s3", "endpointurl", s3_server)
    _dvc(repo, env, "push", "-r", "s3", "synthesize")
    keys = [obj["Key"] for obj in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys and all(key.startswith("dvcstore/files/md5/") for key in keys)
    _forget_outputs(repo)
    shutil.rmtree(remote_dir)  # the pull below can only be served by S3
    _dvc(repo, env, "pull", "-r", "s3", "synthesize")
    assert _digests(raw) == before

    committed, local = (repo / ".dvc" / "config").read_text(), (repo / ".dvc" / "config.local").read_text()
    assert f"s3://{s3_bucket}/dvcstore" in committed and s3_server not in committed
    assert s3_server in local
    assert env["AWS_SECRET_ACCESS_KEY"] not in committed + local
    ignored = subprocess.run(["git", "check-ignore", ".dvc/config.local"], cwd=repo, env=env, capture_output=True)
    assert ignored.returncode == 0  # DVC's own .dvc/.gitignore keeps config.local out of git
