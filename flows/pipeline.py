"""The `pipeline` flow: the DVC DAG run from Prefect, so a run started in the UI is versioned like one from a shell.

    pipeline_flow(PipelineParameters(stages=["shard"], overrides={"world.n_identities": 4}))
      == `dvc exp run -S ++world.n_identities=4 shard` in the repository, with:
    - a parent MLflow run ("pipeline"): every stage run nests under it (TALKALIGN_PARENT_RUN_ID reaches the stage
      commands through DVC);
    - MLflow and S3 checked first: an unreachable one fails the run in seconds, naming the URI (network errors
      retried twice; a missing bucket or a refused key is not retried);
    - DVC's output streamed live into the flow run's log; a failed stage fails the run with DVC's message (never
      retried: a stage that failed on these inputs fails again);
    - optional `dvc pull` before and `dvc push` after (retried: network);
    - Prefect artifacts afterwards: a summary (markdown), the metrics table (from evaluation.metrics_path) and the
      promotion decision (from the register stage's report), each when the file exists.

Without overrides and with the default profile the command is a plain `dvc repro` (the workspace's params.yaml);
with overrides or another profile it is a `dvc exp run`, so `dvc exp show` lists it next to the others.
The flow runs in the current directory, which must be the repository root (`talkalign serve` is started there).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.config import Params, load_params
from components.tracking import PARENT_RUN_ENV, TrackingUnavailable, check_tracking_reachable, git_commit, resolve_tracking_uri

DEFAULT_PARAMS = "params.yaml"
DEFAULT_PROMOTION_REPORT = "reports/promotion.json"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_STAGE = re.compile(r"^[A-Za-z0-9_.:/@-]+$")  # stage names (phase1@reshape), dvc.yaml:stage paths


class PipelineParameters(BaseModel):
    """What a pipeline run may change; the Prefect UI renders this as the run form."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        DEFAULT_PARAMS,
        description="params file of the profile, relative to the repository (params.yaml: toy; params.wan.yaml: "
        "cluster). Another file than params.yaml replaces params.yaml for the run (DVC tracks params.yaml).",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='dotted params keys and values, e.g. {"world.n_identities": 4}; run as `dvc exp run -S`',
    )
    stages: list[str] | None = Field(
        None, description="DVC targets (stage names such as shard or phase1@reshape); empty: the whole DAG"
    )
    force: bool = Field(False, description="rerun the stages even when DVC finds them up to date")
    pull: bool = Field(False, description="`dvc pull --allow-missing` first (a fresh checkout, e.g. a pod)")
    push: bool = Field(False, description="`dvc push` the outputs to the default DVC remote afterwards")
    experiment_name: str | None = Field(None, description="name of the DVC experiment (with overrides or a profile)")

    @field_validator("profile")
    @classmethod
    def _profile_inside_repo(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"profile must be a .yaml file inside the repository, got {value!r}")
        return value

    @field_validator("overrides")
    @classmethod
    def _dotted_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _KEY.match(key):
                raise ValueError(f"override key {key!r} must be a dotted params key such as world.n_identities")
            if isinstance(item, dict):  # DVC (Hydra) would merge it into the mapping, not replace it
                raise ValueError(f"override {key!r}: set the keys of a mapping one by one ({key}.name=value)")
            hydra_value(item)  # refuse what `-S` cannot carry before anything runs
        return value

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: list[str] | None) -> list[str] | None:
        for stage in value or []:
            if not _STAGE.match(stage) or stage.startswith("-"):
                raise ValueError(f"not a DVC stage name: {stage!r}")
        return value or None

    @property
    def is_experiment(self) -> bool:
        return bool(self.overrides) or Path(self.profile) != Path(DEFAULT_PARAMS)


class DvcFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries DVC's own error lines."""


class ServiceUnreachable(ConnectionError):
    """MLflow, S3 or the DVC remote did not answer: possibly transient, so worth a retry."""


# ----------------------------------------------------------------------------- commands


