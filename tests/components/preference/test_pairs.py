"""The four pair strategies on a hand-made window, margins, ties, and the composite reward."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.preference.pairs import composite_reward, curate_pairs, pair_agreement, window_pairs

IDS = ["a", "b", "c", "d"]
REWARDS = [4.0, 3.0, 2.0, 1.0]  # a > b > c > d


@pytest.mark.parametrize(("strategy", "expected"), [
    ("best_vs_worst", {("a", "d")}),
    ("best_vs_worse", {("a", "b"), ("a", "c"), ("a", "d")}),
    ("better_vs_worst", {("a", "d"), ("b", "d"), ("c", "d")}),
    ("better_vs_worse", {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}),
])
def test_strategies_give_the_pairs_their_definitions_imply(strategy, expected):
    pairs, rejected = window_pairs(IDS, REWARDS, strategy, 0.0, "w", np.random.default_rng(0))
    assert {(p.winner, p.loser) for p in pairs} == expected and rejected == 0
    assert all(p.margin > 0 for p in pairs)


def test_min_margin_skips_close_pairs_and_counts_them():
    pairs, rejected = window_pairs(IDS, REWARDS, "better_vs_worse", 1.5, "w", np.random.default_rng(0))
    assert {(p.winner, p.loser) for p in pairs} == {("a", "c"), ("a", "d"), ("b", "d")}
    assert rejected == 3


def test_a_window_tied_everywhere_gives_no_pair_and_is_counted():
    reward = pd.Series({"x1": 3.0, "x2": 3.0, "y1": 5.0, "y2": 1.0})
    pairs, stats = curate_pairs(reward, {"x1": "x", "x2": "x", "y1": "y", "y2": "y"}, "best_vs_worst", 0.0, seed=0)
    assert [(p.winner, p.loser) for p in pairs] == [("y1", "y2")]
    assert stats["windows_without_pair"] == 1 and stats["rejected_by_margin"] == 1


def test_curation_is_deterministic_for_a_seed_and_breaks_ties_by_it():
    reward = pd.Series({f"c{i}": float(i % 2) for i in range(6)})
    window_of = {c: "w" for c in reward.index}
    runs = [curate_pairs(reward, window_of, "best_vs_worst", 0.0, seed=s)[0] for s in (1, 1, 2, 3, 4)]
    assert runs[0] == runs[1]
    assert len({(p[0].winner, p[0].loser) for p in runs}) > 1  # other seeds pick other equals


def test_composite_reward_is_the_weighted_mean_and_agreement_counts_pairs():
    table = pd.DataFrame({"lip_sync": [5, 1], "motion": [1, 3], "quality": [3, 3]}, index=["a", "b"], dtype=float)
    assert composite_reward(table, {"lip_sync": 1, "motion": 1, "quality": 0}).tolist() == [3.0, 2.0]
    assert composite_reward(table, {"lip_sync": 3, "motion": 1}).tolist() == [4.0, 1.5]
    pairs, _ = curate_pairs(table["lip_sync"], {"a": "w", "b": "w"}, "best_vs_worst", 0.0, seed=0)
    assert pair_agreement(pairs, table["motion"]) == 0.0 and pair_agreement(pairs, table["lip_sync"]) == 1.0
