"""Landmark extractor throughput: the mediapipe worker on 512 px frames of a real photograph.

    python -m benchmarks.extractor [--repeats 5] [--frames 100]

Frames/s is the median of `repeats` worker calls over one clip (min and max beside it): end to end (process
start, model load, frame transfer and reply included) and models only (the worker's own clock). Where the time
goes is printed as ms per frame of each model (face detection and the face mesh on every frame, pose + hands on
the frames they run on, averaged over all frames) and of the rest. The 1-minute load average before and after
says how busy the (shared) machine was.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import matplotlib.cbook
import numpy as np
from PIL import Image

from benchmarks.timing import Row, Samples
from components.config import KeypointConfig
from components.data.extractor_client import DEFAULT_PYTHON, run_worker

SIDE = 512
PARTS = ("face_detection", "face_mesh", "pose_and_hands")


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


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(n_frames: int = 100, repeats: int = 5, options: dict | None = None) -> dict[str, Samples]:
    """Per repeat, seconds per clip: end_to_end, models, each model (PARTS), setup (import + model load), other
    (process start, frame transfer, reply) and cpu (the worker's CPU seconds, all threads)."""
    frames = photo_clip(n_frames)
    out: dict[str, list[float]] = {k: [] for k in ("end_to_end", "models", *PARTS, "setup", "other", "cpu")}
    for _ in range(repeats):
        cpu, start = _children_cpu_s(), time.perf_counter()
        reply = run_worker(frames, options or {}, DEFAULT_PYTHON, 600, "benchmark clip")
        wall = time.perf_counter() - start
        out["end_to_end"].append(wall)
        out["cpu"].append(_children_cpu_s() - cpu)
        out["models"].append(reply["seconds"])
        for part in PARTS:
            out[part].append(reply["model_seconds"][part])
        out["setup"].append(reply["setup_seconds"])
        out["other"].append(wall - reply["seconds"] - reply["setup_seconds"])
    return {k: Samples(tuple(v)) for k, v in out.items()}


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def bench_extractor(n_frames: int = 100, repeats: int = 5) -> list[Row | tuple[str, float, str]]:
    """`make bench` rows: ingest's extractor options, and pose on every frame for comparison; one row saying
    why when the extractor env is missing."""
    if not DEFAULT_PYTHON.is_file():
        return [(f"mediapipe extractor: {DEFAULT_PYTHON} missing (`make setup`)", float("nan"), "not measured")]
    cfg = KeypointConfig()
    rows: list[Row | tuple[str, float, str]] = []
    for pose_every in sorted({1, cfg.pose_every}):
        before = load_average()
        s = measure(n_frames, repeats, {"face_model": cfg.face_model, "pose_every": pose_every})
        load = f"{os.cpu_count()} cores, load average {before} before, {load_average()} after"
        name = f"mediapipe extractor, {SIDE} px, pose every {pose_every}"
        fps = s["end_to_end"].scaled(lambda v: n_frames / v)
        rows.append(Row(f"{name}: frames/s, {n_frames}-frame clip end to end", fps, fps.median, load))
        models = s["models"].scaled(lambda v: n_frames / v)
        rows.append(Row(f"{name}: frames/s, models only", models, models.median, ""))
        for part in (*PARTS, "setup", "other", "cpu"):
            ms = s[part].scaled(lambda v: 1000 * v / n_frames)
            what = {"setup": "import + model load", "other": "process start, frame transfer, reply",
                    "cpu": "CPU time of the worker (all threads)"}.get(part, part.replace("_", " "))  # fmt: skip
            rows.append(Row(f"{name}: ms per frame, {what}", ms, ms.median, ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args(argv)
    for row in bench_extractor(args.frames, args.repeats):
        if isinstance(row, tuple):
            print(f"{row[0]}: {row[2]}")
            continue
        s = row.samples
        print(f"{row.figure}: {row.value:.1f} (median of {len(s.values)}; min {s.lo:.1f}, max {s.hi:.1f})"
              + (f" [{row.note}]" if row.note else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
