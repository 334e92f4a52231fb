"""Latent cache (model/latent_encoding.py + data/latents.py): encode windows once,
round-trip through safetensors, reference latent = latent frame 0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from components.config import VaeConfig
from components.data.latents import LATENT_CACHE_FORMAT, load_latent_cache, save_latent_cache
from components.data.windows import ClipSample, make_windows, normalise_mel
from components.model.latent_encoding import encode_windows, vae_config_digest, vae_weights_digest
from components.model.vae import build_vae, encode_video, set_latent_stats, spatial_ratio

VAE_CFG = VaeConfig(base_dim=8, z_dim=4)
SIDE = 16  # frame side; the latent side is SIDE // spatial_ratio(vae)


def _clip(clip_id: str, n: int, truth: bool, seed: int) -> ClipSample:
    rng = np.random.default_rng(seed)
    return ClipSample(
        clip_id=clip_id,
        identity=f"person_{clip_id}",
        frames=rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8),
        audio=np.zeros(n * 640, np.float32),
        sample_rate=16000,
        fps=25.0,
        wav2vec=rng.normal(size=(n, 2, 4)).astype(np.float32),
        mel=rng.uniform(-5, 1, (n, 4, 6)).astype(np.float32),
        pose=rng.random((n, 3, 3)).astype(np.float32),
        truth={"mouth_open": rng.random(n).tolist(), "mouth_center_px": rng.random((n, 2)).tolist(),
               "mouth_size_px": [6.0, 3.0]} if truth else None,
    )


@pytest.fixture(scope="module")
def vae():
    vae = build_vae(VAE_CFG)
    set_latent_stats(vae, [0.1, -0.2, 0.0, 0.3], [0.5, 2.0, 1.0, 1.5])  # non-trivial normalisation
    return vae.eval()


@pytest.fixture(scope="module")
def windows():
    return make_windows(_clip("a", 13, True, 0), frames=5, stride=4) + make_windows(_clip("b", 9, False, 1), 5, 4)


def test_encode_stacks_latents_and_conditions(vae, windows):
    cache = encode_windows(vae, windows, batch_size=2)  # 5 windows: batches of 2, 2, 1
    h = SIDE // spatial_ratio(vae)
    assert len(cache) == 5 and cache.latents.shape == (5, 4, 2, h, h) and cache.latents.dtype == torch.float32
    with torch.no_grad():
        expected = encode_video(vae, torch.from_numpy(windows[3].frames[None]))
    torch.testing.assert_close(cache.latents[3:4], expected, rtol=1e-5, atol=1e-5)
    assert cache.clip_ids == ["a", "b"] and cache.identities == ["person_a", "person_b"]
    assert cache.clip_index.tolist() == [0, 0, 0, 1, 1] and cache.window_start.tolist() == [0, 4, 8, 0, 4]
    torch.testing.assert_close(cache.audio_mel[1], torch.from_numpy(normalise_mel(windows[1].mel)))
    assert cache.audio_wav2vec.shape == (5, 5, 2, 4) and cache.pose.shape == (5, 5, 3, 3)
    assert cache.mouth_box.shape == (5, 5, 4) and torch.isnan(cache.mouth_open[3:]).all()  # clip b has no truth
    assert cache.latents_std == [0.5, 2.0, 1.0, 1.5]
    assert cache.vae_config_digest == vae_config_digest(vae) and cache.vae_weights_digest == vae_weights_digest(vae)


def test_round_trip_through_safetensors(vae, windows, tmp_path):
    cache = encode_windows(vae, windows)
    path = tmp_path / "latents" / "train.safetensors"
    save_latent_cache(path, cache)
    assert [p.name for p in path.parent.iterdir()] == ["train.safetensors"]  # no temp file left behind
    loaded = load_latent_cache(path)
    tensors = ("latents", "cond_latents", "audio_mel", "audio_wav2vec", "pose", "mouth_open", "mouth_box", "window_start", "clip_index")
    for name in tensors:
        torch.testing.assert_close(getattr(loaded, name), getattr(cache, name), rtol=0, atol=0, equal_nan=True)
    for name in ("clip_ids", "identities", "vae_config_digest", "vae_weights_digest", "latents_mean", "latents_std"):
        assert getattr(loaded, name) == getattr(cache, name)
    with safe_open(str(path), framework="pt") as f:  # readable by any safetensors reader, metadata as JSON text
        meta = f.metadata()
    assert meta["format"] == LATENT_CACHE_FORMAT and json.loads(meta["clip_ids"]) == ["a", "b"]
    assert loaded.image_emb is None  # no image encoder: no image tokens stored


def test_condition_latents_are_the_reference_then_zero_frames_encoded(vae, windows):
    cache = encode_windows(vae, windows)
    video = np.stack([w.frames for w in windows]).astype(np.float32) / 127.5 - 1.0  # [N, T, H, W, 3] in [-1, 1]
    video[:, 1:] = 0.0  # WanImageToVideoPipeline: [image, zeros(T - 1)] in the VAE's [-1, 1] range
    with torch.no_grad():
        expected = encode_video(vae, torch.from_numpy(video))
    assert cache.cond_latents.shape == cache.latents.shape
    torch.testing.assert_close(cache.cond_latents, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.cond_latents[:, :, :1], cache.reference_latents, rtol=1e-5, atol=1e-5)
    assert cache.cond_latents[:, :, 1:].abs().min() > 0  # the zero frames encode to VAE latents, not to zeros


def test_image_tokens_round_trip_and_old_caches_are_refused(vae, windows, tmp_path):
    cache = encode_windows(vae, windows)
    cache.image_emb = torch.randn(len(cache), 5, 8)
    path = tmp_path / "c.safetensors"
    save_latent_cache(path, cache)
    loaded = load_latent_cache(path)
    assert torch.equal(loaded.image_emb, cache.image_emb)
    assert set(loaded.condition(slice(1, 3))) == {"cond", "image_emb"}
    tensors = {k: v for k, v in {"latents": cache.latents, "audio_mel": cache.audio_mel}.items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": "talkalign-latents/1"})
    with pytest.raises(ValueError, match="old.safetensors: latent cache format talkalign-latents/1.*re-run"):
        load_latent_cache(tmp_path / "old.safetensors")


def test_reference_latent_is_the_first_frame_encoded_alone(vae, windows):
    cache = encode_windows(vae, windows)
    first_frames = torch.from_numpy(np.stack([w.frames[:1] for w in windows]))  # [N, 1, H, W, 3]
    with torch.no_grad():
        alone = encode_video(vae, first_frames)
    h = SIDE // spatial_ratio(vae)
    assert alone.shape == cache.reference_latents.shape == (5, 4, 1, h, h)
    torch.testing.assert_close(cache.reference_latents, alone, rtol=1e-5, atol=1e-5)
    # ...while the later latent frames do depend on the later frames.
    assert not torch.allclose(cache.latents[:, :, 1:], cache.latents[:, :, :1].expand_as(cache.latents[:, :, 1:]))


def test_weights_digest_tracks_training(vae):
    other = build_vae(VAE_CFG.model_copy(update={"seed": 1}))
    set_latent_stats(other, vae.config.latents_mean, vae.config.latents_std)
    assert vae_config_digest(other) == vae_config_digest(vae)
    assert vae_weights_digest(other) != vae_weights_digest(vae)


def test_bad_files_are_named(vae, windows, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors: no latent cache"):
        load_latent_cache(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="garbage.safetensors: unreadable latent cache"):
        load_latent_cache(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="foreign.safetensors: not a latent cache"):
        load_latent_cache(foreign)
    cache = encode_windows(vae, windows)
    cache.clip_index = torch.tensor([0, 0, 0, 1, 2])
    with pytest.raises(ValueError, match="clip_index outside the 2 clip ids"):
        save_latent_cache(tmp_path / "bad.safetensors", cache)
    assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(ValueError, match="at least one window"):
        encode_windows(vae, [])
