"""The latents stage and the DiT stages' data read a split as a stream (components/train/phases.py): real shards
of N synthetic clips -> one clip decoded at a time -> a cache on disk equal to the eager one; training batches
read from disk only the windows they draw, and are exactly the batches of the in-memory tensors."""

from __future__ import annotations

import json
import tracemalloc
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import components.data.windows as windows_module
from components.config import FlowTrainConfig, Params, ShardConfig, TrainingDataConfig, VaeConfig, WorldConfig
from components.data.latents import LatentCache, LatentSplit, latent_split_dir, load_latent_split
from components.data.shards.writer import write_shards
from components.data.synthetic.world import make_clip
from components.data.windows import iter_windows, split_windows
from components.io.audio import log_mel, save_wav
from components.io.video import write_video
from components.model.latent_encoding import encode_split, encode_windows
from components.model.vae import build_vae, set_latent_stats
from components.train.loop import step_generator
from components.train.phases import training_tensors
from components.train.portrait_objective import global_flow_batch

WORLD = WorldConfig(resolution=48, duration_s=1.0, speech="syllables", seed=5)  # 25 frames: 3 windows of 5 (stride 8)
N_CLIPS, FRAMES, STRIDE, BATCH = 5, 5, 8, 3
CLIP_BYTES = 25 * 48 * 48 * 3  # one decoded clip's frames


def _ingest(root: Path, identity: int) -> dict:
    """What the ingest stage writes for one clip, from a real synthetic clip (real mp4, wav, npy, json)."""
    clip = make_clip(WORLD, identity, 0)
    n = len(clip.frames)
    clip_dir = root / "clips" / clip.clip_id
    clip_dir.mkdir(parents=True)
    write_video(clip_dir / "video.mp4", clip.frames, WORLD.fps, crf=10)
    save_wav(clip_dir / "audio.wav", clip.audio, WORLD.sample_rate)
    np.save(clip_dir / "wav2vec.npy", np.random.default_rng(identity).normal(size=(n, 2, 32)).astype(np.float16))
    np.save(clip_dir / "mel.npy", log_mel(clip.audio, WORLD.sample_rate, 40, WORLD.fps, n).astype(np.float16))
    pose = np.concatenate([clip.keypoints / WORLD.resolution, np.ones((n, 10, 1))], axis=2).astype(np.float32)
    np.save(clip_dir / "pose.npy", pose)
    (clip_dir / "truth.json").write_text(json.dumps(clip.truth))
    meta = {"clip_id": clip.clip_id, "identity": clip.truth["identity"], "fps": WORLD.fps, "n_frames": n}
    (clip_dir / "meta.json").write_text(json.dumps(meta))
    return meta


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ingested")
    metas = [_ingest(root, i) for i in range(N_CLIPS)]
    (root / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metas))
    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(splits={"train": 1.0}, maxcount=2), input_dir=root, output_uri=out, progress=False)
    return out


@pytest.fixture(scope="module")
def vae():
    vae = build_vae(VaeConfig(base_dim=8, z_dim=4, dim_mult=(1, 1, 1)))  # the cheapest VAE the config allows
    set_latent_stats(vae, [0.1, -0.2, 0.0, 0.3], [0.5, 2.0, 1.0, 1.5])
    return vae.eval()


