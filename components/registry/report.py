"""The promotion decision as data (reports/promotion.json) and as text (reports/promotion.md, the version's
description in MLflow)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.io.atomic import atomic_file
from components.registry.champion import GatedPromotion, now
from components.registry.versions import Registration


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null (at any depth)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def build_report(
    registration: Registration,
    result: GatedPromotion,
    candidate_metrics: dict[str, Any],
    *,
    variant: str,
    run_id: str | None = None,
) -> dict[str, Any]:
    return _clean({
        "model": registration.name,
        "version": registration.version,
        "variant": variant,
        "bundle_digest": registration.digest,
        "reused_version": registration.reused,
        "decision": result.outcome,
        "promoted": result.decision.promote,
        "reasons": list(result.decision.reasons),
        "champion_before": result.champion_before,
        "champion_after": result.champion_after,
        "candidate_metrics": dict(candidate_metrics),
        "champion_metrics": result.champion_metrics,
        "gates": [asdict(check) for check in result.decision.checks],
        "run_id": run_id,
        "decided_at": now(),
    })


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    name, version = report["model"], report["version"]
    headline = {
        "promoted": f"**promoted**: version {version} is now `champion`",
        "refused": "**refused**: `champion` stays "
        + (f"version {report['champion_before']}" if report["champion_before"] else "unset"),
        "kept": f"**kept**: version {version} already is `champion`",
    }[report["decision"]]
    lines = [
        f"# Promotion decision: {name} version {version}",
        "",
        f"Decision: {headline}.",
        "",
        f"- candidate: version {version} (variant `{report['variant']}`, bundle digest `{report['bundle_digest'][:16]}`"
        + (", an existing version reused" if report["reused_version"] else "") + ")",
        f"- champion before: {report['champion_before'] or 'none'}; after: {report['champion_after'] or 'none'}",
        f"- decided at {report['decided_at']}" + (f", MLflow run `{report['run_id']}`" if report.get("run_id") else ""),
        "",
        "## Reasons",
        "",
        *[f"- {reason}" for reason in report["reasons"]],
    ]
    if report["gates"]:
        lines += [
            "",
            "## Gates",
            "",
            "| metric | better | candidate | champion | regression | allowed | result |",
            "|---|---|---|---|---|---|---|",
        ]
        for gate in report["gates"]:
            lines.append(
                f"| {gate['metric']} | {gate['direction']} | {_cell(gate['candidate'])} | {_cell(gate['champion'])} "
                f"| {_cell(gate['regression'])} | {_cell(gate['max_regression'])} "
                f"| {'pass' if gate['passed'] else 'FAIL'} |"
            )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(report: dict[str, Any], json_path: str | Path, md_path: str | Path) -> None:
    """Both files, each replaced whole (a reader never sees half a report)."""
    _write_atomic(Path(json_path), json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write_atomic(Path(md_path), render_markdown(report))
