"""Landmark extraction worker: runs inside `.venv-extract` (mediapipe needs protobuf<5, our venv has 7).

Imports only the standard library, numpy and mediapipe: it is started as a subprocess by
components/data/extractor_client.py and must not import the talkalign package.

Protocol (talkalign-extract-v1), one clip per call:
  stdin   one JSON request {"protocol": 1, "frames": "<path of uint8 [T,H,W,3] RGB .npy>",
          "out": "<path of the JSON reply>", "options": {...}}
  out     one JSON reply (written to a temp name, then renamed): per-frame face boxes, pose, hands and lips,
          every x, y normalised to [0, 1] across the frames it was given (so a downscaled copy gives the same
          numbers); None where a model found nothing in that frame.
  exit    0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

PROTOCOL = 1
FORMAT = "talkalign-extract-v1"


def _fail(message: str, code: int = 2) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    raise SystemExit(code)


def _round(values, digits: int = 5) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _lip_indices(face_mesh_connections) -> list[int]:
    return sorted({i for pair in face_mesh_connections.FACEMESH_LIPS for i in pair})


def run(request: dict) -> dict:
    import mediapipe as mp  # imported here so a bad request fails fast, before the model load

    options = request.get("options", {})
    frames = np.load(request["frames"], mmap_mode="r", allow_pickle=False)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        _fail(f"{request['frames']}: expected uint8 [T,H,W,3] frames, got {frames.dtype} {frames.shape}")

    solutions = mp.solutions
    lips = _lip_indices(solutions.face_mesh_connections)
    detector = solutions.face_detection.FaceDetection(
        model_selection=int(options.get("face_model", 1)),  # 1: full range (small and far faces too)
        min_detection_confidence=float(options.get("min_face_score", 0.5)),
    )
    # Holistic tracks one person: pose (complexity 1 is the model the wheel ships), then face mesh and
    # both hands from the pose's regions, which is cheaper than separate palm and face detectors per frame.
    holistic = solutions.holistic.Holistic(
        static_image_mode=False, model_complexity=1, smooth_landmarks=True, refine_face_landmarks=False
    )
    face_mesh = None  # made on first need: frames where the pose (and so holistic's face) is lost

    faces, pose, left, right, lip_xy = [], [], [], [], []
    start = time.perf_counter()
    for frame in frames:
        image = np.ascontiguousarray(frame)
        found = detector.process(image).detections or []
        boxes = []
        for det in found:
            box = det.location_data.relative_bounding_box
            boxes.append(_round([box.xmin, box.ymin, box.width, box.height, det.score[0]]))
        faces.append(boxes)

        result = holistic.process(image)
        pose.append(
            None
            if result.pose_landmarks is None
            else _round([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark])
        )
        left.append(None if result.left_hand_landmarks is None else _round([[p.x, p.y, p.z] for p in result.left_hand_landmarks.landmark]))
        right.append(None if result.right_hand_landmarks is None else _round([[p.x, p.y, p.z] for p in result.right_hand_landmarks.landmark]))
        mesh = result.face_landmarks
        if mesh is None and boxes:
            if face_mesh is None:
                face_mesh = solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)
            meshes = face_mesh.process(image).multi_face_landmarks
            mesh = meshes[0] if meshes else None
        lip_xy.append(None if mesh is None else _round([[mesh.landmark[i].x, mesh.landmark[i].y] for i in lips]))
    seconds = time.perf_counter() - start

    n, height, width = frames.shape[:3]
    return {
        "format": FORMAT,
        "protocol": PROTOCOL,
        "mediapipe": mp.__version__,
        "n_frames": int(n),
        "width": int(width),
        "height": int(height),
        "seconds": round(seconds, 4),
        "faces": faces,  # per frame: [[xmin, ymin, w, h, score], ...]
        "pose": pose,  # per frame: 33 x [x, y, z, visibility] (BlazePose order) or None
        "left_hand": left,  # the person's left hand: 21 x [x, y, z] or None
        "right_hand": right,
        "lip_index": lips,  # face-mesh indices of the lip landmarks, in the order of "lips"
        "lips": lip_xy,  # per frame: len(lip_index) x [x, y] or None
    }


def main() -> None:
    try:
        request = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        _fail(f"request is not JSON ({exc})")
    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        _fail(f"unsupported protocol {request.get('protocol') if isinstance(request, dict) else request!r}; worker speaks {PROTOCOL}")
    for key in ("frames", "out"):
        if not isinstance(request.get(key), str):
            _fail(f"request lacks {key!r}")
    reply = run(request)
    out = request["out"]
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(reply, f, separators=(",", ":"))
    os.replace(tmp, out)
    print(json.dumps({"ok": True, "n_frames": reply["n_frames"], "seconds": reply["seconds"]}))


if __name__ == "__main__":
    main()
