import shutil
import subprocess

import numpy as np
import pytest

from components.io.audio import frame_envelope
from components.io.video import DecodedVideo, MediaError, decode_video, resample_frames, write_video

SR = 16000
FPS = 25


def _frames(t: int = 50, size: int = 64) -> np.ndarray:
    # A moving gradient: smooth enough for h264 to reproduce closely, different in every frame.
    y, x = np.mgrid[0:size, 0:size]
    out = np.empty((t, size, size, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 4 + i * 3) % 256
        out[i, ..., 1] = (y * 4) % 256
        out[i, ..., 2] = 128
    return out


def _bursty_audio(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # 3 Hz on/off bursts
    return (0.5 * gate * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_round_trip_frames_audio_fps(tmp_path):
    frames, audio = _frames(), _bursty_audio()
    path = tmp_path / "clip.mp4"
    write_video(path, frames, FPS, audio, SR)
    video = decode_video(path)
    assert isinstance(video, DecodedVideo)
    assert video.frames.shape == frames.shape and video.frames.dtype == np.uint8
    assert np.abs(video.frames.astype(int) - frames).mean() < 3.0
    assert video.fps == pytest.approx(FPS)
    np.testing.assert_allclose(video.timestamps, np.arange(50) / FPS, atol=1e-6)
    assert video.sample_rate == SR and video.audio.dtype == np.float32
    assert abs(len(video.audio) - len(audio)) < 2048  # AAC pads the last frame
    env_in = frame_envelope(audio, SR, FPS, 50)
    env_out = frame_envelope(video.audio, SR, FPS, 50)
    assert np.corrcoef(env_in, env_out)[0, 1] > 0.98  # and no A/V offset, or the bursts would misalign
    assert not list(tmp_path.glob(".*tmp*")), "temp file left behind"


def test_without_audio_stream_gives_none(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, _frames(10), FPS)
    video = decode_video(path)
    assert video.audio is None and video.sample_rate is None and len(video.frames) == 10
    assert decode_video(path, with_audio=False).audio is None


def test_non_ascii_path_with_spaces(tmp_path):
    path = tmp_path / "dossier été" / "prise n° 1 – ünïcode.mp4"
    write_video(path, _frames(6), FPS, _bursty_audio(0.24), SR)
    assert decode_video(path).frames.shape[0] == 6


def test_truncated_file_raises_media_error_naming_path(tmp_path):
    path = tmp_path / "cut.mp4"
    write_video(path, _frames(), FPS, _bursty_audio(), SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=str(path)):
        decode_video(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_truncated_faststart_file_is_detected(tmp_path):
    # With the index at the front the demuxer reads the first half happily; the frame count must betray it.
    src, fast = tmp_path / "src.mp4", tmp_path / "fast.mp4"
    write_video(src, (np.random.default_rng(0).random((50, 64, 64, 3)) * 255).astype(np.uint8), FPS)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", src, "-c", "copy", "-movflags", "+faststart", fast],
                   check=True)
    data = fast.read_bytes()
    fast.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated"):
        decode_video(fast)


def test_text_file_named_mp4_raises_media_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(MediaError, match=str(path)):
        decode_video(path)
    with pytest.raises(MediaError, match="no such file"):
        decode_video(tmp_path / "missing.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    import soundfile as sf

    path = tmp_path / "speech.wav"
    sf.write(path, _bursty_audio(0.5), SR)
    with pytest.raises(MediaError, match="no video stream"):
        decode_video(path)


def test_write_rejects_bad_frames_and_keeps_existing_file(tmp_path):
    path = tmp_path / "keep.mp4"
    write_video(path, _frames(5), FPS)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="even"):
        write_video(path, np.zeros((5, 63, 64, 3), np.uint8), FPS)
    with pytest.raises(ValueError, match="uint8"):
        write_video(path, np.zeros((5, 64, 64, 3), np.float32), FPS)
    assert path.read_bytes() == before


def test_resample_frames_variable_rate():
    frames = np.arange(5)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    stamps = np.array([0.0, 0.03, 0.10, 0.12, 0.2])  # irregular intervals
    out = resample_frames(frames, stamps, fps_out=25, duration_s=0.24)
    # output times 0, .04, .08, .12, .16, .20 -> latest frame at or before each
    assert out[:, 0, 0, 0].tolist() == [0, 1, 1, 3, 3, 4]


def test_resample_frames_rate_change_default_duration():
    frames = np.arange(60)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = resample_frames(frames, np.arange(60) / 30.0, fps_out=25)  # 2 s at 30 fps -> 50 frames at 25 fps
    assert len(out) == 50
    expected = np.floor(np.arange(50) / 25 * 30 + 1e-9).astype(int)
    assert out[:, 0, 0, 0].tolist() == expected.tolist()


def test_encoding_is_reproducible(tmp_path):
    # The synthetic world relies on this: same frames and audio -> same bytes, even after other codec work.
    # (x264's mbtree made this smooth moving gradient encode differently on nearly every run: see write_video)
    frames = _frames()
    digests = set()
    for i in range(6):
        path = tmp_path / f"r{i}.mp4"
        write_video(path, frames, FPS, _bursty_audio(), SR)
        decode_video(path)
        digests.add(path.read_bytes())
    assert len(digests) == 1
