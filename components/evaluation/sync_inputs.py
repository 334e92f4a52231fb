"""What a SyncNet sees: MFCC windows of the audio and 5-frame crops around the mouth.

Audio: 13 MFCC at 100 Hz, i.e. 4 steps per 25 fps video frame, so the audio window of video frame k is MFCC steps
4k .. 4k+19 (0.2 s) and lines up with video frames k .. k+4. Two front ends (SyncNetSpec.mfcc):
- "log_mel": the DCT-II (orthonormal) of our normalised log-mel (components/io/audio.log_mel, 4 frames per video
  frame): what the toy expert trains on, free since the shards carry the log-mel;
- "psf": python_speech_features.mfcc with its defaults (pre-emphasis 0.97, 25 ms rectangular frames every 10 ms,
  512-point FFT, 26 mel filters, lifter 22, c0 replaced by the log frame energy) on int16-scale audio, as
  syncnet_python feeds the official weights. Reimplemented here (that package is not a dependency).
Video: a square crop around the ground truth's mouth box per frame (SyncNetSpec: side, mouth position), resized
bilinearly to crop_size, grey or BGR, on [-1, 1] or the raw 0-255 scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct

from components.data.windows import normalise_mel
from components.evaluation.syncnet import AUDIO_STEPS, N_MFCC, VIDEO_FRAMES, SyncNetSpec
from components.io.audio import MEL_FRAMES_PER_VIDEO_FRAME

__all__ = [
    "audio_windows", "clip_mfcc", "lip_windows", "mfcc_from_log_mel", "mfcc_psf", "mouth_crops", "n_audio_windows",
]

STEPS_PER_FRAME = MEL_FRAMES_PER_VIDEO_FRAME  # 100 Hz MFCC at 25 fps
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2 and PIL convert to grey


def mfcc_from_log_mel(mel: np.ndarray) -> np.ndarray:
    """log10 mel power [T, 4, n_mels] (the shards' mel.npy) -> MFCC [4T, 13]: DCT-II of the normalised log-mel."""
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 3 or mel.shape[1] != STEPS_PER_FRAME or mel.shape[2] < N_MFCC:
        raise ValueError(f"log-mel must be [T, {STEPS_PER_FRAME}, n_mels >= {N_MFCC}], got {mel.shape}")
    flat = normalise_mel(mel).reshape(-1, mel.shape[2])
    return dct(flat, type=2, norm="ortho", axis=1)[:, :N_MFCC].astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _psf_filterbank(n_filters: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters on FFT bins, python_speech_features.get_filterbanks: [n_filters, n_fft // 2 + 1]."""
    points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((n_fft + 1) * _mel_to_hz(points) / sample_rate).astype(int)
    bank = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        bank[j, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        bank[j, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    return bank


def mfcc_psf(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """python_speech_features.mfcc(int16 audio, sample_rate) with its defaults -> [4 * n_frames, 13].

    `audio` is float in [-1, 1] (ours) and is scaled to int16 units first (syncnet_python reads pcm_s16le with
    scipy, unscaled). Steps past the end of the audio are zero-padded frames, as the library pads its last frame.
    """
    signal = np.asarray(audio, np.float64).reshape(-1) * 32768.0
    signal = np.append(signal[:1], signal[1:] - 0.97 * signal[:-1])  # pre-emphasis
    length, step = int(round(0.025 * sample_rate)), sample_rate / (fps * STEPS_PER_FRAME)
    n_fft = 512
    while n_fft < length:  # the library warns and truncates; a wider FFT keeps every sample instead
        n_fft *= 2
    n_steps = n_frames * STEPS_PER_FRAME
    starts = np.round(np.arange(n_steps) * step).astype(int)
    padded = np.concatenate([signal, np.zeros(max(0, starts[-1] + length - len(signal)))]) if n_steps else signal
    frames = padded[starts[:, None] + np.arange(length)] if n_steps else np.zeros((0, length))
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    eps = np.finfo(np.float64).eps
    energy = np.maximum(power.sum(1), eps)
    features = np.log(np.maximum(power @ _psf_filterbank(26, n_fft, sample_rate).T, eps))
    cepstra = dct(features, type=2, norm="ortho", axis=1)[:, :N_MFCC]
    cepstra *= 1 + (22 / 2) * np.sin(np.pi * np.arange(N_MFCC) / 22)  # lifter
    cepstra[:, 0] = np.log(energy)  # appendEnergy
    return cepstra.astype(np.float32)


def clip_mfcc(spec: SyncNetSpec, mel: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float) -> np.ndarray:
    """A clip's MFCC [4T, 13] with the front end the expert was trained with; T = the clip's frames (len(mel))."""
    if spec.mfcc == "log_mel":
        return mfcc_from_log_mel(mel)
    return mfcc_psf(audio, sample_rate, len(mel), fps)


def audio_windows(mfcc: np.ndarray, first: int, count: int) -> torch.Tensor:
    """Audio windows of video frames first .. first+count-1: [count, 1, 13, 20]; each must lie inside `mfcc`."""
    mfcc = np.asarray(mfcc, np.float32)
    if count and (first < 0 or (first + count - 1) * STEPS_PER_FRAME + AUDIO_STEPS > len(mfcc)):
        raise ValueError(f"audio windows {first}..{first + count - 1} reach outside {len(mfcc)} MFCC steps")
    index = (first + np.arange(count))[:, None] * STEPS_PER_FRAME + np.arange(AUDIO_STEPS)
    return torch.from_numpy(np.ascontiguousarray(mfcc[index].transpose(0, 2, 1)))[:, None]


def n_audio_windows(mfcc_steps: int) -> int:
    """How many video frames have a full audio window in a clip of `mfcc_steps` MFCC steps."""
    return max(0, (mfcc_steps - AUDIO_STEPS) // STEPS_PER_FRAME + 1)


def mouth_crops(frames: np.ndarray, mouth_box: np.ndarray, spec: SyncNetSpec) -> torch.Tensor:
    """Per-frame crops [T, C, S, S] around the mouth (windows.mouth_boxes: x0, y0, x1, y1 pixels per frame).

    Crop side = spec.crop_scale * box width, centred on the box horizontally, with the box centre at
    spec.crop_mouth_y of the height; outside the frame the edge pixels repeat.
    """
    frames = np.asarray(frames)
    box = np.asarray(mouth_box, np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or box.shape != (len(frames), 4):
        raise ValueError(f"frames must be [T,H,W,3] with mouth boxes [T,4], got {frames.shape} and {box.shape}")
    if not np.isfinite(box).all():
        raise ValueError("mouth boxes must be finite (clips without ground truth have no mouth box)")
    t, height, width = frames.shape[:3]
    side = spec.crop_scale * (box[:, 2] - box[:, 0])
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2 + (0.5 - spec.crop_mouth_y) * side
    # affine_grid maps output [-1, 1] to input [-1, 1] (align_corners=False: pixel edges at -1 and 1).
    theta = np.zeros((t, 2, 3))
    theta[:, 0, 0] = side / width
    theta[:, 0, 2] = 2 * cx / width - 1
    theta[:, 1, 1] = side / height
    theta[:, 1, 2] = 2 * cy / height - 1
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    grid = F.affine_grid(torch.from_numpy(theta).float(), [t, 3, spec.crop_size, spec.crop_size], align_corners=False)
    crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if spec.lip_channels == 1:
        crops = (crops * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        crops = crops.flip(1)  # RGB -> BGR (cv2's order, what the official weights saw)
    return crops / 127.5 - 1.0 if spec.pixels == "unit" else crops


def lip_windows(crops: torch.Tensor) -> torch.Tensor:
    """[T, C, S, S] -> the T-4 windows of 5 consecutive frames, [T-4, C, 5, S, S]."""
    if len(crops) < VIDEO_FRAMES:
        raise ValueError(f"need at least {VIDEO_FRAMES} frames for a lip window, got {len(crops)}")
    return crops.unfold(0, VIDEO_FRAMES, 1).permute(0, 1, 4, 2, 3).contiguous()
