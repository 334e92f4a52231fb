import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from components.config import KeypointConfig
from components.data.windows import normalise_mel
from components.inference.animate import (
    AnimateInputError,
    animate,
    animate_files,
    featurizer_for,
    generate_windows,
    prepare_inputs,
    stitch,
    window_starts,
)
from components.io.audio import log_mel
from components.io.video import decode_video, write_video
from components.model.bundle import ModelBundle, save_bundle
from components.model.loading import load_bundle
from flows.cli import main as cli_main

FPS, RES, SR = 25, 64, 16_000
STEPS = 2  # enough to exercise the sampler; quality is not under test


def speech_like(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Syllable-rate bursts of a harmonic tone: loudness the audio features can see."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None)
    tone = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t)
    return (0.3 * envelope * tone).astype(np.float32)


def portrait(height: int = 80, width: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], axis=-1)
    return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, make_tiny_bundle) -> Path:
    return save_bundle(tmp_path_factory.mktemp("model") / "bundle", make_tiny_bundle("wav2vec"))


@pytest.fixture(scope="module")
def bundle(bundle_dir) -> ModelBundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def skeleton_bundle(tmp_path_factory, make_tiny_bundle) -> ModelBundle:
    return load_bundle(save_bundle(tmp_path_factory.mktemp("sk") / "bundle", make_tiny_bundle("mel", skeleton=True)))


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    image = tmp_path / "ref.png"
    Image.fromarray(portrait()).save(image)
    audio = tmp_path / "speech.wav"
    stereo = np.stack([speech_like(1.5, 22_050), speech_like(1.5, 22_050, seed=1)], axis=1)
    sf.write(audio, stereo, 22_050)  # stereo at another rate: downmixed and resampled on the way in
    return {"image": image, "audio": audio}


def keypoints_json(path: Path, width: int, height: int, n_frames: int, n_joints: int = 10, fps: float = 25.0,
                   joints: list[str] | None = None) -> Path:
    """A pose in the default joint layout (the tiny bundles' ingest.keypoints.joints) unless `joints` says otherwise."""
    joints = joints or list(KeypointConfig().joints)[:n_joints] + [f"j{i}" for i in range(len(KeypointConfig().joints), n_joints)]
    t = np.arange(n_frames)[:, None] / fps
    x = width * (0.2 + 0.6 * np.arange(n_joints) / max(1, n_joints - 1) + 0.05 * np.sin(2 * np.pi * t))
    y = np.broadcast_to(height * (0.3 + 0.4 * (np.arange(n_joints) % 3) / 2), x.shape)
    frames = np.stack([x, y, np.ones_like(x)], axis=-1)
    data = {"format": "talkalign-keypoints-v1", "fps": fps, "width": width, "height": height,
            "joints": joints, "frames": frames.tolist()}
    path.write_text(json.dumps(data))
    return path


def test_window_plan_overlaps_one_frame():
    assert window_starts(1, 17) == [0]
    assert window_starts(17, 17) == [0]
    assert window_starts(18, 17) == [0, 16]
    assert window_starts(38, 17) == [0, 16, 32]  # 1.5 s at 25 fps: frames 0-16, 16-32, 32-48, trimmed to 38
    assert window_starts(49, 17) == [0, 16, 32]


def test_animate_stitches_windows_through_shared_seam_frames(bundle):
    image, audio = portrait(), speech_like(1.5)
    inputs = prepare_inputs(bundle, image, audio, SR)
    assert inputs.n_frames == round(1.5 * FPS) == 38
    assert inputs.audio_feats.shape == (49, 2, 32)  # padded to three whole windows
    assert inputs.reference.shape == (RES, RES, 3)

    windows = generate_windows(bundle, inputs, steps=STEPS, seed=7)
    assert [w.start for w in windows] == [0, 16, 32]
    assert all(w.frames.shape == (17, RES, RES, 3) and w.frames.dtype == np.uint8 for w in windows)
    assert np.array_equal(windows[0].condition, inputs.reference)
    for prev, cur in zip(windows, windows[1:]):
        assert np.array_equal(cur.condition, prev.frames[-1])  # conditioned on the previous window's last frame

    video = stitch(windows, inputs.n_frames)
    assert video.shape == (38, RES, RES, 3)
    assert np.array_equal(video[16], windows[0].frames[16]) and np.array_equal(video[17], windows[1].frames[1])
    assert np.array_equal(video[32], windows[1].frames[16]) and np.array_equal(video[37], windows[2].frames[5])
    # animate() is exactly this pipeline, and deterministic for a seed.
    assert np.array_equal(animate(bundle, image, audio, SR, steps=STEPS, seed=7), video)


def test_deterministic_for_a_seed_and_driven_by_audio(bundle):
    image, audio = portrait(), speech_like(0.5)
    first = animate(bundle, image, audio, SR, steps=STEPS, seed=3)
    assert first.shape == (round(0.5 * FPS), RES, RES, 3)
    assert np.array_equal(first, animate(bundle, image, audio, SR, steps=STEPS, seed=3))
    assert not np.array_equal(first, animate(bundle, image, audio, SR, steps=STEPS, seed=4))
    silent = animate(bundle, image, np.zeros_like(audio), SR, steps=STEPS, seed=3)
    assert not np.array_equal(first, silent)  # the audio condition reaches the frames


def test_features_are_the_training_features(skeleton_bundle):
    featurizer = featurizer_for(skeleton_bundle)
    audio = speech_like(1.0)
    feats = featurizer(audio, SR, 25, 33)
    # What ingest stores (log_mel in float16) through the training windows' own normalisation.
    stored = log_mel(audio, SR, 40, FPS, 25).astype(np.float16)
    assert np.array_equal(feats[:25], normalise_mel(stored))
    assert np.all(feats[25:] == normalise_mel(np.float16(-5.0)))  # past the audio: silence


