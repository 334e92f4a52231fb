"""`talkalign ablations` on a real git + DVC repository: every row is HEAD's params plus its own -S only (a stacked
-S would show in the table), the workspace is left as it was, a dirty params.yaml is refused, the table rebuilds
from `dvc exp show`, and a failing row is marked in the table and raised."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from components.pipeline.ablations import (
    AblationError,
    AblationsFailed,
    AblationSpec,
    Experiment,
    _params_differences,
    absolute_tracking_uri,
    format_cell,
    load_spec,
    read_experiments,
    run_ablations,
)

DVC = str(Path(sys.executable).parent / "dvc")

# score writes the claims.json shape from the params (diff = a * 0.1; a < 0 fails) and pair counts per kind;
# summary reads score's output, so it is right only when it runs after score.
SCORE = """
import json, sys, yaml
p = yaml.safe_load(open("params.yaml"))
a, c = p["a"], p["b"]["c"]
if a < 0:
    sys.exit(f"score: a must be >= 0, got {a}")
d = a * 0.1
json.dump({"comparisons": {"x_vs_y": {"m": {"diff": d, "ci_lo": d - 0.05, "ci_hi": d + 0.05, "beyond_noise": a >= 2,
                                         "n_windows": 8, "n_seeds": 1}}}}, open("reports/claims.json", "w"))
