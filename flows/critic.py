"""The critic stage: train the Talking-Critic on the ratings of the candidates and measure it on held-out
windows and raters against no-learning baselines (components/preference/critic.py, critic_eval.py).

Reads params.candidates.out_dir (videos + conditioning windows) and params.critic.ratings/ratings.jsonl (raw
rows; the per-rater split needs them, scores.csv has the raters mixed). Writes params.critic.out_dir
(critic.safetensors, critic.json, scores.csv: the critic's scores of every candidate), params.critic.metrics_path
(json) and the markdown report next to it (reports/critic.md for the default metrics path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow

from components.config import DIMENSIONS, load_params
from components.tracking import stage_run
from flows.logging import log_summary
from flows.train import checkpoint_dir, files_digest, mlflow_logger, write_json

RATINGS_FILE = "ratings.jsonl"


def _window_timing(candidates_dir: str) -> tuple[int, float]:
    """(sample_rate, fps) of the conditioning windows, from windows.safetensors' metadata."""
    from safetensors import safe_open

    from components.preference.candidates import WINDOWS_FILE

    with safe_open(str(Path(candidates_dir) / WINDOWS_FILE), framework="numpy") as f:
        meta = f.metadata() or {}
    return int(float(meta["sample_rate"])), float(meta["fps"])


def _load_expert(params):
    """The sync expert for the lip_sync baseline, or None (then that baseline is reported as missing)."""
    from components.evaluation.syncnet import load_sync_expert

    try:
        return load_sync_expert(params.evaluation.syncnet_weights, params.sync_expert.out_dir)
    except FileNotFoundError as exc:
        print(f"no sync expert ({exc}): the lip_sync baseline is left out")
        return None