def test_pose_file_conditions_a_skeleton_model(skeleton_bundle, files, tmp_path):
    out = tmp_path / "posed.mp4"
    kp = keypoints_json(tmp_path / "kp.json", 100, 80, n_frames=20)  # shorter than the audio: last pose held
    animate_files(files["image"], files["audio"], out, skeleton_bundle, pose_path=kp, steps=STEPS, seed=1)
    posed = decode_video(out).frames
    animate_files(files["image"], files["audio"], tmp_path / "null.mp4", skeleton_bundle, steps=STEPS, seed=1)
    assert posed.shape == (38, RES, RES, 3)
    assert not np.array_equal(posed, decode_video(tmp_path / "null.mp4").frames)  # the pose reaches the frames
    renamed = keypoints_json(tmp_path / "renamed.json", 100, 80, n_frames=20, joints=[f"j{i}" for i in range(10)])
    with pytest.raises(AnimateInputError, match=r"renamed.json: the pose lists joints \[j0, .*the model was trained on \[head, neck"):
        animate_files(files["image"], files["audio"], tmp_path / "x.mp4", skeleton_bundle, pose_path=renamed, steps=STEPS)


def test_animate_files_writes_mp4_with_muxed_audio(bundle_dir, files, tmp_path):
    out = animate_files(files["image"], files["audio"], tmp_path / "out" / "talk.mp4", bundle_dir, steps=STEPS)
    decoded = decode_video(out)
    assert decoded.frames.shape == (38, RES, RES, 3)
    assert decoded.fps == pytest.approx(FPS)
    assert decoded.sample_rate == SR
    assert len(decoded.audio) / SR == pytest.approx(38 / FPS, abs=0.03)
    assert np.abs(decoded.audio).max() > 0.1  # the speech, not silence


def test_audio_from_a_video_container(bundle, tmp_path):
    clip = tmp_path / "speech.mp4"
    write_video(clip, np.zeros((10, 16, 16, 3), np.uint8), FPS, audio=speech_like(0.4, 44_100), sample_rate=44_100)
    image = tmp_path / "ref.jpg"
    Image.fromarray(portrait(64, 48)).save(image)
    out = animate_files(image, clip, tmp_path / "out.mp4", bundle, steps=1, guidance=1.0)
    assert decode_video(out).frames.shape[0] == 10


def test_input_errors_name_the_file(bundle, skeleton_bundle, files, tmp_path):
    image, audio, out = files["image"], files["audio"], tmp_path / "out.mp4"

    def fails(match: str, **kwargs):
        args = {"image_path": image, "audio_path": audio, "out_path": out, "model": bundle, "steps": 1} | kwargs
        with pytest.raises(AnimateInputError, match=match):
            animate_files(**args)

    not_image = tmp_path / "face.png"
    not_image.write_text("this is not a picture")
    fails(r"face.png: cannot read image", image_path=not_image)
    fails(r"missing.png: no such image file", image_path=tmp_path / "missing.png")

    silent_video = tmp_path / "mute.mp4"
    write_video(silent_video, np.zeros((5, 16, 16, 3), np.uint8), FPS)
    fails(r"mute.mp4: no audio stream", audio_path=silent_video)
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF....WAVEjunk" * 10)
    fails(r"noise.wav: cannot read audio", audio_path=garbage)
    low_rate = tmp_path / "low.wav"
    sf.write(low_rate, speech_like(0.5, 2000), 2000)
    fails(r"low.wav: cannot resample from 2000 Hz", audio_path=low_rate)
    with pytest.raises(AnimateInputError, match="cannot resample from 0 Hz"):
        animate(bundle, portrait(), speech_like(0.5), 0)

    fails(r"kp.json: the model .*bundle has no skeleton conditioning",
          pose_path=keypoints_json(tmp_path / "kp.json", 100, 80, 5))
    fails(r"kp9.json: 9 joints, expected 10", model=skeleton_bundle,
          pose_path=keypoints_json(tmp_path / "kp9.json", 100, 80, 5, n_joints=9))
    flat = json.loads((tmp_path / "kp.json").read_text())
    flat["frames"] = [[[1.0, 2.0]] * 10] * 5  # x, y without confidence
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    fails(r"flat.json: 'frames' has shape \(5, 10, 2\), expected \[T, 10, 3\]", model=skeleton_bundle,
          pose_path=tmp_path / "flat.json")
    fails(r"big.json: keypoints are for 200x160 pixels, the image is 100x80", model=skeleton_bundle,
          pose_path=keypoints_json(tmp_path / "big.json", 200, 160, 5))

    (tmp_path / "not_a_model").mkdir()
    fails(r"not_a_model: not a talkalign model", model=tmp_path / "not_a_model")
    fails(r"out.gif: output must end in one of \.mp4", out_path=tmp_path / "out.gif")
    assert not out.exists()  # nothing half-written


def test_cli_animate_end_to_end(bundle_dir, files, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    code = cli_main(["animate", "--image", str(files["image"]), "--audio", str(files["audio"]),
                     "--model", str(bundle_dir), "-o", str(out), "--steps", "2", "--guidance", "1.5", "--seed", "5",
                     "--prompt", "a calm speaker", "--crop", "none"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert decode_video(out).frames.shape == (38, RES, RES, 3)

    code = cli_main(["animate", "--image", str(files["image"]), "--audio", str(files["audio"]),
                     "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "x.mp4"), "--crop", "none"])
    assert code == 1
    assert "nope: no such file or directory" in capsys.readouterr().err
