"""Training pairs and loss of our sync expert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.evaluation.sync_objective import SyncClip, contrastive_loss, sync_batch


def _tagged_clip(n_frames: int = 30) -> SyncClip:
    """Crops whose pixels hold their frame index, MFCC whose values hold their step index."""
    crops = torch.arange(n_frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(n_frames, 1, 56, 56).clone()
    mfcc = np.repeat(np.arange(4 * n_frames, dtype=np.float32)[:, None], 13, axis=1)
    return SyncClip("c", crops, mfcc, np.zeros((n_frames, 8, 8, 3), np.uint8), np.zeros((n_frames, 4), np.float32))


def test_pairs_are_in_sync_or_shifted_within_the_allowed_range():
    clip = _tagged_clip()
    batch = sync_batch([clip], 200, torch.Generator().manual_seed(0), min_shift=3, max_shift=8)
    assert batch["lips"].shape == (200, 1, 5, 56, 56) and batch["mfcc"].shape == (200, 1, 13, 20)
    video_frame = batch["lips"][:, 0, 0, 0, 0]
    audio_frame = batch["mfcc"][:, 0, 0, 0] / 4
    shift = (audio_frame - video_frame)[batch["in_sync"] == 0].abs()
    assert torch.equal(audio_frame[batch["in_sync"] == 1], video_frame[batch["in_sync"] == 1])
    assert shift.min() >= 3 and shift.max() <= 8
    assert 0.35 < batch["in_sync"].mean() < 0.65
    assert max(video_frame.max(), audio_frame.max()) < clip.n_windows and min(video_frame.min(), audio_frame.min()) >= 0
    again = sync_batch([clip], 200, torch.Generator().manual_seed(0), min_shift=3, max_shift=8)
    assert torch.equal(again["mfcc"], batch["mfcc"])  # the step's generator decides everything


class _FixedDistance(torch.nn.Module):
    def __init__(self, distance: torch.Tensor):
        super().__init__()
        self.distance = distance

    def forward(self, mfcc, lips):
        return self.distance


def test_contrastive_loss_is_syncnets():
    distance = torch.tensor([0.5, 0.2, 1.5])
    batch = {"mfcc": None, "lips": None, "in_sync": torch.tensor([1.0, 0.0, 0.0])}
    loss, metrics = contrastive_loss(_FixedDistance(distance), batch, margin=1.0)
    # in sync: d^2 = 0.25; shifted: max(1 - 0.2, 0)^2 = 0.64 and max(1 - 1.5, 0)^2 = 0; halved mean.
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.64 + 0.0) / 3)
    assert metrics == {"dist_in_sync": pytest.approx(0.5), "dist_shifted": pytest.approx(0.85)}
