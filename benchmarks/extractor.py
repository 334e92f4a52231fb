"""Landmark extractor throughput: the mediapipe worker on 512 px frames of a real photograph.

    python -m benchmarks.extractor [--repeats 5] [--frames 100]

Frames/s is the median of `repeats` worker calls over one clip (min and max beside it): models only (the
worker's own clock) and end to end (process start, model load, frame transfer and reply included).
"""

from __future__ import annotations

import argparse
import statistics
import time

import matplotlib.cbook
import numpy as np
from PIL import Image

from components.config import KeypointConfig
from components.data.extractor_client import DEFAULT_PYTHON, run_worker

SIDE = 512


def photo_clip(n_frames: int, side: int = SIDE) -> np.ndarray:
    """uint8 [n, side, side, 3]: matplotlib's sample portrait (grace_hopper.jpg) panning slowly across a grey frame."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = Image.open(path).convert("RGB")
    scale = 0.8 * side / image.height
    photo = image.resize((round(image.width * scale), round(image.height * scale)))
    frames = np.empty((n_frames, side, side, 3), np.uint8)
    for t in range(n_frames):
        canvas = Image.new("RGB", (side, side), (110, 110, 110))
        canvas.paste(photo, (round(0.05 * side + 0.2 * side * t / max(1, n_frames - 1)), round(0.1 * side)))
        frames[t] = np.asarray(canvas)
    return frames


def measure(n_frames: int = 60, repeats: int = 5, options: dict | None = None) -> dict[str, list[float]]:
    """Per repeat: frames/s of the models alone and end to end."""
    frames = photo_clip(n_frames)
    models, total = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reply = run_worker(frames, options or {}, DEFAULT_PYTHON, 600, "benchmark clip")
        total.append(n_frames / (time.perf_counter() - start))
        models.append(n_frames / reply["seconds"])
    return {"models": models, "end_to_end": total}


def spread(values: list[float]) -> str:
    return f"median of {len(values)}; min {min(values):.1f}, max {max(values):.1f}"


def bench_extractor(n_frames: int = 60, repeats: int = 5) -> list[tuple[str, float, str]]:
    """`make bench` rows: ingest's extractor options, and pose on every frame for comparison; one row saying
    why when the extractor env is missing."""
    if not DEFAULT_PYTHON.is_file():
        return [(f"mediapipe extractor: {DEFAULT_PYTHON} missing (`make setup`)", float("nan"), "not measured")]
    cfg = KeypointConfig()
    rows = []
    for pose_every in sorted({1, cfg.pose_every}):
        fps = measure(n_frames, repeats, {"face_model": cfg.face_model, "pose_every": pose_every})
        name = f"mediapipe extractor frames/s, {SIDE} px, pose every {pose_every} frame(s)"
        rows.append((f"{name}, models only", statistics.median(fps["models"]), spread(fps["models"])))
        rows.append((f"{name}, {n_frames}-frame clip end to end", statistics.median(fps["end_to_end"]),
                     spread(fps["end_to_end"])))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args(argv)
    for figure, value, note in bench_extractor(args.frames, args.repeats):
        print(f"{figure}: {value:.1f} ({note})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