class LiveClips:
    """Counts decoded clips whose frames are still in memory (a window's frames are views that keep them alive)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.alive = self.most = self.decoded = 0
        decode = windows_module.clip_from_sample

        def counted(sample):
            clip = decode(sample)
            owner = clip.frames if clip.frames.base is None else clip.frames.base
            self.alive += 1
            self.decoded += 1
            self.most = max(self.most, self.alive)
            weakref.finalize(owner, self._freed)
            return clip

        monkeypatch.setattr(windows_module, "clip_from_sample", counted)

    def _freed(self) -> None:
        self.alive -= 1

    def reset(self) -> None:
        self.most = self.decoded = 0


@dataclass
class Encoded:
    eager: LatentCache  # encode_windows(split_windows(...)): the whole split in memory, as the stage did
    directory: Path  # encode_split(iter_windows(...)): what the stage does now
    windows: int
    eager_clips_alive: int  # the most decoded clips in memory at once
    streamed_clips_alive: int
    streamed_clips_decoded: int
    eager_peak: int  # tracemalloc peaks, bytes
    streamed_peak: int


@pytest.fixture(scope="module")
def encoded(shards, vae, tmp_path_factory) -> Encoded:
    directory = latent_split_dir(tmp_path_factory.mktemp("latents"), "train")
    with pytest.MonkeyPatch.context() as monkeypatch:
        live = LiveClips(monkeypatch)
        tracemalloc.start()
        try:
            windows = split_windows(shards, "train", FRAMES, STRIDE)
            eager = encode_windows(vae, windows, BATCH)
            eager_peak, eager_alive = tracemalloc.get_traced_memory()[1], live.most
            del windows
            live.reset()
            tracemalloc.reset_peak()
            n = encode_split(vae, iter_windows(shards, "train", FRAMES, STRIDE), directory, BATCH, part_windows=4)
            streamed_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return Encoded(eager, directory, n, eager_alive, live.most, live.decoded, eager_peak, streamed_peak)


def test_the_latents_stage_decodes_one_clip_at_a_time(encoded):
    assert encoded.windows == len(encoded.eager) == 3 * N_CLIPS and encoded.streamed_clips_decoded == N_CLIPS
    assert encoded.eager_clips_alive == N_CLIPS
    # A batch of 3 windows spans at most 2 clips (3 windows per clip): the clip being cut and the previous one.
    assert encoded.streamed_clips_alive <= 2
    saved = encoded.eager_peak - encoded.streamed_peak
    print(f"peak traced memory: eager {encoded.eager_peak / 1e6:.2f} MB, streamed {encoded.streamed_peak / 1e6:.2f} MB, "
          f"one decoded clip {CLIP_BYTES / 1e6:.2f} MB")
    assert saved > (N_CLIPS - 3) * CLIP_BYTES  # streaming saves (about) every clip but the two alive at a time


def test_the_streamed_cache_equals_the_eager_one(encoded):
    streamed = load_latent_split(encoded.directory)
    assert sorted(p.name for p in encoded.directory.iterdir())[-1] == "part-00002.safetensors"  # 15 windows: 6, 6, 3
    eager = encoded.eager
    for name in ("latents", "cond_latents", "audio_mel", "audio_wav2vec", "pose", "mouth_open", "mouth_box",
                 "window_start", "clip_index"):
        torch.testing.assert_close(getattr(streamed, name), getattr(eager, name), rtol=0, atol=0, equal_nan=True)
    for name in ("clip_ids", "identities", "vae_config_digest", "vae_weights_digest", "latents_mean", "latents_std",
                 "image_emb"):
        assert getattr(streamed, name) == getattr(eager, name), name


def test_training_batches_are_read_lazily_and_equal_the_in_memory_ones(encoded, monkeypatch):
    latents_dir = encoded.directory.parent
    params = Params(data=TrainingDataConfig(frames=FRAMES, window_stride=STRIDE, latents_dir=str(latents_dir)))
    cache = load_latent_split(encoded.directory)  # what training_tensors held in memory before
    in_memory = {"latents": cache.latents, **cache.condition(slice(None)), "audio": cache.audio_mel, "pose": cache.pose}
    read = []
    slice_rows = LatentSplit._slice
    monkeypatch.setattr(LatentSplit, "_slice", lambda self, part, name, a, b: read.append(b - a) or slice_rows(self, part, name, a, b))
    on_disk = training_tensors(params, "train")
    assert set(on_disk) == set(in_memory) == {"latents", "cond", "audio", "pose"} and not read
    cfg, rows = FlowTrainConfig(seed=3), 4
    for step in range(4):
        for micro in range(2):
            expected = global_flow_batch(in_memory, cfg, rows, step_generator(cfg.seed, step, micro))
            read.clear()
            batch = global_flow_batch(on_disk, cfg, rows, step_generator(cfg.seed, step, micro))
            assert 1 <= sum(read) <= rows * len(on_disk)  # at most a batch of windows per tensor, never the split
            assert batch.keys() == expected.keys()
            for key in expected:
                assert torch.equal(batch[key], expected[key]), (step, micro, key)
