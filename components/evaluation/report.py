"""reports/report.md: what a person reads first after `evaluate`. Tables, each comparison of two variants as a
paired difference with its bootstrap CI, charts, the side-by-side videos, what every metric means, where the sync
scores come from, and which metrics are missing and why."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from components.io.atomic import atomic_file

__all__ = ["METRICS", "MetricInfo", "ReportInputs", "render_report", "write_report"]


@dataclass(frozen=True)
class MetricInfo:
    label: str
    better: str  # "higher", "lower", "closer to 0"
    meaning: str


# Table order. Anything not listed still appears, after these.
METRICS: dict[str, MetricInfo] = {
    "sync_c": MetricInfo("Sync-C", "higher", "SyncNet confidence: over audio offsets -15..+15 frames, the median minus the "
                         "minimum of the mean lip-audio embedding distance. High when one offset fits clearly better "
                         "than the others"),
    "sync_d": MetricInfo("Sync-D", "lower", "SyncNet distance: the minimum over offsets of the mean lip-audio embedding "
                         "distance"),
    "sync_abs_offset": MetricInfo("mean abs AV offset", "lower", "mean absolute AV offset in frames (the offset of the minimum "
                                  "distance); 0 = lips in sync with the audio"),
    "sync_offset": MetricInfo("AV offset", "closer to 0", "median AV offset in frames, syncnet_python's sign: k > 0 means "
                              "the video lags the audio by k frames"),
    "sync_c_audio_zeroed": MetricInfo("Sync-C, audio zeroed", "lower", "Sync-C of the same model sampled with the audio "
                                      "replaced by its null condition: the gap to Sync-C is what the audio contributes"),
    "lip_corr": MetricInfo("lip corr", "higher", "synthetic-world ground truth: Pearson correlation of the mouth opening "
                           "read from the pixels with the opening the audio envelope implies (pooled over windows, "
                           "each centred). Read by talkalign's own mouth reader (ridge regression on mouth-box pixels, "
                           "fitted on training windows and their VAE reconstructions); the reference rows show what it "
                           "reads on the true frames and on their VAE reconstruction, the ceiling for any model"),
    "lip_err": MetricInfo("lip err", "lower", "synthetic-world ground truth: mean absolute error of the mouth opening after "
                          "a per-window affine fit, in envelope units [0, 1]"),
    "lip_corr_audio_zeroed": MetricInfo("lip corr, audio zeroed", "lower", "lip corr of the same model sampled with the "
                                        "audio replaced by its null condition"),
    "psnr": MetricInfo("PSNR (dB)", "higher", "peak signal-to-noise ratio of the generated frames against the true frames"),
    "ssim": MetricInfo("SSIM", "higher", "structural similarity with the true frames (11x11 Gaussian window, sigma 1.5)"),
    "critic_lip_sync": MetricInfo("critic lip-sync", "higher", "talkalign's Talking-Critic (critic stage, trained on rated "
                                  "candidates of the training split) on the test windows: mean lip-sync score. Its scale "
                                  "is arbitrary; compare variants with each other"),
    "critic_motion": MetricInfo("critic motion", "higher", "the critic's mean motion-naturalness score (arbitrary scale)"),
    "critic_quality": MetricInfo("critic quality", "higher", "the critic's mean visual-quality score (arbitrary scale)"),
    "critic_composite": MetricInfo("critic composite", "higher", "the composite reward pairs are curated by: the critic's "
                                   "scores weighted by pairs.weights, each divided by its spread (std over the test "
                                   "windows) on the true frames, so no dimension's arbitrary scale dominates (what the "
                                   "online rounds optimise; compare variants with each other)"),
    "lip_corr_mediapipe": MetricInfo("lip corr (mediapipe)", "higher", "no truth needed: Pearson correlation of the "
                                     "mouth opening from mediapipe's face mesh (inner-lip gap / mouth width) with the "
                                     "audio envelope (mean normalised log-mel per frame), each window centred, pooled; "
                                     "left out when the mesh found no lips"),
    "lmd_mediapipe": MetricInfo("LMD (mediapipe)", "lower", "lip landmark distance: mean pixel distance between the face "
                                "mesh's lip landmarks on generated and true frames, each frame's lips centred on their mean"),
    "hkc_mediapipe": MetricInfo("HKC (mediapipe)", "higher", "hand keypoint confidence (Hallo4) as mediapipe gives it: the "
                                "hand landmark model's hand-presence score, mean over frames x both hands (0 where "
                                "the pose shows no wrist to look at); one score per hand, not per keypoint"),
    "hkv_mediapipe": MetricInfo("HKV (mediapipe)", "higher", "hand keypoint variance (Hallo4): variance over time of the "
                                "hand landmarks (units of the frame side) where found; left out when no hand is found"),
    "fid": MetricInfo("FID", "lower", "Fréchet distance between Inception features of generated and true frames"),
    "fvd": MetricInfo("FVD", "lower", "Fréchet distance between I3D features of generated and true windows"),
}

class Difference(Protocol):
    """A paired difference with its CI (bootstrap.Interval)."""

    estimate: float
    lo: float
    hi: float
    n_windows: int
    n_seeds: int

    @property
    def excludes_zero(self) -> bool: ...


REFERENCE_ROWS = {
    "ground_truth": "the true test frames: the upper bound of each measure (what a perfect model would score)",
    "vae_reconstruction": "the true frames through the VAE: the upper bound for any model decoded by this VAE",
}


@dataclass
class ReportInputs:
    results: dict[str, dict[str, float]]  # variant -> metric -> value
    unavailable: dict[str, str]  # metric -> reason
    sync_expert: str  # one paragraph: which expert scored Sync-C / Sync-D
    n_windows: int
    sampling: str  # one line: steps, guidance, seed
    chart: Path | None = None
    videos: list[Path] = field(default_factory=list)
    seed_noise: dict[str, dict[str, dict]] = field(default_factory=dict)  # variant -> metric -> mean/std/values
    comparisons: list[tuple[str, str]] = field(default_factory=list)  # (variant, baseline)
    sources: dict[str, str] = field(default_factory=dict)  # metric -> the extractor / model that produced it
    # (variant, baseline) -> metric -> paired difference with its CI (window_scores.PerWindow.compare)
    differences: dict[tuple[str, str], dict[str, Difference]] = field(default_factory=dict)
    resamples: int = 2000
    claims: Path | None = None  # claims.md, linked from the report


def _format(value: float | None) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _ordered_metrics(results: dict[str, dict[str, float]]) -> list[str]:
    present = {m for values in results.values() for m in values}
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def _table(results: dict[str, dict[str, float]], metrics: list[str]) -> list[str]:
    arrows = {"higher": " ↑", "lower": " ↓"}
    header = [METRICS[m].label + arrows.get(METRICS[m].better, "") if m in METRICS else m for m in metrics]
    lines = ["| variant | " + " | ".join(header) + " |", "|---|" + "---:|" * len(metrics)]
    for variant, values in results.items():
        name = f"*{variant}*" if variant in REFERENCE_ROWS else f"**{variant}**"
        lines.append(f"| {name} | " + " | ".join(_format(values.get(m)) for m in metrics) + " |")
    return lines


def render_report(inputs: ReportInputs, report_path: str | Path) -> str:
    """The markdown text; links are relative to report_path's directory."""
    base = Path(report_path).parent
    rel = lambda p: Path(os.path.relpath(p, base)).as_posix()  # noqa: E731
    metrics = _ordered_metrics(inputs.results)
    out = [
        "# Evaluation report",
        "",
        f"Every variant generated the same {inputs.n_windows} held-out test windows from the same noise "
        f"({inputs.sampling}), conditioned on each window's true first frame, its audio and its pose. Frame 0 "
        "(the given reference) is left out of every measure. Rows in italics are references, not models:",
        "",
        *[f"- *{name}*: {text}" for name, text in REFERENCE_ROWS.items() if name in inputs.results],
        "",
        "## Results",
        "",
        *_table(inputs.results, metrics),
        "",
        "↑ higher is better, ↓ lower is better. Machine-readable: `metrics.json` (a DVC metric).",
        "",
        "### Where Sync-C and Sync-D come from",
        "",
        inputs.sync_expert,
        "",
    ]
    if inputs.claims is not None:
        out += ["## The papers' claims", "", f"Which claims of Hallo4 and FantasyTalking2 this run reproduces, each with "
                f"its measured difference and CI: [{Path(inputs.claims).name}]({rel(inputs.claims)}).", ""]
    if inputs.differences:
        out += _differences_section(inputs.differences, inputs.resamples)
    if inputs.seed_noise:
        out += _seed_noise_section(inputs.seed_noise)
    if inputs.chart is not None:
        out += ["## Charts", "", f"![metrics per variant]({rel(inputs.chart)})", "",
                "`dvc plots show` draws the same numbers from `plots/<metric>.csv`.", ""]
    if inputs.videos:
        out += ["## Side by side", "", "Each video: reference image | ground truth | every variant, with the window's "
                "audio.", ""]
        out += [f"- [{Path(v).stem}]({rel(v)})" for v in inputs.videos] + [""]
    out += ["## What each metric means", "", "| metric | better | meaning |", "|---|---|---|"]
    out += [f"| {METRICS[m].label} (`{m}`) | {METRICS[m].better} | {METRICS[m].meaning} |" for m in metrics if m in METRICS]
    out += [""]
    if inputs.sources:
        out += ["### Which extractor produced each metric", "", "| metric | measured by |", "|---|---|"]
        out += [f"| `{m}` | {inputs.sources[m]} |" for m in metrics if m in inputs.sources] + [""]
    if inputs.unavailable:
        out += ["## Not measured", "", "| metric | why |", "|---|---|"]
        out += [f"| `{m}` | {reason} |" for m, reason in inputs.unavailable.items()] + [""]
    return "\n".join(out)