def hydra_value(value: Any) -> str:
    """A value as DVC's `-S key=value` (Hydra override grammar) parses it back to the same YAML value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"override value {value!r}: only finite numbers")
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"  # YAML 1.1 (PyYAML) reads 1e-05 as a string, 1.0e-05 as a float
        return text
    if isinstance(value, str):
        if "${" in value or value.endswith("\\"):
            raise ValueError(f"override value {value!r}: '${{' and a trailing backslash are not supported")
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value:
            return f'"{value}"'
        raise ValueError(f"override value {value!r}: a string may hold ' or \", not both")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                raise ValueError(f"override mapping key {key!r}: letters, digits and '_' only")
            items.append(f"{key}:{hydra_value(item)}")
        return "{" + ",".join(items) + "}"
    raise ValueError(f"override value {value!r}: unsupported type {type(value).__name__}")


def dvc_command(parameters: PipelineParameters, dvc: str = "dvc") -> list[str]:
    """`dvc repro [targets]`, or `dvc exp run -S ++key=value ... [targets]` when the run changes params."""
    if parameters.is_experiment:
        cmd = [dvc, "exp", "run"]
        if parameters.experiment_name:
            cmd += ["--name", parameters.experiment_name]
        for key, value in parameters.overrides.items():
            cmd += ["-S", f"++{key}={hydra_value(value)}"]  # ++: set the key whether or not the file has it
    else:
        cmd = [dvc, "repro"]
    if parameters.force:
        cmd.append("--force")
    return cmd + list(parameters.stages or [])


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


# ----------------------------------------------------------------------------- tasks


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - whatever the result store says, it is the failure
        return exc
    return result if isinstance(result, BaseException) else None


def retry_on_network_error(task, task_run, state) -> bool:
    """Retry only what a second try can fix: a service that did not answer."""
    return isinstance(_exception_of(state), (ServiceUnreachable, TimeoutError))


def s3_uris(params: Params) -> list[str]:
    return sorted({uri for uri in (params.shard.output, params.data.shards) if str(uri).startswith("s3://")})


@task(
    name="check-services", retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_on_network_error,
    cache_policy=NO_CACHE,
)
def check_services(params: Params) -> dict[str, str]:
    """MLflow answers and every S3 location in params is usable, before any stage starts."""
    from components.io.storage import StorageError, open_storage

    uri = resolve_tracking_uri(params)
    try:
        check_tracking_reachable(uri)
    except TrackingUnavailable as exc:
        raise ServiceUnreachable(str(exc)) from exc
    checked = {"mlflow": uri}
    for s3 in s3_uris(params):
        try:
            open_storage(s3).ensure_ready()
        except StorageError as exc:
            if "cannot reach" in str(exc):
                raise ServiceUnreachable(str(exc)) from exc
            raise  # a missing bucket or a refused key: deterministic, no retry
        checked[s3] = "ok"
    return checked


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


@task(name="dvc-run", cache_policy=NO_CACHE)  # no retries: a stage that failed on these inputs fails again
def dvc_run(cmd: list[str], cwd: str, extra_env: dict[str, str]) -> str:
    return run_streaming(cmd, Path(cwd), stage_environment(Path(cwd), extra_env), get_run_logger())


@task(
    name="dvc-transfer", retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=retry_on_network_error,
    cache_policy=NO_CACHE,
)
def dvc_transfer(cmd: list[str], cwd: str, extra_env: dict[str, str]) -> str:
    """`dvc push` / `dvc pull`: idempotent, so a network failure is retried."""
    try:
        return run_streaming(cmd, Path(cwd), stage_environment(Path(cwd), extra_env), get_run_logger())
    except DvcFailed as exc:
        if _NETWORK_HINTS.search(str(exc)):
            raise ServiceUnreachable(str(exc)) from exc
        raise


# ----------------------------------------------------------------------------- artifacts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else str(value)
    if value is None:
        return "-"
    return value if isinstance(value, (int, str, bool)) else json.dumps(value)


def metrics_table(metrics: Any) -> list[dict[str, Any]]:
    """reports/metrics.json as rows: {model: {metric: value}} -> one row per model; a flat dict -> metric/value."""
    if not isinstance(metrics, dict) or not metrics:
        return []
    if all(isinstance(v, dict) for v in metrics.values()):
        columns: list[str] = []
        for values in metrics.values():
            columns += [key for key in values if key not in columns]
        return [{"model": name, **{c: _cell(values.get(c)) for c in columns}} for name, values in metrics.items()]
    return [{"metric": key, "value": _cell(value)} for key, value in metrics.items()]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(_cell(row.get(c))) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def promotion_markdown(report: Any, path: str) -> str:
    """The register stage's decision ({"promoted": bool, "reasons": [...], ...}) as markdown."""
    if report is None:
        return f"No promotion decision: `{path}` does not exist (the register stage did not run)."
    if not isinstance(report, dict):
        return f"`{path}` is not a JSON object."
    promoted = bool(report.get("promoted"))
    decision = report.get("decision") or ("promoted" if promoted else "not promoted")
    model = report.get("model")
    version = report.get("version")
    head = f"**{decision}**" + (f": {model} version {version}" if model and version is not None else "")
    lines = [f"Promotion decision: {head} (promoted: {'yes' if promoted else 'no'})."]
    if report.get("champion_before") is not None or report.get("champion_after") is not None:
        lines.append(f"Champion before: {report.get('champion_before') or 'none'}; after: {report.get('champion_after') or 'none'}.")
    reasons = report.get("reasons") or []
    if reasons:
        lines += ["", "Reasons:", "", *[f"- {reason}" for reason in reasons]]
    gates = report.get("gates")
    if isinstance(gates, list) and gates and all(isinstance(g, dict) for g in gates):
        lines += ["", "Gates:", "", markdown_table(gates)]
    return "\n".join(lines)


