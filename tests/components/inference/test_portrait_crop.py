"""The animate portrait crop on a real photograph (matplotlib's grace_hopper.jpg) with the real mediapipe
worker: a wide margin is cropped to the face, two faces and no face are refused with clear messages, and
`--crop none` gives exactly today's centre-square video; a --pose goes through the same crop as the image."""

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from components.config import KeypointConfig
from components.data.extractor_client import DEFAULT_PYTHON
from components.inference.animate import AnimateInputError, animate_files, load_pose_file
from components.inference.portrait_crop import PortraitCropError, crop_portrait
from components.io.video import decode_video
from components.model.bundle import save_bundle
from flows.cli import main as cli_main

needs_env = pytest.mark.skipif(not DEFAULT_PYTHON.is_file(), reason="`make setup` builds the mediapipe extractor env")


def photo(height: int) -> np.ndarray:
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return np.asarray(image.resize((round(image.width * height / image.height), height)))


def wide_margin() -> np.ndarray:
    """A 720x300 landscape: grey, with the portrait (220 px tall) near the right edge."""
    canvas = np.full((300, 720, 3), 120, np.uint8)
    person = photo(220)
    canvas[50:270, 480 : 480 + person.shape[1]] = person
    return canvas


@needs_env
def test_wide_margin_photo_is_cropped_around_the_face():
    image = wide_margin()
    out = crop_portrait(image, "wide.png")
    x, y, w, h, score = out.face
    crop = out.crop
    assert score > 0.5 and 480 < x < x + w < 480 + 170 and 50 < y  # the detector found the pasted face
    assert crop.x0 <= x and x + w <= crop.x0 + crop.size and crop.y0 <= y and y + h <= crop.y0 + crop.size
    assert crop.x0 > 300  # far from the centre square (x0 = 210)
    assert 1.5 * max(w, h) <= crop.size <= 300 and out.image.shape == (crop.size, crop.size, 3)
    np.testing.assert_array_equal(out.image, image[crop.y0 : crop.y0 + crop.size, crop.x0 : crop.x0 + crop.size])


@needs_env
def test_two_faces_and_no_face_are_refused_with_the_file_named():
    half = photo(240)
    two = np.concatenate([half, half[:, ::-1]], axis=1)
    with pytest.raises(PortraitCropError, match=r"^twins\.png: 2 faces found \(.*\): crop the photo to one person, or --crop none$"):
        crop_portrait(two, "twins.png")
    wall = np.full((200, 300, 3), 120, np.uint8)
    wall[:, 150:] = (40, 90, 150)
    with pytest.raises(PortraitCropError, match=r"^wall\.png: no face found .*--crop none"):
        crop_portrait(wall, "wall.png")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, make_tiny_bundle):
    root = tmp_path_factory.mktemp("portrait")
    Image.fromarray(wide_margin()).save(root / "wide.png")
    t = np.arange(9600) / 16000  # 0.6 s: one window
    sf.write(root / "speech.wav", (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32), 16000)
    return {"root": root, "model": save_bundle(root / "bundle", make_tiny_bundle("mel"))}


@needs_env
def test_cli_crops_the_face_and_crop_none_is_todays_centre_square(inputs, capsys):
    root, model = inputs["root"], inputs["model"]
    args = ["animate", "--image", str(root / "wide.png"), "--audio", str(root / "speech.wav"), "--model", str(model),
            "--steps", "2", "--seed", "3"]  # fmt: skip
    assert cli_main([*args, "-o", str(root / "face.mp4")]) == 0
    # The face crop is the same video as animating the cropped square itself with no crop.
    square = crop_portrait(np.asarray(Image.open(root / "wide.png")), "wide.png").image
    Image.fromarray(square).save(root / "square.png")
    animate_files(root / "square.png", root / "speech.wav", root / "square.mp4", model, steps=2, seed=3)
    face, direct = decode_video(root / "face.mp4").frames, decode_video(root / "square.mp4").frames
    assert np.abs(face.astype(int) - direct.astype(int)).mean() < 1.0  # same input; h264 re-encode only
    # --crop none: the API's default, today's centre square.
    assert cli_main([*args, "-o", str(root / "none.mp4"), "--crop", "none"]) == 0
    animate_files(root / "wide.png", root / "speech.wav", root / "today.mp4", model, steps=2, seed=3)
    none, today = decode_video(root / "none.mp4").frames, decode_video(root / "today.mp4").frames
    assert np.abs(none.astype(int) - today.astype(int)).mean() < 1.0


