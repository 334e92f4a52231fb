"""One stable square crop per clip from per-frame face boxes (head and shoulders, like Hallo's preprocessing).

The main face (largest box) is tracked over time, gaps are filled from neighbouring frames, and the track is
median-smoothed so a jittery or briefly wrong detection does not move the crop. The clip's single square then
covers every smoothed face box, with `scale` x the largest face size, shifted down a little for the shoulders.
A clip whose face is missing in too many frames, that shows several faces, or whose face is too small is
refused with the reason and the frame ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.data.keypoints import CentreCrop

SHOULDER_SHIFT = 0.25  # crop centre sits this many face sizes below the face centre


class FaceTrackError(ValueError):
    """The clip's faces do not allow one usable crop; the message says why and in which frames."""


@dataclass(frozen=True)
class FaceCropParams:
    scale: float = 2.0  # crop side / largest face side
    smooth_frames: int = 9  # median window over the face track (frames)
    max_missing_frac: float = 0.2
    max_multi_face_frac: float = 0.1
    second_face_ratio: float = 0.4  # a second box at least this size of the main one counts as another face
    min_face_frac: float = 0.08  # face side / the frame's short side


def frame_ranges(mask: np.ndarray, limit: int = 6) -> str:
    """Indices where mask is true as "0-12, 30, 41-49" (at most `limit` ranges, then "...")."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts, ends = np.r_[idx[0], idx[breaks + 1]], np.r_[idx[breaks], idx[-1]]
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends)]
    return ", ".join(parts[:limit]) + (", ..." if len(parts) > limit else "")


def main_face_track(faces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(track float64 [T, 3] = cx, cy, side in pixels, NaN where no face; n_faces int [T] counting
    boxes at least second_face_ratio of the main face are the caller's: here every box is counted)."""
    track = np.full((len(faces), 3), np.nan)
    for t, boxes in enumerate(faces):
        if len(boxes):
            b = boxes[np.argmax(np.maximum(boxes[:, 2], boxes[:, 3]))]
            track[t] = (b[0] + b[2] / 2, b[1] + b[3] / 2, max(b[2], b[3]))
    return track, np.array([len(b) for b in faces])


def _fill_and_smooth(track: np.ndarray, window: int) -> np.ndarray:
    t = np.arange(len(track))
    ok = np.isfinite(track[:, 0])
    filled = np.stack([np.interp(t, t[ok], track[ok, k]) for k in range(3)], axis=1)
    half = max(0, window // 2)
    padded = np.pad(filled, ((half, half), (0, 0)), mode="edge")
    return np.stack([np.median(padded[i : i + 2 * half + 1], axis=0) for i in range(len(filled))])


def face_crop(faces: list[np.ndarray], width: int, height: int, params: FaceCropParams) -> CentreCrop:
    """The clip's square crop in source pixels; faces[t] is float [n, 5] = x0, y0, w, h, score in pixels."""
    n = len(faces)
    track, _ = main_face_track(faces)
    missing = ~np.isfinite(track[:, 0])
    if missing.sum() > params.max_missing_frac * n:
        raise FaceTrackError(
            f"face missing in {missing.sum()} of {n} frames ({missing.mean():.0%} > max_missing_face_frac "
            f"{params.max_missing_frac:.0%}): frames {frame_ranges(missing)}"
        )
    several = np.zeros(n, bool)
    for t, boxes in enumerate(faces):
        if len(boxes) > 1:
            sides = np.sort(np.maximum(boxes[:, 2], boxes[:, 3]))[::-1]
            several[t] = sides[1] >= params.second_face_ratio * sides[0]
    if several.sum() > params.max_multi_face_frac * n:
        most = max(len(b) for b in faces)
        raise FaceTrackError(
            f"several faces (up to {most}) in {several.sum()} of {n} frames ({several.mean():.0%} > "
            f"max_multi_face_frac {params.max_multi_face_frac:.0%}): frames {frame_ranges(several)}"
        )
    short = min(width, height)
    median_side = float(np.nanmedian(track[:, 2]))
    if median_side < params.min_face_frac * short:
        small = np.isfinite(track[:, 2]) & (track[:, 2] < params.min_face_frac * short)
        raise FaceTrackError(
            f"face too small: median {median_side:.0f} px = {median_side / short:.1%} of the frame's short side "
            f"(< min_face_frac {params.min_face_frac:.0%}): frames {frame_ranges(small)}"
        )

    smooth = _fill_and_smooth(track, params.smooth_frames)
    cx, cy, side = smooth[:, 0], smooth[:, 1] + SHOULDER_SHIFT * smooth[:, 2], smooth[:, 2]
    # One square for the clip: big enough for scale x the largest face and for every frame's face box.
    x_lo, x_hi = np.min(cx - side / 2), np.max(cx + side / 2)
    y_lo, y_hi = np.min(cy - side / 2), np.max(cy + side / 2)
    size = max(params.scale * side.max(), x_hi - x_lo + side.max() / 2, y_hi - y_lo + side.max() / 2)
    size = int(min(round(size), short))
    x0 = int(np.clip(round((x_lo + x_hi) / 2 - size / 2), 0, width - size))
    y0 = int(np.clip(round((y_lo + y_hi) / 2 - size / 2), 0, height - size))
    return CentreCrop(x0=x0, y0=y0, size=size)
