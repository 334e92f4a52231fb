"""Identities of the synthetic world: seeded, and a face built around the configured mouth width."""

import numpy as np

from components.data.synthetic.identity import draw_identity, face_geometry


def test_identity_is_seeded_and_the_face_fits_the_mouth():
    a = draw_identity(np.random.default_rng(5), "id005")
    assert a == draw_identity(np.random.default_rng(5), "id005")
    assert a != draw_identity(np.random.default_rng(6), "id005")
    geo = face_geometry(64, 0.4, a)
    assert geo.mouth_w == 0.4 * 64 and geo.face_w * 0.6 == geo.mouth_w
    assert geo.face_h == geo.face_w * a.face_aspect and 0 < geo.mouth_h_min < geo.mouth_h_max
