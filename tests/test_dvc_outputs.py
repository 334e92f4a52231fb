"""dvc.yaml vs git: a file git tracks must not be a DVC-cached output, or `dvc repro` on a fresh clone stops with
"output ... is already tracked by SCM". Committed results (reports, metrics, plots) are `cache: false` outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from flows.dvc_deps import load_stages

REPO = Path(__file__).resolve().parents[1]


def _cached_outputs(lock: dict) -> list[str]:
    """Output paths of the resolved pipeline (dvc.lock) that dvc.yaml does not mark `cache: false`."""
    uncached = {path for stage in load_stages(REPO / "dvc.yaml") for path in stage.uncached}
    outs = [o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]
    return [p for p in outs if os.path.normpath(p) not in uncached]


def test_no_git_tracked_file_is_a_cached_dvc_output():
    lock_path = REPO / "dvc.lock"
    assert lock_path.is_file(), "dvc.lock is committed with the results"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    cached = _cached_outputs(yaml.safe_load(lock_path.read_text()))
    assert cached, "the pipeline has cached outputs (data, models): the check below looks at them"
    clashes = sorted(p for p in cached for t in tracked if t == p or t.startswith(p.rstrip("/") + "/"))
    assert not clashes, f"tracked by git and cached by DVC (mark them `cache: false` or untrack them): {clashes}"
