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

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import Params, load_params
from components.pipeline.dvc_process import (
    DvcFailed,
    ServiceUnreachable,
    dvc_executable,
    experiment_of,
    is_network_failure,
    run_streaming,
    run_variables,
    stage_environment,
    stages_run,
)
from components.pipeline.parameters import DEFAULT_PARAMS, PipelineParameters, dvc_command
from components.pipeline.services import check_services_reachable
from components.pipeline.summary import (
    flatten_numbers,
    metrics_table,
    promotion_markdown,
    promotion_report_path,
    read_json_or_none,
    run_summary_markdown,
)
from components.tracking import git_commit, resolve_tracking_uri

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


@task(
    name="check-services", retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_on_network_error,
    cache_policy=NO_CACHE,
)
def check_services(params: Params) -> dict[str, str]:
    """MLflow answers and every S3 location in params is usable, before any stage starts."""
    return check_services_reachable(params)


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
        if is_network_failure(exc):
            raise ServiceUnreachable(str(exc)) from exc
        raise


# ----------------------------------------------------------------------------- artifacts


def publish_artifacts(repo: Path, params: Params, summary: dict[str, Any]) -> dict[str, Any]:
    """Prefect artifacts of the run: summary + promotion (markdown), metrics (table). Returns what was found."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    metrics_path = params.evaluation.metrics_path
    promotion_path = promotion_report_path(params)
    metrics = read_json_or_none(repo / metrics_path) if (repo / metrics_path).exists() else None
    promotion = read_json_or_none(repo / promotion_path) if (repo / promotion_path).exists() else None

    rows = metrics_table(metrics)
    if rows:
        create_table_artifact(rows, key="talkalign-metrics", description=f"`{metrics_path}` after this pipeline run")
    promotion_md = promotion_markdown(promotion, promotion_path)
    if promotion is not None:  # absent: no artifact, so the key's latest version stays the last real decision
        create_markdown_artifact(
            f"# Promotion decision\n\n{promotion_md}\n", key="talkalign-promotion",
            description=f"`{promotion_path}`: the register stage's decision",
        )
    create_markdown_artifact(run_summary_markdown(summary, rows, metrics_path, promotion_md), key="talkalign-pipeline",
                             description="what this pipeline run did")
    return {"metrics": metrics, "promotion": promotion}


# ----------------------------------------------------------------------------- the flow


def _prefect_api_url() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    url = str(getattr(getattr(context, "client", None), "api_url", "") or "")
    return url if url.startswith("http") else None


@flow(name="pipeline", log_prints=True)
def pipeline_flow(parameters: PipelineParameters = PipelineParameters()) -> dict[str, Any]:
    """Run the talkalign DAG (or some stages) through DVC: `dvc repro`, or `dvc exp run -S key=value`."""
    import mlflow

    logger = get_run_logger()
    repo = Path.cwd()
    if not (repo / "dvc.yaml").exists():
        raise FileNotFoundError(
            f"{repo}: no dvc.yaml here; run the pipeline (or `talkalign serve`) from the repository root"
        )
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
        experiment = experiment_of(output) if parameters.is_experiment else None
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
            "stages_run": stages_run(output),
        }
        found = publish_artifacts(repo, params, summary)
        if found["metrics"] is not None:
            mlflow.log_metrics(flatten_numbers(found["metrics"]))
        # The versions this run produced (dvc.lock + the DVC remote restore them) and what it reported.
        for path in ("dvc.lock", DEFAULT_PARAMS, params.evaluation.metrics_path, promotion_report_path(params)):
            if (repo / path).is_file():
                mlflow.log_artifact(str(repo / path))
        if isinstance(found["promotion"], dict) and "promoted" in found["promotion"]:
            mlflow.set_tag("talkalign.promoted", str(bool(found["promotion"]["promoted"])).lower())
    return summary
