"""A learned mouth-opening reader: ridge regression from mouth-region pixels to the world's true mouth opening.

Why it exists: the geometric measure in mouth.py (lip height / width at a colour threshold) reads sharp frames
almost perfectly (r = 0.998) but collapses on blurred ones (r = 0.39 at a Gaussian blur of sigma 2 px, which is
about what the toy VAE's decoder produces), so on toy-scale generated video it would measure the VAE's blur,
not the lips. The reader is fitted on the training split, on both the true frames and their VAE
reconstructions (the domain generated video lives in), and reports its own held-out accuracy, which is the
ceiling of every lip score it gives. It is our own measure, trained on our own data: reports name it so.

Input: a 16 x 16 RGB grid sampled bilinearly around the mouth centre the ground truth locates, spanning
+-0.7 mouth widths (lips, mouth interior and a little cheek). Output: mouth opening in the world's [0, 1] units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data.mouth_box import mouth_box_centre_size
from components.data.mouth_pixels import _sample, pearson

GRID = 16
SPAN = 0.7  # half-width of the grid, in mouth widths


def mouth_crops(frames: np.ndarray, mouth_box: np.ndarray) -> np.ndarray:
    """frames uint8 [T,H,W,3] + padded mouth boxes [T,4] (windows.mouth_boxes) -> float32 [T, GRID*GRID*3] in [0,1]."""
    centre, size = mouth_box_centre_size(mouth_box)
    width = size[:, :1]
    offsets = np.linspace(-SPAN, SPAN, GRID)
    patch = _sample(np.asarray(frames, np.float32), centre[:, 1:] + offsets * width, centre[:, :1] + offsets * width)
    return (patch.reshape(len(frames), -1) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class MouthReader:
    coef: np.ndarray  # [D]
    intercept: float
    mean: np.ndarray  # [D] feature centring used in the fit

    @classmethod
    def fit(cls, crops: np.ndarray, opening: np.ndarray, alpha: float = 10.0) -> "MouthReader":
        """Closed-form ridge on centred features: (X'X + alpha I) w = X'y."""
        x = np.asarray(crops, np.float64)
        y = np.asarray(opening, np.float64).ravel()
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"MouthReader.fit needs matching crops and openings (got {len(x)} and {len(y)})")
        mean = x.mean(0)
        xc = x - mean
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y.mean()))
        return cls(coef=coef.astype(np.float32), intercept=float(y.mean()), mean=mean.astype(np.float32))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return ((np.asarray(crops, np.float64) - self.mean) @ self.coef + self.intercept).astype(np.float32)

    def read(self, frames: np.ndarray, mouth_box: np.ndarray) -> np.ndarray:
        """Mouth opening per frame [T] of one video."""
        return self.predict(mouth_crops(frames, mouth_box))

    def score(self, videos: np.ndarray, mouth_box: np.ndarray, mouth_open: np.ndarray) -> float:
        """Pooled Pearson r of the reading vs the truth over videos [N,T,H,W,3] (the reader's accuracy)."""
        read = np.concatenate([self.read(v, b) for v, b in zip(videos, mouth_box)])
        return pearson(read, np.asarray(mouth_open).ravel())

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({
            "kind": "talkalign-mouth-reader-v1", "grid": GRID, "span": SPAN,
            "coef": self.coef.tolist(), "intercept": self.intercept, "mean": self.mean.tolist(),
        }))

    @classmethod
    def load(cls, path: str | Path) -> "MouthReader":
        data = json.loads(Path(path).read_text())
        if data.get("kind") != "talkalign-mouth-reader-v1" or data.get("grid") != GRID or data.get("span") != SPAN:
            raise ValueError(f"{path}: not a talkalign mouth reader with grid {GRID} and span {SPAN}")
        return cls(coef=np.asarray(data["coef"], np.float32), intercept=float(data["intercept"]),
                   mean=np.asarray(data["mean"], np.float32))


def fit_mouth_reader(
    truth_frames: np.ndarray,
    mouth_box: np.ndarray,
    mouth_open: np.ndarray,
    recon_frames: np.ndarray | None = None,
    alpha: float = 10.0,
) -> MouthReader:
    """Fit on windows [N,T,H,W,3] of true frames, plus (recommended) the same windows through the VAE."""
    videos = [truth_frames] if recon_frames is None else [truth_frames, recon_frames]
    crops = np.concatenate([mouth_crops(v, b) for frames in videos for v, b in zip(frames, mouth_box)])
    targets = np.concatenate([np.asarray(mouth_open).ravel()] * len(videos))
    finite = np.isfinite(targets) & np.isfinite(crops).all(1)
    return MouthReader.fit(crops[finite], targets[finite], alpha)
