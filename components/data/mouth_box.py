"""Mouth centre and size from the padded mouth boxes a window carries (windows.mouth_boxes), for every reader
of the mouth: the VAE's mouth report, the geometric measure and the learned mouth reader."""

from __future__ import annotations

import numpy as np

from components.data.windows import MOUTH_BOX_SCALE


def mouth_box_centre_size(mouth_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `windows.mouth_boxes`: per-frame mouth centre [T,2] and truth-style mouth size [T,2]."""
    box = np.asarray(mouth_box, np.float64).reshape(-1, 4)
    centre = (box[:, :2] + box[:, 2:]) / 2
    size = (box[:, 2:] - box[:, :2]) / np.asarray(MOUTH_BOX_SCALE)
    return centre, size
