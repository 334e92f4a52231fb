"""Blind A/B compare: the store (seeded sides, choices in model terms, resume), the win rate with ties as half and
its Wilson interval (checked against scipy), a compare set animated by two registry versions, and the win rate
logged into the newer version's MLflow run (a real sqlite MLflow registry)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from scipy.stats import binomtest

from components.app.compare import (
    INDEX_FILE,
    CompareError,
    CompareInput,
    CompareStore,
    ModelRef,
    WinRate,
    build_compare_set,
    load_compare_set,
    log_win_rate,
    pair_win_rate,
    resolve_model_ref,
    wilson_interval,
)
from components.io.video import decode_video
from components.model.bundle import save_bundle
from tests.components.app.conftest import V2, V3, write_compare_set


def test_wilson_interval_matches_scipy_and_ties_count_half():
    for k, n in ((8, 10), (0, 5), (17, 40)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # the textbook figures for 8 of 10
    # 6 wins, 2 losses, 2 ties: 7 of 10 "successes" -> rate 0.7 and the interval of 7 of 10
    result = WinRate(V3, V2, wins=6, losses=2, ties=2)
    assert result.rate == pytest.approx(0.7) and result.n == 10
    assert result.interval == pytest.approx(wilson_interval(7, 10))
    assert "0.700" in result.line() and "a tie counts half" in result.line()
    # the newer version is the subject, whichever slot it is in
    assert pair_win_rate(V2, V3, {"first": 1, "second": 5, "tie": 0}).subject == V3
    assert pair_win_rate(V2, V3, {"first": 1, "second": 5, "tie": 0}).wins == 5
    assert pair_win_rate(V3, V2, {"first": 1, "second": 5, "tie": 0}).wins == 1


def test_blind_sides_choices_in_model_terms_and_resume(tmp_path):
    compare = load_compare_set(write_compare_set(tmp_path / "set", tmp_path))
    db = tmp_path / "ratings.sqlite"
    store = CompareStore(db, compare, seed=3)
    sides = {(r, i): store.shown_as_a(r, i) for r in ("alice", "bob", "carol") for i in compare.item_ids}
    assert set(sides.values()) == {"first", "second"}  # both models appear as A
    assert store.shown_as_a("alice", "item0") == CompareStore(db, compare, seed=3).shown_as_a("alice", "item0")
    # alice always picks the model "first" (talkalign/3), whichever side it is on; bob picks B, then one tie
    for item in compare.item_ids:
        side = "A" if store.shown_as_a("alice", item) == "first" else "B"
        store.choose("alice", item, side)
    bob = store.session("bob")
    store.choose("bob", bob.order[0], "tie")
    store.choose("bob", bob.order[1], "B")
    store.choose("bob", bob.order[1], "A")  # a changed mind replaces the choice, never doubles it
    reopened = CompareStore(db, compare, seed=3)  # what a restarted server sees
    assert reopened.session("bob").judged == 2 and reopened.next_item("bob") == bob.order[2]
    assert reopened.next_item("alice") is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0] == 6
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        alice = conn.execute("SELECT DISTINCT winner FROM comparisons WHERE rater_id = 'alice'").fetchall()
    assert alice == [("first",)]
    bob_second = "first" if store.shown_as_a("bob", bob.order[1]) == "first" else "second"
    counts = store.counts()
    assert counts["tie"] == 1 and counts["first"] + counts["second"] == 5
    result = store.result()
    assert result.subject == V3 and result.n == 6
    assert result.wins == 4 + (bob_second == "first") and result.ties == 1
    with pytest.raises(CompareError, match="choose A, B or tie"):
        store.choose("alice", "item0", "left")
    with pytest.raises(CompareError, match="not one of the compare set"):
        store.choose("alice", "../item0", "A")


def test_compare_set_refuses_paths_outside(tmp_path):
    root = write_compare_set(tmp_path / "set", tmp_path, n_items=1)
    index = json.loads((root / INDEX_FILE).read_text())
    index["items"]["item0"]["first"] = "../../../etc/passwd"
    (root / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CompareError, match="outside the candidates directory"):
        load_compare_set(root)
    with pytest.raises(CompareError, match="no compare set"):
        load_compare_set(tmp_path)


@pytest.fixture
def registry(tmp_path, make_tiny_bundle):
    """talkalign versions 1 (champion) and 2 (candidate) in a sqlite MLflow registry, each created inside a run of
    its own (as the register stage does), their sources plain bundle directories."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("talkalign")
    experiment = client.create_experiment("register", artifact_location=str(tmp_path / "artifacts"))
    runs = {}
    for version, alias in (("1", "champion"), ("2", "candidate")):
        bundle = save_bundle(tmp_path / f"bundle{version}", make_tiny_bundle("mel"))
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "promoted", 0.0)  # the gates' own metric, for "next to the gates"
        client.set_terminated(run.info.run_id)  # the register run has ended long before anyone compares
        client.create_model_version("talkalign", str(bundle), run_id=run.info.run_id)
        client.set_registered_model_alias("talkalign", alias, version)
        runs[version] = run.info.run_id
    yield uri, client, runs
    mlflow.set_tracking_uri(None)


