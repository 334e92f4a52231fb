"""Landmark metrics of real (or generated) video, measured with mediapipe: no synthetic truth needed.

- `lip_corr_mediapipe`: Pearson correlation of the face mesh's mouth opening with the audio envelope (the
  window's loudness: the mean of its normalised log-mel per video frame), each window centred, pooled over windows.
- `lmd_mediapipe`: LMD, the mean distance in pixels between the lip landmarks of a generated frame and of the
  true frame (each frame's lip set centred on its own mean, so a head shift alone costs nothing).
- `hkc_mediapipe`: HKC (Hallo4's hand keypoint confidence) as the mediapipe hand landmarker gives it: the
  mean over frames and both hands of the hand landmark model's hand-presence score (its confidence that the
  hand crop holds a hand, the score it thresholds at 0.5 before it reports landmarks), 0 where the model did
  not look for that hand (the pose shows no wrist). The landmarker gives one score per hand, not per keypoint,
  so this is the per-hand confidence; DWPose-style per-keypoint scores do not exist in mediapipe.
- `hkv_mediapipe`: HKV (Hallo4): variance over time of the hand landmark positions (in units of the frame
  side), over the frames where the hand is found, mean over landmarks, axes, hands and windows.

Frame 0 of a window (the given reference) is left out, as in every other measure. The windows are measured
in one worker call (components/data/extractor_client.py), upscaled so the short side is >= `min_side`:
the toy profile's 64 px faces are too small for the face mesh otherwise.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from components.data.extractor_client import DEFAULT_PYTHON, ExtractorUnavailable, run_worker
from components.data.landmarks import Landmarks, landmarks_from_reply
from components.data.mouth_pixels import pearson

METRICS = ("lip_corr_mediapipe", "lmd_mediapipe", "hkc_mediapipe", "hkv_mediapipe")
MODELS = {
    "lip_corr_mediapipe": "face mesh",
    "lmd_mediapipe": "face mesh",
    "hkc_mediapipe": "hand landmark model's hand-presence score",
    "hkv_mediapipe": "hand landmarks",
}


@dataclass(frozen=True)
class WindowLandmarks:
    """What mediapipe found in N windows of T frames, in the windows' own pixels."""

    extractor: str  # e.g. mediapipe-0.10.21
    opening: np.ndarray  # float [N, T] mouth opening in [0, 1]
    lips: np.ndarray  # float [N, T, L, 2] lip landmarks, pixels
    lips_found: np.ndarray  # bool [N, T]
    hands: np.ndarray  # float [N, T, 2, 21, 2] hand landmarks in units of the frame side (person's left, right)
    hands_found: np.ndarray  # bool [N, T, 2]
    hand_scores: np.ndarray  # float [N, T, 2] hand-presence score, 0 where the hand model did not run


def upscale(frames: np.ndarray, min_side: int) -> np.ndarray:
    """uint8 [n, H, W, 3] resized (bicubic) so the short side is >= min_side; unchanged when it already is."""
    height, width = frames.shape[1:3]
    scale = min_side / min(height, width)
    if scale <= 1:
        return frames
    size = (round(width * scale), round(height * scale))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])


def measure_windows(video: np.ndarray, python: Path, min_side: int = 256, timeout_s: float = 600.0) -> WindowLandmarks:
    """Landmarks of uint8 [N, T, H, W, 3] windows, all in one worker call (pose and hands on every frame)."""
    n, t, height, width = video.shape[:4]
    reply = run_worker(upscale(video.reshape(n * t, height, width, 3), min_side), {"pose_every": 1}, python, timeout_s,
                       f"{n} evaluation windows")  # fmt: skip
    marks: Landmarks = landmarks_from_reply(reply, width, height)
    side = float(max(width, height))
    return WindowLandmarks(
        extractor=marks.extractor,
        opening=marks.mouth()["opening"].reshape(n, t),
        lips=marks.lips.reshape(n, t, -1, 2).astype(np.float64),
        lips_found=marks.lips_found.reshape(n, t),
        hands=(marks.hands[..., :2] / side).reshape(n, t, 2, 21, 2).astype(np.float64),
        hands_found=(marks.hands[:, :, 0, 2] > 0).reshape(n, t, 2),
        hand_scores=marks.hand_scores.reshape(n, t, 2).astype(np.float64),
    )


def audio_envelope(audio_mel: np.ndarray) -> np.ndarray:
    """[N, T] loudness per video frame from the windows' normalised log-mel [N, T, sub, n_mels]."""
    return np.asarray(audio_mel, np.float64).reshape(*np.shape(audio_mel)[:2], -1).mean(axis=-1)


