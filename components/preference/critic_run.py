"""What the critic stage does: train the Talking-Critic on the ratings of the candidates and measure it on
held-out windows and raters against no-learning baselines (critic.py, critic_eval.py).

Reads candidates.out_dir (videos + conditioning windows) and critic.ratings/ratings.jsonl (raw rows; the
per-rater split needs them, scores.csv has the raters mixed). `write_critic` writes critic.out_dir
(critic.safetensors, critic.json, scores.csv: the critic's scores of every candidate), critic.metrics_path (json)
and the markdown report next to it (reports/critic.md for the default metrics path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import DIMENSIONS, CriticConfig, PairsConfig, Params
from components.io.atomic import atomic_file, write_json
from components.preference.candidates import INDEX_FILE, WINDOWS_FILE, load_candidates, load_windows
from components.preference.critic import (
    TalkingCritic,
    critic_inputs,
    rating_pairs,
    save_critic,
    score_inputs,
    train_critic,
)
from components.preference.critic_eval import (
    BASELINES,
    baseline_scores,
    evaluate_scores,
    rater_means,
    split_raters,
    split_windows,
)
from components.preference.critic_report import render_critic_report
from components.preference.ratings import read_ratings
from components.train.checkpoint_keys import checkpoint_dir, files_digest

RATINGS_FILE = "ratings.jsonl"
# Part of the checkpoint key: the trained module is an Objective since the training API change (its state-dict
# names are `model.*`, they were `critic.*`), so checkpoints written before cannot be resumed and are not tried.
CHECKPOINT_LAYOUT = "objective"


def window_timing(candidates_dir: str | Path) -> tuple[int, float]:
    """(sample_rate, fps) of the conditioning windows, from windows.safetensors' metadata."""
    from safetensors import safe_open

    with safe_open(str(Path(candidates_dir) / WINDOWS_FILE), framework="numpy") as f:
        meta = f.metadata() or {}
    return int(float(meta["sample_rate"])), float(meta["fps"])


def load_baseline_expert(params: Params):
    """The sync expert for the lip_sync baseline, or None (then that baseline is reported as missing)."""
    from components.evaluation.syncnet import load_sync_expert

    try:
        return load_sync_expert(params.evaluation.syncnet_weights, params.sync_expert.out_dir)
    except FileNotFoundError as exc:
        print(f"no sync expert ({exc}): the lip_sync baseline is left out")
        return None


def pair_set_agreement(critic: pd.DataFrame, rater: pd.DataFrame, window_of: dict[str, str], cfg: PairsConfig) -> dict:
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


@dataclass
class CriticRun:
    critic: TalkingCritic
    scores: pd.DataFrame  # the critic's scores of every candidate: index candidate_id, a column per dimension
    window_of: dict[str, str]  # candidate_id -> window_id
    held_out_windows: list[str]
    metrics: dict[str, dict]  # dimension -> critic and baseline pair accuracy / Spearman on the held-out set
    summary: dict  # split sizes, raters, pair-set agreement, training loss and time
    digest: str  # of the candidates' index and the ratings: what the critic was trained on

    def log_metrics(self) -> dict:
        """What the stage logs: the numbers of `metrics` and the final training loss."""
        return ({dim: {k: v for k, v in m.items() if k != "baseline"} for dim, m in self.metrics.items()}
                | {"final_loss": self.summary["final_loss"]})


def train_and_evaluate_critic(params: Params, log_fn: Callable[[int, dict], None] | None = None,
                              progress: bool = True) -> CriticRun:
    """Split windows and raters, train on the training pairs, score every candidate, measure the held-out part."""
    cfg = params.critic
    cand_dir = params.candidates.out_dir
    ratings_path = Path(cfg.ratings) / RATINGS_FILE
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
    ckpt = checkpoint_dir("critic", cfg.model_dump(), digest, CHECKPOINT_LAYOUT)
    critic, result = train_critic(inputs, index, cfg, ckpt, log_fn=log_fn, progress=progress)
    scores = pd.DataFrame(score_inputs(critic, inputs), index=pd.Index(list(row), name="candidate_id"),
                          columns=list(DIMENSIONS))

    truth = rater_means(ratings, held_r, held_ids)
    sample_rate, fps = window_timing(cand_dir)
    held_candidates = [c for c in candidates if c.window_id in held_set]
    baseline = baseline_scores(held_candidates, windows, load_baseline_expert(params), sample_rate, fps)
    ours, theirs = evaluate_scores(scores, truth, window_of), evaluate_scores(baseline, truth, window_of)
    # The training raters' own mean scores of the held-out videos, judged like the critic: how well the raters it
    # learns from agree with the held-out rater, the ceiling a critic of those raters can hope to reach.
    raters = evaluate_scores(rater_means(ratings, train_r, held_ids).reindex(scores.loc[held_ids].index), truth, window_of)
    metrics = {dim: {"critic_pair_acc": ours[dim]["pair_acc"], "baseline_pair_acc": theirs[dim]["pair_acc"],
                     "raters_pair_acc": raters[dim]["pair_acc"],
                     "critic_spearman": ours[dim]["spearman"], "baseline_spearman": theirs[dim]["spearman"],
                     "n_pairs": ours[dim]["n_pairs"], "baseline_n_pairs": theirs[dim]["n_pairs"],
                     "baseline": BASELINES[dim]} for dim in DIMENSIONS}
    agreement = pair_set_agreement(scores.loc[held_ids], truth, window_of, params.pairs)
    summary = {**agreement, "train_pairs": int(len(pairs)), "train_windows": len(train_w), "held_out_windows": len(held_w),
               "held_out_clips": len({windows[w].clip_id for w in held_w}), "train_raters": train_r,
               "held_out_raters": held_r, "steps": cfg.steps, "final_loss": result.final_loss,
               "train_seconds": result.seconds, "spearman": "pooled after centring per window"}
    return CriticRun(critic, scores, window_of, held_w, metrics, summary, digest)


def _finite(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value  # strict JSON


def write_critic(cfg: CriticConfig, run: CriticRun) -> Path:
    """critic.out_dir, critic.metrics_path and the report beside it; returns the report's path."""
    save_critic(cfg.out_dir, run.critic, {**run.summary, "candidates_digest": run.digest,
                                          "held_out_windows_ids": run.held_out_windows})
    held_set = set(run.held_out_windows)
    scores = run.scores
    split = pd.Series(["held_out" if run.window_of[c] in held_set else "train" for c in scores.index], index=scores.index)
    with atomic_file(Path(cfg.out_dir) / "scores.csv") as tmp:
        scores.assign(window_id=[run.window_of[c] for c in scores.index], split=split).to_csv(tmp)
    write_json(cfg.metrics_path, {**{d: {k: _finite(v) for k, v in m.items()} for d, m in run.metrics.items()},
                                  "summary": run.summary})
    text = render_critic_report(run.metrics, run.summary)
    report = Path(cfg.metrics_path).with_suffix(".md")
    with atomic_file(report) as tmp:
        tmp.write_text(text)
    print(text)
    return report
