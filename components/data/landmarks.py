"""From the mediapipe worker's reply to our structures: skeleton joints, hands, lips and the mouth measures.

Pose landmarks (BlazePose, 33 points) map onto the skeleton joints by name; a joint made of several
landmarks is their mean, with the lowest visibility as confidence. Frames where a model found nothing are
filled from the neighbouring frames with confidence 0, so arrays stay finite. Mouth opening follows the
synthetic world's geometry: the inner-lip gap over the mouth width, 0 = closed, 1 = a gap of half the
width (the world's fully open mouth), so evaluate, the critic and the sync expert read it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# BlazePose indices per skeleton joint (l_* is the person's left, as in the synthetic world).
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
}
SKELETON_JOINTS = tuple(POSE_JOINTS)
MOUTH_CORNERS = (61, 291)  # face-mesh outer lip corners
INNER_LIPS = (13, 14)  # face-mesh inner upper / lower lip, mid-line
MOUTH_OPEN_FULL = 0.5  # gap / width at opening 1 (the synthetic world's mouth_h_max / mouth_w)


@dataclass(frozen=True)
class Landmarks:
    """Everything measured on a clip, in source pixels; `extractor` names the tool and version."""

    extractor: str
    faces: list[np.ndarray]  # per frame float [n, 5]: x0, y0, w, h, score
    hands: np.ndarray  # float32 [T, 2, 21, 3]: person's left, right; x_px, y_px, found (0/1)
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
    """float32 [T, J, 3]: x_px, y_px, confidence for the named skeleton joints."""
    unknown = [j for j in joints if j not in POSE_JOINTS]
    if unknown:
        raise ValueError(f"no pose mapping for joint(s) {', '.join(unknown)}; known: {', '.join(POSE_JOINTS)}")
    pose, found = _per_frame(reply["pose"], (33, 4))
    out = np.zeros((len(pose), len(joints), 3))
    for j, name in enumerate(joints):
        idx = list(POSE_JOINTS[name])
        out[:, j, 0] = pose[:, idx, 0].mean(axis=1) * width
        out[:, j, 1] = pose[:, idx, 1].mean(axis=1) * height
        out[:, j, 2] = np.clip(pose[:, idx, 3].min(axis=1), 0.0, 1.0) * found
    out[..., :2] = _fill_frames(out[..., :2], found, default=0.5 * min(width, height))
    return out.astype(np.float32)


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
        "lips_px": np.round(landmarks.lips, 3).tolist(),
        "lip_index": list(landmarks.lip_index),
    }
