"""The mouth box helper inverts windows.mouth_boxes: centre and truth-style size come back from a padded box."""

from __future__ import annotations

import numpy as np

from components.config import WorldConfig
from components.data.mouth_box import mouth_box_centre_size
from components.data.synthetic.world import make_clip
from components.data.windows import MOUTH_BOX_SCALE, mouth_boxes


def test_centre_and_size_invert_the_padded_boxes():
    truth = {"mouth_center_px": [[10.0, 20.0], [12.0, 21.0]], "mouth_size_px": [[8.0, 4.0], [6.0, 2.0]]}
    centre, size = mouth_box_centre_size(mouth_boxes(truth, 2))
    np.testing.assert_allclose(centre, truth["mouth_center_px"], atol=1e-5)
    np.testing.assert_allclose(size, truth["mouth_size_px"], atol=1e-5)
    box = np.array([0.0, 0.0, MOUTH_BOX_SCALE[0] * 10, MOUTH_BOX_SCALE[1] * 10])  # one flat box is one frame
    c, s = mouth_box_centre_size(box)
    assert c.shape == s.shape == (1, 2)
    np.testing.assert_allclose(s[0], [10.0, 10.0])


def test_the_world_mouth_comes_back_at_its_size():
    clip = make_clip(WorldConfig(resolution=32, duration_s=0.2, speech="syllables", seed=5), 0, 0)
    box = mouth_boxes(clip.truth, len(clip.frames))
    centre, size = mouth_box_centre_size(box)
    np.testing.assert_allclose(centre, np.asarray(box[:, :2] + box[:, 2:]) / 2)
    np.testing.assert_allclose(size[0], [12.8, 6.4], atol=1e-3)  # the world's mouth_size_px at 32 px
    assert np.isnan(mouth_box_centre_size(mouth_boxes(None, 3))[0]).all()  # no truth: NaN, not a made-up mouth
