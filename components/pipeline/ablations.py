"""`talkalign ablations`: rows of `-S` overrides on top of the committed params, each run as `dvc exp run --temp`,
and one markdown table of their metrics read back from `dvc exp show --json`.

Why `--temp` (checked with dvc 3.67.1): DVC runs each experiment in a temporary clone of HEAD under .dvc/tmp/exps/,
so the workspace's params.yaml is never rewritten and a row never inherits the previous row's -S values (the
stacking pitfall of workspace runs: `dvc exp run` there leaves the last experiment's params behind). The clone does
get the workspace's uncommitted edits of tracked files, a dirty params.yaml included, which is why a params file
that differs from HEAD is refused, and why every finished row's params are checked against HEAD's plus its own -S.

    spec = load_spec("infra/ablations/preference.yaml")
    rows = run_ablations(spec, repo=".", output="reports/ablations.md")        # or table_only=True
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from components.config.base import Strict
from components.config.dotted import flatten, get_dotted, has_dotted, set_dotted
from components.io.atomic import atomic_file
from components.pipeline.dvc_process import DvcFailed, dvc_executable, run_streaming, stage_environment
from components.pipeline.parameters import hydra_value

__all__ = [
    "AblationError",
    "AblationRow",
    "AblationSpec",
    "AblationsFailed",
    "Column",
    "Experiment",
    "Row",
    "absolute_tracking_uri",
    "check_params_committed",
    "format_cell",
    "load_spec",
    "read_experiments",
    "render_table",
    "run_ablations",
]

MISSING = "–"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one git ref component: DVC names experiments refs/exps/.../<name>
_KEY = re.compile(r"^(?:[\w./-]+\.ya?ml:)?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")  # [file.yaml:]dotted.key, as -S takes it
_STAGE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_@.-]*$")  # dvc.yaml stage names (phase1@reshape)
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class AblationError(RuntimeError):
    """A spec, repository or DVC problem that stops the ablations before (or instead of) a table."""


class AblationsFailed(AblationError):
    """Some rows failed; the table was still written (those rows marked). `rows` has every row."""

    def __init__(self, message: str, rows: list[AblationRow]):
        super().__init__(message)
        self.rows = rows


# ---------------------------------------------------------------------------------------------------------- spec


def _check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if not _KEY.match(key):
            raise ValueError(f"-S key {key!r} must be a dotted params key such as dpo.beta (or params.wan.yaml:dpo.beta)")
        if isinstance(value, dict):  # Hydra would merge a mapping into the existing one, not replace it
            raise ValueError(f"-S {key!r}: set the keys of a mapping one by one ({key}.name: value)")
        hydra_value(value)  # what `-S` cannot carry fails here, before anything runs
    return overrides


def _check_stages(stages: list[str] | None) -> list[str] | None:
    for stage in stages or []:
        if not _STAGE.match(stage):
            raise ValueError(f"not a DVC stage name: {stage!r}")
    return stages


class Column(Strict):
    """One table column: a value in a metrics JSON file of each experiment."""

    label: str
    file: str  # a metrics file of dvc.yaml, as `dvc exp show` names it (reports/claims.json)
    path: str  # dotted path into it; `{dpo.pair_set}` is filled from the row's own params
    digits: int = Field(3, ge=0, le=8)


class Row(Strict):
    """One experiment: `-S` values on top of HEAD's params, and the stages to rerun."""

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    targets: list[str] | None = None  # default: the spec's targets

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"row name {value!r}: letters, digits, '_', '.', '-' only (it becomes a git ref)")
        return value

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        return _check_stages(value)


