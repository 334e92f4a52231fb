"""Turn a stage's summary (dataclass, pydantic model or dict) into MLflow metrics."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import mlflow


def summary_dict(summary: Any) -> dict[str, Any]:
    if summary is None:
        return {}
    if dataclasses.is_dataclass(summary):
        return dataclasses.asdict(summary)
    if hasattr(summary, "model_dump"):
        return summary.model_dump()
    if hasattr(summary, "to_dict"):
        return summary.to_dict()
    return dict(summary)


def log_summary(summary: Any, prefix: str = "") -> dict[str, Any]:
    """Log every finite number (nested dicts flattened with '.') as a metric; return the plain dict."""
    data = summary_dict(summary)
    metrics: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}{key}.")
        elif isinstance(node, bool):
            metrics[path[:-1]] = float(node)
        elif isinstance(node, (int, float)) and math.isfinite(node):
            metrics[path[:-1]] = float(node)

    walk(data, prefix)
    if metrics and mlflow.active_run() is not None:
        mlflow.log_metrics({_safe_key(k): v for k, v in metrics.items()})
    return data


def _safe_key(key: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces only.
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)[:250]
