"""Lips and body of the synthetic world: the loudness-to-opening map and a skeleton that stays in frame."""

import numpy as np

from components.data.synthetic.motion import JOINTS, SILENCE_DBFS, animate_body, mouth_opening_from_envelope


def test_mouth_opening_maps_the_peak_to_open_and_silence_to_closed():
    envelope = np.array([1e-9, 10 ** (SILENCE_DBFS / 20), 0.01, 0.1, 0.5])
    opening = mouth_opening_from_envelope(envelope, range_db=30.0)
    assert opening.dtype == np.float32 and opening[-1] == 1.0 and opening[0] == 0.0
    assert np.all(np.diff(opening) >= 0)  # louder never closes the mouth
    assert mouth_opening_from_envelope(np.full(5, 1e-4)).max() == 0.0  # a silent clip stays closed


def test_body_is_deterministic_and_inside_the_frame():
    opening = (np.sin(np.arange(100) / 2.0) > 0).astype(np.float32)  # speech beats every ~12 frames
    a = animate_body(np.random.default_rng(3), opening, 25, 64)
    assert a.shape == (100, len(JOINTS), 2)
    assert np.array_equal(a, animate_body(np.random.default_rng(3), opening, 25, 64))
    assert a.min() >= 0.5 and a.max() <= 64 - 1.5
    head = a[:, JOINTS.index("head")]
    assert np.all(head[:, 1] < a[:, JOINTS.index("neck"), 1])  # the head stays above the neck
