"""dvc.yaml vs git: a file git tracks must not be a DVC-cached output, or `dvc repro` on a fresh clone stops with
"output ... is already tracked by SCM". Committed results (reports, metrics, plots) are `cache: false` outputs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _cached_outputs(lock: dict, dvc_yaml: str) -> list[str]:
    """Output paths of the resolved pipeline (dvc.lock) that dvc.yaml does not mark `cache: false`."""
    stages = yaml.safe_load(dvc_yaml)["stages"]
    uncached: set[str] = set()
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def lookup(dotted: str):
        value = params
        for key in dotted.split("."):
            value = value[key]
        return value

    def resolve(path: str, key=None, item=None) -> str:  # ${a.b}, and ${key} / ${item} of a foreach stage
        names = {"key": key, "item": item}
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(names[m[1]] if m[1] in names else lookup(m[1])), path)

    for stage in stages.values():
        items = [(None, None)]
        if "foreach" in stage:
            foreach = stage["foreach"]
            foreach = lookup(foreach[2:-1]) if isinstance(foreach, str) else foreach
            items = list(foreach.items()) if isinstance(foreach, dict) else [(i, i) for i in foreach]
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                if isinstance(entry, dict):
                    for path, options in entry.items():
                        if isinstance(options, dict) and options.get("cache") is False:
                            uncached.update(resolve(path, key, item) for key, item in items)
    outs = [o["path"] for s in lock["stages"].values() for o in s.get("outs", [])]
    return [p for p in outs if p not in uncached]


def test_no_git_tracked_file_is_a_cached_dvc_output():
    lock_path = REPO / "dvc.lock"
    assert lock_path.is_file(), "dvc.lock is committed with the results"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    cached = _cached_outputs(yaml.safe_load(lock_path.read_text()), (REPO / "dvc.yaml").read_text())
    assert cached, "the pipeline has cached outputs (data, models): the check below looks at them"
    clashes = sorted(p for p in cached for t in tracked if t == p or t.startswith(p.rstrip("/") + "/"))
    assert not clashes, f"tracked by git and cached by DVC (mark them `cache: false` or untrack them): {clashes}"
