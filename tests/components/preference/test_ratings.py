"""Ratings import: every kind of bad row gets a clear error or a counted warning, never a silent drop."""

from __future__ import annotations

import json

import pytest

from components.preference.ratings import RatingsError, aggregate, check_ratings, rating_sheet, read_ratings, tied_windows

KNOWN = ["w1.g1.s0", "w1.g2.s0", "w2.g1.s0"]


def _csv(tmp_path, rows: list[str]):
    path = tmp_path / "ratings.csv"
    path.write_text("candidate_id,rater_id,dimension,score\n" + "\n".join(rows) + "\n")
    return path


def _good() -> list[str]:
    return [f"{c},{r},{d},{s}" for c, s in zip(KNOWN, (5, 2, 4)) for r in ("ann", "bob") for d in ("lip_sync", "motion", "quality")]


def test_good_ratings_aggregate_to_the_mean_over_raters(tmp_path):
    rows = _good()
    rows[0] = "w1.g1.s0,ann,lip_sync,3"  # ann 3, bob 5 -> 4
    frame, check = check_ratings(read_ratings(_csv(tmp_path, rows)), KNOWN, "ratings.csv")
    table = aggregate(frame)
    assert table.loc["w1.g1.s0", "lip_sync"] == 4.0 and table.loc["w1.g2.s0", "quality"] == 2.0
    assert (table["n_raters"] == 2).all() and check.single_rater == 0 and check.exact_duplicates == 0


@pytest.mark.parametrize(("bad_row", "message"), [
    ("w9.g1.s0,ann,lip_sync,3", "every candidate_id names a candidate"),
    ("w1.g1.s0,cat,lip_sync,7", "scores are Likert integers 1-5"),
    ("w1.g1.s0,cat,lip_sync,2.5", "scores are Likert integers 1-5"),
    ("w1.g1.s0,cat,lip_sync,good", "every score is a number"),
    ("w1.g1.s0,cat,charisma,3", "dimensions are lip_sync, motion, quality"),
])
def test_bad_rows_raise_naming_the_file_and_the_check(tmp_path, bad_row, message):
    path = _csv(tmp_path, [*_good(), bad_row])
    with pytest.raises(RatingsError, match=message) as err:
        check_ratings(read_ratings(path), KNOWN, str(path))
    assert str(path) in str(err.value) and "lines [20]" in str(err.value)  # header + 18 good rows -> line 20


def test_missing_column_and_conflicting_duplicates_raise(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("candidate_id,rater,dimension,score\nw1.g1.s0,ann,lip_sync,3\n")
    with pytest.raises(RatingsError, match=r"missing column\(s\) \['rater_id'\]"):
        read_ratings(path)
    conflicting = _csv(tmp_path, [*_good(), "w1.g1.s0,ann,lip_sync,1"])
    with pytest.raises(RatingsError, match="same \\(candidate, rater, dimension\\) with different scores"):
        check_ratings(read_ratings(conflicting), KNOWN, "r.csv")


def test_exact_duplicates_single_raters_unrated_and_ties_are_counted(tmp_path):
    rows = [r for r in _good() if not r.startswith("w2.g1.s0")]  # w2's only candidate unrated
    rows += [rows[0], "w2.g1.s0,ann,motion,3"]  # one exact duplicate; one single-rater cell
    rows = [r.replace(",2\n", ",5\n") for r in rows]
    frame, check = check_ratings(read_ratings(_csv(tmp_path, rows)), KNOWN, "r.csv")
    assert check.exact_duplicates == 1 and check.single_rater == 1 and check.unrated == 0
    assert check.as_dict()["exact_duplicates_removed"] == 1
    table = aggregate(frame)
    ties = tied_windows(table, {"w1.g1.s0": "w1", "w1.g2.s0": "w1", "w2.g1.s0": "w2"})
    assert ties["motion"] == 1  # w2 has one candidate: tied by itself; w1's differ
    sheet = rating_sheet([{"candidate_id": c, "window_id": c[:2], "video": c} for c in KNOWN], {"w1.g1.s0", "w1.g2.s0"})
    assert set(sheet["candidate_id"]) == {"w2.g1.s0"} and len(sheet) == 3 and (sheet["score"] == "").all()


def test_jsonl_ratings_and_per_rater_normalisation(tmp_path):
    path = tmp_path / "r.jsonl"
    # bob scores everything 2 points higher than ann: normalised, the two agree exactly.
    rows = [{"candidate_id": c, "rater_id": r, "dimension": "lip_sync", "score": s + (2 if r == "bob" else 0)}
            for c, s in zip(KNOWN, (1, 2, 3)) for r in ("ann", "bob")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame, _ = check_ratings(read_ratings(path), KNOWN, str(path))
    plain, normalised = aggregate(frame), aggregate(frame, normalise_raters=True)
    assert plain["lip_sync"].tolist() == [2.0, 3.0, 4.0]
    spread = normalised["lip_sync"].diff().dropna()
    assert (spread > 0).all() and normalised["lip_sync"].mean() == pytest.approx(3.0)


def test_the_apps_sqlite_database_is_read_and_checked(tmp_path):
    """annotate.human_ratings=....sqlite: the browser app's database itself, through the same suite."""
    from components.app.rating_store import RatingStore

    windows = {"w1": ["w1.g1.s0", "w1.g2.s0"], "w2": ["w2.g1.s0"]}
    db = tmp_path / "human.sqlite"
    store = RatingStore(db, list(windows), windows)
    for rater, base in (("ann", 2), ("bob", 3)):
        for w, ids in windows.items():
            store.rate_window(rater, w, {c: {d: base + k for d in ("lip_sync", "motion", "quality")} for k, c in enumerate(ids)})
    rows = read_ratings(db)
    assert len(rows) == 2 * 3 * 3 and set(rows.columns) == {"candidate_id", "rater_id", "dimension", "score"}
    checked, check = check_ratings(rows, KNOWN, str(db))
    assert len(checked) == 18 and check.single_rater == 0 and check.unrated == 0
    with pytest.raises(RatingsError, match="human.sqlite: every candidate_id names a candidate"):
        check_ratings(rows, KNOWN[:2], str(db))  # a database of other candidates is refused, naming the file
    not_db = tmp_path / "notes.sqlite"
    not_db.write_text("not a database")
    with pytest.raises(RatingsError, match="notes.sqlite: not a ratings database"):
        read_ratings(not_db)
