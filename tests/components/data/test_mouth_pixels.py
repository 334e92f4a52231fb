"""Mouth opening from pixels: tracks the known opening of synthetic faces, raw and through mp4."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import WorldConfig
from components.data.synthetic.world import make_clip
from components.data.mouth_pixels import lip_sync_scores, mouth_opening_from_pixels, pearson
from components.io.video import decode_video, write_video

WORLD = WorldConfig(resolution=64, duration_s=1.2, speech="syllables", seed=11)


@pytest.fixture(scope="module")
def clips():
    return [make_clip(WORLD, identity, 0) for identity in range(3)]  # three faces: skin, hair, lips differ


def _measure(frames, truth):
    return mouth_opening_from_pixels(frames, truth["mouth_center_px"], truth["mouth_size_px"])


def test_tracks_the_true_opening_across_identities(clips):
    measured, truth = [], []
    for clip in clips:
        m = _measure(clip.frames, clip.truth)
        assert m.shape == (len(clip.frames),) and m.dtype == np.float32
        assert np.ptp(clip.truth["mouth_open"]) > 0.5  # the clip really opens and closes its mouth
        assert pearson(m, clip.truth["mouth_open"]) > 0.97
        measured.append(m)
        truth.append(clip.truth["mouth_open"])
    # Pooled over identities: the scale is the same for every face (an aspect ratio, not a colour count).
    assert pearson(np.concatenate(measured), np.concatenate(truth)) > 0.95


def test_survives_mp4_compression(clips, tmp_path):
    clip = clips[0]
    write_video(tmp_path / "clip.mp4", clip.frames, WORLD.fps, crf=28)  # harsher than the ingest's crf
    decoded = decode_video(tmp_path / "clip.mp4").frames
    assert np.abs(decoded.astype(int) - clip.frames).mean() > 0.5  # really lossy
    assert pearson(_measure(decoded, clip.truth), clip.truth["mouth_open"]) > 0.95


def test_frozen_or_missing_mouth_reads_no_motion(clips):
    clip = clips[1]
    n = len(clip.frames)
    frozen = np.repeat(clip.frames[:1], n, axis=0)
    still = np.repeat(np.asarray(clip.truth["mouth_center_px"][:1]), n, axis=0)
    assert np.ptp(mouth_opening_from_pixels(frozen, still, clip.truth["mouth_size_px"])) == 0
    # With the truth's moving box (the head nods) a frozen frame still reads almost constant.
    assert np.ptp(_measure(frozen, clip.truth)) < 0.05 * np.ptp(_measure(clip.frames, clip.truth))
    skin = np.asarray(clip.truth["identity_params"]["skin"], np.uint8)
    blank = np.broadcast_to(skin, clip.frames.shape).copy()  # no mouth at all
    assert (_measure(blank, clip.truth) == 0).all()


def test_lip_sync_scores():
    rng = np.random.default_rng(0)
    envelope = rng.random(50)
    perfect = lip_sync_scores(0.3 * envelope + 0.1, envelope)  # other scale and offset: affine fit removes them
    assert perfect["lip_corr"] == pytest.approx(1.0) and perfect["lip_err"] == pytest.approx(0.0, abs=1e-9)
    frozen = lip_sync_scores(np.full(50, 0.2), envelope)
    assert frozen["lip_corr"] == 0.0
    assert frozen["lip_err"] == pytest.approx(np.abs(envelope - envelope.mean()).mean())
    noisy = lip_sync_scores(envelope + rng.normal(0, 0.3, 50), envelope)
    assert 0 < noisy["lip_corr"] < 1 and 0 < noisy["lip_err"] < frozen["lip_err"]
    with pytest.raises(ValueError, match="T >= 2"):
        lip_sync_scores(np.zeros(3), np.zeros(4))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\[T,H,W,3\]"):
        mouth_opening_from_pixels(np.zeros((4, 8, 8)), np.zeros((4, 2)), [4, 2])
    with pytest.raises(ValueError, match="3 mouth centres for 4 frames"):
        mouth_opening_from_pixels(np.zeros((4, 8, 8, 3)), np.zeros((3, 2)), [4, 2])
    with pytest.raises(ValueError, match="finite"):
        mouth_opening_from_pixels(np.zeros((1, 8, 8, 3)), [[np.nan, 1.0]], [4, 2])
