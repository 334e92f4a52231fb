"""The DVC subprocess of a pipeline run: which dvc, the environment the stage commands get, its output streamed
into a logger, and its failures told apart (a stage's error vs a network one worth retrying)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from components.tracking import PARENT_RUN_ENV

__all__ = [
    "DvcFailed",
    "ServiceUnreachable",
    "dvc_executable",
    "experiment_of",
    "is_network_failure",
    "run_streaming",
    "run_variables",
    "stage_environment",
    "stages_run",
]


class DvcFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries DVC's own error lines."""


class ServiceUnreachable(ConnectionError):
    """MLflow, S3 or the DVC remote did not answer: possibly transient, so worth a retry."""


def dvc_executable() -> str:
    """The dvc next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def stage_environment(repo: Path, extra: dict[str, str]) -> dict[str, str]:
    """Environment of the DVC subprocess and so of every stage command it starts (built inside the task, so
    credentials in os.environ never become task parameters)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # `talkalign` and `dvc` of this venv
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    # Stage commands import this checkout's code, the code DVC hashed as their deps (not another checkout's
    # editable install).
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(repo), env.get("PYTHONPATH", "")] if p)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    for key, value in extra.items():
        if key == "PREFECT_API_URL" and env.get(key):
            continue  # a configured API wins
        env[key] = value
    return env


def run_variables(parent_run_id: str | None, api_url: str | None) -> dict[str, str]:
    """What the stages need from this run: the parent MLflow run, and the Prefect API this run reports to (so
    stages in ephemeral mode do not each start their own server)."""
    extra = {PARENT_RUN_ENV: parent_run_id} if parent_run_id else {}
    if api_url:
        extra["PREFECT_API_URL"] = api_url
    return extra


_NETWORK_HINTS = re.compile(
    r"could not connect|connection (refused|reset|aborted)|timed? ?out|temporarily unavailable|"
    r"name or service not known|endpointconnectionerror|connecttimeout|read timeout|503|502|504|slow ?down",
    re.IGNORECASE,
)


def run_streaming(cmd: list[str], cwd: Path, env: dict[str, str], logger) -> str:
    """Run a command, its output line by line into the logger; return the output, raise DvcFailed on failure."""
    logger.info("$ %s", " ".join(cmd))
    lines: list[str] = []
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.strip():
                logger.info(line)
        code = proc.wait()
    if code:
        tail = lines[-200:]
        errors = [
            line for line in tail
            if not line.startswith("> ") and ("ERROR" in line or "Error" in line or "failed" in line)
        ]  # "> cmd" is DVC echoing a stage's command
        detail = "\n".join(errors[-10:] or tail[-20:])
        shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        raise DvcFailed(f"`{shown}` exited with {code}:\n{detail}")
    return "\n".join(lines)


def is_network_failure(exc: DvcFailed) -> bool:
    """DVC's message reads like a network failure (push / pull are idempotent: retrying them is safe)."""
    return bool(_NETWORK_HINTS.search(str(exc)))


def experiment_of(output: str) -> str | None:
    """The experiment name in the output of `dvc exp run`, if it says one."""
    match = re.search(r"Ran experiment\(s\): (\S+)|Reproducing experiment '([^']+)'", output)
    return next((g for g in (match.groups() if match else ()) if g), None)


def stages_run(output: str) -> list[str]:
    """The stages DVC ran (not the ones it found up to date), from its output."""
    return re.findall(r"Running stage '([^']+)'", output)
