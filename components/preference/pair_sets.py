"""What the pairs stage does: preference pairs from the aggregated ratings, one set per reward.

The sets: `composite` (the weighted mean of the dimensions, for DPO) and one per dimension (TLPO's experts),
each curated with pairs.strategy and pairs.min_margin (components/preference/pairs.py). Writes
pairs.out_dir/<set>.jsonl (atomically), a histogram of the reward margins, the markdown report and the
per-set counts (pairs.summary_path, a DVC metric).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import DIMENSIONS, PairsConfig
from components.io.atomic import atomic_directory, atomic_file, write_json
from components.preference.pairs import Pair, composite_reward, curate_pairs


@dataclass
class PairSets:
    pairs: dict[str, list[Pair]]  # set name -> its pairs
    summary: dict[str, dict]  # set name -> curate_pairs' counts

    @property
    def margins(self) -> dict[str, list[float]]:
        return {name: [p.margin for p in pairs] for name, pairs in self.pairs.items()}


def read_scores(ratings_dir: str | Path) -> pd.DataFrame:
    """The annotate stage's scores.csv: index candidate_id, window_id and a column per dimension."""
    return pd.read_csv(Path(ratings_dir) / "scores.csv", index_col="candidate_id")


def curate_pair_sets(table: pd.DataFrame, cfg: PairsConfig) -> PairSets:
    window_of = table["window_id"].to_dict()
    rewards = {"composite": composite_reward(table, cfg.weights), **{d: table[d] for d in DIMENSIONS}}
    pairs, summary = {}, {}
    for name, reward in rewards.items():
        pairs[name], summary[name] = curate_pairs(reward, window_of, cfg.strategy, cfg.min_margin, cfg.seed)
        if not pairs[name]:
            print(f"warning: no {name} pairs (every window tied within min_margin={cfg.min_margin})")
    return PairSets(pairs, summary)


def pair_record(pair: Pair) -> dict:
    return {"window_id": pair.window_id, "winner": pair.winner, "loser": pair.loser,
            "reward_winner": round(pair.reward_winner, 4), "reward_loser": round(pair.reward_loser, 4)}


def render_pairs_report(cfg: PairsConfig, sets: PairSets, figure: Path) -> str:
    margins = sets.margins
    lines = [f"# Preference pairs: {cfg.strategy}, min margin {cfg.min_margin:g}, weights {cfg.weights}", "",
             "| set | pairs | windows | without a pair | rejected by margin | mean margin |", "|---|---|---|---|---|---|"]
    for name, s in sets.summary.items():
        mean = f"{np.mean(margins[name]):.2f}" if margins[name] else "-"
        lines.append(f"| {name} | {s['pairs']} | {s['windows']} | {s['windows_without_pair']} | "
                     f"{s['rejected_by_margin']} | {mean} |")
    lines += ["", f"![margins]({os.path.relpath(figure, Path(cfg.report_path).parent)})"]
    return "\n".join(lines) + "\n"


def write_pair_sets(cfg: PairsConfig, sets: PairSets) -> Path:
    """The sets, the margin histogram, the report and the summary; returns the histogram's path."""
    from components.evaluation.charts import save_histograms

    with atomic_directory(cfg.out_dir) as out:
        for name, pairs in sets.pairs.items():
            with open(out / f"{name}.jsonl", "w") as f:
                for p in pairs:
                    f.write(json.dumps(pair_record(p)) + "\n")
    figure = save_histograms(cfg.figure_path, sets.margins,
                             title=f"reward margin of the pairs ({cfg.strategy}, min margin {cfg.min_margin:g})")
    with atomic_file(cfg.report_path) as tmp:
        tmp.write_text(render_pairs_report(cfg, sets, figure))
    write_json(cfg.summary_path, sets.summary)
    print("pairs: " + ", ".join(f"{k}={v['pairs']}" for k, v in sets.summary.items()))
    return Path(figure)
