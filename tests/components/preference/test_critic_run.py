"""The critic stage's logic around training: pair-set agreement with the held-out raters, the windows' timing,
every file `write_critic` writes, and the report (training itself: test_critic.py and the flow test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from components.config import DIMENSIONS, CriticConfig, PairsConfig
from components.preference.candidates import WINDOWS_FILE
from components.preference.critic import TalkingCritic, load_critic
from components.preference.critic_report import render_critic_report
from components.preference.critic_run import CriticRun, pair_set_agreement, window_timing, write_critic

IDS = [f"w{w}.g{g}.s0" for w in range(3) for g in range(3)]
WINDOW_OF = {cid: cid.split(".")[0] for cid in IDS}


def _scores(rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(rng.normal(size=(len(IDS), len(DIMENSIONS))), index=pd.Index(IDS, name="candidate_id"),
                        columns=list(DIMENSIONS))


def test_pair_set_agreement_of_a_critic_that_ranks_like_the_raters():
    one = np.random.default_rng(0).normal(size=len(IDS))
    rater = pd.DataFrame({d: one * 2 + 3 for d in DIMENSIONS}, index=pd.Index(IDS, name="candidate_id"))
    critic = (rater - 3) * 10  # another scale (the critic's is z-scored first), the same order in every window
    agreement = pair_set_agreement(critic, rater, WINDOW_OF, PairsConfig(min_margin=0.0))
    assert agreement["critic_pairs"] == agreement["rater_pairs"] == agreement["identical_pairs"] == 3  # best vs worst
    assert agreement["critic_pairs_agreeing_with_raters"] == 1.0 == agreement["rater_pairs_agreeing_with_critic"]

    reversed_critic = -critic
    against = pair_set_agreement(reversed_critic, rater, WINDOW_OF, PairsConfig(min_margin=0.0))
    assert against["critic_pairs_agreeing_with_raters"] == 0.0 and against["identical_pairs"] == 0


def test_window_timing_from_the_windows_metadata(tmp_path: Path):
    save_file({"audio": torch.zeros(1, 4)}, str(tmp_path / WINDOWS_FILE), metadata={"fps": "25.0", "sample_rate": "16000"})
    assert window_timing(tmp_path) == (16000, 25.0)


def _run() -> CriticRun:
    metrics = {d: {"critic_pair_acc": 0.8, "baseline_pair_acc": math.nan, "critic_spearman": 0.5,
                   "baseline_spearman": 0.1, "n_pairs": 7, "baseline_n_pairs": 7, "baseline": f"{d} baseline"}
               for d in DIMENSIONS}
    summary = {"pairs_strategy": "best_vs_worst", "critic_pairs": 1, "rater_pairs": 1, "identical_pairs": 1,
               "critic_pairs_agreeing_with_raters": 1.0, "rater_pairs_agreeing_with_critic": math.nan,
               "train_pairs": 12, "train_windows": 2, "held_out_windows": 1, "held_out_clips": 1,
               "train_raters": ["r0", "r1"], "held_out_raters": ["r2"], "steps": 3, "final_loss": 0.6,
               "train_seconds": 1.0, "spearman": "pooled after centring per window"}
    torch.manual_seed(0)
    return CriticRun(TalkingCritic(width=4), _scores(np.random.default_rng(1)), WINDOW_OF, ["w2"], metrics, summary,
                     digest="abc123")


def test_write_critic_writes_the_model_scores_metrics_and_report(tmp_path: Path):
    cfg = CriticConfig(out_dir=str(tmp_path / "models/critic"), metrics_path=str(tmp_path / "reports/critic.json"))
    run = _run()
    report = write_critic(cfg, run)

    critic = load_critic(cfg.out_dir)
    assert critic.meta["candidates_digest"] == "abc123" and critic.meta["held_out_windows_ids"] == ["w2"]
    assert all(torch.equal(a, b) for a, b in zip(critic.state_dict().values(), run.critic.state_dict().values()))
    scores = pd.read_csv(Path(cfg.out_dir) / "scores.csv", index_col="candidate_id")
    assert list(scores.columns) == [*DIMENSIONS, "window_id", "split"]
    assert set(scores.loc[scores["split"] == "held_out", "window_id"]) == {"w2"} and (scores["split"] == "train").sum() == 6
    metrics = json.loads(Path(cfg.metrics_path).read_text())  # strict JSON: NaN became null
    assert metrics["motion"]["baseline_pair_acc"] is None and metrics["summary"]["train_pairs"] == 12
    assert report == tmp_path / "reports/critic.md" and report.read_text() == render_critic_report(run.metrics, run.summary)
    logged = run.log_metrics()
    assert "baseline" not in logged["quality"] and logged["final_loss"] == 0.6


def test_report_reads_nan_as_not_available():
    run = _run()
    text = render_critic_report(run.metrics, run.summary)
    assert "| lip_sync | 7 | 0.800 | n/a | n/a | 0.500 | 0.100 | lip_sync baseline |" in text  # no raters_pair_acc: n/a
    assert "the critic orders n/a the same way" in text and "held-out rater(s) r2" in text
