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


def lip_readings(
    frames: np.ndarray, mouth_open: np.ndarray, mouth_box: np.ndarray, reader: MouthReader | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the mouth opening read from the pixels, centred [N, T-1], and the lip error [N]. frames uint8
    [N,T,H,W,3]; mouth_open [N,T]; mouth_box [N,T,4] (windows.mouth_boxes); frame 0 (the reference) left out."""
    errs, measured = [], []
    for video, opening_true, box in zip(frames, np.asarray(mouth_open), np.asarray(mouth_box)):
        if reader is not None:
            opening = reader.read(video[1:], box[1:])
        else:
            centre, size = mouth_box_centre_size(box[1:])  # the windows' boxes are padded: undo it
            opening = mouth_opening_from_pixels(video[1:], centre, size)
        errs.append(lip_sync_scores(opening, opening_true[1:])["lip_err"])
        measured.append(opening - opening.mean())
    return np.stack(measured).astype(np.float64), np.asarray(errs, np.float64)


def centred_truth(mouth_open: np.ndarray) -> np.ndarray:
    """The true opening of each window without frame 0, centred per window: [N, T-1]."""
    truth = np.asarray(mouth_open, np.float64)[:, 1:]
    return truth - truth.mean(axis=1, keepdims=True)


def pooled_lip_corr(measured: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation over every frame of every window, each window centred (lip_readings, centred_truth):
    a correlation of mouth *motion*, not of identities' mouth sizes, and defined even for a window whose audio is
    silent throughout (a per-window correlation is not)."""
    return pearson(np.asarray(measured).ravel(), np.asarray(truth).ravel())


def lip_metrics(
    frames: np.ndarray, mouth_open: np.ndarray, mouth_box: np.ndarray, reader: MouthReader | None = None
) -> dict[str, float]:
    """frames uint8 [N,T,H,W,3]; mouth_open [N,T]; mouth_box [N,T,4]. lip_err: the mean over windows;
    lip_corr: pooled over windows (pooled_lip_corr)."""
    measured, errs = lip_readings(frames, mouth_open, mouth_box, reader)
    return {"lip_corr": pooled_lip_corr(measured, centred_truth(mouth_open)), "lip_err": float(np.mean(errs))}


def psnr_windows(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each window [N] (its MSE over all its frames but frame 0), uint8 [N,T,H,W,3]."""
    a = frames[:, 1:].astype(np.float64)
    b = reference[:, 1:].astype(np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean PSNR (dB) over windows of generated vs true frames, uint8 [N,T,H,W,3], frame 0 excluded."""
    return float(np.mean(psnr_windows(frames, reference)))


def ssim_windows(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """SSIM of each window [N] (the mean over its frames but frame 0), uint8 [N,T,H,W,3]."""
    a, b = frames[:, 1:], reference[:, 1:]
    per_frame = ssim_frames(a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:]))
    return per_frame.reshape(len(a), -1).mean(1).astype(np.float64)


def ssim(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM over windows (each the mean over its frames) of generated vs true frames, uint8 [N,T,H,W,3],
    frame 0 excluded."""
    return float(np.mean(ssim_windows(frames, reference)))
