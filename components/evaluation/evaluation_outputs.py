"""The evaluate stage's files, from an `Evaluation` (evaluate_models.py).

evaluation.metrics_path (the DVC metric), evaluation.seed_noise_path (when seed noise was measured),
<plots_dir>/<metric>.csv (DVC plots), <figures_dir>/metrics.png, side-by-side mp4s of the first grid windows in
videos_dir (reference | truth | every variant, with the window's audio), report_path, which says what every
number means and what is missing, with each evaluation.comparisons pair as paired differences with bootstrap CIs,
and claims_path / claims_metrics_path: the papers' claims judged by this run (claims.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.evaluation.bootstrap import Interval
from components.evaluation.charts import write_overview_png, write_plot_data, write_rounds_png
from components.evaluation.claims import judge_claims, write_claims
from components.evaluation.evaluate_models import Evaluation, sync_expert_paragraph
from components.evaluation.grid import write_comparison_video
from components.evaluation.report import METRICS, ReportInputs, write_report
from components.evaluation.window_scores import PER_WINDOW_METRICS, POOLED_METRICS, PerWindow
from components.io.atomic import write_json


@dataclass
class EvaluationFiles:
    metrics: Path
    seed_noise: Path | None  # None: no variant was sampled with extra seeds
    report: Path
    chart: Path
    plots: list[Path]
    videos: list[Path]
    claims: Path | None = None
    claims_metrics: Path | None = None
    rounds_figure: Path | None = None  # rounds.figure_path (phase 2 and dpo alone without online rounds)


def write_comparison_videos(params: Params, evaluation: Evaluation) -> list[Path]:
    """One mp4 per shown window; mp4s of earlier runs that are no longer shown are removed."""
    cfg, test, frames = params.evaluation, evaluation.test, params.data.frames
    videos = []
    for i, w in enumerate(test.windows[: cfg.grid_windows]):
        clip = test.clips[w.clip_id]
        a, b = (int(round(t / clip.fps * clip.sample_rate)) for t in (w.start, w.start + frames))
        videos.append(write_comparison_video(
            Path(cfg.videos_dir) / f"{w.clip_id}_{w.start:04d}.mp4", test.truth[i, 0], test.truth[i],
            {name: v[i] for name, v in evaluation.shown.items()}, clip.fps, clip.audio[a:b], clip.sample_rate,
        ))
    for stale in set(Path(cfg.videos_dir).glob("*.mp4")) - set(videos):
        stale.unlink()
    return videos


ROUND_MEASURES = ("critic_composite", "lip_corr", "sync_c", "psnr")


def write_rounds_figure(path: str | Path, evaluation: Evaluation, variants: list[str]) -> Path:
    """Each measure per round (phase 2, dpo, then every online round) with each step's paired difference CI."""
    present = [v for v in variants if v in evaluation.results]
    steps = {m: [evaluation.per_window.compare(b, a, m) for a, b in zip(present, present[1:])] for m in ROUND_MEASURES}
    values = {m: [evaluation.results[v].get(m, math.nan) for v in present] for m in ROUND_MEASURES}
    labels = {m: f"{METRICS[m].label} ({METRICS[m].better} is better)" for m in ROUND_MEASURES}
    higher = {m: METRICS[m].better != "lower" for m in ROUND_MEASURES}
    return write_rounds_png(path, present, values, steps, labels, higher)


def comparison_differences(per_window: PerWindow, comparisons: list[tuple[str, str]]
                           ) -> dict[tuple[str, str], dict[str, Interval]]:
    """(variant, baseline) -> metric -> paired difference with CI, for the pairs both variants of have been run."""
    out = {}
    for a, b in comparisons:
        rows = {m: per_window.compare(a, b, m) for m in (*POOLED_METRICS, *PER_WINDOW_METRICS)}
        rows = {m: d for m, d in rows.items() if d is not None and math.isfinite(d.estimate)}
        if rows:
            out[(a, b)] = rows
    return out


def write_evaluation(params: Params, evaluation: Evaluation) -> EvaluationFiles:
    cfg, results = params.evaluation, evaluation.results
    rounds = list(params.rounds.schedule)
    claims = judge_claims(evaluation.per_window, results, params.critic.metrics_path, cfg.claims_psnr_tolerance_db,
                          rounds, params.dpo.pair_set)
    comparisons = [tuple(c) for c in cfg.comparisons]
    comparisons += [(b, a) for a, b in zip(["dpo", *rounds], rounds) if (b, a) not in comparisons]  # each round vs its start
    differences = comparison_differences(evaluation.per_window, comparisons)
    rounds_figure = write_rounds_figure(params.rounds.figure_path, evaluation, ["phase2", "dpo", *rounds])  # a DVC output
    claims_md, claims_json = write_claims(
        cfg.claims_path, cfg.claims_metrics_path, claims, evaluation.test.n, cfg.bootstrap_resamples,
        {f"{a}_vs_{b}": {m: d.as_dict() for m, d in rows.items()} for (a, b), rows in differences.items()})
    write_json(cfg.metrics_path, results)
    seed_noise = None
    if evaluation.seed_noise:
        write_json(cfg.seed_noise_path, evaluation.seed_noise)
        seed_noise = Path(cfg.seed_noise_path)

    order = list(METRICS)
    plots = write_plot_data(cfg.plots_dir, results, order)
    labels = {k: f"{v.label} ({v.better} is better)" for k, v in METRICS.items()}
    chart = write_overview_png(Path(cfg.figures_dir) / "metrics.png", results, order, labels)
    videos = write_comparison_videos(params, evaluation)
    sampling = params.sampling
    report = write_report(cfg.report_path, ReportInputs(
        results=results,
        unavailable=evaluation.unavailable,
        sync_expert=sync_expert_paragraph(evaluation.expert, params),
        n_windows=evaluation.test.n,
        sampling=f"{sampling.steps} sampling steps, audio guidance {sampling.audio_guidance:g}, seed {sampling.seed}",
        chart=chart,
        videos=videos,
        seed_noise=evaluation.seed_noise,
        comparisons=comparisons,
        sources=evaluation.sources,
        differences=differences,
        resamples=cfg.bootstrap_resamples,
        claims=claims_md,
    ))
    return EvaluationFiles(metrics=Path(cfg.metrics_path), seed_noise=seed_noise, report=Path(report), chart=Path(chart),
                           plots=[Path(p) for p in plots], videos=videos, claims=claims_md, claims_metrics=claims_json,
                           rounds_figure=rounds_figure)