class AblationSpec(Strict):
    """The rows, the columns of their table, and how each row runs."""

    rows: list[Row]
    columns: list[Column]
    prefix: str = "abl-"  # experiment name = prefix + row name
    common: dict[str, Any] = Field(default_factory=dict)  # -S values every row gets (the baseline does not)
    targets: list[str] | None = None  # stages each row reruns; None: the whole pipeline
    single_item: bool = True  # `-s`: rerun just the targets (in pipeline order), not every stale stage upstream
    params_files: list[str] = ["params.yaml"]  # must equal HEAD before a run
    output: str = "reports/ablations.md"
    title: str = "Ablations"

    @field_validator("common")
    @classmethod
    def _common(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        return _check_stages(value)

    @model_validator(mode="after")
    def _unique(self) -> AblationSpec:
        for what, names in (("row", [r.name for r in self.rows]), ("column", [c.label for c in self.columns])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} names must be unique: {', '.join(twice)}")
        if self.prefix and not _NAME.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: letters, digits, '_', '.', '-' only")
        return self

    def experiment_name(self, row: Row) -> str:
        return f"{self.prefix}{row.name}"

    def overrides_of(self, row: Row) -> dict[str, Any]:
        return {**self.common, **row.overrides}


def load_spec(path: str | Path) -> AblationSpec:
    """The spec in a YAML file; a bad file, an unknown key or a bad value raises AblationError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise AblationError(f"{path}: cannot read the ablation spec ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise AblationError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise AblationError(f"{path}: the ablation spec must be a mapping with rows and columns")
    try:
        return AblationSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise AblationError(f"{path}: bad ablation spec: {problems}") from exc


# ---------------------------------------------------------------------------------------------- git and dvc calls


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def _head(repo: Path) -> str:
    result = _git(repo, "rev-parse", "HEAD")
    if result.returncode:
        raise AblationError(f"{repo}: not a git repository with a commit ({result.stderr.strip()})")
    return result.stdout.strip()


def check_params_committed(repo: str | Path, files: list[str]) -> None:
    """Refuse (AblationError, one line) when a params file differs from git HEAD: `dvc exp run --temp` would carry
    the uncommitted edit into every row, stacked under its -S values."""
    repo = Path(repo)
    for name in files:
        if _git(repo, "cat-file", "-e", f"HEAD:{name}").returncode:
            raise AblationError(f"{name} is not committed: commit it first (every ablation row is HEAD's params plus its own -S)")
        if _git(repo, "status", "--porcelain", "--", name).stdout.strip():
            raise AblationError(f"{name} differs from git HEAD: commit it or `git checkout -- {name}` first "
                                "(every ablation row is HEAD's params plus its own -S)")


def _dirty_tracked(repo: Path) -> list[str]:
    lines = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    return [line[3:] for line in lines if line.strip()]


def _pipeline_order(repo: Path, dvc: str, env: dict[str, str]) -> list[str]:
    """Every stage of dvc.yaml, upstream first (`dvc dag --dot`'s nodes and edges, topologically sorted)."""
    result = subprocess.run([dvc, "dag", "--dot"], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise AblationError(f"`dvc dag` failed: {result.stderr.strip() or result.stdout.strip()}")
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    for line in result.stdout.splitlines():
        if m := re.fullmatch(r'\s*"([^"]+)"\s*->\s*"([^"]+)";?\s*', line):
            edges.append((m[1], m[2]))
        elif m := re.fullmatch(r'\s*"([^"]+)";?\s*', line):
            nodes.append(m[1])
    indegree = {n: 0 for n in nodes}
    for _, b in edges:
        indegree[b] = indegree.get(b, 0) + 1
    order, ready = [], [n for n in indegree if indegree[n] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for a, b in edges:
            if a == node:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return order


def _ordered_targets(targets: list[str], order: list[str], row: str) -> list[str]:
    # `dvc exp run -s a b` runs a, then b, in the order given (a downstream stage first would read stale inputs)
    unknown = [t for t in targets if t not in order]
    if unknown:
        raise AblationError(f"row {row}: no stage {', '.join(unknown)} in dvc.yaml (stages: {', '.join(order)})")
    return sorted(dict.fromkeys(targets), key=order.index)


@dataclass(frozen=True)
class Experiment:
    """One commit as `dvc exp show --json` describes it: its params and metrics files' contents."""

    rev: str
    name: str | None
    params: dict[str, dict]
    metrics: dict[str, dict]
    error: str | None = None


def _files_data(section: dict | None) -> dict[str, dict]:
    out = {}
    for name, entry in (section or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("data"), dict):
            out[name] = entry["data"]
    return out


def _experiment(rev: dict) -> Experiment:
    data = rev.get("data") or {}
    error = rev.get("error")
    if isinstance(error, dict):
        error = error.get("msg") or error.get("type") or json.dumps(error)
    return Experiment(rev=rev.get("rev", ""), name=rev.get("name"), params=_files_data(data.get("params")),
                      metrics=_files_data(data.get("metrics")), error=str(error) if error else None)


def parse_exp_show(shown: list[dict], head: str) -> tuple[Experiment | None, dict[str, Experiment]]:
    """HEAD's entry and its experiments by name, from `dvc exp show --json`: a list with one entry per baseline
    commit (and "workspace"), each with `experiments: [{name, revs: [{rev, name, data, error}]}]`."""
    for entry in shown:
        if entry.get("rev") != head:
            continue
        experiments = {}
        for exp in entry.get("experiments") or []:
            revs = exp.get("revs") or []
            if exp.get("name") and revs:
                experiments[exp["name"]] = _experiment(revs[0])  # revs[0]: the experiment's final commit
        return _experiment(entry), experiments
    return None, {}


def read_experiments(repo: str | Path, dvc: str | None = None,
                     env: dict[str, str] | None = None) -> tuple[Experiment | None, dict[str, Experiment]]:
    """HEAD (the committed results) and the experiments based on it, from `dvc exp show --json`."""
    repo = Path(repo)
    result = subprocess.run([dvc or dvc_executable(), "exp", "show", "--json"], cwd=repo, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise AblationError(f"`dvc exp show --json` failed: {result.stderr.strip() or result.stdout.strip()}")
    try:
        shown = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AblationError(f"`dvc exp show --json` printed no JSON ({exc}): {result.stdout[:200]!r}") from exc
    return parse_exp_show(shown, _head(repo))


# ------------------------------------------------------------------------------------------------------- values


def _split_key(key: str, default_file: str) -> tuple[str, str]:
    file, sep, dotted = key.rpartition(":")
    return (file, dotted) if sep else (default_file, key)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _params_differences(baseline: Experiment, exp: Experiment, overrides: dict[str, Any], default_file: str) -> list[str]:
    """Keys where the experiment's params are not HEAD's with just these overrides (a stacked -S shows up here)."""
    expected = copy.deepcopy(baseline.params)
    for key, value in overrides.items():
        file, dotted = _split_key(key, default_file)
        set_dotted(expected.setdefault(file, {}), dotted, value)
    out = []
    for file in sorted(set(expected) | set(exp.params)):
        want = flatten(expected.get(file, {}), keep_empty=True)
        got = flatten(exp.params.get(file, {}), keep_empty=True)
        for key in sorted(set(want) | set(got)):
            if not _same(want.get(key), got.get(key)):
                name = key if file == default_file else f"{file}:{key}"
                out.append(f"{name}={_shown(got.get(key))} (expected {_shown(want.get(key))})")
    return out


def _column_value(column: Column, exp: Experiment, default_file: str) -> Any:
    params = exp.params.get(default_file, {})
    missing = False

    def fill(match: re.Match) -> str:
        nonlocal missing
        file, dotted = _split_key(match[1], default_file)
        value = get_dotted(exp.params.get(file, params), dotted, None)
        missing = missing or value is None
        return str(value)

    path = _PLACEHOLDER.sub(fill, column.path)
    return None if missing else get_dotted(exp.metrics.get(column.file), path, None)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def format_cell(value: Any, digits: int = 3) -> str:
    """A {diff, ci_lo, ci_hi} interval as `+0.011 [+0.002, +0.021]` (bold when beyond_noise), a number as
    itself, a missing value as –."""
    if isinstance(value, dict) and {"diff", "ci_lo", "ci_hi"} <= value.keys():
        d, lo, hi = value["diff"], value["ci_lo"], value["ci_hi"]
        if not _finite(d):
            return MISSING
        text = f"{d:+.{digits}f}" + (f" [{lo:+.{digits}f}, {hi:+.{digits}f}]" if _finite(lo, hi) else "")
        return f"**{text}**" if value.get("beyond_noise") else text
    if value is None or isinstance(value, (dict, list)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits + 1}g}" if math.isfinite(value) else MISSING
    return str(value).replace("|", "\\|")


def _shown(value: Any) -> str:
    """A -S value as a reader writes it: strings bare, lists as [a, b]."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return "null" if value is None else hydra_value(value)


def absolute_tracking_uri(uri: str, repo: str | Path) -> str:
    """A relative `sqlite:///mlflow.db` as an absolute one: each row's stages run in a temporary clone, and their
    MLflow runs should land in the workspace's database, not in one deleted with the clone."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((Path(repo) / uri[len(prefix):]).resolve())
    return uri


# -------------------------------------------------------------------------------------------------------- table


@dataclass
class AblationRow:
    """One line of the table."""

    name: str
    experiment: str | None  # None: the baseline (HEAD's committed results)
    overrides: dict[str, Any]  # the row's own -S values (the spec's common ones are on every row)
    status: str  # baseline | ok | failed | not run | params differ
    values: dict[str, Any] = field(default_factory=dict)  # column label -> the raw value (None: missing)
    seconds: float | None = None
    detail: str = ""
    targets: list[str] | None = None  # the row's own stages, where it differs from the spec's

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "params differ")


def _status_cell(row: AblationRow) -> str:
    if row.status in ("failed", "params differ"):
        return f"**{row.status}**" + (f": {row.detail}" if row.detail else "")
    return row.status


def render_table(spec: AblationSpec, rows: list[AblationRow], head: str) -> str:
    """The markdown table: one line per row, the row's own -S values, the spec's columns, the status."""
    def code(text: str) -> str:
        return f"`{text}`".replace("|", "\\|")

    common = " ".join(code(f"-S {k}={_shown(v)}") for k, v in spec.common.items())
    def stages(targets: list[str]) -> str:
        how = "only (`-s`, in pipeline order)" if spec.single_item else "and every stale stage upstream"
        return f"{code(' '.join(targets))} {how}"

    targets = spec.targets and stages(spec.targets)
    lines = [
        f"# {spec.title}",
        "",
        f"Each row is `dvc exp run --temp -n {spec.prefix}<row>` of commit `{head[:7]}`: its params are the committed "
        "params.yaml plus that row's `-S` values only"
        + (f", and on every row {common}" if common else "")
        + (f"; each reruns {targets}" if targets else "") + ". "
        f"The baseline is the commit's own results. Differences: estimate [95 % CI]; **bold**: the CI excludes 0. "
        f"{MISSING}: no value. Rebuild: `talkalign ablations --table-only`.",
        "",
        "| row | -S | " + " | ".join(c.label for c in spec.columns) + " | status |",
        "|---|---|" + "---:|" * len(spec.columns) + "---|",
    ]
    for row in rows:
        shown = "<br>".join(code(f"{k}={_shown(v)}") for k, v in row.overrides.items()) or MISSING
        if row.targets is not None:
            shown += f"<br>stages: {code(' '.join(row.targets))}"
        cells = [format_cell(row.values.get(c.label), c.digits) for c in spec.columns]
        lines.append(f"| {row.name} | {shown} | " + " | ".join(cells) + f" | {_status_cell(row)} |")
    return "\n".join(lines) + "\n"


def _table_rows(spec: AblationSpec, baseline: Experiment | None, experiments: dict[str, Experiment],
                ran: dict[str, AblationRow]) -> list[AblationRow]:
    default_file = spec.params_files[0]
    base = AblationRow("baseline", None, {}, "baseline", detail="" if baseline else "HEAD not in `dvc exp show`")
    if baseline:
        base.values = {c.label: _column_value(c, baseline, default_file) for c in spec.columns}
    rows = [base]
    for spec_row in spec.rows:
        name = spec.experiment_name(spec_row)
        overrides = spec.overrides_of(spec_row)
        row = ran.get(spec_row.name) or AblationRow(spec_row.name, name, spec_row.overrides, "not run")
        row.targets = spec_row.targets
        exp = experiments.get(name)
        if row.status != "failed" and exp is not None:
            row.values = {c.label: _column_value(c, exp, default_file) for c in spec.columns}
            differences = _params_differences(baseline, exp, overrides, default_file) if baseline else []
            if exp.error:
                row.status, row.detail = "failed", exp.error
            elif differences:
                row.status, row.detail = "params differ", "; ".join(differences[:5])
            else:
                row.status = "ok"
        elif row.status != "failed":
            row.status = "not run"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------- run


class _Echo:
    """The logger run_streaming wants, printing DVC's lines indented under the row."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        line = message % args if args else message
        self.lines.append(line)
        self.log("    " + line)

    def failure(self) -> str:
        """DVC's error lines, after the stage's own last words before them (a stage's sys.exit message)."""
        errors = [i for i, line in enumerate(self.lines) if line.startswith("ERROR")]
        if not errors:
            return "; ".join(self.lines[-2:])
        before = [line for line in self.lines[: errors[0]] if not line.startswith(("> ", "$ ", "Running stage", "Reproducing"))]
        return "; ".join(dict.fromkeys([*before[-1:], *(self.lines[i] for i in errors)]))


def _check_keys(repo: Path, spec: AblationSpec, rows: list[Row]) -> None:
    default_file = spec.params_files[0]
    loaded: dict[str, Any] = {}
    for row in rows:
        for key in spec.overrides_of(row):
            file, dotted = _split_key(key, default_file)
            if file not in loaded:
                try:
                    loaded[file] = yaml.safe_load((repo / file).read_text()) or {}
                except (OSError, yaml.YAMLError) as exc:
                    raise AblationError(f"row {row.name}: cannot read {file} for -S {key}: {exc}") from exc
            if not has_dotted(loaded[file], dotted):
                raise AblationError(f"row {row.name}: -S {key}: {file} has no such key")


def _exp_run_command(dvc: str, spec: AblationSpec, row: Row, order: list[str]) -> list[str]:
    cmd = [dvc, "exp", "run", "--temp", "-n", spec.experiment_name(row)]
    targets = row.targets if row.targets is not None else spec.targets
    targets = _ordered_targets(targets, order, row.name) if targets else []
    if targets and spec.single_item:
        cmd.append("-s")
    for key, value in spec.overrides_of(row).items():
        cmd += ["-S", f"{key}={hydra_value(value)}"]  # no `++`: a key params.yaml lacks fails in DVC too
    return cmd + targets


def _run_row(spec: AblationSpec, row: Row, cmd: list[str], repo: Path, dvc: str, env: dict[str, str],
             existing: set[str], log: Callable[[str], None], label: str) -> AblationRow:
    name = spec.experiment_name(row)
    result = AblationRow(row.name, name, row.overrides, "ok")
    start = time.monotonic()
    log(f"{label} {row.name}: start")
    echo = _Echo(log)
    try:
        if name in existing:  # a rerun replaces the row's experiment, so the table is fresh
            run_streaming([dvc, "exp", "remove", name], repo, env, echo)
        run_streaming(cmd, repo, env, echo)
    except DvcFailed as exc:
        result.status, result.detail = "failed", (echo.failure() or str(exc).splitlines()[0])[:300]
    result.seconds = time.monotonic() - start
    outcome = "done" if result.status == "ok" else f"FAILED ({result.detail})"
    log(f"{label} {row.name}: {outcome} in {result.seconds:.1f} s")
    return result


def run_ablations(spec: AblationSpec, repo: str | Path = ".", output: str | Path | None = None,
                  only: list[str] | None = None, table_only: bool = False, dvc: str | None = None,
                  extra_env: dict[str, str] | None = None, log: Callable[[str], None] = print) -> list[AblationRow]:
    """Run the spec's rows (`only`: these names) as `dvc exp run --temp`, one after another, then write the table of
    every row from `dvc exp show --json` to `output` (default spec.output, relative to repo) and return its rows.
    table_only: run nothing, rebuild the table from the experiments there are. Raises AblationsFailed after the
    table is written when a row failed or its params are not HEAD's plus its -S."""
    repo = Path(repo).resolve()
    output = repo / (output or spec.output)
    dvc = dvc or dvc_executable()
    env = stage_environment(repo, extra_env or {})
    names = [r.name for r in spec.rows]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise AblationError(f"no row {', '.join(unknown)} in the spec (rows: {', '.join(names)})")
    to_run = [] if table_only else [r for r in spec.rows if not only or r.name in only]
    head = _head(repo)

    ran: dict[str, AblationRow] = {}
    if to_run:
        check_params_committed(repo, spec.params_files)
        _check_keys(repo, spec, to_run)
        order = _pipeline_order(repo, dvc, env)
        commands = {r.name: _exp_run_command(dvc, spec, r, order) for r in to_run}  # every row checked before any runs
        dirty = _dirty_tracked(repo)
        if dirty:
            log(f"note: uncommitted changes go into every experiment (DVC carries them): {', '.join(dirty[:5])}"
                + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else ""))
        existing = set(read_experiments(repo, dvc, env)[1])
        for i, row in enumerate(to_run, 1):
            ran[row.name] = _run_row(spec, row, commands[row.name], repo, dvc, env, existing,
                                     log, f"[{i}/{len(to_run)}]")

    baseline, experiments = read_experiments(repo, dvc, env)
    rows = _table_rows(spec, baseline, experiments, ran)
    with atomic_file(output) as tmp:
        tmp.write_text(render_table(spec, rows, head))
    log(f"wrote {output}")
    failed = [r for r in rows if r.failed]
    if failed:
        raise AblationsFailed(f"{len(failed)} ablation row(s) failed: "
                              + ", ".join(f"{r.name} ({r.status})" for r in failed) + f"; table: {output}", rows)
    return rows
