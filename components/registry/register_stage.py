"""What the register stage and the `promote` / `rollback` commands do, on top of versions.py and champion.py.

register: the evaluated variant (registry.variant, one of evaluation.models) becomes a version alias `candidate`
with its lineage tags, and `champion` when every promotion gate passes against the current champion. Nothing
is registered unless the tracking server answers, the metrics file has the variant and the bundle loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import Params
from components.registry.champion import GatedPromotion
from components.registry.versions import Registration
from components.tracking import check_tracking_reachable, dvc_hashes, git_commit, resolve_tracking_uri


def tracking_client(params: Params):
    """A client of the params' tracking server, after checking it answers (before anything else is done)."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(params)
    check_tracking_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def file_md5(path: str | Path) -> str:
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
        "talkalign.params_md5": file_md5(params_path),
        "talkalign.metrics_md5": file_md5(params.evaluation.metrics_path),
        **{f"dvc.md5.{path}": md5 for path, md5 in hashes.items()},
    }
    if overrides:
        tags["talkalign.params_overrides"] = json.dumps(overrides, sort_keys=True, default=str)
    return tags


@dataclass
class CandidateModel:
    variant: str
    model_dir: str
    metrics: dict[str, Any]  # its row of evaluation.metrics_path

    def inputs(self, params: Params) -> list[str]:
        return [self.model_dir, params.data.shards, params.evaluation.metrics_path]


def check_candidate(params: Params) -> CandidateModel:
    """The variant to register, its metrics and a bundle that loads, or an error naming what is wrong."""
    from components.model.loading import load_bundle
    from components.registry.versions import load_variant_metrics

    cfg = params.registry
    models = params.evaluated_models()  # evaluation.models and the online rounds' models
    if cfg.variant not in models:
        raise ValueError(
            f"registry.variant {cfg.variant!r} is not an evaluated variant (evaluation.models or rounds.schedule: {sorted(models)})"
        )
    model_dir = models[cfg.variant]
    metrics = load_variant_metrics(params.evaluation.metrics_path, cfg.variant)  # MetricsError names the file
    load_bundle(model_dir)  # only a model that loads is registered
    return CandidateModel(cfg.variant, model_dir, metrics)


@dataclass
class RegisterOutcome:
    registration: Registration
    promotion: GatedPromotion
    report: dict[str, Any]  # registry.report_path's content


def register_and_gate(client, params: Params, candidate: CandidateModel, run_id: str,
                      tags: dict[str, str]) -> RegisterOutcome:
    """Register the candidate (inside the stage's MLflow run `run_id`), then apply the gates and maybe promote."""
    from components.registry.champion import gated_promotion
    from components.registry.report import build_report, render_markdown
    from components.registry.versions import register_bundle

    cfg = params.registry
    registration = register_bundle(client, cfg.model_name, candidate.model_dir, tags=tags, metrics=candidate.metrics)
    print(
        f"{cfg.model_name} version {registration.version} "
        f"({'reused: same bundle digest' if registration.reused else 'new'}) is `candidate`"
    )

    def report_of(result: GatedPromotion) -> dict[str, Any]:
        return build_report(registration, result, candidate.metrics, variant=cfg.variant, run_id=run_id)

    result = gated_promotion(client, registration, candidate.metrics, cfg.gates,
                             describe=lambda r: render_markdown(report_of(r)))
    for reason in result.decision.reasons:
        print(f"  {reason}")
    print(f"champion: {result.champion_before or 'none'} -> {result.champion_after or 'none'} ({result.outcome})")
    return RegisterOutcome(registration, result, report_of(result))


def promote_with_note(client, name: str, version: str, reason: str) -> str:
    """Make a version champion whatever the gates say; the version's description records it. Returns a line."""
    from components.registry.champion import append_description, now, promote
    from components.registry.versions import get_version

    transition = promote(client, name, version, reason=f"by hand: {reason}")
    if not transition.changed:
        return f"{name} version {transition.after} already is champion; nothing changed"
    append_description(
        client, get_version(client, name, transition.after),
        f"**Promoted by hand** at {now()} (replacing {transition.before or 'no champion'}): {reason}",
    )
    return f"{name}: champion {transition.before or 'none'} -> {transition.after} (promoted by hand: {reason})"


def rollback_with_note(client, name: str, reason: str = "") -> str:
    """Move champion back to the previous champion; the rolled-back version's description records it."""
    from components.registry.champion import append_description, now, rollback
    from components.registry.versions import get_version

    reason = reason.strip() or "rolled back by hand"
    transition = rollback(client, name, reason=reason)
    append_description(
        client, get_version(client, name, transition.before),
        f"**Rolled back** at {now()} (champion is {transition.after} again): {reason}",
    )
    return f"{name}: champion {transition.before} -> {transition.after} (rolled back: {reason})"
