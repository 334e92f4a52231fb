import json
import sqlite3
import threading

import pytest

from components.app.pool import PoolError, load_pool, resolve_inside
from components.app.rating_store import RatingStore, RatingStoreError, agreement
from components.config import DIMENSIONS
from components.preference.ratings import check_ratings, read_ratings


def store_for(pool, path, seed=0) -> RatingStore:
    return RatingStore(path, pool.window_ids, pool.windows, seed=seed)


def scores(window, value=3):
    return {cid: {d: value for d in DIMENSIONS} for cid in window}


def test_wal_mode_and_seeded_blind_order(pool, tmp_path):
    store = store_for(pool, tmp_path / "r.sqlite", seed=7)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    first = store.session("alice")
    assert sorted(first.order) == sorted(pool.window_ids) and first.position == 0 and first.rated == 0
    assert store.session("alice").order == first.order  # same rater, same order
    orders = {tuple(store.session(f"r{i}").order) for i in range(8)}
    assert len(orders) > 1  # raters get different shuffles
    assert sorted(store.candidate_order("alice", "w0")) == sorted(pool.windows["w0"])


def test_rate_skip_back_and_resume(pool, tmp_path):
    path = tmp_path / "r.sqlite"
    store = store_for(pool, path)
    s = store.session("alice")
    w0, w1 = s.order[0], s.order[1]
    s = store.rate_window("alice", w0, scores(pool.windows[w0], 4))
    assert (s.position, s.rated) == (1, 1)
    s = store.skip_window("alice", w1)
    assert (s.position, s.rated, s.skipped) == (2, 1, 1)
    s = store.move("alice", 0)  # back to the first window: its scores come back
    assert s.current == w0 and store.window_scores("alice", w0)[pool.windows[w0][0]]["motion"] == 4
    store.rate_window("alice", w0, scores(pool.windows[w0], 2))  # re-rating replaces, never duplicates
    reopened = store_for(pool, path).session("alice")  # a new store object: what a restarted server sees
    assert (reopened.position, reopened.rated, reopened.skipped) == (1, 1, 1)
    frame = store.ratings_frame()
    assert len(frame) == len(pool.windows[w0]) * len(DIMENSIONS) and set(frame["score"]) == {2}


def test_bad_scores_write_nothing(pool, tmp_path):
    store = store_for(pool, tmp_path / "r.sqlite")
    w = pool.window_ids[0]
    bad = scores(pool.windows[w])
    bad[pool.windows[w][0]]["quality"] = 6
    with pytest.raises(RatingStoreError, match="not a Likert integer"):
        store.rate_window("alice", w, bad)
    with pytest.raises(RatingStoreError, match="rate every candidate"):
        store.rate_window("alice", w, {pool.windows[w][0]: {d: 3 for d in DIMENSIONS}})
    with pytest.raises(RatingStoreError, match="rater id"):
        store.session("../../etc")
    assert store.counts()["ratings"] == 0


def test_concurrent_raters_lose_no_row(pool, tmp_path):
    path = tmp_path / "r.sqlite"
    raters = [f"r{i}" for i in range(6)]
    errors = []

    def rate_all(rater):
        store = store_for(pool, path)  # each thread its own store, as each server process would
        try:
            for _ in range(3):
                for w in store.session(rater).order:
                    store.rate_window(rater, w, scores(pool.windows[w], 1 + hash((rater, w)) % 5))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=rate_all, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = len(raters) * len(pool.candidate_ids) * len(DIMENSIONS)
    assert store_for(pool, path).counts()["ratings"] == expected


def test_export_passes_the_ratings_suite_and_agreement(pool, tmp_path):
    store = store_for(pool, tmp_path / "r.sqlite")
    for rater, shift in (("alice", 0), ("bob", 0), ("carol", 1)):
        for k, w in enumerate(pool.window_ids):
            store.rate_window(rater, w, {cid: {d: min(5, 1 + j + k + shift) for d in DIMENSIONS}
                                         for j, cid in enumerate(pool.windows[w])})
    for suffix in (".jsonl", ".csv"):
        out = store.export(tmp_path / f"ratings{suffix}")
        rows, check = check_ratings(read_ratings(out), pool.candidate_ids, str(out))
        assert len(rows) == 3 * len(pool.candidate_ids) * len(DIMENSIONS) and check.single_rater == 0
    with pytest.raises(RatingStoreError, match="jsonl or .csv"):
        store.export(tmp_path / "ratings.parquet")
    table = agreement(store.ratings_frame()).set_index("rater_id")
    assert table.loc["alice", "shared_cells"] == len(pool.candidate_ids) * len(DIMENSIONS)
    assert table.loc["alice", "spearman"] > 0.8 and table.loc["alice", "within_one"] == 1.0
    assert table.loc["carol", "mean_abs_diff"] > table.loc["alice", "mean_abs_diff"]


def test_pool_refuses_paths_outside(pool_dir, tmp_path):
    pool = load_pool(pool_dir)
    assert pool.video_path(pool.candidate_ids[0]).is_relative_to(pool_dir.resolve())
    for bad in ("../../etc/passwd", "/etc/passwd", "videos/../../outside.mp4"):
        with pytest.raises(PoolError, match="outside the candidates directory"):
            resolve_inside(pool_dir, bad)
    evil = tmp_path / "evil"
    evil.mkdir()
    index = json.loads((pool_dir / "index.json").read_text())
    index["videos"][pool.candidate_ids[0]] = "../../../../etc/passwd"
    (evil / "index.json").write_text(json.dumps(index))
    with pytest.raises(PoolError, match="outside the candidates directory"):
        load_pool(evil)
