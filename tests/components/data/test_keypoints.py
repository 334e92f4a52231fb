import json
from pathlib import Path

import numpy as np
import pytest

from components.config import KeypointConfig
from components.data.keypoints import (
    CentreCrop,
    JsonSidecarExtractor,
    KeypointError,
    Keypoints,
    make_extractor,
    transform_keypoints,
)
from components.io.video import DecodedVideo

T, H, W = 6, 64, 80
LAYOUT = KeypointConfig().joints  # the default layout: the synthetic world's 10 joints
J = len(LAYOUT)


def _decoded(n_frames: int = T, fps: float = 25.0) -> DecodedVideo:
    return DecodedVideo(
        frames=np.zeros((n_frames, H, W, 3), np.uint8),
        timestamps=np.arange(n_frames) / fps,
        fps=fps,
        audio=None,
        sample_rate=None,
    )


def _sidecar(**overrides) -> dict:
    frames = [[[10.0 + t, 20.0 + j, 0.9] for j in range(J)] for t in range(T)]
    data = {"format": "talkalign-keypoints-v1", "fps": 25, "width": W, "height": H,
            "joints": list(LAYOUT), "frames": frames}  # fmt: skip
    data.update(overrides)
    return data


def _write(tmp_path: Path, content) -> Path:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # the extractor only needs the path
    text = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "clip.keypoints.json").write_text(text)
    return video


def test_reads_a_good_sidecar(tmp_path):
    video = _write(tmp_path, _sidecar())
    kp = make_extractor(KeypointConfig()).extract(video, _decoded())
    assert isinstance(kp, Keypoints) and kp.points.shape == (T, J, 3) and kp.points.dtype == np.float32
    assert (kp.width, kp.height) == (W, H) and kp.joints == LAYOUT
    assert kp.points[3, 2].tolist() == pytest.approx([13.0, 22.0, 0.9])


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "talkalign-keypoints-v1", "frames": [[[1, 2', "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        (_sidecar(format="openpose"), "format is 'openpose'"),
        ({k: v for k, v in _sidecar().items() if k != "joints"}, "missing field"),
        (_sidecar(joints=[*LAYOUT, "l_hip", "r_hip"]), r"joints are \[head, .*, r_hip\], but ingest.keypoints.joints is"),
        (_sidecar(width=128), "keypoints are for 128x64 frames, video is 80x64"),
        (_sidecar(fps=30), "30 fps, video at 25 fps"),
        (_sidecar(frames=_sidecar()["frames"][:4]), "4 keypoint frames, video has 6"),
        (_sidecar(frames=[[[1.0, 2.0]] * J] * T), "expected \\[T, 10, 3\\]"),
        (_sidecar(frames=[[[1.0, 2.0, 1.0]] * J] * (T - 1) + [[[1.0, 2.0, 1.0]] * (J - 1)]), r"not a \[T\]\[J\]"),
        (_sidecar(frames=[[["a", 2.0, 1.0]] * J] * T), "not a \\[T\\]\\[J\\]\\[3\\]"),
        (_sidecar(frames=[[[1.0, 2.0, 1.5]] * J] * T), "confidence outside"),
    ],
)
def test_malformed_sidecars_name_file_and_problem(tmp_path, content, message):
    video = _write(tmp_path, content)
    with pytest.raises(KeypointError, match=message) as info:
        JsonSidecarExtractor(LAYOUT).extract(video, _decoded())
    assert str(info.value).startswith(str(tmp_path / "clip.keypoints.json"))


def test_non_finite_values_are_located(tmp_path):
    data = json.dumps(_sidecar()).replace("[13.0, 24.0, 0.9]", "[NaN, 24.0, 0.9]")  # frame 3, joint 4
    video = _write(tmp_path, data)
    with pytest.raises(KeypointError, match="non-finite value at frame 3, joint 4"):
        JsonSidecarExtractor(LAYOUT).extract(video, _decoded())


def test_missing_sidecar(tmp_path):
    video = tmp_path / "lonely.mp4"
    with pytest.raises(KeypointError, match="lonely.keypoints.json: keypoint sidecar missing"):
        JsonSidecarExtractor(LAYOUT).extract(video, _decoded())


def test_sidecar_must_have_the_layout_in_params(tmp_path):
    """The synthetic world's own sidecar is read with the default layout; with another layout in params it is
    refused naming the file and both layouts; a sidecar written in that layout is read."""
    from components.config import WorldConfig, load_params
    from components.data.synthetic.world import make_clip, write_clip
    from components.io.video import decode_video

    world = WorldConfig(n_identities=1, clips_per_identity=1, duration_s=0.4, speech="syllables")
    clip = make_clip(world, 0, 0)
    write_clip(clip, tmp_path, world.fps, world.sample_rate)
    video = tmp_path / f"{clip.clip_id}.mp4"
    decoded = decode_video(video)
    kp = make_extractor(KeypointConfig()).extract(video, decoded)  # auto: the world's sidecar
    assert kp.joints == LAYOUT and kp.points.shape == (len(decoded.frames), J, 3)

    upper = ("head", "neck", "l_shoulder", "r_shoulder", "l_wrist", "r_wrist")
    with pytest.raises(KeypointError) as info:
        make_extractor(KeypointConfig(extractor="json_sidecar", joints=upper)).extract(video, decoded)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / clip.clip_id}.keypoints.json: the sidecar's joints are [{', '.join(LAYOUT)}]")
    assert f"but ingest.keypoints.joints is [{', '.join(upper)}]" in message and "synthetic-world clip" in message
    # The same names in another order are refused too: the order is pose.npy's joint axis.
    with pytest.raises(KeypointError, match="same joints in the same order"):
        JsonSidecarExtractor(LAYOUT[::-1]).extract(video, decoded)

    frames = [[[10.0 + t, 20.0 + j, 0.9] for j in range(len(upper))] for t in range(T)]
    own = _write(tmp_path, _sidecar(joints=list(upper), frames=frames))
    kp = make_extractor(KeypointConfig(joints=upper)).extract(own, _decoded())
    assert kp.points.shape == (T, 6, 3) and kp.joints == upper
    # The model follows the layout: params must say the skeleton's n_joints is its length.
    repo = Path(__file__).resolve().parents[3]
    params = load_params(repo / "params.yaml", {"ingest.keypoints.joints": list(upper),
                                                 "model.modulation.skeleton.n_joints": 6})  # fmt: skip
    assert params.validation.n_joints == params.model.modulation.skeleton.n_joints == 6


