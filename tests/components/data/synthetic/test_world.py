"""The synthetic world end to end: files and formats, determinism, lips that follow the decoded audio."""

import json

import numpy as np
import pytest

from components.config import WorldConfig
from components.data.synthetic.motion import JOINTS, mouth_opening_from_envelope
from components.data.synthetic.world import KEYPOINT_FORMAT, make_clip, synthesize_world
from components.io.audio import frame_envelope
from components.io.video import decode_video

CFG = WorldConfig(n_identities=2, clips_per_identity=2, duration_s=2.0, speech="syllables", seed=7)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world a")
    return out, synthesize_world(CFG, out, progress=False)


def _truth(out, clip_id):
    return json.loads((out / f"{clip_id}.truth.json").read_text())


def _mouth_dark_pixels(frames, truth):
    w, h = truth["mouth_size_px"]
    counts = []
    for frame, (x, y) in zip(frames, truth["mouth_center_px"]):
        box = frame[int(y - h / 2) : int(np.ceil(y + h / 2)), int(x - w / 2) : int(np.ceil(x + w / 2))]
        counts.append(int((box.astype(int).sum(axis=-1) < 200).sum()))
    return np.array(counts)


def test_world_files_and_formats(world):
    out, summary = world
    assert summary.n_clips == 4 and summary.clip_ids == ["id000_clip00", "id000_clip01", "id001_clip00", "id001_clip01"]
    assert summary.speech_kinds == {"syllables": 4}
    assert json.loads((out / "world.json").read_text())["n_clips"] == 4
    for clip_id in summary.clip_ids:
        assert "." not in clip_id
        video = decode_video(out / f"{clip_id}.mp4")
        assert video.frames.shape == (50, 64, 64, 3) and video.fps == pytest.approx(25)
        assert video.sample_rate == 16000 and abs(len(video.audio) / 16000 - 2.0) < 0.1

        kp = json.loads((out / f"{clip_id}.keypoints.json").read_text())
        assert kp["format"] == KEYPOINT_FORMAT and kp["joints"] == list(JOINTS) and len(JOINTS) == 10
        assert (kp["fps"], kp["width"], kp["height"]) == (25, 64, 64)
        points = np.array(kp["frames"])
        assert points.shape == (50, 10, 3) and np.all(points[..., 2] == 1.0)
        assert np.all(points[..., :2] >= 0) and np.all(points[..., :2] < 64)

        truth = _truth(out, clip_id)
        assert truth["clip_id"] == clip_id and truth["identity"] == clip_id[:5] and truth["lag_frames"] == 0
        assert truth["n_frames"] == 50 and len(truth["mouth_open"]) == 50 and len(truth["mouth_center_px"]) == 50
        assert np.allclose(np.array(truth["keypoints_px"]), points[..., :2])
        assert truth["speech"] == {"kind": "syllables", "text": None, "voice": None}
        assert truth["world_seed"] == 7
        assert 24 <= truth["mouth_size_px"][0] <= 32  # at 64 px the 8x VAE must still see the mouth
        assert min(truth["mouth_open"]) == 0.0 and max(truth["mouth_open"]) == 1.0


def test_deterministic_for_a_seed(world, tmp_path):
    out, _ = world
    cfg = CFG.model_copy(update={"n_identities": 1, "clips_per_identity": 1})
    synthesize_world(cfg, tmp_path, progress=False)  # a smaller world: its clip must equal the big world's
    name = "id000_clip00"
    assert (tmp_path / f"{name}.truth.json").read_bytes() == (out / f"{name}.truth.json").read_bytes()
    assert (tmp_path / f"{name}.keypoints.json").read_bytes() == (out / f"{name}.keypoints.json").read_bytes()
    a, b = decode_video(tmp_path / f"{name}.mp4"), decode_video(out / f"{name}.mp4")
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)

    other = make_clip(cfg.model_copy(update={"seed": 8}), 0, 0)
    assert other.truth["mouth_open"] != _truth(out, name)["mouth_open"]
    assert not np.array_equal(other.frames, a.frames)


def test_mouth_follows_decoded_audio_envelope(world):
    out, summary = world
    for clip_id in summary.clip_ids:
        truth, video = _truth(out, clip_id), decode_video(out / f"{clip_id}.mp4")
        envelope = frame_envelope(video.audio, video.sample_rate, video.fps, len(video.frames))
        mouth = np.array(truth["mouth_open"])
        assert np.corrcoef(mouth, mouth_opening_from_envelope(envelope, CFG.mouth_range_db))[0, 1] > 0.95
        assert np.corrcoef(mouth, envelope)[0, 1] > 0.8  # even against the raw (linear) envelope
        # lag 0: shifting by one frame must fit worse
        assert np.corrcoef(mouth[1:], envelope[:-1])[0, 1] < np.corrcoef(mouth, envelope)[0, 1]


def test_mouth_pixels_change_with_opening(world):
    out, summary = world
    for clip_id in summary.clip_ids:
        truth, video = _truth(out, clip_id), decode_video(out / f"{clip_id}.mp4")
        dark = _mouth_dark_pixels(video.frames, truth)
        assert np.corrcoef(dark, truth["mouth_open"])[0, 1] > 0.8


def test_mouth_moves_faster_than_4x_subsampling_can_follow(world):
    out, summary = world
    mouth = np.concatenate([np.array(_truth(out, c)["mouth_open"]) - 0.5 for c in summary.clip_ids])
    power = np.abs(np.fft.rfft(mouth)) ** 2
    freqs = np.fft.rfftfreq(len(mouth), 1 / 25)
    assert power[freqs > 25 / 8].sum() / power[1:].sum() > 0.2  # above the Nyquist rate of every-4th-frame


def test_stale_clips_are_removed(tmp_path):
    cfg = CFG.model_copy(update={"n_identities": 1, "clips_per_identity": 1, "duration_s": 0.4})
    (tmp_path / "id005_clip03.mp4").write_bytes(b"old")
    (tmp_path / "id005_clip03.truth.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    synthesize_world(cfg, tmp_path, progress=False)
    assert not (tmp_path / "id005_clip03.mp4").exists() and not (tmp_path / "id005_clip03.truth.json").exists()
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "id000_clip00.mp4").exists()


def test_world_config_rejects_odd_resolution():
    with pytest.raises(ValueError, match="even"):
        WorldConfig(resolution=65)