def test_registry_versions_compared_and_logged_into_the_newer_run(registry, tmp_path):
    uri, client, runs = registry
    champion = resolve_model_ref("models:/talkalign@champion", uri)
    candidate = resolve_model_ref("models:/talkalign@candidate", uri)
    assert (champion.label, candidate.label) == ("talkalign/1", "talkalign/2")
    with pytest.raises(CompareError, match="models:/talkalign@nope: not found in the registry"):
        resolve_model_ref("models:/talkalign@nope", uri)

    t = np.arange(int(0.3 * 16000)) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    yy, xx = np.mgrid[:40, :40]
    portrait = np.stack([xx * 6, yy * 6, np.full_like(xx, 90)], -1).astype(np.uint8)
    inputs = [CompareInput(f"in{i}", np.roll(portrait, 7 * i, axis=1), speech, 16000) for i in range(2)]
    started = time.perf_counter()
    compare = build_compare_set(tmp_path / "compare", champion, candidate, inputs, tracking_uri=uri, steps=2, seed=0)
    print(f"\ncompare set: 2 models x 2 inputs of 0.3 s in {time.perf_counter() - started:.1f} s")
    assert compare.pair_id == "talkalign/1 vs talkalign/2" and compare.item_ids == ["in0", "in1"]
    video = decode_video(compare.video_path("in0", "second"))
    assert video.frames.shape[0] == round(0.3 * 25) and video.audio is not None
    assert "talkalign" not in str(compare.video_path("in0", "first").name)  # file names do not name the model

    store = CompareStore(tmp_path / "ratings.sqlite", compare)
    for rater in ("alice", "bob", "carol"):
        for item in compare.item_ids:  # everyone prefers the candidate (version 2), except carol's ties
            side = "tie" if rater == "carol" else ("A" if store.shown_as_a(rater, item) == "second" else "B")
            store.choose(rater, item, side)
    result = store.result()
    assert (result.subject.version, result.wins, result.losses, result.ties) == ("2", 4, 0, 2)
    run_id = log_win_rate(result, uri)
    assert run_id == runs["2"]  # the newer version's run, next to its gate metric
    logged = client.get_run(run_id).data.metrics
    assert logged["human_win_rate_vs_v1"] == pytest.approx(5 / 6)
    low, high = wilson_interval(5, 6)
    assert logged["human_win_rate_ci_low_vs_v1"] == pytest.approx(low)
    assert logged["human_win_rate_ci_high_vs_v1"] == pytest.approx(high)
    assert logged["human_win_rate_n_vs_v1"] == 6 and "promoted" in logged
    assert "human_win_rate_vs_v2" not in client.get_run(runs["1"]).data.metrics
    local = client.download_artifacts(run_id, "human_compare/vs_v1.json", str(tmp_path))
    summary = json.loads(Path(local).read_text())
    assert summary["ties"] == 2 and "ties count half" in summary["method"]

    with pytest.raises(CompareError, match="both models must be registry versions"):
        log_win_rate(WinRate(ModelRef("/b", "b"), champion, 1, 0, 0), uri)
