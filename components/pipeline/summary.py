"""What a pipeline run reports: the metrics as table rows, the promotion decision and the run's summary as markdown,
and the metrics flattened for MLflow."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from components.config import Params

__all__ = [
    "DEFAULT_PROMOTION_REPORT",
    "flatten_numbers",
    "markdown_table",
    "metrics_table",
    "promotion_markdown",
    "promotion_report_path",
    "read_json_or_none",
    "run_summary_markdown",
]

DEFAULT_PROMOTION_REPORT = "reports/promotion.json"


def read_json_or_none(path: Path) -> Any:
    """The JSON in path, or None when it is missing or unreadable (a report is optional, not an error)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def promotion_report_path(params: Params) -> str:
    registry = getattr(params, "registry", None)  # the register stage's section, once it exists
    return getattr(registry, "report_path", DEFAULT_PROMOTION_REPORT)


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
        before, after = report.get("champion_before") or "none", report.get("champion_after") or "none"
        lines.append(f"Champion before: {before}; after: {after}.")
    reasons = report.get("reasons") or []
    if reasons:
        lines += ["", "Reasons:", "", *[f"- {reason}" for reason in reasons]]
    gates = report.get("gates")
    if isinstance(gates, list) and gates and all(isinstance(g, dict) for g in gates):
        lines += ["", "Gates:", "", markdown_table(gates)]
    return "\n".join(lines)


def run_summary_markdown(summary: dict[str, Any], metrics_rows: list[dict[str, Any]], metrics_path: str,
                         promotion_md: str) -> str:
    """The run's summary artifact: command, profile, versions, then the metrics and the promotion decision."""
    lines = [
        "# talkalign pipeline run",
        "",
        f"- command: `{summary['command']}`",
        f"- profile: `{summary['profile']}`; overrides: `{json.dumps(summary['overrides'])}`",
        f"- stages: {', '.join(summary['stages']) if summary['stages'] else 'the whole DAG'}",
        f"- DVC experiment: `{summary['experiment']}`" if summary.get("experiment")
        else "- DVC: workspace run (`dvc repro`)",
        f"- git commit: `{summary['git_commit']}`",
        f"- MLflow: run `{summary['mlflow_run_id']}` at `{summary['tracking_uri']}` (stage runs are nested under it)",
        f"- stages run: {', '.join(summary['stages_run']) or 'none (everything up to date)'}",
        "",
        "## Metrics",
        "",
        markdown_table(metrics_rows) if metrics_rows
        else f"`{metrics_path}` does not exist yet (the evaluate stage did not run).",
        "",
        "## Promotion",
        "",
        promotion_md,
        "",
    ]
    return "\n".join(lines)


def flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested dict as {"a.b.c": value}, keys cleaned to what MLflow accepts."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        out[re.sub(r"[^\w\-./ ]", "_", prefix[:-1])[:250]] = float(tree)
    return out
