"""Sync-C and Sync-D as the SyncNet protocol computes them (syncnet_python's SyncNetInstance.evaluate).

For every 5-frame video window i of a video, the Euclidean distance between its lip embedding and the audio
embeddings of windows i-15 .. i+15: a table [31 offsets, n windows]; audio windows outside the audio are zero
vectors (the protocol pads the audio features with zeros). Then, per video:
- mean over windows of each offset's distances;
- Sync-D = the minimum of those means (lower = closer in sync);
- Sync-C = their median minus that minimum (higher = more confidently in sync);
- offset = syncnet_python's "AV offset" = 15 - (row of the minimum): row r pairs video window i with audio
  window i + r - 15, so offset k means the audio that best matches video frame i is frame i - k (the video lags
  the audio by k frames); 0 for a video in sync.
A dataset's figures are the means over its videos (as papers report them).

Our videos are generated test windows, shorter than the protocol's +-15 frame search; their audio embeddings come
from the whole test clip the window is cut from (the real audio around the window), so zero padding only enters
past the clip's ends. Frame 0 of a window is the given reference frame and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from components.evaluation.sync_inputs import audio_windows, lip_windows, mouth_crops, n_audio_windows
from components.evaluation.syncnet import SyncNet

__all__ = [
    "PROTOCOL_MAX_OFFSET",
    "SyncScores",
    "SyncVideo",
    "distance_table",
    "embed_audio",
    "embed_video",
    "mean_sync_scores",
    "offset_accuracy",
    "sync_scores",
    "sync_table",
]

PROTOCOL_MAX_OFFSET = 15  # syncnet_python's vshift


@dataclass(frozen=True)
class SyncScores:
    sync_c: float  # confidence: median - min of the per-offset mean distances
    sync_d: float  # the min mean distance
    offset: int  # AV offset in frames (syncnet_python's sign: the video lags the audio by `offset`)


def sync_scores(table: np.ndarray) -> SyncScores:
    """Sync-C, Sync-D and the offset of one video from its distance table [2m+1 offsets, n windows].

    Row r holds the distances of every video window i to audio window i + r - m (m = (rows - 1) / 2).
    """
    table = np.asarray(table, np.float64)
    if table.ndim != 2 or table.shape[0] % 2 == 0 or table.shape[1] == 0:
        raise ValueError(f"distance table must be [2m+1 offsets, n >= 1 windows], got shape {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("distance table must be finite")
    means = table.mean(axis=1)
    row = int(np.argmin(means))  # the first minimum on ties, as torch.min
    m = table.shape[0] // 2
    return SyncScores(sync_c=float(np.median(means) - means[row]), sync_d=float(means[row]), offset=m - row)


def distance_table(
    video_emb: torch.Tensor, audio_emb: torch.Tensor, video_start: int, max_offset: int = PROTOCOL_MAX_OFFSET
) -> np.ndarray:
    """[2*max_offset+1, n]: distance of video window j (clip frame video_start + j) to the audio window of clip
    frame video_start + j + (r - max_offset); audio outside audio_emb's m windows is the zero vector."""
    n, m = len(video_emb), len(audio_emb)
    index = video_start + torch.arange(n)[None, :] + torch.arange(-max_offset, max_offset + 1)[:, None]
    valid = (index >= 0) & (index < m)
    if m:
        audio = audio_emb[index.clamp(0, m - 1)] * valid[..., None].to(audio_emb.dtype)
    else:
        audio = torch.zeros(*index.shape, video_emb.shape[1], dtype=video_emb.dtype)
    return torch.linalg.vector_norm(video_emb[None] - audio, dim=-1).numpy()


@torch.no_grad()
def embed_audio(model: SyncNet, mfcc: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Audio embeddings of every video frame of a clip that has a full 0.2 s window: [n_audio_windows, E]."""
    count = n_audio_windows(len(mfcc))
    if count == 0:
        return torch.zeros(0, model.spec.embed_dim)
    windows = audio_windows(mfcc, 0, count)
    device = next(model.parameters()).device  # the expert may sit on the training GPU; embeddings come back to the CPU
    return torch.cat([model.forward_audio(windows[i : i + batch_size].to(device)).cpu() for i in range(0, count, batch_size)])


@torch.no_grad()
def embed_video(model: SyncNet, frames: np.ndarray, mouth_box: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Lip embeddings of every 5-frame window of a video [T,H,W,3] (mouth boxes [T,4]): [T-4, E]."""
    windows = lip_windows(mouth_crops(frames, mouth_box, model.spec))
    device = next(model.parameters()).device
    return torch.cat([model.forward_lip(windows[i : i + batch_size].to(device)).cpu() for i in range(0, len(windows), batch_size)])


@dataclass
class SyncVideo:
    """One video to score: its frames and mouth boxes, the embeddings of its clip's audio, where it starts."""

    frames: np.ndarray  # uint8 [T, H, W, 3], T >= 5
    mouth_box: np.ndarray  # [T, 4]
    audio_emb: torch.Tensor  # [m, E]: embed_audio of the whole clip
    start: int  # clip frame of frames[0]


def sync_table(model: SyncNet, video: SyncVideo, max_offset: int = PROTOCOL_MAX_OFFSET) -> np.ndarray:
    return distance_table(embed_video(model, video.frames, video.mouth_box), video.audio_emb, video.start, max_offset)


def mean_sync_scores(model: SyncNet, videos: Sequence[SyncVideo]) -> dict[str, float]:
    """Means over videos: sync_c, sync_d; sync_offset = median AV offset, sync_abs_offset = mean |offset|."""
    if not videos:
        raise ValueError("mean_sync_scores needs at least one video")
    scores = [sync_scores(sync_table(model, v)) for v in videos]
    offsets = np.array([s.offset for s in scores], np.float64)
    return {
        "sync_c": float(np.mean([s.sync_c for s in scores])),
        "sync_d": float(np.mean([s.sync_d for s in scores])),
        "sync_offset": float(np.median(offsets)),
        "sync_abs_offset": float(np.abs(offsets).mean()),
    }


def offset_accuracy(model: SyncNet, videos: Sequence[SyncVideo], tolerance: int = 1) -> dict[str, float]:
    """How well the expert finds the true offset (0) on in-sync videos, within +-tolerance frames:

    - offset_acc: per video, the protocol's offset (mean over its windows); chance ~ (2*tol+1)/31;
    - window_offset_acc: per single 5-frame window (the argmin of one table column), a much harder task;
    - sync_auc: P(distance at offset 0 < distance at a random offset with |offset| > tolerance), per window,
      offsets whose audio exists only; chance 0.5.
    """
    hits, window_hits, auc = [], [], []
    for video in videos:
        table = sync_table(model, video)
        hits.append(abs(sync_scores(table).offset) <= tolerance)
        m = table.shape[0] // 2
        window_hits.extend(np.abs(m - table.argmin(axis=0)) <= tolerance)
        for j in range(table.shape[1]):
            audio_index = video.start + j + np.arange(-m, m + 1)
            valid = (audio_index >= 0) & (audio_index < len(video.audio_emb)) & (np.abs(np.arange(-m, m + 1)) > tolerance)
            if valid.any():
                auc.append(float((table[m, j] < table[valid, j]).mean() + 0.5 * (table[m, j] == table[valid, j]).mean()))
    return {
        "offset_acc": float(np.mean(hits)),
        "window_offset_acc": float(np.mean(window_hits)),
        "sync_auc": float(np.mean(auc)) if auc else float("nan"),
        "chance_offset_acc": (2 * tolerance + 1) / (2 * PROTOCOL_MAX_OFFSET + 1),
    }
