"""Metric charts: per-metric CSV files for `dvc plots` and one PNG overview (matplotlib, Agg) for people."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from components.io.atomic import atomic_file  # noqa: E402

__all__ = ["save_figure", "save_histograms", "write_overview_png", "write_plot_data", "write_rounds_png"]

Results = dict[str, dict[str, float]]


def _metrics_in(results: Results, order: list[str]) -> list[str]:
    present = {m for values in results.values() for m, v in values.items() if _finite(v)}
    return [m for m in order if m in present] + sorted(present - set(order))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write atomically (temp file + rename: readers never see half a PNG) and close a figure."""
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def write_plot_data(directory: str | Path, results: Results, order: list[str]) -> list[Path]:
    """One `<metric>.csv` per metric (columns variant, value), the variants in results order; stale CSVs of
    metrics no longer reported are removed. DVC plots them with x=variant, y=value."""
    directory = Path(directory)
    written = []
    for metric in _metrics_in(results, order):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["variant", "value"])
        for variant, values in results.items():
            if _finite(values.get(metric)):
                writer.writerow([variant, f"{values[metric]:.6g}"])
        path = directory / f"{metric}.csv"
        _write_text(path, buffer.getvalue())
        written.append(path)
    for stale in set(directory.glob("*.csv")) - set(written):
        stale.unlink()
    return written


def write_overview_png(path: str | Path, results: Results, order: list[str], labels: dict[str, str]) -> Path:
    """A grid of horizontal bar charts, one per metric, every variant a bar (missing values left out)."""
    path = Path(path)
    metrics = _metrics_in(results, order)
    if not metrics:
        raise ValueError("no finite metric to chart")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    variants = list(results)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.35 * len(variants) * rows + 1.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes.flat, metrics):
        names = [v for v in variants if _finite(results[v].get(metric))]
        values = [results[v][metric] for v in names]
        bars = ax.barh(range(len(names)), values, color=[colours(variants.index(v) % 10) for v in names])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7, padding=2)
        ax.margins(x=0.15)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(labels.get(metric, metric), fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.axvline(0, color="black", linewidth=0.5)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    return save_figure(fig, path, dpi=110)


def save_histograms(path: str | Path, values: dict[str, list[float]], title: str, bins: int = 12) -> Path:
    """One small histogram per named list of values (e.g. the reward margins of each pair set)."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(values), figsize=(3.2 * len(values), 2.6), squeeze=False)
    for ax, (name, data) in zip(axes.flat, values.items()):
        if data:
            ax.hist(data, bins=bins, color="tab:blue")
        ax.set_title(f"{name} ({len(data)})", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)


def write_rounds_png(path: str | Path, steps: list[str], values: dict[str, list[float]],
                     differences: dict[str, list], labels: dict[str, str],
                     higher_is_better: dict[str, bool] | None = None) -> Path:
    """One panel per measure: its value at each step (phase 2, dpo, round1, ...) as a line, and under each step
    after the first its paired difference to the step before with the 95 % CI (`differences[m][i]`: an Interval
    with estimate / lo / hi, or None), marked * when beyond noise: green when better, red when worse."""
    metrics = [m for m in values if any(_finite(v) for v in values[m])]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.6 * max(len(metrics), 1), 3.2), squeeze=False)
    if not metrics:  # still a figure (a DVC output): say why it is empty
        axes[0, 0].text(0.5, 0.5, f"no measure of {', '.join(steps) or 'any variant'}", ha="center", fontsize=9)
        axes[0, 0].axis("off")
    x = list(range(len(steps)))
    for ax, metric in zip(axes.flat, metrics):
        ax.plot(x, values[metric], marker="o", color="tab:blue")
        for i, d in enumerate(differences.get(metric, []), start=1):
            if d is None or not _finite(d.estimate):
                continue
            beyond = d.lo > 0 or d.hi < 0
            better = (d.estimate > 0) == (higher_is_better or {}).get(metric, True)
            colour = ("tab:green" if better else "tab:red") if beyond else "grey"
            ax.annotate(f"{d.estimate:+.3g}{'*' if beyond else ''}\n[{d.lo:+.2g}, {d.hi:+.2g}]", (i, values[metric][i]),
                        textcoords="offset points", xytext=(0, -26), ha="center", fontsize=6.5, color=colour)
        ax.set_xticks(x, steps, fontsize=8, rotation=20)
        ax.margins(y=0.35)
        ax.set_title(labels.get(metric, metric), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("each step vs the one before it: paired difference [95 % CI], * beyond noise (green better, red worse)",
                 fontsize=9)
    return save_figure(fig, path, dpi=110)
