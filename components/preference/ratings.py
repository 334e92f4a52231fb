"""Likert ratings: import (validated with great-expectations), aggregation over raters, and the rating sheet.

A rating row is `candidate_id, rater_id, dimension, score` (CSV, JSONL, or the `ratings` table of the
app's .sqlite database), score an integer Likert 1-5 and
dimension one of lip_sync, motion, quality. What happens to bad rows (nothing is dropped silently; every count
goes to the annotate report):

    unknown candidate, score outside 1-5 or not an integer, unknown dimension, missing column  -> RatingsError
    the same (candidate, rater, dimension) twice with different scores                         -> RatingsError
    exact duplicate rows                                                                        -> counted, kept once
    a candidate rated on a dimension by one rater only                                          -> counted
    a window whose candidates all got the same score on a dimension (ties everywhere)           -> counted

Aggregation: the mean over raters, optionally of per-rater z-scores mapped back to the pool's Likert scale
(`normalise_raters`: removes a rater's habit of scoring everything high or low).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import DIMENSIONS

COLUMNS = ("candidate_id", "rater_id", "dimension", "score")


class RatingsError(ValueError):
    """The ratings file is wrong in a way no aggregation can repair; the message names the file and the rows."""


@dataclass
class RatingsCheck:
    n_rows: int
    exact_duplicates: int = 0
    single_rater: int = 0  # (candidate, dimension) cells with one rating
    unrated: int = 0  # candidates with no rating at all
    failures: list[str] = field(default_factory=list)  # great-expectations checks that failed, in words

    def as_dict(self) -> dict:
        return {"rows": self.n_rows, "exact_duplicates_removed": self.exact_duplicates,
                "single_rater_cells": self.single_rater, "unrated_candidates": self.unrated}


def read_ratings(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise RatingsError(f"{path}: ratings file not found")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path, dtype={"candidate_id": str, "rater_id": str, "dimension": str})
    elif path.suffix.lower() == ".sqlite":
        df = _read_sqlite(path)
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RatingsError(f"{path}:{lineno}: malformed JSON ({exc})") from exc
        df = pd.DataFrame(rows)
    else:
        raise RatingsError(f"{path}: ratings must be .csv, .jsonl or the app's .sqlite, got {path.suffix!r}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RatingsError(f"{path}: missing column(s) {missing}; a ratings file has {list(COLUMNS)}")
    return df[list(COLUMNS)].astype({"candidate_id": str, "rater_id": str, "dimension": str})


def _read_sqlite(path: Path) -> pd.DataFrame:
    """The `ratings` table of the browser app's database (components/app/rating_store.py), opened read-only so
    that raters can keep writing (WAL) while annotate reads."""
    import sqlite3

    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30) as db:
            return pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM ratings ORDER BY rowid", db)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise RatingsError(f"{path}: not a ratings database of `talkalign app` ({exc})") from exc


def _expectations(known_candidates: list[str]):
    import great_expectations.expectations as gxe

    return [
        ("scores are Likert integers 1-5", gxe.ExpectColumnValuesToBeInSet(column="score", value_set=[1, 2, 3, 4, 5])),
        ("dimensions are lip_sync, motion, quality", gxe.ExpectColumnValuesToBeInSet(column="dimension", value_set=list(DIMENSIONS))),
        ("every candidate_id names a candidate of the candidates stage",
         gxe.ExpectColumnValuesToBeInSet(column="candidate_id", value_set=known_candidates)),
        ("every score is a number", gxe.ExpectColumnValuesToNotBeNull(column="score")),
        ("every row names its rater", gxe.ExpectColumnValuesToNotBeNull(column="rater_id")),
    ]


def check_ratings(df: pd.DataFrame, known_candidates: list[str], where: str) -> tuple[pd.DataFrame, RatingsCheck]:
    """Run the great-expectations suite; raise RatingsError naming `where` and example rows on any failure.
    Returns the rows with exact duplicates removed, and the counts."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = df.reset_index(drop=True)
    check = RatingsCheck(n_rows=len(frame))
    frame = frame.assign(score=pd.to_numeric(frame["score"], errors="coerce"))  # text becomes null: caught below

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = context.data_sources.add_pandas("ratings").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="ratings"))
    labelled = _expectations(known_candidates)
    for _, expectation in labelled:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="ratings", data=batch, suite=suite))
    run = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
    by_id = {r.expectation_config.id: r for r in run.results}
    for (label, _), expectation in zip(labelled, suite.expectations):
        r = by_id[expectation.id]
        if not r.success:
            rows = [int(i) + 2 if where.endswith(".csv") else int(i) + 1 for i in (r.result.get("unexpected_index_list") or [])]
            values = list(dict.fromkeys(map(str, r.result.get("unexpected_list") or [])))[:5]
            check.failures.append(f"{label}: {r.result.get('unexpected_count', '?')} rows break it "
                                  f"(lines {rows[:5]}, values {values})")
    if check.failures:
        raise RatingsError(f"{where}: " + "; ".join(check.failures))

    frame["score"] = frame["score"].astype(int)
    key = ["candidate_id", "rater_id", "dimension"]
    exact = frame.duplicated(keep="first")
    check.exact_duplicates = int(exact.sum())
    frame = frame[~exact]
    conflicting = frame[frame.duplicated(key, keep=False)]
    if len(conflicting):
        first = conflicting.iloc[0]
        raise RatingsError(f"{where}: {len(conflicting)} rows rate the same (candidate, rater, dimension) with different "
                           f"scores, e.g. {first.candidate_id} by {first.rater_id} on {first.dimension}")
    raters = frame.groupby(["candidate_id", "dimension"])["rater_id"].nunique()
    check.single_rater = int((raters == 1).sum())
    check.unrated = len(set(known_candidates) - set(frame["candidate_id"]))
    return frame.reset_index(drop=True), check