def render_report(metrics: dict, summary: dict) -> str:
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"  # noqa: E731
    lines = [
        "# Talking-Critic: held-out agreement with raters",
        "",
        f"Held out: {summary['held_out_windows']} windows of {summary['held_out_clips']} clips (never trained on), "
        f"scored by the held-out rater(s) {', '.join(summary['held_out_raters'])} (never trained on). "
        f"Trained on {summary['train_pairs']} within-window pairs ({summary['train_windows']} windows, raters "
        f"{', '.join(summary['train_raters'])}), Bradley-Terry loss, {summary['steps']} steps.",
        "",
        "Pair accuracy: share of held-out within-window pairs (held-out raters' scores differ) ordered like the "
        "raters. Spearman: pooled over held-out candidates after centring scorer and rater scores per window.",
        "",
        f"Pair curation ({summary['pairs_strategy']}, composite reward) on the held-out windows: the critic's "
        f"{summary['critic_pairs']} pairs agree with the held-out raters' order in "
        f"{fmt(summary['critic_pairs_agreeing_with_raters'])} of cases; of the raters' {summary['rater_pairs']} pairs, "
        f"the critic orders {fmt(summary['rater_pairs_agreeing_with_critic'])} the same way and picks "
        f"{summary['identical_pairs']} identically.",
        "",
        "| dimension | pairs | critic pair acc | baseline pair acc | critic Spearman | baseline Spearman | baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for dim in DIMENSIONS:
        m = metrics[dim]
        lines.append(f"| {dim} | {m['n_pairs']} | {fmt(m['critic_pair_acc'])} | {fmt(m['baseline_pair_acc'])} | "
                     f"{fmt(m['critic_spearman'])} | {fmt(m['baseline_spearman'])} | {m['baseline']} |")
    return "\n".join(lines) + "\n"


def pair_set_agreement(critic: pd.DataFrame, rater: pd.DataFrame, window_of: dict[str, str], cfg) -> dict:
    """On held-out windows: the composite pairs curated from the critic's scores vs those curated from the held-out
    raters' scores (the pairs stage's strategy and weights). The critic's dimensions are z-scored first (their
    scales are arbitrary); its pairs take no margin, the raters' take the stage's."""
    from components.preference.pairs import composite_reward, curate_pairs, pair_agreement

    standard = (critic - critic.mean()) / critic.std().replace(0, 1)
    critic_reward = composite_reward(standard, cfg.weights)
    rater_reward = composite_reward(rater, cfg.weights).reindex(critic.index)
    critic_pairs, _ = curate_pairs(critic_reward, window_of, cfg.strategy, 0.0, cfg.seed)
    rater_pairs, _ = curate_pairs(rater_reward, window_of, cfg.strategy, cfg.min_margin, cfg.seed)
    same = {(p.winner, p.loser) for p in rater_pairs} & {(p.winner, p.loser) for p in critic_pairs}
    return {
        "pairs_strategy": cfg.strategy,
        "critic_pairs": len(critic_pairs), "rater_pairs": len(rater_pairs),
        # Of the critic's pairs, how many the held-out raters order the same way (strictly).
        "critic_pairs_agreeing_with_raters": pair_agreement(critic_pairs, rater_reward),
        # Of the raters' pairs, how many the critic orders the same way, and how many it picks identically.
        "rater_pairs_agreeing_with_critic": pair_agreement(rater_pairs, critic_reward),
        "identical_pairs": len(same),
    }


@flow(name="critic", log_prints=True)
def critic_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.preference.candidates import INDEX_FILE, load_candidates, load_windows
    from components.preference.critic import critic_inputs, rating_pairs, save_critic, score_inputs, train_critic
    from components.preference.critic_eval import (
        BASELINES, baseline_scores, evaluate_scores, rater_means, split_raters, split_windows,
    )
    from components.preference.ratings import read_ratings

    params = load_params(params_path, overrides)
    cfg = params.critic
    cand_dir = params.candidates.out_dir
    ratings_path = Path(cfg.ratings) / RATINGS_FILE
    with stage_run("critic", params, section="critic", inputs=[cand_dir, cfg.ratings]):
        windows = load_windows(cand_dir)
        candidates = load_candidates(cand_dir, decode=True)
        ratings = read_ratings(ratings_path)  # checked by the annotate stage; the ids must still match
        window_of = {c.candidate_id: c.window_id for c in candidates}
        unknown = set(ratings["candidate_id"]) - set(window_of)
        if unknown:
            raise ValueError(f"{ratings_path}: {len(unknown)} rated candidates are not in {cand_dir}, e.g. "
                             f"{sorted(unknown)[:3]} (rerun annotate after candidates)")

        train_w, held_w = split_windows({w: v.clip_id for w, v in windows.items()}, cfg.held_out_share, cfg.seed)
        train_r, held_r = split_raters(ratings["rater_id"], cfg.held_out_raters)
        train_set, held_set = set(train_w), set(held_w)
        train_ids = [c.candidate_id for c in candidates if c.window_id in train_set]
        held_ids = [c.candidate_id for c in candidates if c.window_id in held_set]
        row = {c.candidate_id: i for i, c in enumerate(candidates)}
        pairs = rating_pairs(rater_means(ratings, train_r, train_ids), window_of)
        if pairs.empty:
            raise ValueError(f"{ratings_path}: no training pair (training raters {train_r} never score two candidates "
                             "of a training window differently)")
        index = np.stack([pairs["winner"].map(row), pairs["loser"].map(row), pairs["dimension"].map(DIMENSIONS.index)], 1)

        inputs = critic_inputs(candidates, windows)
        digest = files_digest(Path(cand_dir) / INDEX_FILE, ratings_path)
        critic, result = train_critic(inputs, index, cfg, checkpoint_dir("critic", cfg.model_dump(), digest),
                                      log_fn=mlflow_logger("train/"), progress=True)
        scores = pd.DataFrame(score_inputs(critic, inputs), index=pd.Index(list(row), name="candidate_id"),
                              columns=list(DIMENSIONS))

        truth = rater_means(ratings, held_r, held_ids)
        sample_rate, fps = _window_timing(cand_dir)
        held_candidates = [c for c in candidates if c.window_id in held_set]
        baseline = baseline_scores(held_candidates, windows, _load_expert(params), sample_rate, fps)
        ours, theirs = evaluate_scores(scores, truth, window_of), evaluate_scores(baseline, truth, window_of)
        metrics = {dim: {"critic_pair_acc": ours[dim]["pair_acc"], "baseline_pair_acc": theirs[dim]["pair_acc"],
                         "critic_spearman": ours[dim]["spearman"], "baseline_spearman": theirs[dim]["spearman"],
                         "n_pairs": ours[dim]["n_pairs"], "baseline_n_pairs": theirs[dim]["n_pairs"],
                         "baseline": BASELINES[dim]} for dim in DIMENSIONS}
        agreement = pair_set_agreement(scores.loc[held_ids], truth, window_of, params.pairs)
        summary = {**agreement, "train_pairs": int(len(pairs)), "train_windows": len(train_w), "held_out_windows": len(held_w),
                   "held_out_clips": len({windows[w].clip_id for w in held_w}), "train_raters": train_r,
                   "held_out_raters": held_r, "steps": cfg.steps, "final_loss": result.final_loss,
                   "train_seconds": result.seconds, "spearman": "pooled after centring per window"}

        save_critic(cfg.out_dir, critic, {**summary, "candidates_digest": digest, "held_out_windows_ids": held_w})
        split = pd.Series(["held_out" if window_of[c] in held_set else "train" for c in scores.index], index=scores.index)
        out_scores = scores.assign(window_id=[window_of[c] for c in scores.index], split=split)
        tmp = Path(cfg.out_dir) / ".scores.csv.tmp"
        out_scores.to_csv(tmp)
        tmp.replace(Path(cfg.out_dir) / "scores.csv")
        finite = lambda v: None if isinstance(v, float) and not np.isfinite(v) else v  # noqa: E731  (strict JSON)
        write_json(cfg.metrics_path, {**{d: {k: finite(v) for k, v in m.items()} for d, m in metrics.items()},
                                      "summary": summary})
        report = Path(cfg.metrics_path).with_suffix(".md")
        report.write_text(render_report(metrics, summary))
        print(render_report(metrics, summary))
        return log_summary({dim: {k: v for k, v in m.items() if k != "baseline"} for dim, m in metrics.items()}
                           | {"final_loss": result.final_loss})
