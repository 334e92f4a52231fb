"""Held-out evaluation of the Talking-Critic, and the no-learning baselines it must beat.

Split: windows by clip_id (a share of the clips is never trained on: no identity/audio of a held-out clip leaks
in through a neighbouring window) and raters by id (the last `held_out_raters` rater ids in sorted order are
never trained on). Evaluation uses only held-out raters' scores of held-out windows, so the critic is judged on
people (or simulated raters) it never saw, on videos it never saw.

Metrics per dimension, on the within-window pairs whose held-out rater score differs:
- pair_acc: the share of pairs the scorer orders like the raters (a scorer tie counts one half);
- spearman: rank correlation between scorer and rater scores, pooled over held-out candidates after centring
  both per window (only within-window differences carry meaning, for the critic and for the raters).

Baselines (no training, no ground truth):
- lip_sync: Sync-C of the candidate alone, from the sync expert (components/evaluation/sync_metrics). The
  window carries only its own 17 frames of audio, so the audio embeddings exist for window frames 0..12 only;
  the search runs over +-SYNC_MAX_OFFSET frames (not the protocol's +-15, which would compare mostly against
  the zero padding), audio outside the window is the zero vector as in the protocol, frame 0 is left out;
- quality: Laplacian sharpness (mean |Laplacian| of the grey frames 1..T-1);
- motion: negative jitter (- mean |second temporal difference|).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from components.config import DIMENSIONS
from components.preference.critic import laplacian_sharpness, rating_pairs

SYNC_MAX_OFFSET = 4
BASELINES = {
    "lip_sync": f"Sync-C of the candidate (sync expert, +-{SYNC_MAX_OFFSET} frame search over the window's own audio)",
    "motion": "negative jitter (minus the mean absolute second temporal difference, grey 0-1)",
    "quality": "Laplacian sharpness (mean absolute 4-neighbour Laplacian, grey 0-1)",
}

__all__ = ["BASELINES", "SYNC_MAX_OFFSET", "baseline_scores", "evaluate_scores", "rater_means", "split_raters",
           "split_windows", "sync_confidence"]


def split_windows(clip_of: dict[str, str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(training window ids, held-out window ids): a seeded share of the clips (>= 1, and >= 1 clip left)."""
    clips = sorted(set(clip_of.values()))
    if len(clips) < 2:
        raise ValueError(f"the critic's held-out split needs windows of at least 2 clips, got {clips}")
    n_held = min(len(clips) - 1, max(1, round(share * len(clips))))
    held = set(np.random.default_rng(seed).permutation(clips)[:n_held].tolist())
    ids = sorted(clip_of)
    return [w for w in ids if clip_of[w] not in held], [w for w in ids if clip_of[w] in held]


def split_raters(rater_ids, n_held: int) -> tuple[list[str], list[str]]:
    """(training raters, held-out raters): the last n_held rater ids in sorted order are held out."""
    raters = sorted(set(map(str, rater_ids)))
    if len(raters) <= n_held:
        raise ValueError(f"critic.held_out_raters={n_held} leaves no training rater among {raters}")
    return raters[:-n_held], raters[-n_held:]


def rater_means(ratings: pd.DataFrame, raters: list[str], candidate_ids) -> pd.DataFrame:
    """Mean score over `raters` per candidate of `candidate_ids`: index candidate_id, a column per dimension."""
    rows = ratings[ratings["rater_id"].isin(raters) & ratings["candidate_id"].isin(set(candidate_ids))]
    table = rows.assign(score=rows["score"].astype(float)).pivot_table(
        index="candidate_id", columns="dimension", values="score", aggfunc="mean")
    return table.reindex(columns=list(DIMENSIONS))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def evaluate_scores(scores: pd.DataFrame, truth: pd.DataFrame, window_of: dict[str, str]) -> dict[str, dict]:
    """Per dimension {pair_acc, spearman, n_pairs} of `scores` against `truth` (both index candidate_id,
    a column per dimension) on the candidates of `truth`; see the module docstring."""
    pairs = rating_pairs(truth, window_of)
    out: dict[str, dict] = {}
    for dim in DIMENSIONS:
        p = pairs[pairs["dimension"] == dim]
        diff = scores.loc[p["winner"], dim].to_numpy() - scores.loc[p["loser"], dim].to_numpy()
        diff = diff[np.isfinite(diff)]  # a scorer without a value (e.g. no sync expert) is not a wrong one
        acc = float(np.mean((diff > 0) + 0.5 * (diff == 0))) if len(diff) else float("nan")
        cells = truth[[dim]].dropna()
        cells = cells[np.isfinite(scores.loc[cells.index, dim].to_numpy())].assign(score=lambda t: scores.loc[t.index, dim].to_numpy(),
                                             window_id=lambda t: [window_of[c] for c in t.index])
        centred = cells[[dim, "score"]] - cells.groupby("window_id")[[dim, "score"]].transform("mean")
        out[dim] = {"pair_acc": acc, "spearman": _spearman(centred["score"].to_numpy(), centred[dim].to_numpy()),
                    "n_pairs": int(len(diff))}
    return out


def sync_confidence(expert, frames: np.ndarray, mouth_box: np.ndarray, audio_emb, max_offset: int = SYNC_MAX_OFFSET) -> float:
    """Sync-C of one window video (frame 0 left out) against its window's audio embeddings (window frame k)."""
    from components.evaluation.sync_metrics import distance_table, embed_video, sync_scores

    video = embed_video(expert.model, frames[1:], mouth_box[1:])
    return sync_scores(distance_table(video, audio_emb, 1, max_offset)).sync_c


def window_audio_embeddings(expert, window, sample_rate: int, fps: float):
    """The expert's audio embeddings of a window's frames, from its normalised log-mel and waveform."""
    from components.data.windows import MEL_LOG10_CENTRE, MEL_LOG10_SCALE
    from components.evaluation.sync_inputs import clip_mfcc
    from components.evaluation.sync_metrics import embed_audio

    raw_mel = np.asarray(window.mel, np.float32) * MEL_LOG10_SCALE + MEL_LOG10_CENTRE  # clip_mfcc normalises again
    return embed_audio(expert.model, clip_mfcc(expert.spec, raw_mel, window.audio, sample_rate, fps))


def baseline_scores(candidates, windows: dict, expert=None, sample_rate: int = 16000, fps: float = 25.0) -> pd.DataFrame:
    """The baselines of every candidate (index candidate_id, a column per dimension; higher = better).
    Without a sync expert the lip_sync column is NaN."""
    audio_emb = {}
    rows = {}
    for c in candidates:
        w = windows[c.window_id]
        g = np.asarray(c.frames[1:], np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
        jitter = float(np.abs(np.diff(g, n=2, axis=0)).mean()) if len(g) > 2 else 0.0
        lip = math.nan
        if expert is not None:
            if c.window_id not in audio_emb:
                audio_emb[c.window_id] = window_audio_embeddings(expert, w, sample_rate, fps)
            lip = sync_confidence(expert, c.frames, w.mouth_box, audio_emb[c.window_id])
        rows[c.candidate_id] = {"lip_sync": lip, "motion": -jitter, "quality": float(laplacian_sharpness(c.frames[1:]).mean())}
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(DIMENSIONS))
    table.index.name = "candidate_id"
    return table
