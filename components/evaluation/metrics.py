"""Synthetic-world ground-truth metrics of generated test windows.

Lip sync: the mouth opening read from the generated pixels inside the box the ground truth locates, against the
opening the audio envelope implies (the world's `mouth_open`, lag 0). Read by the learned mouth reader
(mouth_reader.py) when one is given, which reads blurred toy-scale video; by the geometric measure (mouth.py)
otherwise, which is exact on sharp video and collapses on blur. Frame 0 of a window is
the given reference frame, not generated, so it is left out.
Fidelity: PSNR and SSIM of generated frames against the true frames (also without frame 0).
"""

from __future__ import annotations

import numpy as np

from components.data.mouth_box import mouth_box_centre_size
from components.data.mouth_pixels import lip_sync_scores, mouth_opening_from_pixels, pearson
from components.evaluation.mouth_reader import MouthReader
from components.evaluation.ssim import ssim_frames


def lip_metrics(
    frames: np.ndarray, mouth_open: np.ndarray, mouth_box: np.ndarray, reader: MouthReader | None = None
) -> dict[str, float]:
    """frames uint8 [N,T,H,W,3]; mouth_open [N,T]; mouth_box [N,T,4] (windows.mouth_boxes). Means over windows,
    plus a pooled correlation."""
    errs, measured, truth = [], [], []
    for video, opening_true, box in zip(frames, np.asarray(mouth_open), np.asarray(mouth_box)):
        if reader is not None:
            opening = reader.read(video[1:], box[1:])
        else:
            centre, size = mouth_box_centre_size(box[1:])  # the windows' boxes are padded: undo it
            opening = mouth_opening_from_pixels(video[1:], centre, size)
        scores = lip_sync_scores(opening, opening_true[1:])
        errs.append(scores["lip_err"])
        measured.append(opening - opening.mean())
        truth.append(opening_true[1:] - opening_true[1:].mean())
    return {
        # Pooled over windows after centring each: a correlation of mouth *motion*, not of identities' mouth
        # sizes, and defined even for a window whose audio is silent throughout (a per-window corr is not).
        "lip_corr": pearson(np.concatenate(measured), np.concatenate(truth)),
        "lip_err": float(np.mean(errs)),
    }


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean PSNR (dB) over windows of generated vs true frames, uint8 [N,T,H,W,3], frame 0 excluded."""
    a = frames[:, 1:].astype(np.float64)
    b = reference[:, 1:].astype(np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def ssim(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM over windows (each the mean over its frames) of generated vs true frames, uint8 [N,T,H,W,3],
    frame 0 excluded."""
    a, b = frames[:, 1:], reference[:, 1:]
    per_frame = ssim_frames(a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:]))
    return float(per_frame.reshape(len(a), -1).mean(1).mean())