def test_params_refuse_a_layout_the_skeleton_does_not_match_or_mediapipe_cannot_measure():
    from components.config import ParamsError, load_params

    repo = Path(__file__).resolve().parents[3]
    with pytest.raises(ParamsError) as info:
        load_params(repo / "params.yaml", {"ingest.keypoints.joints": ["head", "neck"]})
    assert str(info.value) == (
        f"{repo / 'params.yaml'}: model.modulation.skeleton.n_joints is 10, but ingest.keypoints.joints lists 2 joints "
        "(head, neck): make them agree"
    )
    with pytest.raises(ParamsError, match=r"ingest.keypoints.joints: neck listed more than once"):
        load_params(repo / "params.yaml", {"ingest.keypoints.joints": ["neck", "neck"]})
    with pytest.raises(ParamsError, match=r"unknown key 'ingest.keypoints.n_joints' \(it follows 'ingest.keypoints.joints'"):
        load_params(repo / "params.yaml", {"ingest.keypoints.n_joints": 10})
    with pytest.raises(ValueError, match=r"ingest.keypoints.joints: mediapipe measures no joint named j0, hip; it knows head, "):
        make_extractor(KeypointConfig(extractor="mediapipe", joints=("head", "j0", "hip")))


def test_centre_crop_geometry():
    assert CentreCrop.of(80, 64) == CentreCrop(x0=8, y0=0, size=64)
    assert CentreCrop.of(64, 100) == CentreCrop(x0=0, y0=18, size=64)
    unit = CentreCrop.of(80, 64).to_unit([[8, 0], [72, 64], [40, 32]])
    np.testing.assert_allclose(unit, [[0, 0], [1, 1], [0.5, 0.5]])


def test_transform_follows_time_index_and_crop():
    points = np.zeros((T, 3, 3), np.float32)
    points[:, 0] = [[8 + 8 * t, 16, 1.0] for t in range(T)]  # joint 0 walks right one step per frame
    points[:, 1] = [40, 32, 0.7]  # the crop centre
    points[:, 2] = [2, 70, 0.8]  # left of the crop and below the frame
    kp = Keypoints(points, ("a", "b", "c"), width=W, height=H)
    out = transform_keypoints(kp, np.array([0, 0, 2, 5]))
    assert out.shape == (4, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [0, 0, 16 / 64, 40 / 64])  # source frames 0, 0, 2, 5
    np.testing.assert_allclose(out[:, 0, 1], 0.25)
    np.testing.assert_allclose(out[:, 1], [[0.5, 0.5, 0.7]] * 4, rtol=1e-6)
    # Outside the crop: clamped to the border, confidence 0.
    np.testing.assert_allclose(out[:, 2], [[0.0, 1.0, 0.0]] * 4)
    assert out[..., :2].min() >= 0 and out[..., :2].max() <= 1
