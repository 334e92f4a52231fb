"""Human ratings in sqlite: several raters at once, sessions that resume, export to the annotate ratings format.

One row per (rater, candidate, dimension) in `ratings`; a rater's verdict on a window (rated or skipped) in
`progress`; a rater's shuffle seed and current position in `sessions`. WAL mode lets readers run beside one
writer, and each window's ratings are written in one BEGIN IMMEDIATE transaction (busy_timeout waits for the
other writer instead of failing), so two raters submitting at the same moment both keep every row.

A connection per operation: Gradio runs handlers on worker threads, and a sqlite connection must not be shared
between threads.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import DIMENSIONS
from components.io.atomic import atomic_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    rater_id TEXT NOT NULL, candidate_id TEXT NOT NULL, window_id TEXT NOT NULL, dimension TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5), updated_at REAL NOT NULL,
    PRIMARY KEY (rater_id, candidate_id, dimension));
CREATE TABLE IF NOT EXISTS progress (
    rater_id TEXT NOT NULL, window_id TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('rated', 'skipped')),
    updated_at REAL NOT NULL, PRIMARY KEY (rater_id, window_id));
CREATE TABLE IF NOT EXISTS sessions (
    rater_id TEXT PRIMARY KEY, seed INTEGER NOT NULL, position INTEGER NOT NULL, updated_at REAL NOT NULL);
"""


class RatingStoreError(ValueError):
    """A rating cannot be stored as given; the message says which value is wrong."""


@dataclass(frozen=True)
class RaterSession:
    rater_id: str
    order: list[str]  # window ids in this rater's order
    position: int  # index into order of the window on screen (len(order) when done)
    rated: int  # windows this rater has rated (skips not counted)
    skipped: int

    @property
    def total(self) -> int:
        return len(self.order)

    @property
    def current(self) -> str | None:
        return self.order[self.position] if self.position < len(self.order) else None


def clean_rater_id(rater_id: str) -> str:
    rater_id = (rater_id or "").strip()
    if not rater_id or len(rater_id) > 64 or not all(ch.isalnum() or ch in "-_.@" for ch in rater_id):
        raise RatingStoreError(f"rater id {rater_id!r}: use 1-64 letters, digits or - _ . @")
    return rater_id


def rater_order(items: list[str], rater_id: str, seed: int) -> list[str]:
    """A fixed shuffle per (rater, seed): the same rater always gets the same order, raters differ."""
    order = list(items)
    random.Random(f"{seed}:{rater_id}").shuffle(order)
    return order


