"""The register stage: the evaluated model becomes an MLflow model version (`candidate`), and `champion` when
the promotion gates in params.yaml pass against the current champion. Plus `promote` and `rollback` by hand.

Nothing moves `champion` unless the tracking server answers, the metrics file has the variant, the bundle
loads, the version is completely registered and every gate passes (components/registry/register_stage.py).
"""

from __future__ import annotations

import mlflow
from prefect import flow

from components.config import load_params
from components.registry.register_stage import (
    check_candidate,
    lineage_tags,
    promote_with_note,
    register_and_gate,
    rollback_with_note,
    tracking_client,
)
from components.registry.report import write_report
from components.tracking import stage_run
from flows.logging import log_summary


@flow(name="register", log_prints=True)
def register_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    cfg = params.registry
    client = tracking_client(params)  # an unreachable server fails here, before anything is read or written
    candidate = check_candidate(params)
    with stage_run("register", params, section="registry", inputs=candidate.inputs(params)) as run:
        tags = lineage_tags(params, params_path, overrides, candidate.model_dir, run.info.run_id)
        outcome = register_and_gate(client, params, candidate, run.info.run_id, tags)
        write_report(outcome.report, cfg.report_path, cfg.report_md_path)
        log_summary(candidate.metrics, prefix="candidate.")  # the finite ones
        mlflow.log_metrics({"promoted": float(outcome.promotion.decision.promote),
                            "version": float(outcome.registration.version)})
        mlflow.set_tags({"talkalign.decision": outcome.promotion.outcome,
                         "talkalign.model_version": outcome.registration.version})
        mlflow.log_artifact(cfg.report_path)
        mlflow.log_artifact(cfg.report_md_path)
        return outcome.report


def promote_by_hand(version: str, reason: str, params_path: str = "params.yaml", overrides: dict | None = None) -> str:
    """`talkalign promote VERSION --reason TEXT`: make a version champion whatever the gates say."""
    params = load_params(params_path, overrides)
    return promote_with_note(tracking_client(params), params.registry.model_name, version, reason)


def rollback_by_hand(reason: str = "", params_path: str = "params.yaml", overrides: dict | None = None) -> str:
    """`talkalign rollback [--reason TEXT]`: move champion back to the previous champion."""
    params = load_params(params_path, overrides)
    return rollback_with_note(tracking_client(params), params.registry.model_name, reason)
