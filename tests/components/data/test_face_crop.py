"""The face crop on hand-made face tracks: smoothing, one square per clip, and every refusal with its frames."""

import numpy as np
import pytest

from components.data.face_crop import FaceCropParams, FaceTrackError, face_crop, frame_ranges


def track(n: int, x0: float = 100, y0: float = 60, side: float = 60, dx: float = 0.0) -> list[np.ndarray]:
    return [np.array([[x0 + dx * t, y0, side, side, 0.9]]) for t in range(n)]


def test_one_square_covers_every_frame_and_ignores_a_wrong_detection():
    faces = track(30, dx=2.0)
    faces[10] = np.array([[5.0, 5.0, 70.0, 70.0, 0.9]])  # one far-off box (a false detection)
    crop = face_crop(faces, 400, 300, FaceCropParams())
    assert crop.size >= 120  # scale 2 x the 60 px face
    for t, boxes in enumerate(track(30, dx=2.0)):
        x, y, w, h, _ = boxes[0]
        assert crop.x0 <= x and x + w <= crop.x0 + crop.size and crop.y0 <= y and y + h <= crop.y0 + crop.size
    assert crop.x0 > 50  # the single outlier at x=5 did not drag the square left


def test_crop_stays_inside_the_frame():
    crop = face_crop(track(10, x0=0, y0=0, side=80), 200, 160, FaceCropParams(scale=3.0))
    assert crop.x0 == 0 and crop.y0 == 0 and crop.size == 160


def test_missing_several_and_small_faces_are_refused_with_frame_ranges():
    faces = track(20)
    for t in range(5, 15):
        faces[t] = np.zeros((0, 5))
    with pytest.raises(FaceTrackError, match=r"face missing in 10 of 20 frames .*frames 5-14"):
        face_crop(faces, 400, 300, FaceCropParams())
    two = [np.vstack([b, b + [150, 0, -10, -10, 0]]) for b in track(20)]
    with pytest.raises(FaceTrackError, match=r"several faces \(up to 2\) in 20 of 20 frames"):
        face_crop(two, 400, 300, FaceCropParams())
    tiny_second = [np.vstack([b, [300, 10, 8, 8, 0.6]]) for b in track(20)]  # a face in a poster: ignored
    assert face_crop(tiny_second, 400, 300, FaceCropParams()).size >= 120
    with pytest.raises(FaceTrackError, match=r"face too small: median 10 px"):
        face_crop(track(20, side=10), 400, 300, FaceCropParams())


def test_frame_ranges():
    assert frame_ranges(np.array([0, 1, 1, 0, 1, 0, 0, 1, 1], bool)) == "1-2, 4, 7-8"
    assert frame_ranges(np.zeros(3, bool)) == "none"
