"""Side-by-side comparison videos."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.grid import comparison_grid, write_comparison_video
from components.io.video import decode_video


def _video(value: int, t: int = 5) -> np.ndarray:
    return np.full((t, 16, 16, 3), value, np.uint8)


def test_columns_are_scaled_labelled_and_in_order():
    grid = comparison_grid({"a": _video(50), "b": _video(200)}, scale=2)
    assert grid.shape == (5, 14 + 32, 32 + 2 + 32, 3)
    assert (grid[:, 14:, :32] == 50).all() and (grid[:, 14:, 34:] == 200).all()
    header = grid[0, :14, :32]
    assert header.max() > 150 and header.min() < 40  # light text on a dark strip
    with pytest.raises(ValueError, match="one shape"):
        comparison_grid({"a": _video(0), "b": _video(0, t=4)})


def test_comparison_video_has_every_column_and_the_audio(tmp_path):
    sr, t = 16000, 10
    truth = _video(120, t)
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(sr * t / 25)) / sr)).astype(np.float32)
    path = write_comparison_video(tmp_path / "clip.mp4", truth[0], truth, {"phase1": _video(30, t), "phase2": _video(220, t)},
                                  fps=25, audio=audio, sample_rate=sr)
    video = decode_video(path)
    assert video.frames.shape[:3] == (t, 14 + 32, 4 * 32 + 3 * 2)
    middle = video.frames[t // 2, 30]
    assert [int(middle[16 + i * 34, 0]) for i in range(4)] == pytest.approx([120, 120, 30, 220], abs=6)
    assert video.audio is not None and np.abs(video.audio).max() > 0.1
