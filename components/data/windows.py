"""Shard samples -> decoded clips -> fixed-length training windows.

A window is T = 4k+1 consecutive frames of one clip (17 by default: the causal VAE turns them into
1 + k latent frames) together with everything aligned to those frames: audio features, pose, and the
ground-truth mouth opening and mouth box when the clip has them (the synthetic world does; real videos
give NaN there).

A split is read as a stream (`iter_split`, `iter_windows`): one clip is decoded at a time, so a stage's memory is
one clip plus what it keeps, never the split (at 480 px a decoded hour of video is ~62 GB). A stage that keeps some
windows keeps `Window.detached` copies (`pick_windows`), so the clip they were cut from can be freed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from components.data.shards.reader import open_split
from components.io.video import MediaError, decode_video_bytes

__all__ = [
    "MEL_LOG10_CENTRE",
    "MEL_LOG10_SCALE",
    "MOUTH_BOX_SCALE",
    "ClipSample",
    "Window",
    "audio_features",
    "clip_from_sample",
    "iter_split",
    "iter_windows",
    "make_windows",
    "mouth_boxes",
    "normalise_mel",
    "pick_windows",
    "split_windows",
    "window_stride",
]

# Fixed mel normalisation (not fitted to the data, so every split, model and checkpoint agrees):
# the ingest's log10 mel power has a floor of -5 (digital silence) and speech peaks near +1; on the toy
# corpus its mean is -3.1 and its std 1.6. (log10 - (-3)) / 2 maps silence to -1, loud speech to ~+2,
# mean ~0, std ~0.8.
MEL_LOG10_CENTRE = -3.0
MEL_LOG10_SCALE = 2.0

# Half-size of the mouth box relative to half the ground truth's mouth_size_px (w = mouth width,
# h = height of the fully open mouth interior): the lips around the interior and a pixel or two of blur
# must be inside the box, or loss weighting and metrics miss the mouth's edge.
MOUTH_BOX_SCALE = (1.2, 1.5)

AudioKind = Literal["mel", "wav2vec"]


@dataclass
class ClipSample:
    """One decoded clip of a shard split; every per-frame array has the same first axis T."""

    clip_id: str
    identity: str
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    audio: np.ndarray  # float32 mono [N] at sample_rate
    sample_rate: int
    fps: float
    wav2vec: np.ndarray  # float32 [T, tokens, d]
    mel: np.ndarray  # float32 [T, 4, n_mels], log10 power (see normalise_mel)
    pose: np.ndarray  # float32 [T, J, 3]: x, y in [0, 1] of the frame, confidence
    truth: dict[str, Any] | None  # the synthetic world's ground truth, in output pixels; None for real videos

    @property
    def n_frames(self) -> int:
        return len(self.frames)


@dataclass
class Window:
    """`frames` consecutive frames of one clip starting at `start`, with what is aligned to them."""

    clip_id: str
    identity: str
    start: int
    frames: np.ndarray  # uint8 [T, H, W, 3]
    wav2vec: np.ndarray  # float32 [T, tokens, d]
    mel: np.ndarray  # float32 [T, 4, n_mels] log10 power (raw; audio_features normalises)
    pose: np.ndarray  # float32 [T, J, 3]
    mouth_open: np.ndarray  # float32 [T] in [0, 1]; NaN without ground truth
    mouth_box: np.ndarray  # float32 [T, 4] x0, y0, x1, y1 pixels; NaN without ground truth

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def has_truth(self) -> bool:
        return bool(np.isfinite(self.mouth_box).all())

    def detached(self) -> Window:
        """A copy sharing no memory with its clip: a window's arrays are views of the clip's, and keeping the
        view would keep the whole decoded clip alive."""
        arrays = ("frames", "wav2vec", "mel", "pose", "mouth_open", "mouth_box")
        return replace(self, **{name: np.array(getattr(self, name)) for name in arrays})


# ----------------------------------------------------------------------------- clips


def _decode_wav(data: bytes, where: str) -> tuple[np.ndarray, int]:
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise MediaError(f"{where}: cannot read wav ({exc})") from exc
    return samples.mean(axis=1).astype(np.float32), int(rate)


def clip_from_sample(sample: dict[str, Any]) -> ClipSample:
    """A decoded shard sample (`decode_sample` output) -> ClipSample; per-frame fields must agree in length."""
    where = f"{sample.get('__url__', '?')} sample {sample.get('__key__', '?')}"
    meta = sample["json"]
    video = decode_video_bytes(sample["mp4"], with_audio=False, name=f"{where} mp4")
    audio, rate = _decode_wav(sample["wav"], f"{where} wav")
    per_frame = {
        "mp4 frames": video.frames,
        "wav2vec.npy": sample["wav2vec.npy"],
        "mel.npy": sample["mel.npy"],
        "pose.npy": sample["pose.npy"],
    }
    truth = sample.get("truth.json")
    if truth is not None:
        per_frame["truth.json mouth_open"] = np.asarray(truth["mouth_open"])
    lengths = {name: len(arr) for name, arr in per_frame.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: per-frame fields disagree in length: {lengths}")
    return ClipSample(
        clip_id=str(meta.get("clip_id", sample.get("__key__"))),
        identity=str(meta.get("identity", "")),
        frames=video.frames,
        audio=audio,
        sample_rate=rate,
        fps=float(meta.get("fps", video.fps)),
        wav2vec=np.asarray(sample["wav2vec.npy"], dtype=np.float32),
        mel=np.asarray(sample["mel.npy"], dtype=np.float32),
        pose=np.asarray(sample["pose.npy"], dtype=np.float32),
        truth=truth,
    )


def iter_split(
    shards_uri: str | Path, split: str, *, shuffle: bool = False, seed: int = 0, by_node: bool = False
) -> Iterator[ClipSample]:
    """Stream one split's clips in shard order, decoding one clip at a time. `by_node=True` gives each distributed
    rank its own shards (training); the default reads every shard (evaluation, caching)."""
    dataset = open_split(
        shards_uri,
        split,
        shuffle=shuffle,
        seed=seed,
        decode=True,
        **({} if by_node else {"nodesplitter": None, "workersplitter": None}),
    )
    for sample in dataset:
        yield clip_from_sample(sample)


# ----------------------------------------------------------------------------- windows


def mouth_boxes(truth: dict[str, Any] | None, n_frames: int) -> np.ndarray:
    """Per-frame mouth boxes [T, 4] (x0, y0, x1, y1 pixels) from the ground truth; NaN without it.

    Centre = truth mouth_center_px; half-size = MOUTH_BOX_SCALE * mouth_size_px / 2.
    """
    if truth is None or "mouth_center_px" not in truth or "mouth_size_px" not in truth:
        return np.full((n_frames, 4), np.nan, np.float32)
    centre = np.asarray(truth["mouth_center_px"], np.float64).reshape(-1, 2)
    half = np.asarray(truth["mouth_size_px"], np.float64).reshape(-1, 2) / 2 * MOUTH_BOX_SCALE
    if len(centre) != n_frames:
        raise ValueError(f"truth of {truth.get('clip_id', '?')}: {len(centre)} mouth centres for {n_frames} frames")
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def make_windows(clip: ClipSample, frames: int = 17, stride: int = 8) -> list[Window]:
    """Windows of `frames` frames starting at 0, stride, 2*stride, ... that fit inside the clip.

    A clip shorter than one window gives none. The tail that no full window covers is dropped (a window
    never pads: padded frames would teach the VAE and the DiT frozen mouths).
    """
    if frames < 1 or stride < 1:
        raise ValueError(f"frames and stride must be >= 1, got {frames} and {stride}")
    n = clip.n_frames
    if clip.truth is not None:
        mouth_open = np.asarray(clip.truth["mouth_open"], np.float32)
    else:
        mouth_open = np.full(n, np.nan, np.float32)
    boxes = mouth_boxes(clip.truth, n)
    windows = []
    for start in range(0, n - frames + 1, stride):
        sl = slice(start, start + frames)
        windows.append(
            Window(
                clip_id=clip.clip_id,
                identity=clip.identity,
                start=start,
                frames=clip.frames[sl],
                wav2vec=clip.wav2vec[sl],
                mel=clip.mel[sl],
                pose=clip.pose[sl],
                mouth_open=mouth_open[sl],
                mouth_box=boxes[sl],
            )
        )
    return windows


def window_stride(split: str, frames: int, train_stride: int) -> int:
    """The one convention every stage shares: overlapping windows (`train_stride`) on the training split, back to
    back on the held-out splits (each held-out frame is scored once)."""
    return train_stride if split == "train" else frames


def iter_windows(shards_uri: str | Path, split: str, frames: int, train_stride: int) -> Iterator[Window]:
    """Every window of a split, streamed in the order of its clips (`iter_split`), cut by `window_stride`."""
    stride = window_stride(split, frames, train_stride)
    for clip in iter_split(shards_uri, split):
        yield from make_windows(clip, frames, stride)


def split_windows(shards_uri: str | Path, split: str, frames: int, train_stride: int) -> list[Window]:
    """Every window of a split in memory, for random access over a small split (the toy VAE's pretraining):
    it holds every decoded clip of the split. Stages that read a split once use `iter_windows`."""
    return list(iter_windows(shards_uri, split, frames, train_stride))


def pick_windows(windows: Iterable[Window], rows: Iterable[int]) -> tuple[list[Window], int]:
    """The windows at positions `rows` of a stream, detached from their clips, in stream order, and the length of
    the stream (which the caller checks against the latent cache). Memory: the picked windows plus one clip."""
    wanted = set(int(r) for r in rows)
    picked, n = [], 0
    for n, window in enumerate(windows, start=1):
        if n - 1 in wanted:
            picked.append(window.detached())
    missing = sorted(r for r in wanted if not 0 <= r < n)
    if missing:
        raise IndexError(f"windows {missing[:5]} asked for, but the stream has {n}")
    return picked, n


def normalise_mel(mel: np.ndarray) -> np.ndarray:
    """log10 mel power -> ~unit scale: (mel - MEL_LOG10_CENTRE) / MEL_LOG10_SCALE, float32."""
    return ((np.asarray(mel, np.float32) - MEL_LOG10_CENTRE) / MEL_LOG10_SCALE).astype(np.float32)


def audio_features(window: Window, kind: AudioKind) -> np.ndarray:
    """The window's audio condition [T, tokens, d]: normalised mel (4 x n_mels) or wav2vec2 (2 x hidden)."""
    if kind == "mel":
        return normalise_mel(window.mel)
    if kind == "wav2vec":
        return np.asarray(window.wav2vec, np.float32)
    raise ValueError(f"audio feature kind must be 'mel' or 'wav2vec', got {kind!r}")
