"""Landmark metrics on windows made from a real photograph (matplotlib's grace_hopper.jpg) measured with the
real mediapipe worker: LMD of a clip against itself is 0 and grows with a shift of the mouth inside the frame;
the no-env / off paths report the metrics as not measured; lip_corr, HKC (the hand-presence score) and HKV on
hand-made landmarks."""

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from components.data.extractor_client import DEFAULT_PYTHON, ExtractorUnavailable
from components.evaluation.landmark_metrics import (
    METRICS,
    LandmarksInBackground,
    WindowLandmarks,
    hkc,
    hkv,
    landmark_scorer,
    lip_corr,
    lmd,
)
from components.evaluation.report import ReportInputs, render_report

needs_env = pytest.mark.skipif(not DEFAULT_PYTHON.is_file(), reason="`make setup` builds the mediapipe extractor env")
N, T, SIDE = 2, 6, 96


def windows(zoom: float = 1.0, dx: int = 0) -> np.ndarray:
    """uint8 [N, T, SIDE, SIDE, 3]: the portrait's head, optionally zoomed about its centre and shifted right."""
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    w, h = photo.size
    side = 0.75 * w / zoom
    cx, cy = w / 2 - dx * side / SIDE, 0.42 * h
    head = photo.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    frame = np.asarray(head.resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    return np.broadcast_to(frame, (N, T, SIDE, SIDE, 3)).copy()


@needs_env
def test_lmd_is_zero_against_itself_and_grows_with_the_mouth_moving():
    truth = windows()
    mel = np.random.default_rng(0).normal(size=(N, T, 4, 8)).astype(np.float32)
    scorer, unavailable = landmark_scorer("auto", truth, mel)
    assert unavailable == {} and scorer.extractor == "mediapipe-0.10.21"
    assert scorer.truth.lips_found.all()  # the face mesh finds the lips in every frame of the real photo
    itself = scorer.ground_truth()
    assert itself["lmd_mediapipe"] == pytest.approx(0.0, abs=1e-6)
    # A portrait: no hands. The hand model may still look where the pose guesses a wrist and score it ~0; HKV
    # (needs found hands) is left out.
    assert 0.0 <= itself["hkc_mediapipe"] < 0.01 and "hkv_mediapipe" not in itself
    assert not scorer.truth.hands_found.any() and scorer.truth.hand_scores.max() < 0.5
    assert "lip_corr_mediapipe" in itself  # a still photo: a number, but no claim about its value
    shifted = scorer(windows(dx=3))
    zoomed = scorer(windows(zoom=1.25))
    # Centring removes most of a shift; a zoom changes the lips' shape in pixels, so it costs more.
    assert 0 < shifted["lmd_mediapipe"] < zoomed["lmd_mediapipe"]
    assert zoomed["lmd_mediapipe"] > 1.0
    assert set(scorer.sources()) == set(METRICS) and "mediapipe-0.10.21 (face mesh" in scorer.sources()["lmd_mediapipe"]



@needs_env
def test_background_measures_land_in_their_own_dicts_in_order_and_match_the_direct_call():
    """Two submissions while the caller goes on (and changes its frames: the submission copied them); finish()
    writes each result into the dict it came with, equal to a direct call."""
    truth = windows()
    mel = np.random.default_rng(0).normal(size=(N, T, 4, 8)).astype(np.float32)
    scorer, _ = landmark_scorer("auto", truth, mel)
    background = LandmarksInBackground(scorer)
    shifted, zoomed = windows(dx=3), windows(zoom=1.25)
    first, second = {"psnr": 1.0}, {}
    background.submit(shifted, first)
    background.submit(zoomed, second)
    shifted[:] = 0  # what the caller does with its array afterwards does not reach the measurement
    assert "lmd_mediapipe" not in first  # nothing lands before finish()
    background.finish()
    assert first == {"psnr": 1.0, **scorer(windows(dx=3))} and second == scorer(windows(zoom=1.25))
    assert first["lmd_mediapipe"] < second["lmd_mediapipe"]


def test_a_failing_background_measure_is_raised_by_finish():
    class Failing:
        def __call__(self, video):
            raise RuntimeError("worker broke")

    background = LandmarksInBackground(Failing())
    background.submit(np.zeros((1, 2, 4, 4, 3), np.uint8), {})
    with pytest.raises(RuntimeError, match="worker broke"):
        background.finish()

def test_missing_env_and_off_report_every_metric_as_not_measured(tmp_path):
    truth, mel = np.zeros((1, 3, 16, 16, 3), np.uint8), np.zeros((1, 3, 4, 8), np.float32)
    scorer, why = landmark_scorer("auto", truth, mel, python=str(tmp_path / "nope" / "python"))
    assert scorer is None and set(why) == set(METRICS) and all("run `make setup`" in r for r in why.values())
    scorer, why = landmark_scorer("off", truth, mel)
    assert scorer is None and "turned off" in why["hkc_mediapipe"]
    with pytest.raises(ExtractorUnavailable, match="make setup"):
        landmark_scorer("on", truth, mel, python=str(tmp_path / "nope" / "python"))


def marks(opening: np.ndarray, hands: np.ndarray, hands_found: np.ndarray, scores: np.ndarray | None = None) -> WindowLandmarks:
    n, t = opening.shape
    scores = np.where(hands_found, 0.9, 0.0) if scores is None else scores
    return WindowLandmarks("mediapipe-test", opening, np.zeros((n, t, 4, 2)), np.ones((n, t), bool), hands, hands_found,
                           scores)  # fmt: skip


def test_lip_corr_hkc_and_hkv_on_hand_made_landmarks():
    rng = np.random.default_rng(1)
    envelope = rng.normal(size=(3, 9))
    hands = np.zeros((3, 9, 2, 21, 2))
    found = np.zeros((3, 9, 2), bool)
    m = marks(0.3 * envelope + 5.0 * np.arange(3)[:, None], hands, found)  # per-window offsets are centred away
    assert lip_corr(m, envelope) == pytest.approx(1.0)
    assert lip_corr(marks(-m.opening, hands, found), envelope) == pytest.approx(-1.0)
    assert hkc(m) == 0.0 and np.isnan(hkv(m))
    found[:, :, 0] = True  # the left hand everywhere, moving along x by 0.1 per frame
    hands[:, :, 0, :, 0] = 0.1 * np.arange(9)[None, :, None]
    m = marks(m.opening, hands, found)
    assert hkc(m) == pytest.approx(0.45)  # HKC is the mean presence score: 0.9 for one hand, 0 for the other
    scores = np.zeros((3, 9, 2))
    scores[:, 1:, 1] = np.linspace(0.1, 0.8, 8)  # the right hand's model ran, unsure, and found nothing
    scores[:, 0, :] = 1.0  # frame 0 (the given reference) does not count
    assert hkc(marks(m.opening, hands, found, scores)) == pytest.approx(0.45 / 2)
    assert hkv(m) == pytest.approx(np.var(0.1 * np.arange(1, 9)) / 2)  # x varies, y does not: mean over the axes
    assert lmd(m, m) == 0.0


def test_report_says_which_extractor_produced_each_metric():
    inputs = ReportInputs(results={"phase2": {"sync_c": 1.0, "lmd_mediapipe": 2.5}}, unavailable={},
                          sync_expert="x", n_windows=1, sampling="s",
                          sources={"sync_c": "own expert", "lmd_mediapipe": "mediapipe-0.10.21 (face mesh)"})  # fmt: skip
    text = render_report(inputs, "reports/report.md")
    assert "### Which extractor produced each metric" in text
    assert "| `lmd_mediapipe` | mediapipe-0.10.21 (face mesh) |" in text and "LMD (mediapipe)" in text
