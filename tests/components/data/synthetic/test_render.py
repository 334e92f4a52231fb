"""The renderer draws the pose from the keypoints alone."""

import numpy as np

from components.data.synthetic.identity import draw_identity, face_geometry
from components.data.synthetic.motion import JOINTS, animate_body
from components.data.synthetic.render import render_frames


def test_renderer_draws_pose_from_keypoints_only():
    rng = np.random.default_rng(0)
    ident = draw_identity(rng, "id000")
    geo = face_geometry(64, 0.4, ident)
    mouth = np.zeros(20, np.float32)
    keypoints = animate_body(np.random.default_rng(1), mouth, 25, 64)
    frames = render_frames(ident, geo, keypoints, mouth, 64)
    assert np.array_equal(frames, render_frames(ident, geo, keypoints, mouth, 64))
    still = np.repeat(keypoints[:1], 2, axis=0)
    moved = still.copy()
    moved[1, JOINTS.index("l_wrist")] += (0, -12)  # raise the left hand
    moved[1, JOINTS.index("l_hand")] += (0, -12)
    a, b = render_frames(ident, geo, moved, mouth[:2], 64)
    changed = np.argwhere(np.abs(a.astype(int) - b).sum(-1) > 30)
    assert len(changed) > 10
    assert changed[:, 1].min() > 32  # only the image's right side (person's left) changed
