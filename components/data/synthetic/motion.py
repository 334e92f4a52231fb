"""Motion of the synthetic world: mouth opening from the audio loudness, and a 10-keypoint upper body that nods
and gestures on speech beats. Coordinates are pixels of the output frame, x right, y down."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["JOINTS", "SILENCE_DBFS", "animate_body", "mouth_opening_from_envelope"]

JOINTS = ("head", "neck", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hand", "r_hand")
SILENCE_DBFS = -60.0  # frame loudness at or below this never opens the mouth


def mouth_opening_from_envelope(envelope: np.ndarray, range_db: float = 30.0) -> np.ndarray:
    """Map a loudness envelope to mouth opening in [0, 1]: clip peak -> 1, range_db below it (or quieter) -> 0.

    Per-clip normalisation, so metrics can apply the same map to any clip's audio. Anything below
    SILENCE_DBFS stays closed, so a silent clip does not open its mouth on the noise floor.
    """
    db = 20 * np.log10(np.maximum(np.asarray(envelope, np.float64), 1e-8))
    top = max(float(db.max()), SILENCE_DBFS + range_db)
    return np.clip((db - (top - range_db)) / range_db, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance low-pass noise (filtered on a longer stretch, so the ends are not special)."""
    pad = int(4 * sigma_frames) + 1
    x = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma_frames)[pad : pad + n]
    return x * np.sqrt(2 * np.sqrt(np.pi) * sigma_frames)  # the filter's output std is 1/sqrt(2 sqrt(pi) sigma)


def _beats(opening: np.ndarray, fps: float, min_gap_s: float = 0.25) -> list[int]:
    """Speech beats: frames where the mouth opening rises through 0.5, at least min_gap_s apart."""
    beats: list[int] = []
    for i in np.flatnonzero((opening[1:] >= 0.5) & (opening[:-1] < 0.5)) + 1:
        if not beats or i - beats[-1] >= min_gap_s * fps:
            beats.append(int(i))
    return beats


def _elbow(shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float, outward: np.ndarray) -> np.ndarray:
    """Two-link inverse kinematics [T,2]: the elbow bends towards `outward` (a unit vector per side)."""
    d_vec = wrist - shoulder
    d = np.clip(np.linalg.norm(d_vec, axis=1, keepdims=True), 1e-6, upper + fore - 1e-6)
    along = d_vec / d
    a = (upper**2 - fore**2 + d**2) / (2 * d)
    h = np.sqrt(np.maximum(upper**2 - a**2, 0.0))
    perp = np.stack([-along[:, 1], along[:, 0]], axis=1)
    perp *= np.sign((perp * outward).sum(axis=1, keepdims=True) + 1e-9)
    return shoulder + a * along + h * perp


def animate_body(
    rng: np.random.Generator, opening: np.ndarray, fps: float, resolution: int, gesture_prob: float = 0.4
) -> np.ndarray:
    """Keypoints [T, 10, 2] in JOINTS order. l_* is the person's left, i.e. the image's right side."""
    n, r = len(opening), float(resolution)
    t = np.arange(n) / fps
    beats = _beats(opening, fps)

    nod = np.zeros(n)
    gesture = np.zeros((2, n))  # [left, right] amount in [0, 1]
    for b in beats:
        dt = np.maximum(t - t[b], 0.0) / 0.1
        nod += np.where(t >= t[b], dt * np.exp(1 - dt), 0.0)  # a quick dip of the head, peak after 0.1 s
        if rng.random() < gesture_prob:
            sides = [[0], [1], [0, 1]][rng.integers(3)]
            length = rng.uniform(0.4, 0.9)
            u = (t - t[b]) / length
            hump = np.where((u >= 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0)
            gesture[sides] += rng.uniform(0.5, 1.0) * hump
    gesture = np.clip(gesture, 0.0, 1.0)

    sway = 0.6 * fps
    head = np.stack([0.5 * r + 0.03 * r * _smooth_noise(rng, n, sway),
                     0.40 * r + 0.012 * r * _smooth_noise(rng, n, sway) + 0.02 * r * nod], axis=1)
    neck = np.stack([0.5 * r + 0.4 * (head[:, 0] - 0.5 * r), 0.80 * r + 0.005 * r * _smooth_noise(rng, n, sway)],
                    axis=1)
    joints = {"head": head, "neck": neck}
    for side, sign in (("l", 1.0), ("r", -1.0)):
        g = gesture[0 if side == "l" else 1][:, None]
        shrug = 0.008 * r * _smooth_noise(rng, n, sway)
        shoulder = neck + np.stack([np.full(n, sign * 0.32 * r), 0.06 * r - shrug], axis=1)
        rest = np.array([0.5 * r + sign * 0.22 * r, 0.93 * r])
        raised = np.array([0.5 * r + sign * 0.40 * r, 0.72 * r])
        drift = 0.02 * r * np.stack([_smooth_noise(rng, n, sway), _smooth_noise(rng, n, sway)], axis=1)
        wrist = rest + g * (raised - rest) + drift
        outward = np.array([sign, 0.6]) / np.hypot(1.0, 0.6)  # elbows bend out and down
        elbow = _elbow(shoulder, wrist, 0.13 * r, 0.13 * r, outward)
        forearm = (wrist - elbow) / (np.linalg.norm(wrist - elbow, axis=1, keepdims=True) + 1e-6)
        joints |= {f"{side}_shoulder": shoulder, f"{side}_elbow": elbow, f"{side}_wrist": wrist,
                   f"{side}_hand": wrist + 0.06 * r * forearm}
    keypoints = np.stack([joints[name] for name in JOINTS], axis=1)
    return np.clip(keypoints, 0.5, r - 1.5)  # every joint stays visible; the renderer draws what is stored
