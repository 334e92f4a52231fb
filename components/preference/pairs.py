"""Preference pairs from rewards: the four strategies of Hallo4's Table 5, per window.

Within a window (one conditioning: reference, audio, pose) the candidates are ordered by reward, best first.
With K candidates of distinct rewards:

    best_vs_worst    the best against the worst                        1 pair
    best_vs_worse    the best against every other candidate            K - 1 pairs
    better_vs_worst  every other candidate against the worst           K - 1 pairs
    better_vs_worse  every candidate against every lower-rewarded one  K (K - 1) / 2 pairs

A pair whose reward difference is below `min_margin` is a tie and is skipped (counted). Equal rewards are
ordered by a seeded shuffle, so "the best" among equals is a deterministic choice for a seed.
The composite reward is the weighted mean of the dimension scores (Hallo4: the plain mean of alignment and
fidelity); TLPO's per-dimension pair sets use one dimension's score as the reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STRATEGIES = ("best_vs_worst", "best_vs_worse", "better_vs_worst", "better_vs_worse")


@dataclass(frozen=True)
class Pair:
    window_id: str
    winner: str
    loser: str
    reward_winner: float
    reward_loser: float

    @property
    def margin(self) -> float:
        return self.reward_winner - self.reward_loser


def composite_reward(table: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Weighted mean of the dimension columns named in weights (zero weights ignored)."""
    used = {d: w for d, w in weights.items() if w > 0}
    total = sum(used.values())
    return sum(table[d] * (w / total) for d, w in used.items())


def window_pairs(ids: list[str], rewards: list[float], strategy: str, min_margin: float, window_id: str,
                 rng: np.random.Generator) -> tuple[list[Pair], int]:
    """Pairs of one window and how many candidate pairs the margin rejected."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; one of {STRATEGIES}")
    order = rng.permutation(len(ids))
    ranked = sorted(order, key=lambda i: -rewards[i])  # stable: ties keep the shuffled order
    if len(ranked) < 2:
        return [], 0
    best, worst = ranked[0], ranked[-1]
    if strategy == "best_vs_worst":
        candidates = [(best, worst)]
    elif strategy == "best_vs_worse":
        candidates = [(best, j) for j in ranked[1:]]
    elif strategy == "better_vs_worst":
        candidates = [(i, worst) for i in ranked[:-1]]
    else:
        candidates = [(ranked[a], ranked[b]) for a in range(len(ranked)) for b in range(a + 1, len(ranked))]
    pairs, rejected = [], 0
    for w, lose in candidates:
        if rewards[w] - rewards[lose] < min_margin or rewards[w] == rewards[lose]:
            rejected += 1
            continue
        pairs.append(Pair(window_id, ids[w], ids[lose], float(rewards[w]), float(rewards[lose])))
    return pairs, rejected


def curate_pairs(reward: pd.Series, window_of: dict[str, str], strategy: str, min_margin: float, seed: int) -> tuple[list[Pair], dict]:
    """Pairs over every window from one reward per candidate (index candidate_id; NaN = unrated, left out)."""
    rng = np.random.default_rng(seed)
    by_window: dict[str, list[str]] = {}
    for cid in sorted(reward.index):
        by_window.setdefault(window_of[cid], []).append(cid)
    pairs, stats = [], {"windows": len(by_window), "rejected_by_margin": 0, "windows_without_pair": 0, "unrated": 0}
    for wid in sorted(by_window):
        ids = [c for c in by_window[wid] if np.isfinite(reward[c])]
        stats["unrated"] += len(by_window[wid]) - len(ids)
        got, rejected = window_pairs(ids, [float(reward[c]) for c in ids], strategy, min_margin, wid, rng)
        stats["rejected_by_margin"] += rejected
        stats["windows_without_pair"] += not got
        pairs += got
    stats["pairs"] = len(pairs)
    return pairs, stats


def pair_agreement(a: list[Pair], reward_b: pd.Series) -> float:
    """Share of pairs of `a` whose order `reward_b` agrees with (strictly prefers the same winner)."""
    if not a:
        return float("nan")
    return float(np.mean([reward_b[p.winner] > reward_b[p.loser] for p in a]))