SEED_METRICS = ("sync_c", "sync_d", "lip_corr", "lip_err", "psnr", "ssim", "critic_lip_sync", "critic_motion", "critic_quality")


def _signed(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.3f}".replace("-", "−")


def _differences_section(differences: dict[tuple[str, str], dict[str, Difference]], resamples: int) -> list[str]:
    """One table per comparison: each metric's paired difference, its 95 % CI and whether it is beyond noise."""
    out = ["## Comparisons", "", "Each row: variant − baseline on the same held-out windows generated from the same "
           f"noise, a 95 % percentile bootstrap CI ({resamples} resamples of the windows, and of the sampling seeds both "
           "were drawn with). *Beyond noise* when the CI excludes 0; ↑ / ↓ say which sign is better. Lip corr is "
           "pooled over windows: each resample recomputes it.", ""]
    for (a, b), rows in differences.items():
        out += [f"### {a} − {b}", "", "| measure | difference | 95 % CI | windows × seeds | beyond noise |",
                "|---|---:|---|---|---|"]
        for metric, d in rows.items():
            info = METRICS.get(metric)
            label = (info.label + {"higher": " ↑", "lower": " ↓"}.get(info.better, "")) if info else metric
            beyond = ("**yes**" if d.excludes_zero else "no") if math.isfinite(d.estimate) else "–"
            out.append(f"| {label} | {_signed(d.estimate)} | [{_signed(d.lo)}, {_signed(d.hi)}] | "
                       f"{d.n_windows} × {d.n_seeds} | {beyond} |")
        out.append("")
    return out


def _seed_noise_section(noise: dict[str, dict[str, dict]]) -> list[str]:
    """Mean ± std over sampling seeds: how much another seed alone moves each measure (the CIs above include it)."""
    metrics = [m for m in SEED_METRICS if all(m in v for v in noise.values())]
    seeds = ", ".join(next(iter(next(iter(noise.values())).values()))["values"])
    out = ["### Seed noise", "", f"The variants below were generated again from other noise (sampling seeds {seeds}): "
           "mean ± standard deviation over the seeds. The comparisons above resample these seeds.", "",
           "| variant | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for variant, values in noise.items():
        out.append(f"| {variant} | " + " | ".join(f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" for m in metrics) + " |")
    return out + [""]


def write_report(path: str | Path, inputs: ReportInputs) -> Path:
    path = Path(path)
    text = render_report(inputs, path)
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path
