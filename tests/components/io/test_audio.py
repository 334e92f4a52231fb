import numpy as np
import pytest

from components.io.audio import (
    MEL_FRAMES_PER_VIDEO_FRAME,
    frame_envelope,
    load_audio,
    log_mel,
    resample_audio,
    rms_db,
    save_wav,
)
from components.io.errors import MediaError


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_save_load_round_trip_and_resample(tmp_path):
    audio = _tone(440, 1.0, 22050)
    path = tmp_path / "tone wav é.wav"
    save_wav(path, audio, 22050)
    loaded, sr = load_audio(path)
    assert sr == 22050 and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, audio, atol=1e-4)  # PCM_16 quantisation only
    down, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and len(down) == 16000
    # the tone keeps its frequency: spectral peak at 440 Hz
    spectrum = np.abs(np.fft.rfft(down))
    assert np.argmax(spectrum) * 16000 / len(down) == pytest.approx(440, abs=2)
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_audio_stereo_is_downmixed(tmp_path):
    import soundfile as sf

    left = _tone(300, 0.5, 16000)
    sf.write(tmp_path / "st.wav", np.stack([left, -left * 0 + left], axis=1), 16000)
    mono, _ = load_audio(tmp_path / "st.wav")
    assert mono.ndim == 1 and np.allclose(mono, left, atol=1e-4)


def test_load_audio_bad_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(MediaError, match="bad.wav"):
        load_audio(bad)


def test_resample_audio_lengths():
    x = _tone(100, 1.0, 22050)
    assert len(resample_audio(x, 22050, 16000)) == 16000
    assert len(resample_audio(x, 22050, 44100)) == 44100
    assert resample_audio(x, 22050, 22050) is not x


def test_rms_db():
    assert rms_db(np.ones(100)) == pytest.approx(0.0)
    assert rms_db(_tone(440, 1.0, 16000, amp=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert rms_db(np.zeros(100)) == -120.0 and rms_db(np.array([])) == -120.0


def test_frame_envelope_follows_loudness_per_frame():
    sr, fps = 16000, 25
    audio = np.zeros(sr, np.float32)
    audio[int(0.4 * sr) : int(0.6 * sr)] = _tone(200, 0.2, sr)  # loud between frames 10 and 15
    env = frame_envelope(audio, sr, fps, 30)
    assert env.shape == (30,) and env.dtype == np.float32
    assert np.all(env[11:14] > 0.3) and np.all(env[:9] == 0) and np.all(env[16:25] == 0)
    # frames past the end of the audio are silent, not an error
    assert np.all(env[25:] == 0)


def test_log_mel_shape_and_content():
    sr, fps, n_frames = 16000, 25, 50
    audio = np.zeros(2 * sr, np.float32)
    audio[sr:] = _tone(1000, 1.0, sr)
    mel = log_mel(audio, sr, n_mels=40, fps=fps, n_frames=n_frames)
    assert mel.shape == (n_frames, MEL_FRAMES_PER_VIDEO_FRAME, 40) and mel.dtype == np.float32
    assert mel[:20].max() == pytest.approx(-5.0)  # silence sits at the floor
    assert mel[30:].max() > 0.0
    # shorter audio is padded to exactly n_frames, longer is cropped
    assert log_mel(audio[:8000], sr, 40, fps, n_frames).shape == (n_frames, 4, 40)
    assert log_mel(audio, sr, 40, fps, 10).shape == (10, 4, 40)
