"""The DVC subprocess: a failed stage's message, the stage environment, what DVC's output says."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.pipeline.dvc_process import (
    DvcFailed,
    experiment_of,
    is_network_failure,
    run_streaming,
    run_variables,
    stage_environment,
    stages_run,
)
from components.tracking import PARENT_RUN_ENV

BIN = Path(sys.executable).parent


def test_a_failed_stage_raises_with_dvcs_and_the_stages_message(tmp_path):
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    fail = "import sys; sys.exit('talkalign broken: failed: s3://bucket/x: bucket gone')"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"broken": {"cmd": f'{sys.executable} -c "{fail}"'}}}))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    with pytest.raises(DvcFailed) as raised:
        run_streaming([str(BIN / "dvc"), "repro", "broken"], tmp_path, env, logging.getLogger("test"))
    message = str(raised.value)
    assert re.match(r"`dvc repro broken` exited with \d+:\n", message)
    assert not any(line.startswith("> ") for line in message.splitlines())  # not DVC's echo of the command
    assert "talkalign broken: failed: s3://bucket/x: bucket gone" in message  # the stage's own words
    assert "ERROR: failed to reproduce 'broken'" in message  # and DVC's


def test_stage_environment_puts_this_venv_and_checkout_first(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://configured/api")
    env = stage_environment(tmp_path, run_variables("run-1", "http://flow/api"))
    assert env["PATH"].split(os.pathsep)[0] == str(BIN)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert env[PARENT_RUN_ENV] == "run-1" and env["PREFECT_API_URL"] == "http://configured/api"  # configured wins
    assert run_variables(None, None) == {}


def test_reading_dvcs_output():
    output = "Running stage 'world':\n> python -m x\nStage 'ingest' didn't change, skipping\nRunning stage 'shard':\n"
    assert stages_run(output) == ["world", "shard"]
    assert experiment_of("Ran experiment(s): sable-lobe\n") == "sable-lobe"
    assert experiment_of("Reproducing experiment 'lr-1e-4'\n") == "lr-1e-4"
    assert experiment_of(output) is None
    assert is_network_failure(DvcFailed("`dvc push` exited with 1:\nERROR: Could not connect to the endpoint"))
    assert not is_network_failure(DvcFailed("`dvc push` exited with 1:\nERROR: failed to push: file missing"))
