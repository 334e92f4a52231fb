"""From a worker reply to skeleton joints, hands and mouth: hand-made replies in the worker's protocol, so every
mapping (pose joints, hand joints with their fallback, presence scores, lost frames) is checked exactly."""

import numpy as np
import pytest

from components.config import KeypointConfig
from components.data.landmarks import (
    HAND_JOINTS,
    KNOWN_JOINTS,
    Landmarks,
    landmarks_from_reply,
    measured_truth,
    pose_joints,
    unknown_joints,
)
from components.data.synthetic.motion import JOINTS


def reply(n: int = 3, lost: tuple[int, ...] = (1,)) -> dict:
    """n frames; the pose is lost in `lost`; the left hand is found in frame 0 only (presence 0.8), the right
    hand's model ran in frame 0 without finding it (0.1) and never after (None: no wrist)."""
    pose = np.zeros((33, 4))
    pose[:, 3] = 0.9
    pose[11, :2], pose[12, :2] = (0.6, 0.5), (0.4, 0.5)  # the person's left shoulder is on the image's right
    pose[15, :2], pose[17, :2], pose[19, :2], pose[21, :2] = (0.7, 0.8), (0.72, 0.84), (0.7, 0.86), (0.68, 0.84)
    hand = np.zeros((21, 3))
    hand[:, :2] = (0.75, 0.9)
    hand[8, :2] = (0.8, 0.95)  # index tip
    return {
        "pose": [None if t in lost else pose.tolist() for t in range(n)],
        "left_hand": [hand.tolist()] + [None] * (n - 1),
        "right_hand": [None] * n,
        "left_hand_score": [0.8] + [None] * (n - 1),
        "right_hand_score": [0.1] + [None] * (n - 1),
        "faces": [[] for _ in range(n)],
        "lip_index": [13, 14, 61, 291],
        "lips": [None] * n,
    }


def test_pose_joints_map_blazepose_and_fill_lost_frames():
    out = pose_joints(reply(), ("neck", "l_shoulder", "r_shoulder"), 200, 100)
    np.testing.assert_allclose(out[0, :, :2], [[100, 50], [120, 50], [80, 50]], atol=1e-4)
    np.testing.assert_allclose(out[1, :, :2], out[0, :, :2])  # lost frame: filled from its neighbours...
    assert (out[1, :, 2] == 0).all() and (out[0, :, 2] == pytest.approx(0.9))  # ...with confidence 0
    with pytest.raises(ValueError, match="no mediapipe landmark for joint"):
        pose_joints(reply(), ("tail",), 200, 100)


def test_hand_joints_come_from_the_hand_landmarker_with_its_score_else_the_pose():
    out = pose_joints(reply(), ("l_index_tip", "l_palm", "r_thumb_tip"), 200, 100)
    np.testing.assert_allclose(out[0, 0], [160, 95, 0.8], atol=1e-4)  # the hand's index tip, its presence score
    np.testing.assert_allclose(out[0, 1, :2], [150, 90], atol=1e-4)  # mean of wrist and knuckles
    # Frame 2: hand not found: the pose's own estimate of the point (left index 19), confidence 0.
    np.testing.assert_allclose(out[2, 0], [140, 86, 0.0], atol=1e-4)
    # The right hand never found: the pose's right thumb (22, at the origin here), confidence 0.
    np.testing.assert_allclose(out[:, 2, 2], 0.0)
    assert np.isfinite(out).all()


def test_any_layout_of_known_names_and_the_default_is_the_worlds():
    assert KeypointConfig().joints == JOINTS
    assert unknown_joints(KeypointConfig().joints) == [] and unknown_joints(["l_hip", "x"]) == ["x"]
    assert set(HAND_JOINTS) <= set(KNOWN_JOINTS) and len(KNOWN_JOINTS) == len(set(KNOWN_JOINTS))
    out = pose_joints(reply(), KNOWN_JOINTS, 64, 64)
    assert out.shape == (3, len(KNOWN_JOINTS), 3) and np.isfinite(out).all()


def test_hand_scores_and_truth_keys():
    marks = landmarks_from_reply(reply(), 200, 100)
    np.testing.assert_allclose(marks.hand_scores, [[0.8, 0.1], [0, 0], [0, 0]], atol=1e-6)
    assert marks.hands[0, 0, 0, 2] == 1 and marks.hands[1:, 0, 0, 2].sum() == 0 and marks.hands[..., 1, :, 2].sum() == 0
    truth = measured_truth(marks, pose_joints(reply(), JOINTS, 200, 100), 25.0, 200, 100)
    assert np.array(truth["hand_scores"]).shape == (3, 2) and np.array(truth["keypoints_px"]).shape == (3, 10, 2)


def test_mouth_opening_from_lips():
    lip_index = (13, 14, 61, 291)
    lips = np.array([[[50, 50], [50, 50], [40, 50], [60, 50]], [[50, 45], [50, 55], [40, 50], [60, 50]]], np.float32)
    marks = Landmarks("mediapipe-test", [], np.zeros((2, 2, 21, 3)), np.zeros((2, 2)), lips, lip_index, np.ones(2, bool))
    mouth = marks.mouth()
    np.testing.assert_allclose(mouth["opening"], [0.0, 1.0])  # gap 10 = half the 20 px width: fully open
    np.testing.assert_allclose(mouth["width"], [20, 20])
