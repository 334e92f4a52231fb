"""The `talkalign` command's failures: one line on stderr, exit code 1, no flow started; --debug shows the traceback."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.config import ParamsError
from flows import cli, stages

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory with the repository's params.yaml, as the cwd; loading any flow fails the test."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)

    def no_flow(target: str) -> None:
        raise AssertionError(f"flow {target} was loaded: params must be checked before any flow or server starts")

    monkeypatch.setattr(stages, "load_flow", no_flow)
    return tmp_path


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_typo_is_one_line_with_the_nearest_key_and_no_flow(workdir, capsys):
    assert cli.main(["shard", "--set", "shard.maxcnt=3"]) == 1
    assert _one_line(capsys) == "talkalign shard: params.yaml: unknown key 'shard.maxcnt' (did you mean 'shard.maxcount'?)"


def test_typo_in_the_params_file_itself(workdir, capsys):
    text = (workdir / "params.yaml").read_text().replace("  maxcount: 16", "  maxcont: 16")
    (workdir / "custom.yaml").write_text(text)
    assert cli.main(["shard", "--params", "custom.yaml"]) == 1
    assert _one_line(capsys) == "talkalign shard: custom.yaml: unknown key 'shard.maxcont' (did you mean 'shard.maxcount'?)"


def test_wrong_type_is_one_line(workdir, capsys):
    assert cli.main(["dpo", "--set", "dpo.beta=fast"]) == 1
    assert _one_line(capsys) == "talkalign dpo: params.yaml: dpo.beta: expected a number, got 'fast'"


def test_missing_params_file_is_one_line(workdir, capsys):
    assert cli.main(["phase1", "--params", "nope.yaml", "--variant", "half"]) == 1
    assert _one_line(capsys) == "talkalign phase1: nope.yaml: params file not found"


def test_bad_set_syntax_is_one_line(workdir, capsys):
    assert cli.main(["shard", "--set", "shard.maxcount"]) == 1
    assert _one_line(capsys) == "talkalign shard: --set expects key=value, got 'shard.maxcount'"


def test_pipeline_and_promote_check_params_first(workdir, capsys, monkeypatch):
    # importing either flow module would fail: the params error must come first
    monkeypatch.setitem(sys.modules, "flows.pipeline", None)
    monkeypatch.setitem(sys.modules, "flows.register", None)
    assert cli.main(["pipeline", "--set", "dpo.bta=1"]) == 1
    assert _one_line(capsys) == "talkalign pipeline: params.yaml: unknown key 'dpo.bta' (did you mean 'dpo.beta'?)"
    assert cli.main(["promote", "3", "--reason", "x", "--set", "registry.variant=[1]"]) == 1
    assert _one_line(capsys) == "talkalign promote: params.yaml: registry.variant: expected a string, got [1]"


def test_debug_raises_with_the_traceback(workdir, capsys):
    with pytest.raises(ParamsError, match="shard.maxcount"):
        cli.main(["--debug", "shard", "--set", "shard.maxcnt=3"])
    with pytest.raises(ParamsError):
        cli.main(["shard", "--debug", "--set", "shard.maxcnt=3"])  # after the sub-command too


def test_a_failed_flow_is_one_line(workdir, capsys, monkeypatch):
    def shard_flow(params_path: str, overrides: dict) -> None:
        raise FileNotFoundError("data/ingested/manifest.jsonl: no such file (run `talkalign ingest` first)")

    monkeypatch.setattr(stages, "load_flow", lambda target: shard_flow)
    monkeypatch.setattr(stages, "console_without_tracebacks", lambda: None)
    assert cli.main(["shard"]) == 1
    assert _one_line(capsys) == ("talkalign shard: failed: data/ingested/manifest.jsonl: no such file "
                                 "(run `talkalign ingest` first)")
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "shard"])


def test_a_bug_names_its_type_and_points_to_debug():
    assert cli.failure_line(KeyError("frames")) == "KeyError: 'frames' (--debug shows the traceback)"
    assert cli.failure_line(ValueError("line one\n  line two")) == "line one; line two"


def test_the_installed_command_fails_fast_without_a_traceback(tmp_path):
    """The real entry point: one line, exit 1, well under the seconds a Prefect server takes to start."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    command = [sys.executable, "-m", "flows.cli", "shard", "--set", "shard.maxcnt=3"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}  # where a temporary server would live
    start = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 10
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "talkalign shard: params.yaml: unknown key 'shard.maxcnt' (did you mean 'shard.maxcount'?)\n"
    assert not (tmp_path / "prefect-home").exists()
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}


def test_the_stage_registry_is_imported_not_the_cli():
    """flows/deployments.py and flows/stages.py never import the CLI (no import circle)."""
    for name in ("deployments.py", "stages.py", "pipeline.py"):
        assert "flows.cli" not in _imports(REPO / "flows" / name), name
    assert {"synthesize", "shard", "phase1", "dpo", "tlpo", "register"} <= set(stages.STAGES)
