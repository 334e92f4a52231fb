"""Sync-C / Sync-D / AV offset as the SyncNet protocol computes them, on hand-built distance tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.evaluation.sync_metrics import PROTOCOL_MAX_OFFSET, distance_table, sync_scores


def test_scores_of_a_hand_built_table():
    # Per-offset mean distances |r - 20| + 1 over rows r = 0..30: the minimum 1 at row 20; sorted means are
    # 1, 2, 2, 3, 3, ..., 8, 8, 9, ... so the median (16th of 31) is 9.
    means = np.abs(np.arange(31) - 20) + 1.0
    table = np.stack([means + 1.0, means - 1.0, means + 0.5, means - 0.5], axis=1)  # frames vary, means do not
    scores = sync_scores(table)
    assert scores.sync_d == pytest.approx(1.0)
    assert scores.sync_c == pytest.approx(9.0 - 1.0)
    assert scores.offset == 15 - 20  # syncnet_python: vshift - argmin


def test_in_sync_video_has_offset_zero_and_a_flat_table_no_confidence():
    table = np.full((31, 5), 10.0)
    table[15] = [2.0, 3.0, 4.0, 3.0, 3.0]  # offset 0 (row 15) clearly closest, mean 3
    scores = sync_scores(table)
    assert (scores.offset, scores.sync_d, scores.sync_c) == (0, pytest.approx(3.0), pytest.approx(7.0))
    flat = sync_scores(np.full((31, 3), 4.0))
    assert flat.sync_c == 0.0 and flat.sync_d == 4.0
    assert flat.offset == 15  # ties resolve to the first row, as torch.min does


@pytest.mark.parametrize("bad", [np.zeros((30, 4)), np.zeros((31, 0)), np.zeros(31), np.full((31, 2), np.nan)])
def test_rejects_malformed_tables(bad):
    with pytest.raises(ValueError):
        sync_scores(bad)


def test_distance_table_pairs_video_windows_with_shifted_audio_and_pads_with_zeros():
    video = torch.tensor([[0.0], [1.0], [2.0]])  # windows at clip frames 1, 2, 3
    audio = torch.tensor([[10.0], [11.0], [12.0], [13.0], [14.0]])  # audio windows at clip frames 0..4
    table = distance_table(video, audio, video_start=1, max_offset=2)
    assert table.shape == (5, 3)
    # Row r, column j: video j vs audio frame 1 + j + (r - 2).
    assert table[2, 0] == pytest.approx(abs(0 - 11))  # offset 0: frame 1 vs frame 1
    assert table[4, 2] == pytest.approx(abs(2 - 0))  # frame 3 vs frame 5: past the audio -> zero vector
    assert table[0, 0] == pytest.approx(abs(0 - 0))  # frame 1 vs frame -1: before the audio -> zero vector
    assert table[1, 2] == pytest.approx(abs(2 - 12))  # frame 3 vs frame 2


@pytest.mark.parametrize("lag", [0, 3, -4])
def test_offset_sign_follows_syncnet_python(lag):
    """A video whose window i shows what the audio said at frame i - lag lags the audio by `lag` frames."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(60, 8, generator=g)  # distinct random embeddings per audio frame
    start, n = 20, 12
    video = audio[start - lag : start - lag + n]
    scores = sync_scores(distance_table(video, audio, start))
    assert scores.offset == lag
    assert scores.sync_d == pytest.approx(0.0, abs=1e-6)
    assert scores.sync_c > 1.0
    assert distance_table(video, audio, start).shape == (2 * PROTOCOL_MAX_OFFSET + 1, n)
