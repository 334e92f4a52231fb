"""Training our own sync expert as SyncNet was trained: contrastive, on in-sync vs shifted audio-video pairs.

A pair is a 5-frame mouth-crop window of a training clip (frames i..i+4) and a 0.2 s MFCC window of the same
clip at frame i + shift: shift 0 (in sync, label 1) or a shift with min_shift <= |shift| <= max_shift (label 0;
small shifts are left out: windows 1-2 frames apart overlap and look nearly alike). Loss (Chung & Zisserman
2016, eq. 1): mean over pairs of y * d^2 + (1 - y) * max(margin - d, 0)^2, halved, d the Euclidean distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from components.data.windows import ClipSample, mouth_boxes
from components.evaluation.sync_inputs import audio_windows, clip_mfcc, mouth_crops, n_audio_windows
from components.evaluation.sync_metrics import SyncVideo, embed_audio
from components.evaluation.syncnet import VIDEO_FRAMES, SyncNet, SyncNetSpec

__all__ = ["SyncClip", "contrastive_loss", "prepare_sync_clips", "sync_batch", "validation_videos"]


@dataclass
class SyncClip:
    """A training clip reduced to what the expert sees: mouth crops of every frame and the clip's MFCC."""

    clip_id: str
    crops: torch.Tensor  # [T, C, S, S]
    mfcc: np.ndarray  # [4T, 13]
    frames: np.ndarray  # uint8 [T, H, W, 3] (validation re-crops from pixels, as evaluation does)
    mouth_box: np.ndarray  # [T, 4]

    @property
    def n_windows(self) -> int:
        """Frames i with both a full 5-frame video window and a full audio window."""
        return min(len(self.crops) - VIDEO_FRAMES + 1, n_audio_windows(len(self.mfcc)))


def prepare_sync_clips(clips: Sequence[ClipSample], spec: SyncNetSpec) -> list[SyncClip]:
    """Clips with a ground-truth mouth box and at least one window; the others are skipped."""
    out = []
    for clip in clips:
        box = mouth_boxes(clip.truth, clip.n_frames)
        if not np.isfinite(box).all():
            continue
        prepared = SyncClip(
            clip_id=clip.clip_id,
            crops=mouth_crops(clip.frames, box, spec),
            mfcc=clip_mfcc(spec, clip.mel, clip.audio, clip.sample_rate, clip.fps),
            frames=clip.frames,
            mouth_box=box,
        )
        if prepared.n_windows > 0:
            out.append(prepared)
    return out


def _draw_shift(n_windows: int, frame: int, min_shift: int, max_shift: int, generator: torch.Generator) -> int | None:
    shifts = [d for d in range(-max_shift, max_shift + 1) if abs(d) >= min_shift and 0 <= frame + d < n_windows]
    if not shifts:
        return None
    return shifts[int(torch.randint(len(shifts), (1,), generator=generator))]


def sync_batch(
    clips: Sequence[SyncClip], rows: int, generator: torch.Generator, min_shift: int, max_shift: int
) -> dict[str, torch.Tensor]:
    """`rows` pairs, half in sync on average: {"mfcc": [B,1,13,20], "lips": [B,C,5,S,S], "in_sync": [B] float}."""
    if not clips:
        raise ValueError("sync_batch needs at least one clip with ground truth")
    mfcc, lips, labels = [], [], []
    while len(labels) < rows:
        clip = clips[int(torch.randint(len(clips), (1,), generator=generator))]
        frame = int(torch.randint(clip.n_windows, (1,), generator=generator))
        in_sync = bool(torch.rand((), generator=generator) < 0.5)
        shift = 0 if in_sync else _draw_shift(clip.n_windows, frame, min_shift, max_shift, generator)
        if shift is None:  # a clip too short for any allowed shift
            continue
        lips.append(clip.crops[frame : frame + VIDEO_FRAMES].permute(1, 0, 2, 3))
        mfcc.append(audio_windows(clip.mfcc, frame + shift, 1)[0])
        labels.append(float(in_sync))
    return {"mfcc": torch.stack(mfcc), "lips": torch.stack(lips), "in_sync": torch.tensor(labels)}


def contrastive_loss(model: SyncNet, batch: dict[str, torch.Tensor], margin: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SyncNet's contrastive loss on the pairs' Euclidean distances, with the mean distances as metrics."""
    distance = model(batch["mfcc"], batch["lips"])
    y = batch["in_sync"]
    loss = 0.5 * (y * distance**2 + (1 - y) * torch.relu(margin - distance) ** 2).mean()
    with torch.no_grad():
        # Means over the pairs of each kind (0 for a kind the batch lacks: the loop sums metrics, NaN would stick).
        metrics = {
            "dist_in_sync": float((distance * y).sum() / y.sum().clamp(min=1)),
            "dist_shifted": float((distance * (1 - y)).sum() / (1 - y).sum().clamp(min=1)),
        }
    return loss, metrics


def validation_videos(model: SyncNet, clips: Sequence[SyncClip], frames: int) -> list[SyncVideo]:
    """Held-out in-sync videos cut like the test windows: `frames`-frame segments (stride `frames`) of each clip,
    frame 0 of each left out as evaluation does, with the clip's audio embeddings around them."""
    videos = []
    for clip in clips:
        audio_emb = embed_audio(model, clip.mfcc)
        for start in range(0, len(clip.frames) - frames + 1, frames):
            first = start + 1
            if start + frames - first >= VIDEO_FRAMES:
                videos.append(SyncVideo(clip.frames[first : start + frames], clip.mouth_box[first : start + frames],
                                        audio_emb, first))
    return videos
