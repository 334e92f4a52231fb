"""The VAE's image corpus: deterministic stills of people no world identity shares, with boxes on their mouths."""

import numpy as np
import pytest

from components.config import WorldConfig
from components.data.synthetic.image_corpus import render_image_corpus
from components.data.synthetic.world import make_clip


def test_stills_are_deterministic_and_sized():
    a = render_image_corpus(3, 4, 64, seed=1)
    b = render_image_corpus(3, 4, 64, seed=1)
    assert a.frames.shape == (12, 64, 64, 3) and a.frames.dtype == np.uint8 and a.mouth_box.shape == (12, 4)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.mouth_box, b.mouth_box)
    assert not np.array_equal(a.frames, render_image_corpus(3, 4, 64, seed=2).frames)


def test_no_corpus_person_is_a_world_person_even_with_the_worlds_seed():
    world = WorldConfig(n_identities=2, clips_per_identity=1, speech="syllables", seed=0)
    corpus = render_image_corpus(2, 1, 64, seed=world.seed)
    for i in range(world.n_identities):
        background = make_clip(world, i, 0).frames[0, 0, 0]  # the top-left pixel is background
        assert not any(np.array_equal(background, still[0, 0]) for still in corpus.frames)


def test_mouth_boxes_hold_the_mouth():
    """The box is on the mouth: an open mouth darkens the box (its interior is dark) more than the frame."""
    corpus = render_image_corpus(6, 8, 64, seed=0)
    inside, outside = [], []
    for frame, (x0, y0, x1, y1) in zip(corpus.frames, corpus.mouth_box):
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        box = frame[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)].astype(float)
        inside.append(box.mean())
        outside.append(frame.astype(float).mean())
    assert np.mean(inside) < np.mean(outside)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="frames per identity"):
        render_image_corpus(2, 0, 64, seed=0)
