import json

import numpy as np
import pytest

from components.config import AudioEncoderConfig, Wav2Vec2Tiny
from components.data.audio_features import AudioEncoder

SR = 16_000


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    bursts = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))  # 4 Hz syllable-like loudness
    return (0.3 * bursts * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> AudioEncoder:
    return AudioEncoder(AudioEncoderConfig())


def test_shape_dtype_and_determinism(encoder):
    audio = _speechlike(2.0)
    feats = encoder.encode(audio, n_frames=50, fps=25)
    assert feats.shape == (50, 2, encoder.hidden_size) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    again = AudioEncoder(AudioEncoderConfig()).encode(audio, n_frames=50, fps=25)
    np.testing.assert_array_equal(feats, again)  # same seed -> same random weights
    other = AudioEncoder(AudioEncoderConfig(tiny=Wav2Vec2Tiny(seed=1))).encode(audio, n_frames=50, fps=25)
    assert not np.allclose(feats, other)


def test_tokens_sit_at_frame_times(encoder):
    # wav2vec2 step i is centred at 20 ms * i + 12.5 ms. At 40 fps with one token per frame, token m sits at
    # 25 ms * m + 12.5 ms, so every 4th token lands exactly on every 5th step and must equal it.
    enc = AudioEncoder(AudioEncoderConfig(tokens_per_frame=1))
    audio = _speechlike(1.0)
    states = enc.hidden_states(audio)
    assert states.shape[0] == (audio.size - 400) // 320 + 1  # 49 steps for 1 s
    feats = enc.encode(audio, n_frames=40, fps=40)
    for m in range(0, 40, 4):
        np.testing.assert_allclose(feats[m, 0], states[5 * m // 4], rtol=1e-5, atol=1e-6)
    # 25 fps, 2 tokens per frame: token j at 10 ms + 20 ms * j. Token 0 precedes step 0 (clamped); token 1
    # (30 ms) lies 7/8 of the way from step 0 (12.5 ms) to step 1 (32.5 ms).
    tokens = encoder.encode(audio, n_frames=25, fps=25).reshape(50, -1)
    np.testing.assert_allclose(tokens[0], states[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tokens[1], states[0] + 0.875 * (states[1] - states[0]), rtol=1e-5, atol=1e-6)


def test_chunking_with_full_context_matches_one_pass(encoder):
    audio = _speechlike(3.0, seed=3)
    whole = encoder.hidden_states(audio)
    chunked = AudioEncoder(AudioEncoderConfig(chunk_s=0.7, chunk_context_s=5.0)).hidden_states(audio)
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-5)
    local = AudioEncoder(AudioEncoderConfig(chunk_s=0.7, chunk_context_s=0.2)).hidden_states(audio)
    assert local.shape == whole.shape  # less context changes values, never the step count


def test_short_and_padded_audio(encoder):
    feats = encoder.encode(np.zeros(100, np.float32), n_frames=3, fps=25)
    assert feats.shape == (3, 2, encoder.hidden_size) and np.isfinite(feats).all()


def test_pretrained_dir_roundtrip(tmp_path, encoder):
    encoder.save_pretrained(tmp_path / "w2v")
    loaded = AudioEncoder(AudioEncoderConfig(pretrained_path=str(tmp_path / "w2v")))
    audio = _speechlike(1.5, seed=5)
    np.testing.assert_allclose(loaded.encode(audio, 37, 25), encoder.encode(audio, 37, 25), rtol=1e-5, atol=1e-6)


def test_bad_pretrained_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        AudioEncoder(AudioEncoderConfig(pretrained_path=str(tmp_path / "missing_dir")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        AudioEncoder(AudioEncoderConfig(pretrained_path=str(empty)))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a wav2vec2 checkpoint"):
        AudioEncoder(AudioEncoderConfig(pretrained_path=str(bert)))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(ValueError, match="no_weights"):
        AudioEncoder(AudioEncoderConfig(pretrained_path=str(no_weights)))
