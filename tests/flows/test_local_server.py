"""`talkalign repro` (what `make run` runs): one local Prefect server for the whole `dvc repro`, stopped after."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flows.local_server import _healthy, local_prefect_server


def test_server_is_up_inside_the_block_and_gone_after(tmp_path):
    with local_prefect_server(tmp_path / "server.log", timeout_s=120) as api_url:
        assert api_url is not None, (tmp_path / "server.log").read_text()[-2000:]
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
            assert json.load(response) is True
        ui = urllib.request.urlopen(api_url.removesuffix("/api"), timeout=5).read().decode()
        assert "<html" in ui.lower()  # the UI is served too (Prefect's temporary server has none)
    assert not _healthy(api_url)


def test_a_server_that_cannot_start_yields_none_and_says_where_to_look(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `prefect` on PATH ...
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # ... and none beside the interpreter
    with local_prefect_server(tmp_path / "server.log", timeout_s=5) as api_url:
        assert api_url is None
    assert str(tmp_path / "server.log") in capsys.readouterr().err
    assert "No such file" in (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_repro_runs_stages_against_one_shared_server(scratch_repo):
    repo, env = scratch_repo
    env = {**env, "PREFECT_HOME": str(repo / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "talkalign"), "repro", "-s", "synthesize"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Prefect UI for this run: http://127.0.0.1:" in out
    assert "Running stage 'synthesize'" in out
    assert "Starting temporary server" not in out  # the stage reported to the shared server
    assert "synthesize" in (repo / "dvc.lock").read_text()
    with sqlite3.connect(repo / ".prefect" / "prefect.db") as db:  # the run outlives the server, in PREFECT_HOME
        states = db.execute("select flow_run.state_type from flow_run join flow on flow.id = flow_run.flow_id "
                            "where flow.name = 'synthesize'").fetchall()
    assert states == [("COMPLETED",)]
