"""Landmark extraction worker: runs inside `.venv-extract` (mediapipe needs protobuf<5, our venv has 7).

Imports only the standard library, numpy and mediapipe: it is started as a subprocess by
components/data/extractor_client.py and must not import the talkalign package.

Protocol (talkalign-extract-v2), one clip per call:
  stdin   one JSON request {"protocol": 2, "frames": "<path of uint8 [T,H,W,3] RGB .npy>",
          "out": "<path of the JSON reply>", "options": {...}}
  out     one JSON reply (written to a temp name, then renamed): per-frame face boxes, pose, hands and lips,
          every x, y normalised to [0, 1] across the frames it was given (so a downscaled copy gives the same
          numbers); None where a model found nothing in that frame. v2 adds per hand and frame the hand
          landmark model's hand-presence score (its confidence that the crop holds a hand, in [0, 1]; None
          where the model did not run because the pose shows no wrist).
  options face_model (0 short / 1 full range), min_face_score, pose_every (pose and hands run on every k-th
          frame and the last, "pose_frames" lists them, the frames between are interpolated; face boxes and
          lips are measured on every frame).
  exit    0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

PROTOCOL = 2
FORMAT = "talkalign-extract-v2"
HOLISTIC_GRAPH = "modules/holistic_landmark/holistic_landmark_cpu.binarypb"
BODY_NODES = ("PoseLandmarkCpu", "HandLandmarksLeftAndRightCpu")  # Holistic's nodes except its face ones
# The hand landmark model's presence score inside Holistic's hand subgraphs (1: the left hand's, 2: the right's),
# a stream the solution API does not expose; observed by its name in the expanded graph.
HAND_SCORE = "handlandmarksleftandrightcpu__handlandmarksfromposecpu_{}__handlandmarkcpu__hand_presence_score"


def _fail(message: str, code: int = 2) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    raise SystemExit(code)


def _round(values, digits: int = 5) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _lip_indices(face_mesh_connections) -> list[int]:
    return sorted({i for pair in face_mesh_connections.FACEMESH_LIPS for i in pair})


def _interpolate(values: list, ran: list[int]) -> list:
    """Fill frames the model skipped (not in `ran`) linearly between the two frames it ran on; a skipped
    frame stays None when either neighbour found nothing (a hand that appears is not invented)."""
    out = list(values)
    for a, b in zip(ran, ran[1:]):
        if b - a < 2 or values[a] is None or values[b] is None:
            continue
        va, vb = np.asarray(values[a]), np.asarray(values[b])
        for t in range(a + 1, b):
            out[t] = _round(va + (vb - va) * (t - a) / (b - a))
    return out


def import_mediapipe():
    """mediapipe without its drawing helpers, which we never call: they import matplotlib.pyplot, 0.65 of the
    1.1 s the import takes (measured here), paid again by every worker call."""
    import types

    for name in ("drawing_utils", "drawing_styles"):
        sys.modules.setdefault(f"mediapipe.python.solutions.{name}", types.ModuleType(name))
    import mediapipe

    return mediapipe


def body_landmarker(mp, smooth: bool = True):
    """Pose (BlazePose, complexity 1: the model the wheel ships) and both hands, found from the pose's wrists.

    Holistic's own graph without its face-from-pose subgraph: the face mesh runs on every frame on its own, and
    dropping Holistic's second face model saves ~35% of its time (48 -> 30 ms per 512 px frame on this box)
    with identical pose and hand landmarks. Also outputs the hands' presence scores, which Holistic drops.
    """
    from mediapipe.framework import calculator_pb2
    from mediapipe.python.solution_base import SolutionBase

    config = calculator_pb2.CalculatorGraphConfig()
    with open(os.path.join(os.path.dirname(mp.__file__), HOLISTIC_GRAPH), "rb") as f:
        config.ParseFromString(f.read())
    nodes = [node for node in config.node if node.calculator in BODY_NODES]
    del config.node[:]
    config.node.extend(nodes)
    produced = {s.split(":")[-1] for node in nodes for s in node.output_stream}
    streams = [s for s in config.output_stream if s.split(":")[-1] in produced]
    del config.output_stream[:]
    config.output_stream.extend(streams)
    used = {p.split(":")[-1] for node in nodes for p in node.input_side_packet}
    sides = [p for p in config.input_side_packet if p.split(":")[-1] in used]
    del config.input_side_packet[:]
    config.input_side_packet.extend(sides)
    side_inputs = {"model_complexity": 1, "smooth_landmarks": smooth, "enable_segmentation": False,
                   "smooth_segmentation": False, "use_prev_landmarks": True}  # fmt: skip
    return SolutionBase(
        graph_config=config,
        side_inputs={k: v for k, v in side_inputs.items() if k in used},
        outputs=["pose_landmarks", "left_hand_landmarks", "right_hand_landmarks", HAND_SCORE.format(1),
                 HAND_SCORE.format(2)],  # fmt: skip
    )


def run(request: dict) -> dict:
    begin = time.perf_counter()
    mp = import_mediapipe()  # imported here so a bad request fails fast, before the model load

    options = request.get("options", {})
    frames = np.load(request["frames"], allow_pickle=False)  # one read; frames[t] is then a contiguous view
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        _fail(f"{request['frames']}: expected uint8 [T,H,W,3] frames, got {frames.dtype} {frames.shape}")
    pose_every = max(1, int(options.get("pose_every", 1)))

    solutions = mp.solutions
    lips = _lip_indices(solutions.face_mesh_connections)
    detector = solutions.face_detection.FaceDetection(
        model_selection=int(options.get("face_model", 1)),  # 1: full range (small and far faces too)
        min_detection_confidence=float(options.get("min_face_score", 0.5)),
    )
    # Lips on every frame from the face mesh in tracking mode (~2 ms: it re-detects only when the face is lost).
    face_mesh = solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)
    # Pose and both hands: ~80% of the time per frame, so they run every `pose_every` frames (and on the
    # last) and the frames between are interpolated.
    body = body_landmarker(mp)

    n = len(frames)
    ran = sorted({*range(0, n, pose_every), n - 1}) if n else []
    faces, lip_xy = [], []
    pose, left, right, left_score, right_score = ([None] * n for _ in range(5))
    clock = {"face_detection": 0.0, "face_mesh": 0.0, "pose_and_hands": 0.0}  # seconds per model, for the benchmark
    start = time.perf_counter()
    for t in range(n):
        image = frames[t]
        tick = time.perf_counter()
        found = detector.process(image).detections or []
        faces.append([
            _round([b.xmin, b.ymin, b.width, b.height, det.score[0]])
            for det in found
            for b in (det.location_data.relative_bounding_box,)
        ])  # fmt: skip
        tock = time.perf_counter()
        meshes = face_mesh.process(image).multi_face_landmarks
        mesh = meshes[0] if meshes else None
        lip_xy.append(None if mesh is None else _round([[mesh.landmark[i].x, mesh.landmark[i].y] for i in lips]))
        clock["face_detection"] += tock - tick
        clock["face_mesh"] += time.perf_counter() - tock
        if t % pose_every and t != n - 1:
            continue
        tick = time.perf_counter()
        result = body.process({"image": image})
        for scores, k in ((left_score, 1), (right_score, 2)):
            score = getattr(result, HAND_SCORE.format(k))
            scores[t] = None if score is None else round(float(score), 5)
        if result.pose_landmarks is not None:
            pose[t] = _round([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark])
        if result.left_hand_landmarks is not None:
            left[t] = _round([[p.x, p.y, p.z] for p in result.left_hand_landmarks.landmark])
        if result.right_hand_landmarks is not None:
            right[t] = _round([[p.x, p.y, p.z] for p in result.right_hand_landmarks.landmark])
        clock["pose_and_hands"] += time.perf_counter() - tick
    seconds = time.perf_counter() - start

    height, width = frames.shape[1:3]
    return {
        "format": FORMAT,
        "protocol": PROTOCOL,
        "mediapipe": mp.__version__,
        "n_frames": int(n),
        "width": int(width),
        "height": int(height),
        "seconds": round(seconds, 4),  # the models' loop (model load and frame read excluded)
        "setup_seconds": round(start - begin, 4),  # import, frame read and model load
        "model_seconds": {k: round(v, 4) for k, v in clock.items()},
        "faces": faces,  # per frame: [[xmin, ymin, w, h, score], ...]
        "pose": _interpolate(pose, ran),  # per frame: 33 x [x, y, z, visibility] (BlazePose order) or None
        "left_hand": _interpolate(left, ran),  # the person's left hand: 21 x [x, y, z] or None
        "right_hand": _interpolate(right, ran),
        "left_hand_score": _interpolate(left_score, ran),  # hand-presence score per frame, or None
        "right_hand_score": _interpolate(right_score, ran),
        "pose_frames": ran,  # frames pose and hands ran on; those of the others are interpolated
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