def lip_corr(marks: WindowLandmarks, envelope: np.ndarray) -> float:
    """Mouth opening vs audio envelope over the frames (after frame 0) where the lips were found."""
    opening, env = [], []
    for o, e, found in zip(marks.opening[:, 1:], envelope[:, 1:], marks.lips_found[:, 1:]):
        if found.sum() >= 2:
            opening.append(o[found] - o[found].mean())
            env.append(e[found] - e[found].mean())
    return pearson(np.concatenate(opening), np.concatenate(env)) if opening else float("nan")


def lmd(generated: WindowLandmarks, truth: WindowLandmarks) -> float:
    """Mean lip landmark distance (pixels) over frames (after frame 0) where both found the lips."""
    both = generated.lips_found[:, 1:] & truth.lips_found[:, 1:]
    if not both.any():
        return float("nan")
    g, t = generated.lips[:, 1:][both], truth.lips[:, 1:][both]  # [k, L, 2]
    g, t = g - g.mean(axis=1, keepdims=True), t - t.mean(axis=1, keepdims=True)
    return float(np.linalg.norm(g - t, axis=-1).mean())


def hkc(marks: WindowLandmarks) -> float:
    """Mean hand-presence score over frames (after frame 0) and both hands; 0 counts where no hand was looked for."""
    return float(marks.hand_scores[:, 1:].mean())


def hkv(marks: WindowLandmarks) -> float:
    """NaN when no hand was found in two frames of any window."""
    variances = []
    for hands, found in zip(marks.hands[:, 1:], marks.hands_found[:, 1:]):
        for k in range(2):
            if found[:, k].sum() >= 2:
                variances.append(hands[found[:, k], k].var(axis=0).mean())
    return float(np.mean(variances)) if variances else float("nan")


class LandmarkScorer:
    """The four landmark metrics of generated windows against the true windows (measured once, here)."""

    def __init__(self, truth: np.ndarray, audio_mel: np.ndarray, python: Path, min_side: int = 256):
        self.python, self.min_side = python, min_side
        self.envelope = audio_envelope(audio_mel)
        self.truth = measure_windows(truth, python, min_side)
        self.extractor = self.truth.extractor

    def scores(self, marks: WindowLandmarks) -> dict[str, float]:
        """The metrics that could be measured: one is left out (not NaN) when mediapipe found no lips / hands."""
        out = {"lip_corr_mediapipe": lip_corr(marks, self.envelope), "lmd_mediapipe": lmd(marks, self.truth),
               "hkc_mediapipe": hkc(marks), "hkv_mediapipe": hkv(marks)}  # fmt: skip
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def ground_truth(self) -> dict[str, float]:
        return self.scores(self.truth)

    def __call__(self, video: np.ndarray) -> dict[str, float]:
        return self.scores(measure_windows(video, self.python, self.min_side))

    def sources(self) -> dict[str, str]:
        """metric -> the extractor that produced it, for the report."""
        return {m: f"{self.extractor} ({MODELS[m]}, extractor env `.venv-extract`)" for m in METRICS}


class LandmarksInBackground:
    """LandmarkScorer calls run one at a time on a thread while the caller goes on. The mediapipe worker is its own
    process, so on a 2-core box it measures one variant while the next is sampled (the evaluate stage waited ~9 s
    per variant for it). `submit` copies the frames; `finish` writes each result into the dict it was submitted
    with, in submission order, and re-raises a worker's error; `close` stops what has not started."""

    def __init__(self, scorer: LandmarkScorer):
        self.scorer = scorer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landmarks")
        self._pending: list[tuple[dict[str, float], Future]] = []

    def submit(self, video: np.ndarray, into: dict[str, float]) -> None:
        self._pending.append((into, self._pool.submit(self.scorer, np.array(video))))

    def finish(self) -> None:
        try:
            for into, future in self._pending:
                into.update(future.result())
        finally:
            self.close()

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def landmark_scorer(
    mode: str, truth: np.ndarray, audio_mel: np.ndarray, python: str | None = None
) -> tuple[LandmarkScorer | None, dict[str, str]]:
    """(scorer, {}) when mode is auto/on and the extractor env exists; else (None, metric -> why not measured).

    mode "on" fails with ExtractorUnavailable (naming `make setup`) when the env is missing; "auto" reports it."""
    if mode == "off":
        why = "turned off (evaluation.landmark_metrics: off)"
        return None, {m: why for m in METRICS}
    interpreter = Path(python) if python else DEFAULT_PYTHON
    if not interpreter.is_file():
        why = (f"measured with mediapipe in the extractor env, and {interpreter} does not exist: run `make setup` "
               "(or evaluation.landmark_metrics: off)")
        if mode == "on":
            raise ExtractorUnavailable(f"evaluation.landmark_metrics is on, but it is {why}")
        return None, {m: why for m in METRICS}
    return LandmarkScorer(truth, audio_mel, interpreter), {}
