"""Audio loading, resampling, loudness and features.

`frame_envelope` is the single definition of the per-video-frame "audio loudness envelope": the synthetic world
drives the mouth with it (lag 0) and the metrics compare generated mouths against it.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from components.io.atomic import atomic_file
from components.io.errors import MediaError

__all__ = [
    "MEL_FRAMES_PER_VIDEO_FRAME",
    "frame_envelope",
    "load_audio",
    "log_mel",
    "resample_audio",
    "rms_db",
    "save_wav",
]

RMS_DB_FLOOR = -120.0
MEL_FRAMES_PER_VIDEO_FRAME = 4
_MEL_FLOOR = 1e-5  # log10 floor of -5: keeps digital silence from dominating the feature range


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 mono (channels averaged); resample to sample_rate if given."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise MediaError(f"{path}: cannot read audio ({exc})") from exc
    if data.shape[0] == 0:
        raise MediaError(f"{path}: zero audio samples")
    audio = data.mean(axis=1).astype(np.float32)
    if sample_rate is not None and sample_rate != sr:
        audio, sr = resample_audio(audio, sr, sample_rate), sample_rate
    return audio, int(sr)


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono wav atomically (components.io.atomic)."""
    samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_file(path) as tmp:
        sf.write(str(tmp), samples, int(sample_rate), subtype="PCM_16", format="WAV")


def resample_audio(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio sr_out/sr_in (anti-aliased)."""
    audio = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return audio.copy()
    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(audio, int(sr_out) // g, int(sr_in) // g).astype(np.float32)


def rms_db(audio: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale sine is -3 dB); silence and empty input give RMS_DB_FLOOR."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        return RMS_DB_FLOOR
    rms = float(np.sqrt(np.mean(audio**2)))
    return max(RMS_DB_FLOOR, 20.0 * np.log10(rms)) if rms > 0 else RMS_DB_FLOOR


def frame_envelope(
    audio: np.ndarray, sample_rate: int, fps: float, n_frames: int, window_s: float = 0.04
) -> np.ndarray:
    """RMS of a window_s window centred on each video frame's centre time t_i = (i + 0.5) / fps.

    Samples outside the audio count as silence (the window length stays fixed), so a frame past the
    end of the audio has envelope 0.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    width = max(1, int(round(window_s * sample_rate)))
    centres = (np.arange(n_frames) + 0.5) / fps * sample_rate
    lo = np.round(centres - width / 2).astype(np.int64)
    hi = np.clip(lo + width, 0, len(audio))
    lo = np.clip(lo, 0, len(audio))
    energy = np.concatenate([[0.0], np.cumsum(audio**2)])  # prefix sums: every window in O(1)
    return np.sqrt(np.maximum(energy[hi] - energy[lo], 0.0) / width).astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int, n_mels: int, fps: float, n_frames: int) -> np.ndarray:
    """Log10 mel power spectrogram, MEL_FRAMES_PER_VIDEO_FRAME frames per video frame: [n_frames, 4, n_mels].

    Hop = sample_rate / (fps * 4) (160 samples at 16 kHz / 25 fps), 25 ms Hann window; mel frame k is centred
    at k * hop, so video frame i gets the 4 mel frames starting at its start time. Floor log10(1e-5) = -5,
    which is also the padding value past the end of the audio.
    """
    per_frame = MEL_FRAMES_PER_VIDEO_FRAME
    hop = max(1, int(round(sample_rate / (fps * per_frame))))
    win = int(round(0.025 * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=20.0,
        max_frequency=sample_rate / 2,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    want = n_frames * per_frame
    if len(audio) < win:  # too short to frame at all
        mel = np.full((0, n_mels), np.log10(_MEL_FLOOR), np.float32)
    else:
        spec = spectrogram(
            audio,
            window_function(win, "hann"),
            frame_length=win,
            hop_length=hop,
            fft_length=n_fft,
            power=2.0,
            mel_filters=filters,
            mel_floor=_MEL_FLOOR,
            log_mel="log10",
        )
        mel = spec.T.astype(np.float32)[:want]  # [mel_frames, n_mels]
    if len(mel) < want:
        pad = np.full((want - len(mel), n_mels), np.log10(_MEL_FLOOR), np.float32)
        mel = np.concatenate([mel, pad])
    return mel.reshape(n_frames, per_frame, n_mels)
