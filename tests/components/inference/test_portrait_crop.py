"""The animate portrait crop on a real photograph (matplotlib's grace_hopper.jpg) with the real mediapipe
worker: a wide margin is cropped to the face, two faces and no face are refused with clear messages, and
`--crop none` gives exactly today's centre-square video."""

import matplotlib.cbook
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from components.data.extractor_client import DEFAULT_PYTHON
from components.inference.animate import AnimateInputError, animate_files
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


def test_face_crop_with_pose_or_unknown_crop_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(AnimateInputError, match="pose.json: --pose is in the uncropped image's pixels"):
        animate_files(tmp_path / "a.png", tmp_path / "a.wav", tmp_path / "o.mp4", tmp_path, pose_path=tmp_path / "pose.json", crop="face")
    with pytest.raises(AnimateInputError, match="crop must be 'face' or 'none'"):
        animate_files(tmp_path / "a.png", tmp_path / "a.wav", tmp_path / "o.mp4", tmp_path, crop="centre")
