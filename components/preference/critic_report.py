"""The critic stage's markdown report: held-out agreement of the critic, and of its no-learning baselines,
with the held-out raters (components/preference/critic_run.py computes the numbers)."""

from __future__ import annotations

import numpy as np

from components.config import DIMENSIONS


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def render_critic_report(metrics: dict, summary: dict) -> str:
    lines = [
        "# Talking-Critic: held-out agreement with raters",
        "",
        f"Held out: {summary['held_out_windows']} windows of {summary['held_out_clips']} clips (never trained on), "
        f"scored by the held-out rater(s) {', '.join(summary['held_out_raters'])} (never trained on). "
        f"Trained on {summary['train_pairs']} within-window pairs ({summary['train_windows']} windows, raters "
        f"{', '.join(summary['train_raters'])}), Bradley-Terry loss, {summary['steps']} steps.",
        "",
        "Pair accuracy: share of held-out within-window pairs (held-out raters' scores differ) ordered like the "
        "raters. Spearman: pooled over held-out candidates after centring scorer and rater scores per window. "
        "Training raters: the mean scores the critic's own training raters gave the same held-out videos, judged "
        "the same way (their agreement with the held-out rater: what a critic that learned them perfectly reaches).",
        "",
        f"Pair curation ({summary['pairs_strategy']}, composite reward) on the held-out windows: the critic's "
        f"{summary['critic_pairs']} pairs agree with the held-out raters' order in "
        f"{_fmt(summary['critic_pairs_agreeing_with_raters'])} of cases; of the raters' {summary['rater_pairs']} pairs, "
        f"the critic orders {_fmt(summary['rater_pairs_agreeing_with_critic'])} the same way and picks "
        f"{summary['identical_pairs']} identically.",
        "",
        "| dimension | pairs | critic pair acc | baseline pair acc | training raters' pair acc | critic Spearman "
        "| baseline Spearman | baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dim in DIMENSIONS:
        m = metrics[dim]
        lines.append(f"| {dim} | {m['n_pairs']} | {_fmt(m['critic_pair_acc'])} | {_fmt(m['baseline_pair_acc'])} | "
                     f"{_fmt(m.get('raters_pair_acc'))} | "
                     f"{_fmt(m['critic_spearman'])} | {_fmt(m['baseline_spearman'])} | {m['baseline']} |")
    return "\n".join(lines) + "\n"
