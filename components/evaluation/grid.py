"""Side-by-side comparison videos: reference | ground truth | each variant, labelled, with the window's audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from components.io.video import write_video

__all__ = ["comparison_grid", "write_comparison_video"]

_HEADER_PX = 14
_GAP_PX = 2
_BACKGROUND = (16, 16, 16)
_TEXT = (235, 235, 235)


def _label(text: str, width: int) -> np.ndarray:
    """A header strip [14, width, 3] with `text` centred (PIL's built-in bitmap font; long names are cut)."""
    image = Image.new("RGB", (width, _HEADER_PX), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-1]
    x = (width - draw.textlength(text, font=font)) / 2
    draw.text((x, 1), text, fill=_TEXT, font=font)
    return np.asarray(image)


def comparison_grid(columns: dict[str, np.ndarray], scale: int = 2) -> np.ndarray:
    """Columns name -> uint8 frames [T, H, W, 3] (same shape) -> one video [T, H', W', 3]: each column scaled by
    `scale` (nearest, so pixels stay pixels), labelled on top, separated by a thin gap; even sizes (h264)."""
    if not columns:
        raise ValueError("comparison_grid needs at least one column")
    shapes = {name: np.asarray(v).shape for name, v in columns.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 4:
        raise ValueError(f"every column must be uint8 [T,H,W,3] of one shape, got {shapes}")
    t, h, w, _ = next(iter(shapes.values()))
    cw, ch = w * scale, h * scale
    width = len(columns) * cw + (len(columns) - 1) * _GAP_PX
    height = _HEADER_PX + ch
    out = np.empty((t, height + height % 2, width + width % 2, 3), np.uint8)
    out[:] = _BACKGROUND
    for i, (name, frames) in enumerate(columns.items()):
        x = i * (cw + _GAP_PX)
        out[:, :_HEADER_PX, x : x + cw] = _label(name, cw)
        out[:, _HEADER_PX : _HEADER_PX + ch, x : x + cw] = np.asarray(frames).repeat(scale, 1).repeat(scale, 2)
    return out


def write_comparison_video(
    path: str | Path,
    reference: np.ndarray,
    truth: np.ndarray,
    variants: dict[str, np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    scale: int = 2,
) -> Path:
    """reference: the conditioning image [H,W,3] (held for every frame); truth and variants [T,H,W,3]."""
    truth = np.asarray(truth)
    held = np.broadcast_to(np.asarray(reference), truth.shape)
    grid = comparison_grid({"reference": held, "ground truth": truth, **variants}, scale)
    write_video(path, grid, fps=int(round(fps)), audio=audio, sample_rate=sample_rate)
    return Path(path)
