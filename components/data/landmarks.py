"""From the mediapipe worker's reply to our structures: skeleton joints, hands, lips and the mouth measures.

The skeleton's joints are named in params (ingest.keypoints.joints), each from what mediapipe measures:
a pose joint (BlazePose, 33 points) is the mean of its landmarks, with the lowest visibility as confidence;
a hand joint (the hand landmarker, 21 points per hand) is the mean of its hand landmarks where the hand was
found, with the hand's presence score as confidence, and falls back to the pose's estimate of that point
(confidence 0) where it was not. Frames where the pose model found nothing are filled from the neighbouring
frames with confidence 0, so arrays stay finite. Mouth opening follows the synthetic world's geometry: the
inner-lip gap over the mouth width, 0 = closed, 1 = a gap of half the width (the world's fully open mouth),
so evaluate, the critic and the sync expert read it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# BlazePose indices per pose joint (l_* is the person's left, as in the synthetic world).
POSE_JOINTS: dict[str, tuple[int, ...]] = {
    "head": (0,),  # nose
    "neck": (11, 12),  # between the shoulders
    "l_shoulder": (11,),
    "r_shoulder": (12,),
    "l_elbow": (13,),
    "r_elbow": (14,),
    "l_wrist": (15,),
    "r_wrist": (16,),
    "l_hand": (17, 19, 21),  # pinky, index, thumb
    "r_hand": (18, 20, 22),
    "l_eye": (2,),
    "r_eye": (5,),
    "l_ear": (7,),
    "r_ear": (8,),
    "mouth": (9, 10),
    "l_hip": (23,),
    "r_hip": (24,),
    "pelvis": (23, 24),
    "l_knee": (25,),
    "r_knee": (26,),
    "l_ankle": (27,),
    "r_ankle": (28,),
}
# Hand-landmarker joints: (hand: 0 the person's left, 1 right; hand landmark indices; BlazePose fallback).
_FINGER_TIPS = {"thumb": (4, 21), "index": (8, 19), "middle": (12, 19), "ring": (16, 17), "pinky": (20, 17)}
HAND_JOINTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {}
for _k, _side in enumerate("lr"):
    HAND_JOINTS[f"{_side}_palm"] = (_k, (0, 5, 9, 13, 17), (15 + _k, 17 + _k, 19 + _k))  # wrist + knuckles
    for _finger, (_tip, _pose) in _FINGER_TIPS.items():
        HAND_JOINTS[f"{_side}_{_finger}_tip"] = (_k, (_tip,), (_pose + _k,))
KNOWN_JOINTS = (*POSE_JOINTS, *HAND_JOINTS)  # every name ingest.keypoints.joints may use with mediapipe
MOUTH_CORNERS = (61, 291)  # face-mesh outer lip corners
INNER_LIPS = (13, 14)  # face-mesh inner upper / lower lip, mid-line
MOUTH_OPEN_FULL = 0.5  # gap / width at opening 1 (the synthetic world's mouth_h_max / mouth_w)


def unknown_joints(joints: tuple[str, ...] | list[str]) -> list[str]:
    """The names mediapipe cannot measure (empty when it can measure them all)."""
    return [j for j in joints if j not in POSE_JOINTS and j not in HAND_JOINTS]


@dataclass(frozen=True)
class Landmarks:
    """Everything measured on a clip, in source pixels; `extractor` names the tool and version."""

    extractor: str
    faces: list[np.ndarray]  # per frame float [n, 5]: x0, y0, w, h, score
    hands: np.ndarray  # float32 [T, 2, 21, 3]: person's left, right; x_px, y_px, found (0/1)
    hand_scores: np.ndarray  # float32 [T, 2]: the hand landmark model's presence score, 0 where it did not run
    lips: np.ndarray  # float32 [T, L, 2] x_px, y_px (filled where lost)
    lip_index: tuple[int, ...]
    lips_found: np.ndarray  # bool [T]

    def mouth(self) -> dict[str, np.ndarray]:
        """Per-frame mouth centre [T,2], width [T], gap [T] and opening [T] in [0, 1] (source pixels)."""
        pos = {j: k for k, j in enumerate(self.lip_index)}
        left, right = self.lips[:, pos[MOUTH_CORNERS[0]]], self.lips[:, pos[MOUTH_CORNERS[1]]]
        upper, lower = self.lips[:, pos[INNER_LIPS[0]]], self.lips[:, pos[INNER_LIPS[1]]]
        width = np.linalg.norm(right - left, axis=-1)
        gap = np.linalg.norm(lower - upper, axis=-1)
        opening = np.clip(gap / np.maximum(width, 1e-6) / MOUTH_OPEN_FULL, 0.0, 1.0)
        return {"center": self.lips.mean(axis=1), "width": width, "gap": gap, "opening": opening}


def _fill_frames(values: np.ndarray, found: np.ndarray, default: float) -> np.ndarray:
    """Linear interpolation over time of every column from the frames where found (default if never)."""
    flat = values.reshape(len(values), -1).astype(np.float64)
    if not found.any():
        return np.full(values.shape, default, np.float64)
    t = np.arange(len(values))
    return np.stack([np.interp(t, t[found], col[found]) for col in flat.T], axis=1).reshape(values.shape)


def _per_frame(items: list[Any], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    found = np.array([item is not None for item in items])
    arr = np.zeros((len(items), *shape))
    for t, item in enumerate(items):
        if item is not None:
            arr[t] = np.asarray(item, np.float64)[..., : shape[-1]]
    return arr, found


def pose_joints(reply: dict[str, Any], joints: tuple[str, ...], width: int, height: int) -> np.ndarray:
    """float32 [T, J, 3]: x_px, y_px, confidence for the named skeleton joints (POSE_JOINTS or HAND_JOINTS)."""
    unknown = unknown_joints(joints)
    if unknown:
        raise ValueError(f"no mediapipe landmark for joint(s) {', '.join(unknown)}; known: {', '.join(KNOWN_JOINTS)}")
    pose, found = _per_frame(reply["pose"], (33, 4))
    scale = np.array([width, height], np.float64)
    pose_xy = _fill_frames(pose[..., :2] * scale, found, default=0.5 * min(width, height))
    visibility = np.clip(pose[..., 3], 0.0, 1.0) * found[:, None]
    hands = [_per_frame(reply[key], (21, 2)) for key in ("left_hand", "right_hand")]
    scores = _hand_scores(reply)
    out = np.zeros((len(pose), len(joints), 3))
    for j, name in enumerate(joints):
        if name in POSE_JOINTS:
            idx = list(POSE_JOINTS[name])
            out[:, j, :2] = pose_xy[:, idx].mean(axis=1)
            out[:, j, 2] = visibility[:, idx].min(axis=1)
            continue
        k, idx, fallback = HAND_JOINTS[name]
        xy, hand_found = hands[k]
        out[:, j, :2] = np.where(hand_found[:, None], xy[:, list(idx)].mean(axis=1) * scale,
                                 pose_xy[:, list(fallback)].mean(axis=1))  # fmt: skip
        out[:, j, 2] = np.where(hand_found, scores[:, k], 0.0)
    return out.astype(np.float32)


def _hand_scores(reply: dict[str, Any]) -> np.ndarray:
    """float [T, 2]: presence score per hand and frame, 0 where the hand model did not run (no wrist in view)."""
    cols = [[0.0 if v is None else float(v) for v in reply[key]] for key in ("left_hand_score", "right_hand_score")]
    return np.clip(np.array(cols, np.float64).T.reshape(len(reply["pose"]), 2), 0.0, 1.0)


def landmarks_from_reply(reply: dict[str, Any], width: int, height: int) -> Landmarks:
    """Normalised worker output -> source-pixel Landmarks (the worker may have seen a downscaled copy)."""
    scale = np.array([width, height], np.float64)
    faces = [
        np.asarray(boxes, np.float64).reshape(-1, 5) * np.array([width, height, width, height, 1.0])
        for boxes in reply["faces"]
    ]
    hands = np.zeros((len(faces), 2, 21, 3), np.float32)
    for k, key in enumerate(("left_hand", "right_hand")):
        xy, found = _per_frame(reply[key], (21, 2))
        hands[:, k, :, :2] = xy * scale
        hands[:, k, :, 2] = found[:, None]
    lip_index = tuple(int(i) for i in reply["lip_index"])
    lips, lips_found = _per_frame(reply["lips"], (len(lip_index), 2))
    lips = _fill_frames(lips * scale, lips_found, default=0.5 * min(width, height))
    return Landmarks(
        extractor=f"mediapipe-{reply.get('mediapipe', '?')}",
        faces=faces,
        hands=hands,
        hand_scores=_hand_scores(reply).astype(np.float32),
        lips=lips.astype(np.float32),
        lip_index=lip_index,
        lips_found=lips_found,
    )


def measured_truth(landmarks: Landmarks, joints_px: np.ndarray, fps: float, width: int, height: int) -> dict[str, Any]:
    """A truth-like dict in source pixels (the keys the synthetic world writes) from what mediapipe measured.

    ingest's transform_truth then maps it through the same time resampling, crop and resize as the frames.
    """
    mouth = landmarks.mouth()
    found = landmarks.lips_found
    width_px = float(np.median(mouth["width"][found])) if found.any() else 0.0
    return {
        "measured_by": landmarks.extractor,
        "fps": fps,
        "n_frames": len(joints_px),
        "width": width,
        "height": height,
        "mouth_open": np.round(mouth["opening"], 6).tolist(),
        "mouth_found": found.astype(int).tolist(),
        "mouth_center_px": np.round(mouth["center"], 3).tolist(),
        "mouth_size_px": [round(width_px, 3), round(MOUTH_OPEN_FULL * width_px, 3)],
        "keypoints_px": np.round(joints_px[..., :2], 3).tolist(),
        "hands_px": np.round(landmarks.hands, 3).tolist(),
        "hand_scores": np.round(landmarks.hand_scores, 4).tolist(),
        "lips_px": np.round(landmarks.lips, 3).tolist(),
        "lip_index": list(landmarks.lip_index),
    }
