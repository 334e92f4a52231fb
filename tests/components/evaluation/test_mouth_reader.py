"""The learned mouth reader reads blurred mouths, where the geometric measure fails; it round-trips through json."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from components.config import WorldConfig
from components.data.mouth_box import mouth_box_centre_size
from components.data.mouth_pixels import mouth_opening_from_pixels, pearson
from components.data.synthetic.world import make_clip
from components.data.windows import mouth_boxes
from components.evaluation.mouth_reader import MouthReader, fit_mouth_reader, mouth_crops


def _clips(identities: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cfg = WorldConfig(duration_s=1.6, speech="syllables")
    frames, boxes, opening = [], [], []
    for i in identities:
        clip = make_clip(cfg, i, 0)
        frames.append(clip.frames)
        boxes.append(mouth_boxes(clip.truth, len(clip.frames)))
        opening.append(np.asarray(clip.truth["mouth_open"], np.float32))
    return np.stack(frames), np.stack(boxes), np.stack(opening)


def _blur(videos: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([gaussian_filter(v.astype(np.float32), (0, sigma, sigma, 0)) for v in videos]).round().astype(np.uint8)


@pytest.fixture(scope="module")
def world():
    return _clips(range(0, 6)), _clips(range(100, 103))  # held-out identities


def test_reader_reads_blurred_mouths_of_unseen_identities(world):
    (train, train_box, train_open), (test, test_box, test_open) = world
    reader = fit_mouth_reader(train, train_box, train_open, recon_frames=_blur(train, 2.0))
    blurred = _blur(test, 2.0)
    assert reader.score(test, test_box, test_open) > 0.85
    assert reader.score(blurred, test_box, test_open) > 0.8
    # ... where the geometric measure has lost most of the signal (why the reader exists).
    geometric = []
    for video, box in zip(blurred, test_box):
        centre, size = mouth_box_centre_size(box)
        geometric.append(mouth_opening_from_pixels(video, centre, size))
    assert pearson(np.concatenate(geometric), test_open.ravel()) < reader.score(blurred, test_box, test_open) - 0.2


def test_reader_round_trips_and_refuses_other_files(tmp_path, world):
    (train, train_box, train_open), _ = world
    reader = fit_mouth_reader(train, train_box, train_open)
    reader.save(tmp_path / "reader.json")
    again = MouthReader.load(tmp_path / "reader.json")
    crops = mouth_crops(train[0], train_box[0])
    np.testing.assert_allclose(again.predict(crops), reader.predict(crops), rtol=1e-5, atol=1e-6)
    (tmp_path / "other.json").write_text('{"kind": "something-else"}')
    with pytest.raises(ValueError, match="other.json"):
        MouthReader.load(tmp_path / "other.json")


def test_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.random((400, 12)).astype(np.float32)
    w = rng.normal(size=12)
    reader = MouthReader.fit(x, x @ w + 0.3, alpha=1e-6)
    np.testing.assert_allclose(reader.predict(x), x @ w + 0.3, atol=1e-4)
