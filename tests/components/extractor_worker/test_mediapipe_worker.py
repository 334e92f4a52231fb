"""The mediapipe worker in the real extractor env, on frames of a real photograph (matplotlib's grace_hopper.jpg):
protocol v2's reply (hand-presence scores, pose on every k-th frame), a refused old protocol, and the pose-and-hands
graph giving exactly Holistic's landmarks; the interpolation of skipped frames without the env."""

import json
import subprocess

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from components.data.extractor_client import DEFAULT_PYTHON, WORKER, run_worker
from components.extractor_worker.mediapipe_worker import FORMAT, PROTOCOL, _interpolate

needs_env = pytest.mark.skipif(not DEFAULT_PYTHON.is_file(), reason="`make setup` builds the mediapipe extractor env")


def frames(n: int, side: int = 256) -> np.ndarray:
    """The portrait on a grey square, moving right by 2 px a frame."""
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    photo = photo.resize((round(photo.width * 0.8 * side / photo.height), round(0.8 * side)))
    out = np.empty((n, side, side, 3), np.uint8)
    for t in range(n):
        canvas = Image.new("RGB", (side, side), (110, 110, 110))
        canvas.paste(photo, (20 + 2 * t, side // 10))
        out[t] = np.asarray(canvas)
    return out


@needs_env
def test_reply_has_hand_scores_and_pose_on_every_kth_frame():
    n = 7
    reply = run_worker(frames(n), {"pose_every": 3}, DEFAULT_PYTHON, 120, "photo")
    assert (reply["format"], reply["protocol"]) == (FORMAT, PROTOCOL) == ("talkalign-extract-v2", 2)
    assert reply["pose_frames"] == [0, 3, 6]  # and the last frame
    assert all(len(reply[k]) == n for k in ("faces", "pose", "left_hand", "right_hand", "left_hand_score",
                                            "right_hand_score", "lips"))  # fmt: skip
    assert all(len(f) == 1 and f[0][4] > 0.5 for f in reply["faces"]) and all(lips is not None for lips in reply["lips"])
    assert all(p is not None for p in reply["pose"])  # interpolated between the frames pose ran on
    for side in ("left", "right"):
        for hand, score in zip(reply[f"{side}_hand"], reply[f"{side}_hand_score"]):
            assert score is None or 0.0 <= score <= 1.0
            assert hand is None or score >= 0.5  # the model reports landmarks only above presence 0.5
    assert not any(reply["left_hand"]) and not any(reply["right_hand"])  # a portrait: no hands
    assert set(reply["model_seconds"]) == {"face_detection", "face_mesh", "pose_and_hands"}
    # each time is rounded to 4 decimals by the worker: their sum may pass the rounded total by a few 1e-4
    assert reply["setup_seconds"] > 0 and sum(reply["model_seconds"].values()) <= reply["seconds"] + 1e-3


@needs_env
def test_an_old_protocol_is_refused_in_one_line(tmp_path):
    request = {"protocol": 1, "frames": str(tmp_path / "f.npy"), "out": str(tmp_path / "r.json"), "options": {}}
    proc = subprocess.run([str(DEFAULT_PYTHON), str(WORKER)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode != 0 and proc.stderr.strip() == "unsupported protocol 1; worker speaks 2"


BODY_VS_HOLISTIC = """
import importlib.util, sys, numpy as np
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec); spec.loader.exec_module(worker)
mp = worker.import_mediapipe()
frames = np.load(sys.argv[2])
body, holistic = worker.body_landmarker(mp), mp.solutions.holistic.Holistic(model_complexity=1)
worst = 0.0
for image in frames:
    a, b = holistic.process(image).pose_landmarks, body.process({"image": image}).pose_landmarks
    xy = lambda marks: np.array([[p.x, p.y, p.visibility] for p in marks.landmark])
    worst = max(worst, float(np.abs(xy(a) - xy(b)).max()))
print(worst)
"""


@needs_env
def test_pose_and_hands_graph_is_holistic_without_its_face_model(tmp_path):
    np.save(tmp_path / "frames.npy", frames(4))
    proc = subprocess.run([str(DEFAULT_PYTHON), "-c", BODY_VS_HOLISTIC, str(WORKER), str(tmp_path / "frames.npy")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    assert float(proc.stdout.split()[-1]) == 0.0  # the same subgraphs on the same frames: identical landmarks


def test_skipped_frames_are_interpolated_only_between_two_found_ones():
    values = [[0.0, 10.0], None, None, [3.0, 13.0], None, None]
    ran = [0, 3, 5]  # the model ran on frames 0, 3 and 5 (found nothing on 5)
    out = _interpolate(values, ran)
    assert out[1] == [1.0, 11.0] and out[2] == [2.0, 12.0] and out[4] is None
    assert _interpolate([0.2, None, 0.6], [0, 2])[1] == pytest.approx(0.4)  # scalar scores too