class RatingStore:
    def __init__(self, path: str | Path, window_ids: list[str], candidates: dict[str, list[str]], seed: int = 0):
        """window_ids: the windows to rate; candidates: window_id -> candidate ids (what a rating may name)."""
        self.path = Path(path)
        self.window_ids = list(window_ids)
        self.candidates = {w: list(candidates[w]) for w in self.window_ids}
        self.seed = int(seed)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------ sessions

    def candidate_order(self, rater_id: str, window_id: str) -> list[str]:
        """The window's candidates in this rater's (blind, seeded) order."""
        return rater_order(self.candidates[window_id], f"{rater_id}/{window_id}", self.seed)

    def session(self, rater_id: str) -> RaterSession:
        """Open (or resume) a rater's session: their order, where they stopped, their counts."""
        rater_id = clean_rater_id(rater_id)
        with self._write() as db:
            row = db.execute("SELECT position FROM sessions WHERE rater_id = ?", (rater_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO sessions VALUES (?, ?, 0, ?)", (rater_id, self.seed, time.time()))
                position = 0
            else:
                position = int(row[0])
            done = dict(db.execute("SELECT window_id, status FROM progress WHERE rater_id = ?", (rater_id,)).fetchall())
        order = rater_order(self.window_ids, rater_id, self.seed)
        position = max(0, min(position, len(order)))
        return RaterSession(rater_id, order, position, sum(s == "rated" for s in done.values()),
                            sum(s == "skipped" for s in done.values()))

    def move(self, rater_id: str, position: int) -> RaterSession:
        rater_id = clean_rater_id(rater_id)
        position = max(0, min(int(position), len(self.window_ids)))
        with self._write() as db:
            db.execute("UPDATE sessions SET position = ?, updated_at = ? WHERE rater_id = ?", (position, time.time(), rater_id))
        return self.session(rater_id)

    def _advance(self, db: sqlite3.Connection, rater_id: str, window_id: str, status: str) -> None:
        now = time.time()
        db.execute("INSERT INTO progress VALUES (?, ?, ?, ?) ON CONFLICT (rater_id, window_id) DO UPDATE SET "
                   "status = excluded.status, updated_at = excluded.updated_at", (rater_id, window_id, status, now))
        position = rater_order(self.window_ids, rater_id, self.seed).index(window_id) + 1
        db.execute("UPDATE sessions SET position = ?, updated_at = ? WHERE rater_id = ?", (position, now, rater_id))

    # ------------------------------------------------------------ ratings

    def rate_window(self, rater_id: str, window_id: str, scores: dict[str, dict[str, int]]) -> RaterSession:
        """scores: candidate_id -> {dimension: 1..5}; every candidate of the window on every dimension, or nothing
        is written. Re-rating a window (after "back") replaces that rater's earlier scores."""
        rater_id = clean_rater_id(rater_id)
        if window_id not in self.candidates:
            raise RatingStoreError(f"window {window_id!r} is not one of the windows to rate")
        expected = set(self.candidates[window_id])
        if set(scores) != expected:
            raise RatingStoreError(f"window {window_id}: rate every candidate (got {len(set(scores) & expected)} of {len(expected)})")
        rows = []
        for cid, by_dim in scores.items():
            for dim in DIMENSIONS:
                value = by_dim.get(dim)
                if value is None:
                    raise RatingStoreError(f"window {window_id}: candidate {self.candidate_order(rater_id, window_id).index(cid) + 1} "
                                           f"has no {dim} score")
                if isinstance(value, bool) or int(value) != value or not 1 <= int(value) <= 5:
                    raise RatingStoreError(f"window {window_id}: {dim} score {value!r} is not a Likert integer 1-5")
                rows.append((rater_id, cid, window_id, dim, int(value), time.time()))
            if extra := set(by_dim) - set(DIMENSIONS):
                raise RatingStoreError(f"window {window_id}: unknown dimension(s) {sorted(extra)}")
        with self._write() as db:
            self._ensure_session(db, rater_id)
            db.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rater_id, candidate_id, dimension) "
                           "DO UPDATE SET score = excluded.score, updated_at = excluded.updated_at", rows)
            self._advance(db, rater_id, window_id, "rated")
        return self.session(rater_id)

    def skip_window(self, rater_id: str, window_id: str) -> RaterSession:
        """Skip: no scores; an earlier rating of the window by this rater is withdrawn."""
        rater_id = clean_rater_id(rater_id)
        if window_id not in self.candidates:
            raise RatingStoreError(f"window {window_id!r} is not one of the windows to rate")
        with self._write() as db:
            self._ensure_session(db, rater_id)
            db.execute("DELETE FROM ratings WHERE rater_id = ? AND window_id = ?", (rater_id, window_id))
            self._advance(db, rater_id, window_id, "skipped")
        return self.session(rater_id)

    def _ensure_session(self, db: sqlite3.Connection, rater_id: str) -> None:
        db.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, 0, ?)", (rater_id, self.seed, time.time()))

    def window_scores(self, rater_id: str, window_id: str) -> dict[str, dict[str, int]]:
        """What this rater gave the window's candidates so far (to pre-fill the page after "back")."""
        with self._connect() as db:
            rows = db.execute("SELECT candidate_id, dimension, score FROM ratings WHERE rater_id = ? AND window_id = ?",
                              (rater_id, window_id)).fetchall()
        out: dict[str, dict[str, int]] = {}
        for cid, dim, score in rows:
            out.setdefault(cid, {})[dim] = int(score)
        return out

    # ------------------------------------------------------------ reading out

    def ratings_frame(self) -> pd.DataFrame:
        """Every rating as the annotate ratings format: candidate_id, rater_id, dimension, score."""
        with self._connect() as db:
            frame = pd.read_sql_query("SELECT candidate_id, rater_id, dimension, score FROM ratings "
                                      "ORDER BY rater_id, window_id, candidate_id, dimension", db)
        return frame.astype({"candidate_id": str, "rater_id": str, "dimension": str, "score": int})

    def export(self, path: str | Path) -> Path:
        """Write the ratings as .jsonl or .csv (what `annotate --set annotate.source=human` reads), atomically."""
        path = Path(path)
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise RatingStoreError(f"{path}: export to .jsonl or .csv")
        frame = self.ratings_frame()
        with atomic_file(path) as tmp:
            if path.suffix.lower() == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_json(tmp, orient="records", lines=True)
        return path

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
            raters = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        return {"ratings": int(rows), "raters": int(raters), "windows": len(self.window_ids)}


def agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Per rater, agreement with the other raters on the (candidate, dimension) cells both rated:
    Spearman correlation of the rater's scores with the mean of the others, mean absolute difference, and the
    share of cells within one Likert point. NaN where the rater shares no cell (or no variance) with others."""
    rows = []
    for rater, mine in frame.groupby("rater_id"):
        others = frame[frame["rater_id"] != rater].groupby(["candidate_id", "dimension"])["score"].mean()
        joined = mine.set_index(["candidate_id", "dimension"])["score"].to_frame("mine").join(others.rename("others"), how="inner")
        n = len(joined)
        spearman = np.nan
        if n >= 2 and joined["mine"].nunique() > 1 and joined["others"].nunique() > 1:
            spearman = float(joined["mine"].rank().corr(joined["others"].rank()))
        diff = (joined["mine"] - joined["others"]).abs()
        rows.append({"rater_id": rater, "ratings": len(mine), "shared_cells": n, "spearman": spearman,
                     "mean_abs_diff": float(diff.mean()) if n else np.nan,
                     "within_one": float((diff <= 1).mean()) if n else np.nan})
    return pd.DataFrame(rows, columns=["rater_id", "ratings", "shared_cells", "spearman", "mean_abs_diff", "within_one"])
