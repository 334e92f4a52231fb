"""Windows: real shards of tiny synthetic clips -> decoded clips -> aligned fixed-length windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.config import ShardConfig, WorldConfig
from components.data.shards.reader import open_split
from components.data.shards.sample import decode_sample
from components.data.shards.writer import write_shards
from components.data.synthetic.world import make_clip
from components.data.windows import (
    MEL_LOG10_CENTRE,
    MEL_LOG10_SCALE,
    MOUTH_BOX_SCALE,
    ClipSample,
    audio_features,
    clip_from_sample,
    iter_split,
    iter_windows,
    make_windows,
    normalise_mel,
    pick_windows,
    split_windows,
)
from components.io.audio import log_mel, save_wav
from components.io.video import write_video

WORLD = WorldConfig(resolution=32, duration_s=1.0, speech="syllables", seed=3)  # 25 frames of 32 px


def _write_ingested_clip(root: Path, identity_index: int) -> dict:
    """What the ingest stage writes for one clip, from a real synthetic clip (real mp4, wav, npy, json)."""
    clip = make_clip(WORLD, identity_index, 0)
    n = len(clip.frames)
    clip_dir = root / "clips" / clip.clip_id
    clip_dir.mkdir(parents=True)
    write_video(clip_dir / "video.mp4", clip.frames, WORLD.fps, crf=10)
    save_wav(clip_dir / "audio.wav", clip.audio, WORLD.sample_rate)
    rng = np.random.default_rng(identity_index)
    np.save(clip_dir / "wav2vec.npy", rng.normal(size=(n, 2, 32)).astype(np.float16))
    np.save(clip_dir / "mel.npy", log_mel(clip.audio, WORLD.sample_rate, 40, WORLD.fps, n).astype(np.float16))
    pose = np.concatenate([clip.keypoints / WORLD.resolution, np.ones((n, 10, 1))], axis=2).astype(np.float32)
    np.save(clip_dir / "pose.npy", pose)
    (clip_dir / "truth.json").write_text(json.dumps(clip.truth))
    meta = {"clip_id": clip.clip_id, "identity": clip.truth["identity"], "fps": WORLD.fps, "n_frames": n}
    (clip_dir / "meta.json").write_text(json.dumps(meta))
    return {"meta": meta, "clip": clip, "pose": pose}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ingested")
    written = {}
    for i in range(2):
        info = _write_ingested_clip(root, i)
        written[info["meta"]["clip_id"]] = info
    (root / "manifest.jsonl").write_text("".join(json.dumps(w["meta"]) + "\n" for w in written.values()))
    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(splits={"train": 0.5, "val": 0.5}), input_dir=root, output_uri=out, progress=False)
    return out, written


def test_iter_split_decodes_every_field(shards):
    out, written = shards
    clips = list(iter_split(out, "train")) + list(iter_split(out, "val"))
    assert sorted(c.clip_id for c in clips) == sorted(written)
    for clip in clips:
        source = written[clip.clip_id]
        assert clip.frames.shape == (25, 32, 32, 3) and clip.frames.dtype == np.uint8
        # mp4 is lossy (yuv420p halves colour resolution, harsh at 32 px): close to the rendered frames.
        assert np.abs(clip.frames.astype(int) - source["clip"].frames).mean() < 10
        assert clip.sample_rate == 16000 and abs(len(clip.audio) - 16000) <= 1
        assert np.abs(clip.audio - source["clip"].audio).max() < 1e-3  # 16-bit PCM
        assert clip.wav2vec.shape == (25, 2, 32) and clip.mel.shape == (25, 4, 40) and clip.pose.shape == (25, 10, 3)
        assert clip.wav2vec.dtype == clip.mel.dtype == np.float32
        np.testing.assert_array_equal(clip.pose, source["pose"])
        assert clip.truth["mouth_open"] == source["clip"].truth["mouth_open"]
        assert clip.identity == source["meta"]["identity"] and clip.fps == 25


def test_windows_stream_in_clip_order_with_the_split_stride(shards):
    out, _ = shards
    clips = list(iter_split(out, "train")) + list(iter_split(out, "val"))
    for split, clip, stride in (("train", clips[0], 8), ("val", clips[1], 9)):  # held-out: back to back
        streamed = list(iter_windows(out, split, frames=9, train_stride=8))
        assert [w.start for w in streamed] == list(range(0, 25 - 9 + 1, stride))
        eager = make_windows(clip, 9, stride)
        for a, b in zip(streamed, eager, strict=True):
            np.testing.assert_array_equal(a.frames, b.frames)
            np.testing.assert_array_equal(a.mel, b.mel)
        assert [w.start for w in split_windows(out, split, 9, 8)] == [w.start for w in streamed]


def test_picked_windows_are_detached_copies():
    clip = _clip(25)
    picked, n = pick_windows(make_windows(clip, frames=9, stride=4), [3, 1])
    assert n == 5 and [w.start for w in picked] == [4, 12]  # stream order
    for w in picked:
        assert not any(np.shares_memory(getattr(w, k), getattr(clip, a)) for k, a in
                       (("frames", "frames"), ("wav2vec", "wav2vec"), ("mel", "mel"), ("pose", "pose")))
        np.testing.assert_array_equal(w.frames, clip.frames[w.start : w.start + 9])
    with pytest.raises(IndexError, match=r"windows \[5\] asked for, but the stream has 5"):
        pick_windows(make_windows(clip, frames=9, stride=4), [0, 5])


def test_per_frame_fields_of_different_lengths_are_refused(shards):
    out, _ = shards
    sample = next(iter(open_split(out, "train", decode=True)))
    sample["pose.npy"] = sample["pose.npy"][:-3]
    with pytest.raises(ValueError, match=r"sample id00\d_clip00: per-frame fields disagree.*'pose.npy': 22"):
        clip_from_sample(sample)
    sample = next(iter(open_split(out, "train")))
    sample["mp4"] = b"not a video"
    with pytest.raises(ValueError, match="mp4: cannot decode"):
        clip_from_sample(decode_sample(sample))


def _clip(n: int = 25, truth: bool = True) -> ClipSample:
    rng = np.random.default_rng(0)
    frames = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)  # frame i is all i
    centre = np.stack([np.arange(n) + 10.0, np.arange(n) + 20.0], axis=1)
    return ClipSample(
        clip_id="c0",
        identity="p0",
        frames=frames,
        audio=np.zeros(n * 640, np.float32),
        sample_rate=16000,
        fps=25.0,
        wav2vec=rng.normal(size=(n, 2, 4)).astype(np.float32),
        mel=np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 4, 6)).copy(),
        pose=rng.random((n, 10, 3)).astype(np.float32),
        truth={
            "mouth_open": list(np.linspace(0, 1, n)), "mouth_center_px": centre.tolist(), "mouth_size_px": [8.0, 4.0]
        }
        if truth
        else None,
    )


def test_windows_are_aligned_slices_of_the_clip():
    clip = _clip(25)
    windows = make_windows(clip, frames=9, stride=4)
    assert [w.start for w in windows] == [0, 4, 8, 12, 16]  # 16 + 9 = 25: the last full window
    for w in windows:
        sl = slice(w.start, w.start + 9)
        assert w.n_frames == 9 and w.clip_id == "c0" and w.identity == "p0" and w.has_truth
        assert list(w.frames[:, 0, 0, 0]) == list(range(w.start, w.start + 9))
        np.testing.assert_array_equal(w.mel[:, 0, 0], np.arange(w.start, w.start + 9))
        np.testing.assert_array_equal(w.wav2vec, clip.wav2vec[sl])
        np.testing.assert_array_equal(w.pose, clip.pose[sl])
        np.testing.assert_allclose(w.mouth_open, np.linspace(0, 1, 25)[sl], atol=1e-6)
        # Box centred on the truth's mouth centre, half-size MOUTH_BOX_SCALE * size / 2.
        centre = np.asarray(clip.truth["mouth_center_px"])[sl]
        np.testing.assert_allclose((w.mouth_box[:, :2] + w.mouth_box[:, 2:]) / 2, centre, atol=1e-4)
        size = np.tile([8.0, 4.0], (9, 1)) * MOUTH_BOX_SCALE
        np.testing.assert_allclose(w.mouth_box[:, 2:] - w.mouth_box[:, :2], size, rtol=1e-5)


def test_short_clips_and_clips_without_truth():
    assert make_windows(_clip(16), frames=17) == []
    assert len(make_windows(_clip(17), frames=17)) == 1
    assert [w.start for w in make_windows(_clip(50), frames=17, stride=8)] == [0, 8, 16, 24, 32]
    (w,) = make_windows(_clip(17, truth=False), frames=17)
    assert not w.has_truth and np.isnan(w.mouth_open).all() and np.isnan(w.mouth_box).all()
    with pytest.raises(ValueError, match="stride"):
        make_windows(_clip(17), frames=17, stride=0)


def test_mel_normalisation_is_fixed_and_unit_scale():
    mel = np.array([-5.0, MEL_LOG10_CENTRE, 1.0], np.float32)
    np.testing.assert_allclose(normalise_mel(mel), [-1.0, 0.0, 2.0])
    assert MEL_LOG10_SCALE == 2.0
    # Real log-mel of a synthetic utterance lands at roughly zero mean, unit spread.
    clip = make_clip(WORLD, 0, 0)
    x = normalise_mel(log_mel(clip.audio, 16000, 40, 25, 25))
    assert -1.0 <= x.min() and x.max() < 3.0 and abs(float(x.mean())) < 0.8 and 0.3 < float(x.std()) < 1.5


def test_audio_features_per_kind():
    (w,) = make_windows(_clip(17), frames=17)
    mel = audio_features(w, "mel")
    assert mel.shape == (17, 4, 6) and mel.dtype == np.float32
    np.testing.assert_allclose(mel, normalise_mel(w.mel))
    np.testing.assert_array_equal(audio_features(w, "wav2vec"), w.wav2vec)
    with pytest.raises(ValueError, match="'mel' or 'wav2vec'"):
        audio_features(w, "spectrogram")  # type: ignore[arg-type]
