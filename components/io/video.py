"""Decode and encode video (with muxed audio) through PyAV.

Frames are uint8 RGB [T, H, W, 3]; audio is float32 mono in [-1, 1]. Timestamps are seconds from the
first video frame, and the decoded audio is shifted so that sample 0 plays with video frame 0.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from components.io.atomic import atomic_file
from components.io.errors import MediaError

__all__ = ["DecodedVideo", "MediaError", "decode_video", "decode_video_bytes", "resample_frames", "write_video"]

# A container whose header promises more than this fraction of its duration beyond what decoded is truncated.
_TRUNCATION_TOLERANCE = 0.1


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    timestamps: np.ndarray  # float64 seconds [T], first frame at 0
    fps: float  # average stream rate
    audio: np.ndarray | None  # float32 mono [N] in [-1, 1]
    sample_rate: int | None

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps


def _frame_time(frame: av.frame.Frame, index: int, fallback_rate: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return index / fallback_rate


def decode_video(path: str | Path, *, with_audio: bool = True) -> DecodedVideo:
    """Decode every video frame (and the first audio stream, downmixed to mono at its native rate)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    return _decode_source(str(path), path, with_audio)


def decode_video_bytes(data: bytes, *, with_audio: bool = True, name: str = "<bytes>") -> DecodedVideo:
    """`decode_video` for an in-memory file (e.g. a shard's mp4 field); `name` labels errors."""
    return _decode_source(io.BytesIO(data), name, with_audio)


def _decode_source(source: str | io.BytesIO, path: Path | str, with_audio: bool) -> DecodedVideo:
    try:
        with av.open(source, mode="r") as container:
            return _decode_container(container, path, with_audio)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise MediaError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc


def _decode_container(container: av.container.InputContainer, path: Path | str, with_audio: bool) -> DecodedVideo:
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    vstream = container.streams.video[0]
    vstream.thread_type = "AUTO"
    astream = container.streams.audio[0] if (with_audio and container.streams.audio) else None
    rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
    nominal_fps = float(rate) if rate else 25.0

    frames: list[np.ndarray] = []
    times: list[float] = []
    chunks: list[np.ndarray] = []
    audio_start: float | None = None
    resampler = av.AudioResampler(format="flt", layout="mono") if astream is not None else None

    streams = [s for s in (vstream, astream) if s is not None]
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):
                times.append(_frame_time(frame, len(frames), nominal_fps))
                frames.append(frame.to_ndarray(format="rgb24"))
            elif resampler is not None:
                if audio_start is None and frame.pts is not None and frame.time_base is not None:
                    audio_start = float(frame.pts * frame.time_base)
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    if resampler is not None:
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))

    if not frames:
        raise MediaError(f"{path}: zero decodable video frames")
    timestamps = np.asarray(times, dtype=np.float64)
    t0 = float(timestamps.min())
    timestamps -= t0
    order = np.argsort(timestamps, kind="stable")  # decoders emit in presentation order; be safe anyway
    timestamps, frame_array = timestamps[order], np.stack(frames)[order]

    fps = nominal_fps if rate else _rate_from_timestamps(timestamps)
    _check_not_truncated(vstream, path, len(frame_array), fps)

    audio, sample_rate = None, None
    if astream is not None and chunks:
        sample_rate = int(astream.rate)
        audio = np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)
        # Align audio sample 0 with video frame 0 (streams may start at different times).
        shift = int(round(((audio_start if audio_start is not None else t0) - t0) * sample_rate))
        audio = np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0 else audio[-shift:]
    return DecodedVideo(frame_array, timestamps, fps, audio, sample_rate)


def _rate_from_timestamps(timestamps: np.ndarray) -> float:
    if len(timestamps) < 2:
        return 25.0
    return float(1.0 / np.median(np.diff(timestamps)))


def _check_not_truncated(vstream: av.video.stream.VideoStream, path: Path | str, n_frames: int, fps: float) -> None:
    # A file cut short after its header (e.g. a faststart mp4) demuxes cleanly but yields too few frames.
    expected = vstream.frames or 0
    if expected == 0 and vstream.duration is not None and vstream.time_base is not None:
        expected = int(round(float(vstream.duration * vstream.time_base) * fps))
    if expected > 0 and n_frames < (1.0 - _TRUNCATION_TOLERANCE) * expected:
        raise MediaError(f"{path}: truncated, decoded {n_frames} of {expected} frames")


def resample_frames(
    frames: np.ndarray, timestamps: np.ndarray, fps_out: float, duration_s: float | None = None
) -> np.ndarray:
    """Constant-rate frames at t_k = k / fps_out, each the latest input frame shown at or before t_k.

    Works for variable frame rate input. duration_s defaults to the last timestamp plus one typical frame interval.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if len(frames) != len(timestamps) or len(frames) == 0:
        raise ValueError(f"resample_frames: {len(frames)} frames but {len(timestamps)} timestamps")
    if duration_s is None:
        step = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 1.0 / fps_out
        duration_s = float(timestamps[-1] + step)
    n_out = max(1, int(np.floor(duration_s * fps_out + 1e-6)))
    t_out = np.arange(n_out) / fps_out
    # Tolerance so that 3 * 0.04 = 0.12000000000000001 still picks the frame stamped 0.12.
    index = np.searchsorted(timestamps, t_out + 1e-6 / fps_out, side="right") - 1
    return frames[np.clip(index, 0, len(frames) - 1)]


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
) -> None:
    """Write h264 yuv420p video (+ AAC mono audio) atomically (components.io.atomic)."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{path}: frames must be uint8 [T,H,W,3] with T>0, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even width and height, got {width}x{height}")
    if audio is not None and not sample_rate:
        raise ValueError(f"{path}: audio given without sample_rate")

    with atomic_file(path) as tmp:
        _encode(tmp, frames, Fraction(fps), audio, sample_rate, crf)


def _encode(
    path: Path, frames: np.ndarray, fps: Fraction, audio: np.ndarray | None, sample_rate: int | None, crf: int
) -> None:
    # PyAV picks the container from the suffix; a path without one gets mp4.
    with av.open(str(path), mode="w", format=None if path.suffix else "mp4") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        # mbtree=0: with macroblock-tree rate control x264 gave different bitstreams for identical input from run to
        # run inside one process (measured: 21 distinct files in 30 encodes of one 64 px clip); without it, 1 in 60.
        vstream.options = {"crf": str(crf), "x264-params": "mbtree=0"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=int(sample_rate), layout="mono")

        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, 1 / fps
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))

        if astream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
            # PyAV re-frames to the encoder's frame size and converts to its sample format.
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = int(sample_rate), 0, Fraction(1, int(sample_rate))
            container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
