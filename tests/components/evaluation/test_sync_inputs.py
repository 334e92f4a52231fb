"""What the SyncNet sees: MFCC windows at 100 Hz aligned with video frames, and crops around the mouth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dct

from components.evaluation.sync_inputs import (
    audio_windows,
    lip_windows,
    mfcc_from_log_mel,
    mfcc_psf,
    mouth_crops,
    n_audio_windows,
)
from components.evaluation.syncnet import SyncNetSpec

GREY = SyncNetSpec(width=0.125, lip_channels=1, crop_size=56, crop_scale=1.0, crop_mouth_y=0.5, pixels="unit", mfcc="log_mel")


def test_mfcc_from_log_mel_is_the_dct_of_the_normalised_log_mel():
    rng = np.random.default_rng(0)
    mel = rng.uniform(-5, 0, size=(6, 4, 40)).astype(np.float32)
    mfcc = mfcc_from_log_mel(mel)
    assert mfcc.shape == (24, 13)  # 4 steps per video frame
    expected = dct((mel[2, 1] + 3.0) / 2.0, type=2, norm="ortho")[:13]  # frame 2, step 1 -> row 9
    np.testing.assert_allclose(mfcc[9], expected, rtol=1e-5, atol=1e-5)
    flat = mfcc_from_log_mel(np.full((2, 4, 40), -1.0, np.float32))  # a flat spectrum: only c0
    assert np.abs(flat[:, 1:]).max() < 1e-5 and np.abs(flat[:, 0]).min() > 0.1


def test_psf_mfcc_steps_are_100_hz_with_log_energy_in_c0():
    sr, n_frames = 16000, 10
    audio = np.zeros(int(sr * n_frames / 25), np.float32)
    audio[int(0.2 * sr) : int(0.2 * sr) + 80] = 0.5  # a click at 0.2 s
    mfcc = mfcc_psf(audio, sr, n_frames)
    assert mfcc.shape == (40, 13)
    assert 17 <= int(np.argmax(mfcc[:, 0])) <= 20  # 25 ms frames every 10 ms starting at 0.18 .. 0.2 s see it
    # c0 is the log of the frame's power spectrum energy (int16 scale, pre-emphasised, /NFFT), as the library.
    signal = audio.astype(np.float64) * 32768
    emphasised = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    frame = emphasised[20 * 160 : 20 * 160 + 400]
    energy = (np.abs(np.fft.rfft(frame, 512)) ** 2 / 512).sum()
    assert mfcc[20, 0] == pytest.approx(np.log(energy), rel=1e-5)


def test_audio_windows_start_four_steps_per_video_frame():
    mfcc = np.arange(40 * 13, dtype=np.float32).reshape(40, 13)  # row k holds values 13k .. 13k+12
    windows = audio_windows(mfcc, first=2, count=3)
    assert windows.shape == (3, 1, 13, 20)
    assert windows[0, 0, 0, 0] == mfcc[8, 0] and windows[2, 0, 5, 19] == mfcc[4 * 4 + 19, 5]
    assert n_audio_windows(40) == 6  # frames 0..5: the last window is steps 20..39
    with pytest.raises(ValueError, match="outside"):
        audio_windows(mfcc, first=4, count=3)


def _frames_with_square(n: int, centre: tuple[float, float], half: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    x, y = centre
    frames[:, int(y - half) : int(y + half), int(x - half) : int(x + half)] = (200, 60, 20)
    box = np.tile([x - 2 * half, y - 2 * half, x + 2 * half, y + 2 * half], (n, 1)).astype(np.float32)
    return frames, box


def test_mouth_crops_follow_the_box():
    a_frames, a_box = _frames_with_square(2, (20.0, 30.0))
    b_frames, b_box = _frames_with_square(2, (40.0, 36.0))
    a, b = mouth_crops(a_frames, a_box, GREY), mouth_crops(b_frames, b_box, GREY)
    assert a.shape == (2, 1, 56, 56)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)  # same content around the box -> same crop
    luma = 0.299 * 200 + 0.587 * 60 + 0.114 * 20
    assert a[0, 0, 28, 28] == pytest.approx(luma / 127.5 - 1, abs=1e-3)  # the square fills the middle half
    assert a[0, 0, 2, 2] == pytest.approx(-1.0)  # black corners
    colour = mouth_crops(a_frames, a_box, SyncNetSpec(width=0.125, lip_channels=3, crop_size=56, crop_scale=1.0,
                                                      crop_mouth_y=0.5, pixels="raw255"))
    assert colour[0, :, 28, 28].tolist() == pytest.approx([20, 60, 200], abs=1e-3)  # BGR, 0-255
    with pytest.raises(ValueError, match="finite"):
        mouth_crops(a_frames, np.full((2, 4), np.nan), GREY)


def test_lip_windows_are_five_consecutive_frames():
    crops = mouth_crops(*_frames_with_square(7, (30.0, 30.0)), GREY)
    crops = crops + np.arange(7, dtype=np.float32)[:, None, None, None]  # tag each frame
    windows = lip_windows(crops)
    assert windows.shape == (3, 1, 5, 56, 56)
    assert [float(windows[2, 0, k, 0, 0] - crops[0, 0, 0, 0]) for k in range(5)] == [2, 3, 4, 5, 6]
