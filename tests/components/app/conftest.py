"""Tiny rating pools for the app tests: real mp4s (h264 + AAC) of 2 frames at 32 px, 3 windows x 2 candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.app.pool import RatingPool, write_pool
from components.io.video import write_video

WINDOWS = {f"w{i}": [f"w{i}.gen{g}.s0" for g in ("a", "b")] for i in range(3)}


def tiny_mp4(path: Path, colour: int, sample_rate: int = 16_000) -> bytes:
    frames = np.full((2, 32, 32, 3), colour, np.uint8)
    frames[1, 8:24, 8:24] = 255 - colour  # the second frame differs: a real two-frame clip
    t = np.arange(sample_rate * 2 // 25) / sample_rate
    write_video(path, frames, 25, audio=(0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate=sample_rate)
    return path.read_bytes()


@pytest.fixture(scope="session")
def pool_dir(tmp_path_factory) -> Path:
    scratch = tmp_path_factory.mktemp("mp4")
    videos = {cid: tiny_mp4(scratch / f"{k}.mp4", 40 * k + 20)
              for k, cid in enumerate(c for ids in WINDOWS.values() for c in ids)}
    root = tmp_path_factory.mktemp("pool") / "pool"
    write_pool(root, WINDOWS, videos)
    return root


@pytest.fixture
def pool(pool_dir) -> RatingPool:
    from components.app.pool import load_pool

    return load_pool(pool_dir)