json.dump({"composite": {"pairs": c * 10}, "lip": {"pairs": c * 30}}, open("reports/pairs.json", "w"))
"""
SUMMARY = """
import json
d = json.load(open("reports/claims.json"))["comparisons"]["x_vs_y"]["m"]["diff"]
json.dump({"double": round(d * 2, 6)}, open("reports/summary.json", "w"))
"""
PIPELINE = {"stages": {
    "score": {"cmd": "python score.py", "deps": ["score.py"], "params": ["a", "b", "kind"],
              "metrics": [{"reports/claims.json": {"cache": False}}, {"reports/pairs.json": {"cache": False}}]},
    "summary": {"cmd": "python summary.py", "deps": ["summary.py", "reports/claims.json"],
                "metrics": [{"reports/summary.json": {"cache": False}}]},
}}
PARAMS = "a: 1\nb:\n  c: 2\nkind: composite\n"
SPEC = {
    "title": "Toy ablations",
    "prefix": "t-",
    "output": "reports/ablations.md",
    "targets": ["summary", "score"],  # out of order on purpose: -s runs them as given, so they must be sorted
    "rows": [
        {"name": "a3", "set": {"a": 3}},
        {"name": "c5", "set": {"b.c": 5}},  # stacked on a3 it would read diff 0.3
        {"name": "lip", "set": {"kind": "lip"}},
    ],
    "columns": [
        {"label": "Δ m", "file": "reports/claims.json", "path": "comparisons.x_vs_y.m"},
        {"label": "pairs", "file": "reports/pairs.json", "path": "{kind}.pairs"},
        {"label": "double", "file": "reports/summary.json", "path": "double"},
    ],
}


def _run(repo: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout


def _table(path: Path) -> dict[str, list[str]]:
    """Row name -> its cells (-S, the columns, status) from the markdown table."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| row "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("ablations")
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "config", "user.name", "test")
    _run(repo, "git", "config", "user.email", "test@example.com")
    _run(repo, DVC, "init", "-q")
    (repo / "reports").mkdir()
    (repo / "params.yaml").write_text(PARAMS)
    (repo / "score.py").write_text(SCORE)
    (repo / "summary.py").write_text(SUMMARY)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (repo / "spec.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False, allow_unicode=True))
    _run(repo, DVC, "repro", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "toy pipeline and its results")
    return repo


@pytest.fixture(scope="module")
def first_run(repo) -> tuple[list, list[str]]:
    lines: list[str] = []
    rows = run_ablations(load_spec(repo / "spec.yaml"), repo, log=lines.append)
    return rows, lines


def test_every_row_is_head_params_plus_its_own_overrides(repo, first_run):
    rows, lines = first_run
    table = _table(repo / "reports/ablations.md")
    assert list(table) == ["baseline", "a3", "c5", "lip"]
    assert table["baseline"] == ["–", "+0.100 [+0.050, +0.150]", "20", "0.2", "baseline"]
    assert table["a3"] == ["`a=3`", "**+0.300 [+0.250, +0.350]**", "20", "0.6", "ok"]  # summary ran after score
    assert table["c5"] == ["`b.c=5`", "+0.100 [+0.050, +0.150]", "50", "0.2", "ok"]  # a is HEAD's 1, not a3's 3
    assert table["lip"] == ["`kind=lip`", "+0.100 [+0.050, +0.150]", "60", "0.2", "ok"]  # {kind} from its own params
    assert [r.status for r in rows] == ["baseline", "ok", "ok", "ok"]
    assert rows[1].values["Δ m"]["diff"] == pytest.approx(0.3)
    # DVC itself recorded each experiment's params as HEAD's plus that row's -S only
    _, experiments = read_experiments(repo)
    assert experiments["t-a3"].params["params.yaml"] == {"a": 3, "b": {"c": 2}, "kind": "composite"}
    assert experiments["t-c5"].params["params.yaml"] == {"a": 1, "b": {"c": 5}, "kind": "composite"}
    assert experiments["t-lip"].params["params.yaml"] == {"a": 1, "b": {"c": 2}, "kind": "lip"}
    # progress: each row starts and ends with its seconds
    assert any(line.startswith("[2/3] c5: start") for line in lines)
    assert any(line.startswith("[3/3] lip: done in ") and line.endswith(" s") for line in lines)
    assert all(r.seconds and r.seconds > 0 for r in rows[1:])


def test_the_workspace_is_left_as_committed(repo, first_run):
    assert (repo / "params.yaml").read_text() == PARAMS
    assert _run(repo, "git", "status", "--porcelain", "--untracked-files=no") == ""  # results too: HEAD's
    assert _run(repo, "git", "ls-files", "--others", "--exclude-standard").split() == ["reports/ablations.md"]


def test_table_only_rebuilds_the_table_from_the_experiments(repo, first_run):
    out = repo / "rebuilt.md"
    rows = run_ablations(load_spec(repo / "spec.yaml"), repo, output="rebuilt.md", table_only=True, log=lambda _: None)
    assert _table(out) == _table(repo / "reports/ablations.md")
    assert [r.seconds for r in rows] == [None] * 4  # nothing ran
    out.unlink()


def test_dirty_params_are_refused_before_anything_runs(repo, first_run):
    before = _run(repo, DVC, "exp", "list", "--name-only")
    (repo / "params.yaml").write_text(PARAMS.replace("a: 1", "a: 7"))
    try:
        with pytest.raises(AblationError, match=r"^params.yaml differs from git HEAD: commit it or "
                                                r"`git checkout -- params.yaml` first"):
            run_ablations(load_spec(repo / "spec.yaml"), repo, only=["a3"], log=lambda _: None)
    finally:
        (repo / "params.yaml").write_text(PARAMS)
    assert _run(repo, DVC, "exp", "list", "--name-only") == before


def test_a_failing_row_is_marked_and_raised_and_a_rerun_replaces_its_experiment(repo, first_run):
    spec = load_spec(repo / "spec.yaml")
    broken = AblationSpec.model_validate({**SPEC, "rows": [*SPEC["rows"], {"name": "neg", "set": {"a": -1}}]})
    lines: list[str] = []
    with pytest.raises(AblationsFailed, match=r"1 ablation row\(s\) failed: neg \(failed\)") as raised:
        run_ablations(broken, repo, only=["neg", "c5"], log=lines.append)
    table = _table(repo / "reports/ablations.md")
    assert table["neg"][:4] == ["`a=-1`", "–", "–", "–"]
    assert table["neg"][4].startswith("**failed**") and "a must be >= 0, got -1" in table["neg"][4]
    assert table["a3"][-1] == table["c5"][-1] == "ok"  # the other rows' experiments are still read
    assert [r.status for r in raised.value.rows] == ["baseline", "ok", "ok", "ok", "failed"]
    names = _run(repo, DVC, "exp", "list", "--name-only").split()
    assert sorted(names) == ["t-a3", "t-c5", "t-lip"]  # c5 replaced, not duplicated; no failed experiment kept
    assert any(line.startswith("[1/2] c5: done") for line in lines)
    assert (repo / "params.yaml").read_text() == PARAMS
    with pytest.raises(AblationError, match="no row nope in the spec"):
        run_ablations(spec, repo, only=["nope"], log=lambda _: None)


def test_the_cli_rebuilds_the_table(repo, first_run, monkeypatch):
    from flows.ablations_cli import add_parsers, run_command

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ablations", "--spec", "spec.yaml", "--output", "cli.md", "--table-only"])
    monkeypatch.chdir(repo)
    assert run_command(args) == 0
    assert set(_table(repo / "cli.md")) == {"baseline", "a3", "c5", "lip"}
    (repo / "cli.md").unlink()


def test_a_stacked_override_is_reported():
    baseline = Experiment("h", None, {"params.yaml": {"a": 1, "b": {"c": 2}}}, {})
    stacked = Experiment("e", "t-c5", {"params.yaml": {"a": 3, "b": {"c": 5}}}, {})
    assert _params_differences(baseline, stacked, {"b.c": 5}, "params.yaml") == ["a=3 (expected 1)"]
    assert _params_differences(baseline, stacked, {"a": 3, "b.c": 5.0}, "params.yaml") == []


def test_cells():
    assert format_cell({"diff": 0.0106, "ci_lo": 0.0017, "ci_hi": 0.0213, "beyond_noise": True}) == "**+0.011 [+0.002, +0.021]**"
    assert format_cell({"diff": -0.088, "ci_lo": -0.113, "ci_hi": -0.065, "beyond_noise": False}, 2) == "-0.09 [-0.11, -0.07]"
    assert format_cell({"diff": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan")}) == "–"
    assert (format_cell(30), format_cell(17.4321), format_cell(None), format_cell("a|b")) == ("30", "17.43", "–", "a\\|b")


def test_tracking_uri_of_the_workspace(tmp_path):
    assert absolute_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def test_bad_specs_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows: [\n")
    with pytest.raises(AblationError, match=r"bad.yaml: not valid YAML"):
        load_spec(bad)
    bad.write_text(textwrap.dedent("""
        rows: [{name: x, set: {a: 1}, sett: 2}]
        columns: []
    """))
    with pytest.raises(AblationError, match=r"bad.yaml: bad ablation spec: rows.0.sett: Extra inputs are not permitted"):
        load_spec(bad)
    bad.write_text("rows: [{name: x, set: {a: {b: 1}}}, {name: x}]\ncolumns: []\n")
    with pytest.raises(AblationError, match=r"set the keys of a mapping one by one"):
        load_spec(bad)
    bad.write_text("rows: [{name: x}, {name: x}]\ncolumns: []\n")
    with pytest.raises(AblationError, match=r"row names must be unique: x"):
        load_spec(bad)


@pytest.mark.parametrize("spec_path", sorted((Path(__file__).parents[3] / "infra" / "ablations").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_row_is_a_valid_params_override(spec_path):
    """Each row of infra/ablations/*.yaml names keys params.yaml has, with values the params classes accept, and
    stages dvc.yaml has: a typo fails here, not after the slow rows before it have run."""
    from components.config import load_params

    repo = spec_path.parents[2]
    spec = load_spec(spec_path)
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    assert spec.rows
    for row in spec.rows:
        load_params(repo / "params.yaml", overrides=spec.overrides_of(row))  # raises on a bad key or value
        assert set(row.targets or spec.targets) <= stages, row.name
