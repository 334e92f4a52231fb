"""The synthetic world's simulated rater: ground-truth errors of a candidate -> Likert scores, with rater noise.

The world knows what every window should look like, so a candidate's flaws are measurable:

    lip_sync  lip-opening error: mean |opening read from the candidate's mouth pixels - the true opening|
              (the mouth reader of components/evaluation/mouth_reader.py reads the opening; frame 0 excluded)
    motion    motion error: |mean frame-to-frame change of the candidate - that of the true clip| (a frozen or
              shaking head and body are both wrong) + temporal jitter in excess of the truth's (mean |second
              difference|), both in 0-255 pixel units
    quality   pixel error: RMSE against the true frames, 0-255 units

(Keypoint tracking error of the rendered body would be a better motion measure; we have no keypoint tracker
for generated video, so motion is measured on pixels.)

Likert mapping: each error becomes a percentile p in [0, 1] among all candidates of the pool (0 = worst,
1 = best), the way a rater calibrates to the set of videos in front of them. Rater r's score is
round(1 + 4 p + b_r + e), clipped to 1-5, with a per-rater bias b_r ~ N(0, rater_bias) and per-rating noise
e ~ N(0, rater_noise), both in Likert points. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.config import DIMENSIONS


def ground_truth_errors(frames: np.ndarray, truth: np.ndarray, mouth_open: np.ndarray, mouth_box: np.ndarray, reader) -> dict[str, float]:
    """frames, truth uint8 [T,H,W,3]; mouth_open [T]; mouth_box [T,4]. Errors (lower is better) per dimension."""
    opening = reader.read(frames[1:], mouth_box[1:])
    lip_err = float(np.mean(np.abs(opening - mouth_open[1:])))
    f, g = frames.astype(np.float32), truth.astype(np.float32)
    speed = lambda x: np.abs(np.diff(x, axis=0)).mean()  # noqa: E731
    jitter = lambda x: np.abs(np.diff(x, n=2, axis=0)).mean()  # noqa: E731
    motion_err = float(abs(speed(f) - speed(g)) + max(0.0, jitter(f) - jitter(g)))
    pixel_err = float(np.sqrt(((f[1:] - g[1:]) ** 2).mean()))
    return {"lip_sync": lip_err, "motion": motion_err, "quality": pixel_err}


def percentile_quality(errors: pd.DataFrame) -> pd.DataFrame:
    """Per dimension, each candidate's rank among all candidates as p in [0, 1], 1 = smallest error."""
    ranks = errors[list(DIMENSIONS)].rank(method="average", ascending=False)
    return (ranks - 1) / max(len(errors) - 1, 1)


def simulate_ratings(errors: pd.DataFrame, raters: int, noise: float, bias: float, seed: int) -> pd.DataFrame:
    """errors: index candidate_id, a column per dimension. Rows candidate_id, rater_id, dimension, score."""
    quality = percentile_quality(errors)
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(raters):
        offset = rng.normal(0.0, bias) if bias > 0 else 0.0
        for dim in DIMENSIONS:
            latent = 1 + 4 * quality[dim].to_numpy() + offset
            scores = np.clip(np.rint(latent + rng.normal(0.0, noise, len(latent)) if noise > 0 else np.rint(latent)), 1, 5)
            rows += [{"candidate_id": cid, "rater_id": f"sim-{r}", "dimension": dim, "score": int(s)}
                     for cid, s in zip(errors.index, scores)]
    return pd.DataFrame(rows)