def publish_artifacts(repo: Path, params: Params, summary: dict[str, Any]) -> dict[str, Any]:
    """Prefect artifacts of the run: summary + promotion (markdown), metrics (table). Returns what was found."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    metrics_path = params.evaluation.metrics_path
    registry = getattr(params, "registry", None)  # the register stage's section, once it exists
    promotion_path = getattr(registry, "report_path", DEFAULT_PROMOTION_REPORT)
    metrics = _read_json(repo / metrics_path) if (repo / metrics_path).exists() else None
    promotion = _read_json(repo / promotion_path) if (repo / promotion_path).exists() else None

    rows = metrics_table(metrics)
    if rows:
        create_table_artifact(rows, key="talkalign-metrics", description=f"`{metrics_path}` after this pipeline run")
    promotion_md = promotion_markdown(promotion, promotion_path)
    if promotion is not None:  # absent: no artifact, so the key's latest version stays the last real decision
        create_markdown_artifact(
            f"# Promotion decision\n\n{promotion_md}\n", key="talkalign-promotion",
            description=f"`{promotion_path}`: the register stage's decision",
        )
    lines = [
        "# talkalign pipeline run",
        "",
        f"- command: `{summary['command']}`",
        f"- profile: `{summary['profile']}`; overrides: `{json.dumps(summary['overrides'])}`",
        f"- stages: {', '.join(summary['stages']) if summary['stages'] else 'the whole DAG'}",
        f"- DVC experiment: `{summary['experiment']}`" if summary.get("experiment") else "- DVC: workspace run (`dvc repro`)",
        f"- git commit: `{summary['git_commit']}`",
        f"- MLflow: run `{summary['mlflow_run_id']}` at `{summary['tracking_uri']}` (stage runs are nested under it)",
        f"- stages run: {', '.join(summary['stages_run']) or 'none (everything up to date)'}",
        "",
        "## Metrics",
        "",
        markdown_table(rows) if rows else f"`{metrics_path}` does not exist yet (the evaluate stage did not run).",
        "",
        "## Promotion",
        "",
        promotion_md,
        "",
    ]
    create_markdown_artifact("\n".join(lines), key="talkalign-pipeline", description="what this pipeline run did")
    return {"metrics": metrics, "promotion": promotion}


# ----------------------------------------------------------------------------- the flow


def _prefect_api_url() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    url = str(getattr(getattr(context, "client", None), "api_url", "") or "")
    return url if url.startswith("http") else None


def _flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        out[re.sub(r"[^\w\-./ ]", "_", prefix[:-1])[:250]] = float(tree)
    return out


@flow(name="pipeline", log_prints=True)
def pipeline_flow(parameters: PipelineParameters = PipelineParameters()) -> dict[str, Any]:
    """Run the talkalign DAG (or some stages) through DVC: `dvc repro`, or `dvc exp run -S key=value`."""
    import mlflow

    logger = get_run_logger()
    repo = Path.cwd()
    if not (repo / "dvc.yaml").exists():
        raise FileNotFoundError(f"{repo}: no dvc.yaml here; run the pipeline (or `talkalign serve`) from the repository root")
    profile = repo / parameters.profile
    # Fails on a missing profile, a typo in an override key or a bad value: before any service or stage is touched.
    params = load_params(profile, parameters.overrides)
    check_services(params)

    if profile.resolve() != (repo / DEFAULT_PARAMS).resolve():
        # DVC tracks params.yaml (the stages read it): the profile becomes params.yaml for this run, and the
        # experiment records it.
        logger.info("profile %s: copied over %s for this run", parameters.profile, DEFAULT_PARAMS)
        shutil.copyfile(profile, repo / DEFAULT_PARAMS)

    dvc = dvc_executable()
    cmd = dvc_command(parameters, dvc)
    tracking_uri = resolve_tracking_uri(params)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(params.tracking.experiment)
    tags = {
        "talkalign.stage": "pipeline",
        "talkalign.profile": params.profile,
        "talkalign.params_file": parameters.profile,
        "talkalign.dvc_command": " ".join(cmd[1:]),
        "mlflow.source.git.commit": git_commit(repo),
    }
    from prefect.runtime import flow_run

    if flow_run.id:
        tags["prefect.flow_run_id"] = str(flow_run.id)
    with mlflow.start_run(run_name="pipeline", tags=tags) as run:
        mlflow.log_params(
            {
                "profile": parameters.profile,
                "stages": ",".join(parameters.stages or []) or "all",
                "force": parameters.force,
                **{f"override.{key}": value for key, value in parameters.overrides.items()},
            }
        )
        env = run_variables(run.info.run_id, _prefect_api_url())
        if parameters.pull:
            dvc_transfer([dvc, "pull", "--allow-missing", *(parameters.stages or [])], str(repo), env)
        output = dvc_run(cmd, str(repo), env)
        experiment = None
        if parameters.is_experiment:
            match = re.search(r"Ran experiment\(s\): (\S+)|Reproducing experiment '([^']+)'", output)
            experiment = next((g for g in (match.groups() if match else ()) if g), None)
            if experiment:
                mlflow.set_tag("dvc.experiment", experiment)
        if parameters.push:
            dvc_transfer([dvc, "push", *(parameters.stages or [])], str(repo), env)

        summary = {
            "command": " ".join(["dvc", *cmd[1:]]),
            "profile": parameters.profile,
            "overrides": parameters.overrides,
            "stages": parameters.stages,
            "experiment": experiment,
            "git_commit": tags["mlflow.source.git.commit"],
            "mlflow_run_id": run.info.run_id,
            "tracking_uri": tracking_uri,
            "stages_run": re.findall(r"Running stage '([^']+)'", output),
        }
        found = publish_artifacts(repo, params, summary)
        if found["metrics"] is not None:
            mlflow.log_metrics(_flatten_numbers(found["metrics"]))
        # The versions this run produced (dvc.lock + the DVC remote restore them) and what it reported.
        promotion_path = getattr(getattr(params, "registry", None), "report_path", DEFAULT_PROMOTION_REPORT)
        for path in ("dvc.lock", DEFAULT_PARAMS, params.evaluation.metrics_path, promotion_path):
            if (repo / path).is_file():
                mlflow.log_artifact(str(repo / path))
        if isinstance(found["promotion"], dict) and "promoted" in found["promotion"]:
            mlflow.set_tag("talkalign.promoted", str(bool(found["promotion"]["promoted"])).lower())
    return summary
