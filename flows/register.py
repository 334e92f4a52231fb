"""The register stage: the evaluated model becomes an MLflow model version (`candidate`), and `champion` when
the promotion gates in params.yaml pass against the current champion. Plus `promote` and `rollback` by hand.

Nothing moves `champion` unless the tracking server answers, the metrics file has the variant, the bundle
loads, the version is completely registered and every gate passes (components/registry).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
from prefect import flow

from components.config import Params, load_params
from components.tracking import check_tracking_reachable, dvc_hashes, git_commit, resolve_tracking_uri, stage_run
from flows.logging import log_summary


def _client(params: Params):
    """A client of the params' tracking server, after checking it answers (before anything else is done)."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(params)
    check_tracking_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _file_md5(path: str | Path) -> str:
    path = Path(path)
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "unknown"


def lineage_tags(params: Params, params_path: str, overrides: dict | None, model_dir: str, run_id: str) -> dict[str, str]:
    """Version tags: git commit, DVC hashes of the model, shards and metrics, the params file's md5."""
    cfg = params.registry
    hashes = dvc_hashes([model_dir, params.data.shards, params.evaluation.metrics_path])
    tags = {
        "talkalign.variant": cfg.variant,
        "talkalign.model_dir": model_dir,
        "talkalign.git_commit": git_commit(),
        "talkalign.register_run_id": run_id,
        "talkalign.profile": params.profile,
        "talkalign.params_md5": _file_md5(params_path),
        "talkalign.metrics_md5": _file_md5(params.evaluation.metrics_path),
        **{f"dvc.md5.{path}": md5 for path, md5 in hashes.items()},
    }
    if overrides:
        tags["talkalign.params_overrides"] = json.dumps(overrides, sort_keys=True, default=str)
    return tags


@flow(name="register", log_prints=True)
def register_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.model.bundle import load_bundle
    from components.registry.registry import gated_promotion, load_variant_metrics, register_bundle
    from components.registry.report import build_report, render_markdown, write_report

    params = load_params(params_path, overrides)
    cfg = params.registry
    client = _client(params)  # an unreachable server fails here, before anything is read or written
    if cfg.variant not in params.evaluation.models:
        raise ValueError(
            f"registry.variant {cfg.variant!r} is not one of evaluation.models ({sorted(params.evaluation.models)})"
        )
    model_dir = params.evaluation.models[cfg.variant]
    metrics = load_variant_metrics(params.evaluation.metrics_path, cfg.variant)  # MetricsError names the file
    load_bundle(model_dir)  # only a model that loads is registered

    inputs = [model_dir, params.data.shards, params.evaluation.metrics_path]
    with stage_run("register", params, section="registry", inputs=inputs) as run:
        tags = lineage_tags(params, params_path, overrides, model_dir, run.info.run_id)
        registration = register_bundle(client, cfg.model_name, model_dir, tags=tags, metrics=metrics)
        print(
            f"{cfg.model_name} version {registration.version} "
            f"({'reused: same bundle digest' if registration.reused else 'new'}) is `candidate`"
        )

        def describe(result) -> str:
            return render_markdown(build_report(registration, result, metrics, variant=cfg.variant, run_id=run.info.run_id))

        result = gated_promotion(client, registration, metrics, cfg.gates, describe=describe)
        report = build_report(registration, result, metrics, variant=cfg.variant, run_id=run.info.run_id)
        write_report(report, cfg.report_path, cfg.report_md_path)
        log_summary(metrics, prefix="candidate.")  # the finite ones
        mlflow.log_metrics({"promoted": float(result.decision.promote), "version": float(registration.version)})
        mlflow.set_tags({"talkalign.decision": result.outcome, "talkalign.model_version": registration.version})
        mlflow.log_artifact(cfg.report_path)
        mlflow.log_artifact(cfg.report_md_path)
        for reason in result.decision.reasons:
            print(f"  {reason}")
        print(f"champion: {result.champion_before or 'none'} -> {result.champion_after or 'none'} ({result.outcome})")
        return report


def promote_by_hand(version: str, reason: str, params_path: str = "params.yaml", overrides: dict | None = None) -> str:
    """`talkalign promote VERSION --reason TEXT`: make a version champion whatever the gates say."""
    from components.registry.registry import append_description, get_version, now, promote

    params = load_params(params_path, overrides)
    name = params.registry.model_name
    client = _client(params)
    transition = promote(client, name, version, reason=f"by hand: {reason}")
    if not transition.changed:
        return f"{name} version {transition.after} already is champion; nothing changed"
    append_description(
        client, get_version(client, name, transition.after),
        f"**Promoted by hand** at {now()} (replacing {transition.before or 'no champion'}): {reason}",
    )
    return f"{name}: champion {transition.before or 'none'} -> {transition.after} (promoted by hand: {reason})"


def rollback_by_hand(reason: str = "", params_path: str = "params.yaml", overrides: dict | None = None) -> str:
    """`talkalign rollback [--reason TEXT]`: move champion back to the previous champion."""
    from components.registry.registry import append_description, get_version, now, rollback

    params = load_params(params_path, overrides)
    name = params.registry.model_name
    client = _client(params)
    reason = reason.strip() or "rolled back by hand"
    transition = rollback(client, name, reason=reason)
    append_description(
        client, get_version(client, name, transition.before),
        f"**Rolled back** at {now()} (champion is {transition.after} again): {reason}",
    )
    return f"{name}: champion {transition.before} -> {transition.after} (rolled back: {reason})"