def pose_json(path, width: int, height: int, xy: np.ndarray) -> str:
    """A talkalign-keypoints-v1 file of xy [T, J, 2] (pixels of a width x height image), confidence 1."""
    frames = np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1)
    path.write_text(json.dumps({"format": "talkalign-keypoints-v1", "fps": 25, "width": width, "height": height,
                                "joints": list(KeypointConfig().joints)[: xy.shape[1]], "frames": frames.tolist()}))  # fmt: skip
    return str(path)


@needs_env
def test_pose_follows_the_face_crop(inputs, make_tiny_bundle):
    """--pose is in the photo's pixels; with --crop face it goes through the same translate + scale as the image,
    so it is the same pose as one drawn on the cropped square itself."""
    root = inputs["root"]
    model = save_bundle(root / "skeleton_bundle", make_tiny_bundle("mel", skeleton=True))
    image = np.asarray(Image.open(root / "wide.png"))
    crop = crop_portrait(image, "wide.png").crop
    Image.fromarray(image[crop.y0 : crop.y0 + crop.size, crop.x0 : crop.x0 + crop.size]).save(root / "square.png")
    # Ten joints on a grid over the crop, swaying over 5 frames, one joint left of the crop (outside it).
    t = np.arange(5)[:, None]
    u = np.broadcast_to(np.linspace(0.1, 0.9, 10), (5, 10)) + 0.02 * np.sin(t)
    v = np.broadcast_to(0.2 + 0.6 * (np.arange(10) % 3) / 2, (5, 10))
    square_xy = np.stack([u, v], axis=-1) * crop.size
    square_xy[:, 0, 0] = -20.0  # joint 0 lies outside the square: confidence 0 either way
    photo_xy = square_xy + (crop.x0, crop.y0)
    in_photo = pose_json(root / "pose_photo.json", image.shape[1], image.shape[0], photo_xy)
    in_square = pose_json(root / "pose_square.json", crop.size, crop.size, square_xy)

    mapped = load_pose_file(Path(in_photo), 10, (image.shape[1], image.shape[0]), 25, 5, crop)
    np.testing.assert_allclose(mapped[:, 1:, :2], np.stack([u, v], axis=-1)[:, 1:], atol=1e-5)
    assert (mapped[:, 0, 2] == 0).all() and (mapped[:, 1:, 2] == 1).all()
    centre = load_pose_file(Path(in_photo), 10, (image.shape[1], image.shape[0]), 25, 5)  # the old behaviour
    assert np.abs(centre[:, 1:, 0] - mapped[:, 1:, 0]).max() > 0.2  # the centre square would misplace it

    args = ["animate", "--audio", str(root / "speech.wav"), "--model", str(model), "--steps", "2", "--seed", "3"]
    assert cli_main([*args, "--image", str(root / "wide.png"), "--pose", in_photo, "-o", str(root / "pf.mp4")]) == 0
    assert cli_main([*args, "--image", str(root / "square.png"), "--crop", "none", "--pose", in_square,
                     "-o", str(root / "ps.mp4")]) == 0  # fmt: skip
    via_crop, direct = decode_video(root / "pf.mp4").frames, decode_video(root / "ps.mp4").frames
    assert np.abs(via_crop.astype(int) - direct.astype(int)).mean() < 0.5  # same image, same pose (h264 only)
    # ...and the comparison can tell poses apart: the same pose shifted by 30% of the square is another video.
    shifted = pose_json(root / "pose_shifted.json", crop.size, crop.size, square_xy + 0.3 * crop.size)
    assert cli_main([*args, "--image", str(root / "square.png"), "--crop", "none", "--pose", shifted,
                     "-o", str(root / "px.mp4")]) == 0  # fmt: skip
    other = decode_video(root / "px.mp4").frames
    assert np.abs(other.astype(int) - direct.astype(int)).mean() > 3 * np.abs(via_crop.astype(int) - direct.astype(int)).mean()


def test_unknown_crop_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(AnimateInputError, match="crop must be 'face' or 'none'"):
        animate_files(tmp_path / "a.png", tmp_path / "a.wav", tmp_path / "o.mp4", tmp_path, crop="centre")
