"""Audio -> the model's audio condition, exactly as the training windows present it.

Training sees features that ingest computed and stored as float16 (`mel.npy`: log10 mel power at the ingest
sample rate; `wav2vec.npy`: wav2vec2 tokens from 16 kHz audio), then `components.data.windows` turns them into
the model input (`normalise_mel` for mel, plain float32 for wav2vec). `AudioFeaturizer` repeats each of those
steps with the same functions, so a model meets at inference the very numbers it was trained on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from components.data.audio_features import SAMPLE_RATE as WAV2VEC_RATE
from components.data.audio_features import AudioEncoder
from components.data.windows import normalise_mel
from components.io.audio import MEL_FRAMES_PER_VIDEO_FRAME, log_mel, resample_audio

AudioKind = Literal["mel", "wav2vec"]


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad to n_samples (ingest keeps exactly the video's duration of audio)."""
    return audio[:n_samples] if len(audio) >= n_samples else np.pad(audio, (0, n_samples - len(audio)))


class AudioFeaturizer:
    """Per-frame audio features [n_frames, tokens_per_frame, dim] for a model trained on `kind` features."""

    def __init__(
        self, kind: AudioKind, fps: int, sample_rate: int, n_mels: int, encoder: AudioEncoder | None = None
    ):
        if kind == "wav2vec" and encoder is None:
            raise ValueError("wav2vec features need an AudioEncoder")
        if kind not in ("mel", "wav2vec"):
            raise ValueError(f"audio feature kind must be 'mel' or 'wav2vec', got {kind!r}")
        self.kind, self.fps, self.sample_rate, self.n_mels, self.encoder = kind, fps, sample_rate, n_mels, encoder

    @property
    def tokens_per_frame(self) -> int:
        return MEL_FRAMES_PER_VIDEO_FRAME if self.kind == "mel" else self.encoder.cfg.tokens_per_frame

    @property
    def dim(self) -> int:
        return self.n_mels if self.kind == "mel" else self.encoder.hidden_size

    def n_samples(self, n_frames: int) -> int:
        return int(round(n_frames / self.fps * self.sample_rate))

    def prepare_audio(self, audio: np.ndarray, sample_rate: int, n_frames: int) -> np.ndarray:
        """Mono float32 at self.sample_rate, exactly n_frames of video long (what ingest keeps as audio.wav)."""
        audio = resample_audio(np.asarray(audio, np.float32).reshape(-1), sample_rate, self.sample_rate)
        return fit_length(audio, self.n_samples(n_frames))

    def stored(self, audio: np.ndarray, n_frames: int, n_out: int | None = None) -> np.ndarray:
        """float16 [n_out, tokens, dim] as ingest stores them, for `prepare_audio` output of n_frames.

        Frames past n_frames (n_out > n_frames pads a last, partial window) hold what each feature gives past
        the end of the audio: mel the silence floor, wav2vec its last token (interpolation clamps at the end).
        Frames before n_frames are identical to what ingest computes for the same audio.
        """
        n_out = n_frames if n_out is None else n_out
        if n_out < n_frames:
            raise ValueError(f"n_out ({n_out}) must be >= n_frames ({n_frames})")
        if self.kind == "mel":
            feats = log_mel(audio, self.sample_rate, self.n_mels, self.fps, n_out)
        else:
            audio_16k = resample_audio(audio, self.sample_rate, WAV2VEC_RATE)  # a copy when already 16 kHz
            feats = self.encoder.encode(audio_16k, n_out, self.fps)
        return feats.astype(np.float16)

    def model_input(self, stored: np.ndarray) -> np.ndarray:
        """Stored features -> the model's float32 input (the training windows' own transform)."""
        if self.kind == "mel":
            return normalise_mel(stored)
        return np.asarray(stored, np.float32)

    def __call__(self, audio: np.ndarray, sample_rate: int, n_frames: int, n_out: int | None = None) -> np.ndarray:
        """float32 [n_out, tokens, dim] model input for audio at sample_rate that spans n_frames video frames."""
        prepared = self.prepare_audio(audio, sample_rate, n_frames)
        return self.model_input(self.stored(prepared, n_frames, n_out))
