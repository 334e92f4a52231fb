"""The pairs stage's logic: one pair set per reward (composite and each dimension), the jsonl files, the
histogram, the report and the summary metric."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from components.config import DIMENSIONS, PairsConfig
from components.preference.pair_sets import curate_pair_sets, read_scores, write_pair_sets


def _table() -> pd.DataFrame:
    rows = {
        "w0.a.s0": ("w0", 5.0, 4.0, 3.0), "w0.b.s0": ("w0", 1.0, 2.0, 3.0),  # quality tied in w0
        "w1.a.s0": ("w1", 3.0, 3.2, 1.0), "w1.b.s0": ("w1", 3.1, 3.0, 5.0),  # lip_sync and motion within margin
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["window_id", *DIMENSIONS]).rename_axis("candidate_id")


def _cfg(tmp_path: Path) -> PairsConfig:
    return PairsConfig(ratings=str(tmp_path / "ratings"), out_dir=str(tmp_path / "pairs"),
                       report_path=str(tmp_path / "reports/pairs.md"), summary_path=str(tmp_path / "reports/pairs.json"),
                       figure_path=str(tmp_path / "reports/pairs_margins.png"), min_margin=0.5)


def test_one_set_per_reward_with_the_margin(tmp_path: Path, capsys):
    sets = curate_pair_sets(_table(), _cfg(tmp_path))
    assert list(sets.pairs) == ["composite", *DIMENSIONS]
    (lip,) = sets.pairs["lip_sync"]  # w1's 0.1 difference is a tie
    assert (lip.window_id, lip.winner, lip.loser) == ("w0", "w0.a.s0", "w0.b.s0")
    (quality,) = sets.pairs["quality"]
    assert quality.winner == "w1.b.s0" and sets.margins["quality"] == [4.0]
    assert sets.summary["motion"]["rejected_by_margin"] == 1 and sets.summary["composite"]["pairs"] == 2
    assert "warning" not in capsys.readouterr().out

    tied = _table().assign(motion=3.0)
    assert curate_pair_sets(tied, _cfg(tmp_path)).pairs["motion"] == []
    assert "warning: no motion pairs" in capsys.readouterr().out


def test_written_sets_report_and_summary(tmp_path: Path):
    cfg = _cfg(tmp_path)
    Path(cfg.ratings).mkdir()
    _table().to_csv(Path(cfg.ratings) / "scores.csv")
    sets = curate_pair_sets(read_scores(cfg.ratings), cfg)
    figure = write_pair_sets(cfg, sets)
    assert {p.name for p in Path(cfg.out_dir).iterdir()} == {f"{n}.jsonl" for n in ["composite", *DIMENSIONS]}
    (lip,) = [json.loads(line) for line in (Path(cfg.out_dir) / "lip_sync.jsonl").read_text().splitlines()]
    assert lip == {"window_id": "w0", "winner": "w0.a.s0", "loser": "w0.b.s0", "reward_winner": 5.0, "reward_loser": 1.0}
    assert json.loads(Path(cfg.summary_path).read_text()) == sets.summary
    assert figure.stat().st_size > 0
    report = Path(cfg.report_path).read_text()
    assert "| lip_sync | 1 | 2 | 1 | 1 | 4.00 |" in report and "![margins](pairs_margins.png)" in report