def aggregate(frame: pd.DataFrame, normalise_raters: bool = False) -> pd.DataFrame:
    """One row per candidate, a column per dimension (mean over raters) and n_raters; NaN where unrated."""
    scores = frame["score"].astype(float)
    if normalise_raters:
        stats = frame.assign(s=scores).groupby(["rater_id", "dimension"])["s"].agg(["mean", "std"])
        pooled = frame.assign(s=scores).groupby("dimension")["s"].agg(["mean", "std"])
        joined = frame.join(stats, on=["rater_id", "dimension"]).join(pooled, on="dimension", rsuffix="_pool")
        z = (scores - joined["mean"]) / joined["std"].where(joined["std"] > 0, 1.0)
        scores = joined["mean_pool"] + z * joined["std_pool"].fillna(0)
    table = frame.assign(score=scores).pivot_table(index="candidate_id", columns="dimension", values="score", aggfunc="mean")
    table = table.reindex(columns=list(DIMENSIONS))
    table["n_raters"] = frame.groupby("candidate_id")["rater_id"].nunique()
    return table


def rating_sheet(candidates: list[dict], rated: set[str]) -> pd.DataFrame:
    """The unrated candidates as a sheet for annotators: one row per candidate and dimension, score blank."""
    rows = [{"candidate_id": c["candidate_id"], "window_id": c["window_id"], "video": c["video"], "rater_id": "",
             "dimension": d, "score": ""} for c in candidates if c["candidate_id"] not in rated for d in DIMENSIONS]
    return pd.DataFrame(rows, columns=["candidate_id", "window_id", "video", "rater_id", "dimension", "score"])


def tied_windows(table: pd.DataFrame, window_of: dict[str, str]) -> dict[str, int]:
    """Per dimension, how many windows have every candidate at the same aggregated score."""
    out = {}
    frame = table.assign(window_id=[window_of[c] for c in table.index])
    for dim in DIMENSIONS:
        spread = frame.groupby("window_id")[dim].agg(lambda s: np.nanmax(s) - np.nanmin(s) if s.notna().any() else np.nan)
        out[dim] = int((spread == 0).sum())
    return out
