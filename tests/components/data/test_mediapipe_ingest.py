"""Ingest with the mediapipe extractor on clips made from a real photograph (matplotlib's sample
grace_hopper.jpg, a portrait), with espeak-ng speech and a camera pan/zoom; plus the no-face and two-face
refusals, and what happens without the extractor env."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from components.config import IngestConfig, KeypointConfig
from components.data.audio_features import AudioEncoder
from components.data.extractor_client import DEFAULT_PYTHON, ExtractorUnavailable, run_worker
from components.data.ingest import ingest_folder
from components.data.quarantine import read_quarantine
from components.io.audio import load_audio
from components.io.video import decode_video, write_video

needs_env = pytest.mark.skipif(
    not DEFAULT_PYTHON.is_file(), reason=f"{DEFAULT_PYTHON} missing: `make setup` builds the mediapipe extractor env"
)
FPS, SECONDS, SR = 25, 1.5, 16000
W, H = 320, 256  # a landscape source: the face crop has to find the face, not the centre


def portrait() -> np.ndarray:
    return np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


def speech(seconds: float) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        t = np.arange(int(seconds * SR)) / SR
        return (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
    wav = Path(f"/tmp/talkalign-test-speech-{id(seconds)}.wav")
    subprocess.run(["espeak-ng", "-w", str(wav), "hello, this is a real portrait talking"], check=True,
                   capture_output=True)  # fmt: skip
    audio, _ = load_audio(wav, SR)
    wav.unlink()
    audio = audio[: int(seconds * SR)]
    return np.pad(audio, (0, int(seconds * SR) - len(audio))).astype(np.float32)


def camera(image: np.ndarray, n: int, pan_px: float, zoom: float) -> np.ndarray:
    """Frames [n, H, W, 3]: the photo on a grey background, panned right by pan_px and zoomed in by `zoom`."""
    frames = np.empty((n, H, W, 3), np.uint8)
    for t in range(n):
        s = t / max(1, n - 1)
        scale = (H * 0.9 / image.shape[0]) * (1 + (zoom - 1) * s)
        photo = Image.fromarray(image).resize((int(image.shape[1] * scale), int(image.shape[0] * scale)))
        canvas = Image.new("RGB", (W, H), (110, 110, 110))
        canvas.paste(photo, (int(20 + pan_px * s), int(H * 0.05)))
        frames[t] = np.asarray(canvas)
    return frames


def side_by_side(image: np.ndarray, n: int) -> np.ndarray:
    half = np.asarray(Image.fromarray(image).resize((W // 2, H)))
    return np.repeat(np.concatenate([half, half[:, ::-1]], axis=1)[None], n, axis=0)


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    n = int(SECONDS * FPS)
    audio = speech(SECONDS)
    photo = portrait()
    raw = root / "raw"
    (raw / "grace").mkdir(parents=True)
    (raw / "nobody").mkdir()
    write_video(raw / "grace" / "pan_zoom.mp4", camera(photo, n, pan_px=90, zoom=1.15), FPS, audio, SR)
    write_video(raw / "grace" / "twins.mp4", side_by_side(photo, n), FPS, audio, SR)
    wall = np.full((n, H, W, 3), 120, np.uint8)
    wall[:, :, W // 2 :] = (40, 90, 150)
    write_video(raw / "nobody" / "wall.mp4", wall, FPS, audio, SR)
    return root


@pytest.fixture(scope="module")
def ingested(real_corpus):
    cfg = IngestConfig(resolution=128, max_quarantine_fraction=1.0,
                       keypoints=KeypointConfig(extractor="mediapipe", cache_dir=str(real_corpus / "cache")))  # fmt: skip
    out, quarantine = real_corpus / "out", real_corpus / "quarantine.jsonl"
    start = time.perf_counter()
    summary = ingest_folder(cfg, real_corpus / "raw", out, quarantine, progress=False, encoder=AudioEncoder(cfg.audio))
    return {"cfg": cfg, "out": out, "quarantine": quarantine, "summary": summary, "seconds": time.perf_counter() - start}


@needs_env
def test_real_portrait_is_face_cropped_with_joints_and_mouth(ingested):
    clip = ingested["out"] / "clips" / "grace__pan_zoom"
    meta = json.loads((clip / "meta.json").read_text())
    assert meta["crop_kind"] == "face" and meta["keypoint_extractor"] == "mediapipe-0.10.21"
    crop = meta["crop"]
    assert crop["x0"] > 0 and crop["size"] < H  # not the centre square
    marks = json.loads((clip / "landmarks.json").read_text())
    n = marks["n_frames"]
    # The face (its mouth, in output pixels) is inside the crop in every frame, and found in every frame.
    mouth = np.array(marks["mouth_center_px"])
    assert mouth.shape == (n, 2) and all(marks["mouth_found"])
    assert (mouth > 0.15 * 128).all() and (mouth < 0.85 * 128).all()
    assert 5 < marks["mouth_size_px"][0] < 60
    # The mouth is found again on the decoded crop: re-running the worker on the output video's frames.
    frames = decode_video(clip / "video.mp4", with_audio=False).frames
    reply = run_worker(frames, {"face_model": 1}, DEFAULT_PYTHON, 120, "output")
    assert all(len(f) == 1 for f in reply["faces"]) and all(lips is not None for lips in reply["lips"])
    # Joints: head and shoulders confident and in the frame; pose.npy is [T, 10, 3] in [0, 1].
    pose = np.load(clip / "pose.npy")
    assert pose.shape == (n, 10, 3) and np.isfinite(pose).all()
    assert (pose[:, :4, 2] > 0.5).mean() > 0.9  # head, neck, shoulders
    assert (pose[:, 0, :2] > 0.2).all() and (pose[:, 0, :2] < 0.8).all()
    # One square for the whole clip: the head joint moves right across it with the pan.
    assert pose[-1, 0, 0] > pose[0, 0, 0]
    # truth.json carries the measured mouth with the synthetic world's keys, so evaluate etc. read it unchanged.
    truth = json.loads((clip / "truth.json").read_text())
    assert truth["measured_by"] == "mediapipe-0.10.21" and len(truth["mouth_open"]) == n
    assert np.ptp(truth["mouth_open"]) >= 0  # a still photo: the opening is measured, not animated
    assert np.array(marks["hands_px"]).shape == (n, 2, 21, 3)


@needs_env
def test_no_face_and_two_faces_are_quarantined_with_reasons(ingested):
    rows = {r.clip: r.reason for r in read_quarantine(ingested["quarantine"])}
    assert set(rows) == {"grace/twins.mp4", "nobody/wall.mp4"}
    assert "face missing in 37 of 37 frames" in rows["nobody/wall.mp4"] and "frames 0-36" in rows["nobody/wall.mp4"]
    assert "several faces (up to 2) in" in rows["grace/twins.mp4"] and "frames 0-" in rows["grace/twins.mp4"]


@needs_env
def test_cache_makes_the_second_ingest_skip_the_worker(ingested, real_corpus, monkeypatch):
    import components.data.extractor_client as client

    def boom(*args, **kwargs):
        raise AssertionError("worker ran although the cache holds this clip")

    monkeypatch.setattr(client, "run_worker", boom)
    cfg = ingested["cfg"]
    summary = ingest_folder(cfg, real_corpus / "raw", real_corpus / "out2", real_corpus / "q2.jsonl", progress=False,
                            encoder=AudioEncoder(cfg.audio))  # fmt: skip
    assert summary.n_ok == 1 and summary.n_quarantined == 2


@needs_env
def test_another_joint_layout_from_the_same_cached_landmarks(ingested, real_corpus):
    """ingest.keypoints.joints picks the skeleton: face points from the pose model, a hand-landmarker joint (no
    hand in this portrait: the pose's estimate, confidence 0). The cached worker reply is reused: the layout is
    post-processing."""
    layout = ("head", "l_eye", "r_eye", "mouth", "l_palm")
    cfg = IngestConfig(resolution=128, max_quarantine_fraction=1.0,
                       keypoints=KeypointConfig(extractor="mediapipe", joints=layout,
                                                cache_dir=str(real_corpus / "cache")))  # fmt: skip
    out = real_corpus / "out_layout"
    ingest_folder(cfg, real_corpus / "raw", out, real_corpus / "q_layout.jsonl", progress=False,
                  encoder=AudioEncoder(cfg.audio))  # fmt: skip
    clip = out / "clips" / "grace__pan_zoom"
    pose = np.load(clip / "pose.npy")
    assert pose.shape[1:] == (5, 3) and json.loads((clip / "meta.json").read_text())["joints"] == list(layout)
    assert (pose[:, :4, 2] > 0.5).mean() > 0.9 and (pose[:, 4, 2] == 0).all()
    # The person's left eye is on the image's right of the nose, both above the mouth.
    assert (pose[:, 1, 0] > pose[:, 0, 0]).all() and (pose[:, 2, 0] < pose[:, 0, 0]).all()
    assert (pose[:, 1:3, 1] < pose[:, 3:4, 1]).all()
    first = np.load(ingested["out"] / "clips" / "grace__pan_zoom" / "pose.npy")
    np.testing.assert_allclose(pose[:, 0], first[:, 0])  # head: the same joint from the same landmarks


@needs_env
def test_throughput_on_512px_frames(tmp_path):
    n = 50
    photo = np.asarray(Image.fromarray(portrait()).resize((512, 512)))
    frames = np.repeat(photo[None], n, axis=0)
    start = time.perf_counter()
    reply = run_worker(frames, {"face_model": 1}, DEFAULT_PYTHON, 300, "bench")
    wall = time.perf_counter() - start
    print(f"\nmediapipe worker: {n / reply['seconds']:.1f} frames/s of 512 px (models only), "
          f"{n / wall:.1f} frames/s with start-up and transfer")  # fmt: skip
    assert n / wall > 1.0


def test_mediapipe_without_env_fails_naming_make_setup(tmp_path):
    cfg = IngestConfig(keypoints=KeypointConfig(extractor="mediapipe", extractor_python=str(tmp_path / "nope" / "python")))
    (tmp_path / "raw").mkdir()
    with pytest.raises(ExtractorUnavailable, match="run `make setup`") as info:
        ingest_folder(cfg, tmp_path / "raw", tmp_path / "out", tmp_path / "q.jsonl", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_auto_with_sidecars_works_without_env(tmp_path):
    from tests.components.data.test_ingest import make_clip

    make_clip(tmp_path / "raw" / "a.mp4")
    make_clip(tmp_path / "raw" / "no_sidecar.mp4", keypoints=None)
    cfg = IngestConfig(max_quarantine_fraction=1.0,
                       keypoints=KeypointConfig(extractor="auto", extractor_python=str(tmp_path / "nope" / "python")))  # fmt: skip
    summary = ingest_folder(cfg, tmp_path / "raw", tmp_path / "out", tmp_path / "q.jsonl", progress=False)
    assert summary.n_ok == 1
    (row,) = read_quarantine(tmp_path / "q.jsonl")
    assert row.clip == "no_sidecar.mp4" and "keypoint sidecar missing" in row.reason and "make setup" in row.reason
