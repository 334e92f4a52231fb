"""The annotate stage's logic with human ratings from a file: validation, aggregation, counts, every output file,
and the report (the simulated and critic sources need rendered candidates: tests/flows/test_train_flows.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components.config import DIMENSIONS, AnnotateConfig, CandidatesConfig, Params
from components.preference.annotation import annotate, render_annotate_report, write_annotation
from components.preference.ratings import RatingsError

WINDOWS = {"w0": ["w0.good.s0", "w0.bad.s0"], "w1": ["w1.good.s0", "w1.bad.s0"]}


def _params(tmp_path: Path, ratings: list[dict] | None) -> Params:
    candidates = tmp_path / "candidates"
    candidates.mkdir()
    (candidates / "index.json").write_text(json.dumps({"windows": WINDOWS, "generators": {}, "shards": []}))
    human = None
    if ratings is not None:
        human = tmp_path / "ratings.csv"
        pd.DataFrame(ratings).to_csv(human, index=False)
    return Params(candidates=CandidatesConfig(out_dir=str(candidates)),
                  annotate=AnnotateConfig(source="human", human_ratings=str(human) if human else None,
                                          out_dir=str(tmp_path / "ratings"), report_path=str(tmp_path / "annotate.md")))


def _rows() -> list[dict]:
    rows = []
    for rater, offset in (("ann", 0), ("bob", 1)):
        for cid in ("w0.good.s0", "w0.bad.s0", "w1.good.s0"):  # w1.bad.s0 is never rated
            for d in DIMENSIONS:
                rows.append({"candidate_id": cid, "rater_id": rater, "dimension": d,
                             "score": (4 if "good" in cid else 2) + offset})
    return rows + [rows[0]]  # one exact duplicate


def test_human_ratings_are_checked_aggregated_and_written(tmp_path: Path):
    params = _params(tmp_path, _rows())
    annotation = annotate(params)
    assert annotation.counts["exact_duplicates_removed"] == 1 and annotation.counts["unrated_candidates"] == 1
    assert annotation.counts["candidates"] == 4 and annotation.counts["rated_candidates"] == 3
    assert annotation.table.loc["w0.good.s0", "lip_sync"] == pytest.approx(4.5)  # mean of ann's 4 and bob's 5
    assert annotation.table.loc["w0.good.s0", "window_id"] == "w0" and annotation.errors is None
    assert annotation.summary()["rows"] == len(_rows()) and "source" not in annotation.summary()

    report = write_annotation(params, annotation)
    out = Path(params.annotate.out_dir)
    assert {p.name for p in out.iterdir()} == {"ratings.jsonl", "scores.csv", "rating_sheet.csv", "counts.json"}
    assert json.loads((out / "counts.json").read_text())["source"] == "human"
    sheet = pd.read_csv(out / "rating_sheet.csv")
    assert set(sheet["candidate_id"]) == {"w1.bad.s0"} and len(sheet) == len(DIMENSIONS)  # only the unrated one
    written = [json.loads(line) for line in (out / "ratings.jsonl").read_text().splitlines()]
    assert len(written) == len(_rows()) - 1 and {r["source"] for r in written} == {"human"}
    text = report.read_text()
    assert text.startswith("# Ratings (human)") and "| good | 4.50 | 4.50 | 4.50 |" in text


def test_bad_human_ratings_name_the_file(tmp_path: Path):
    rows = _rows()
    rows[1] = {**rows[1], "score": 9}
    params = _params(tmp_path, rows)
    with pytest.raises(RatingsError, match="ratings.csv"):
        annotate(params)
    assert not Path(params.annotate.out_dir).exists()  # nothing half-written


def test_human_source_needs_a_ratings_file(tmp_path: Path):
    with pytest.raises(ValueError, match="annotate.human_ratings"):
        annotate(_params(tmp_path, None))


def test_report_mentions_the_simulated_rater_only_with_errors():
    table = pd.DataFrame({"window_id": ["w0", "w0"], **{d: [4.0, 2.0] for d in DIMENSIONS}},
                         index=pd.Index(["w0.a.s0", "w0.b.s0"], name="candidate_id"))
    counts = {"rows": 6, "rated_candidates": 2, "candidates": 2, "tied_windows": {d: 0 for d in DIMENSIONS},
              "source": "simulated"}
    with_errors = render_annotate_report(counts, table, errors=table[list(DIMENSIONS)])
    assert "Simulated rater" in with_errors and "| windows tied on motion | 0 |" in with_errors
    assert "Simulated rater" not in render_annotate_report(counts, table, errors=None)
