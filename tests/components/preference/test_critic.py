"""The Talking-Critic on a hand-built toy pool: every window rendered by all 8 combinations of
(mouth follows the audio | ignores it) x (steady | jittery) x (sharp | blurred), rated accordingly."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from components.config import DIMENSIONS, CriticConfig
from components.preference.critic import (
    bt_loss,
    critic_inputs,
    critic_scores,
    load_critic,
    rating_pairs,
    save_critic,
    score_inputs,
    score_videos,
    train_critic,
)
from components.preference.critic_eval import baseline_scores, evaluate_scores, rater_means, split_raters, split_windows

T, SIZE, N_MELS = 17, 64, 40
BOX = np.array([24.0, 40.0, 40.0, 50.0], np.float32)  # padded mouth box x0, y0, x1, y1


def _opening(rng: np.random.Generator) -> np.ndarray:
    """A smooth-ish mouth-opening track in [0, 1] (speech-like: opens and closes over a few frames)."""
    raw = rng.random(T + 2)
    return np.clip((raw[:-2] + raw[1:-1] + raw[2:]) / 3 * 2 - 0.5, 0, 1).astype(np.float32)


def _frame(texture: np.ndarray, opening: float) -> np.ndarray:
    img = texture.copy()
    height = int(round(1 + 7 * opening))
    img[45 - height // 2 : 45 - height // 2 + height, 26:38] = (30, 10, 10)  # the mouth interior
    return img


def toy_pool(n_windows: int = 12, seed: int = 0):
    """(candidates, windows, ratings) like load_candidates / load_windows / ratings.jsonl give them."""
    rng = np.random.default_rng(seed)
    windows, candidates, rows = {}, [], []
    for w in range(n_windows):
        wid = f"w{w:02d}"
        texture = (rng.random((SIZE, SIZE, 3)) * 120 + 100).astype(np.float32)
        texture = gaussian_filter(texture, (0.7, 0.7, 0))  # fine detail that blur visibly removes
        truth_open = _opening(rng)
        mel = np.repeat((truth_open * 2 - 1)[:, None, None], 4, 1).repeat(N_MELS, 2)
        mel = (mel + rng.normal(0, 0.1, mel.shape)).astype(np.float32)
        truth = np.stack([_frame(texture, o) for o in truth_open]).astype(np.uint8)
        windows[wid] = SimpleNamespace(window_id=wid, clip_id=f"clip{w}", start=0, frames=truth, mel=mel,
                                       mouth_box=np.tile(BOX, (T, 1)), mouth_open=truth_open,
                                       audio=np.zeros(int(T / 25 * 16000), np.float32))
        for synced, steady, sharp in itertools.product((True, False), repeat=3):
            opening = truth_open if synced else _opening(rng)
            frames = np.stack([_frame(texture, o) for o in opening])
            if not sharp:
                frames = gaussian_filter(frames, (0, 1.5, 1.5, 0))
            if not steady:
                for t in range(1, T):
                    frames[t] = np.roll(frames[t], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
            frames = np.clip(frames, 0, 255).astype(np.uint8)
            frames[0] = truth[0]  # frame 0 is the given reference
            cid = f"{wid}.g{int(synced)}{int(steady)}{int(sharp)}.s0"
            candidates.append(SimpleNamespace(candidate_id=cid, window_id=wid, frames=frames))
            good = {"lip_sync": synced, "motion": steady, "quality": sharp}
            for r, bias in enumerate((0, 1, -1)):  # rater offsets cancel within a window
                for dim in DIMENSIONS:
                    score = int(np.clip(2 + 2 * good[dim] + bias, 1, 5))
                    rows.append({"candidate_id": cid, "rater_id": f"sim-{r}", "dimension": dim, "score": score})
    return candidates, windows, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pool():
    return toy_pool()


def test_bt_loss_matches_hand_computation():
    winner, loser = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 1, 0, -2
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(2))) / 3
    assert bt_loss(winner, loser).item() == pytest.approx(expected, rel=1e-6)


def test_rating_pairs_within_window_only():
    scores = pd.DataFrame({"lip_sync": [3, 1, 5, 2], "motion": [2, 2, np.nan, 1], "quality": [1, 1, 1, 1]},
                          index=["a1", "a2", "b1", "b2"])
    pairs = rating_pairs(scores, {"a1": "A", "a2": "A", "b1": "B", "b2": "B"})
    assert sorted(map(tuple, pairs[["dimension", "winner", "loser"]].to_numpy())) == [
        ("lip_sync", "a1", "a2"), ("lip_sync", "b1", "b2")]  # motion: a tie and an unrated cell; quality: ties


def test_critic_learns_each_dimension_on_held_out_windows_and_raters(pool, tmp_path):
    candidates, windows, ratings = pool
    train_w, held_w = split_windows({w: v.clip_id for w, v in windows.items()}, 0.25, seed=0)
    train_r, held_r = split_raters(ratings["rater_id"], 1)
    assert held_r == ["sim-2"] and len(held_w) == 3 and not set(train_w) & set(held_w)
    window_of = {c.candidate_id: c.window_id for c in candidates}
    rows = {c.candidate_id: i for i, c in enumerate(candidates)}
    train_ids = [c.candidate_id for c in candidates if c.window_id in train_w]
    pairs = rating_pairs(rater_means(ratings, train_r, train_ids), window_of)
    index = np.stack([pairs["winner"].map(rows), pairs["loser"].map(rows),
                      pairs["dimension"].map(DIMENSIONS.index)], axis=1)
    inputs = critic_inputs(candidates, windows)
    cfg = CriticConfig(steps=40, batch_size=16, log_every=40, checkpoint_every=1000, width=16,
                       optim={"lr": 3e-3})
    critic, result = train_critic(inputs, index, cfg, tmp_path / "ckpt")
    scores = pd.DataFrame(score_inputs(critic, inputs), index=list(rows), columns=list(DIMENSIONS))
    held_ids = [c.candidate_id for c in candidates if c.window_id in held_w]
    metrics = evaluate_scores(scores, rater_means(ratings, held_r, held_ids), window_of)
    for dim in DIMENSIONS:
        assert metrics[dim]["n_pairs"] == 3 * 16
        assert metrics[dim]["pair_acc"] >= 0.9, (dim, metrics)
        assert metrics[dim]["spearman"] > 0.6, (dim, metrics)
    baseline = evaluate_scores(baseline_scores(candidates, windows), rater_means(ratings, held_r, held_ids), window_of)
    assert baseline["quality"]["pair_acc"] == 1.0 and baseline["motion"]["pair_acc"] == 1.0

    save_critic(tmp_path / "critic", critic, {"steps": cfg.steps})
    loaded = load_critic(tmp_path / "critic")
    assert loaded.meta == {"steps": cfg.steps}
    some = candidates[:10]
    pd.testing.assert_frame_equal(critic_scores(loaded, some, windows), critic_scores(critic, some, windows),
                                  check_exact=True)
    # Videos given as arrays (evaluate's generations) score as the same videos given as candidates.
    chosen = [windows[c.window_id] for c in some]
    as_arrays = score_videos(loaded, np.stack([c.frames for c in some]), np.stack([w.mouth_box for w in chosen]),
                             np.stack([w.mel for w in chosen]))
    for dim in DIMENSIONS:
        np.testing.assert_array_equal(as_arrays[dim], critic_scores(loaded, some, windows)[dim].to_numpy())


def test_sync_baseline_runs_on_window_audio(pool):
    """The lip_sync baseline with an (untrained, tiny) toy-spec sync expert: finite Sync-C per candidate."""
    from components.evaluation.syncnet import SyncExpert, SyncNet, SyncNetSpec

    candidates, windows, _ = pool
    torch.manual_seed(0)
    spec = SyncNetSpec(width=0.125, lip_channels=1, crop_size=56, crop_scale=1.0, crop_mouth_y=0.5, pixels="unit",
                       mfcc="log_mel")
    expert = SyncExpert(model=SyncNet(spec).eval(), source="talkalign")
    table = baseline_scores(candidates[:2], windows, expert=expert)
    assert np.isfinite(table.to_numpy()).all() and (table["lip_sync"] >= 0).all()


def test_training_raters_agreement_with_the_held_out_rater_by_hand():
    """What critic.md's "training raters' pair acc" computes: the training raters' mean scores judged like a critic.
    One window, three videos; the held-out rater orders them a > b > c; the two training raters' mean orders
    a > c > b: of the held-out rater's 3 pairs, (a, b) and (a, c) agree and (b, c) does not -> 2/3."""
    scores = {"sim-0": {"a": 5, "b": 2, "c": 3}, "sim-1": {"a": 4, "b": 2, "c": 2}, "sim-2": {"a": 5, "b": 3, "c": 1}}
    ratings = pd.DataFrame([{"candidate_id": c, "rater_id": r, "dimension": d, "score": s}
                            for r, by_video in scores.items() for c, s in by_video.items() for d in DIMENSIONS])
    window_of = dict.fromkeys("abc", "w0")
    agreement = evaluate_scores(rater_means(ratings, ["sim-0", "sim-1"], "abc"), rater_means(ratings, ["sim-2"], "abc"),
                                window_of)
    assert agreement["lip_sync"]["pair_acc"] == pytest.approx(2 / 3) and agreement["lip_sync"]["n_pairs"] == 3
