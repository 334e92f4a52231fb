"""Tiny rating pools and compare sets for the app tests: real mp4s (h264 + AAC) of 2 frames at 32 px,
3 windows x 2 candidates; compare sets of N items x 2 models."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from components.app.compare import FORMAT as COMPARE_FORMAT
from components.app.compare import INDEX_FILE as COMPARE_INDEX
from components.app.compare import ModelRef
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


V2 = ModelRef("models:/talkalign/2", "talkalign/2", "talkalign", "2")
V3 = ModelRef("models:/talkalign/3", "talkalign/3", "talkalign", "3")


def write_compare_set(root: Path, scratch: Path, n_items: int = 4, first: ModelRef = V3, second: ModelRef = V2) -> Path:
    """A compare set of tiny real mp4s, written by hand (what build_compare_set writes, without a model)."""
    (root / "videos").mkdir(parents=True)
    items: dict[str, dict[str, str]] = {}
    for i in range(n_items):
        items[f"item{i}"] = {}
        for k, slot in enumerate(("first", "second")):
            rel = f"videos/{i}{slot}.mp4"
            (root / rel).write_bytes(tiny_mp4(scratch / f"{i}{slot}.mp4", 30 + 100 * k))
            items[f"item{i}"][slot] = rel
    index = {"format": COMPARE_FORMAT, "items": items, "models": {"first": asdict(first), "second": asdict(second)}}
    (root / COMPARE_INDEX).write_text(json.dumps(index))
    return root
