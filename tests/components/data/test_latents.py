"""A split's latent cache on disk (components/data/latents.py): written part by part from a stream of encoded
windows, read back lazily row by row or eagerly, and refused with a clear message when it is not what the index
says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from components.data.latents import (
    LATENT_SPLIT_FORMAT,
    LatentRows,
    LatentSplit,
    VaeStamp,
    latent_split_dir,
    load_latent_cache,
    load_latent_split,
    write_latent_split,
)

STAMP = VaeStamp("cfg-digest", "weights-digest", [0.1, -0.2], [0.5, 2.0])
CLIPS = [("a", "person_a", 3), ("b", "person_b", 4), ("c", "person_a", 2)]  # clip, identity, windows


def _batches(batch_size: int = 2, image_emb: bool = True, seed: int = 0) -> list[LatentRows]:
    """Random rows of the three clips above (9 windows), cut into batches across clip boundaries."""
    g = torch.Generator().manual_seed(seed)
    windows = [(c, ident, start * 4) for c, ident, n in CLIPS for start in range(n)]
    out = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        n = len(chunk)
        tensors = {
            "latents": torch.randn(n, 2, 2, 3, 3, generator=g), "cond_latents": torch.randn(n, 2, 2, 3, 3, generator=g),
            "audio_mel": torch.randn(n, 5, 4, 6, generator=g), "audio_wav2vec": torch.randn(n, 5, 2, 4, generator=g),
            "pose": torch.rand(n, 5, 3, 3, generator=g), "mouth_open": torch.rand(n, 5, generator=g),
            "mouth_box": torch.rand(n, 5, 4, generator=g), "window_start": torch.tensor([s for _, _, s in chunk]),
        }
        if image_emb:
            tensors["image_emb"] = torch.randn(n, 3, 8, generator=g)
        out.append(LatentRows(tensors, [c for c, _, _ in chunk], [ident for _, ident, _ in chunk]))
    return out


def _eager(batches: list[LatentRows]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([b.tensors[name] for b in batches]) for name in batches[0].tensors}


def test_a_stream_of_batches_becomes_parts_and_reads_back_exactly(tmp_path: Path):
    batches = _batches(batch_size=2)
    directory = latent_split_dir(tmp_path / "latents", "train")
    assert write_latent_split(directory, iter(batches), STAMP, part_windows=3) == 9
    # Parts of whole batches, >= 3 windows each: 4 + 4 + 1; nothing temporary left next to the split.
    assert sorted(p.name for p in directory.iterdir()) == ["index.json", *(f"part-0000{i}.safetensors" for i in range(3))]
    assert [p.name for p in directory.parent.iterdir()] == ["train"]
    index = json.loads((directory / "index.json").read_text())
    assert index["format"] == LATENT_SPLIT_FORMAT and [p["windows"] for p in index["parts"]] == [4, 4, 1]
    assert index["clip_ids"] == ["a", "b", "c"] and index["identities"] == ["person_a", "person_b", "person_a"]
    assert [p["clips"] for p in index["parts"]] == [[0, 1], [1, 2], [2]]  # split-wide index of each part's clips

    eager = _eager(batches)
    cache = load_latent_split(directory)
    for name, tensor in eager.items():
        assert torch.equal(getattr(cache, name), tensor), name
    assert cache.clip_index.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2] and cache.clip_ids == ["a", "b", "c"]
    assert (cache.vae_config_digest, cache.latents_std) == (STAMP.config_digest, STAMP.latents_std)
    # Each part is itself a latent cache file (clip list local to the part).
    part = load_latent_cache(directory / "part-00001.safetensors")
    assert part.clip_ids == ["b", "c"] and part.clip_index.tolist() == [0, 0, 0, 1]
    assert torch.equal(part.latents, eager["latents"][4:8])

    some = load_latent_split(directory, rows=[8, 0, 5])
    assert torch.equal(some.latents, eager["latents"][[8, 0, 5]]) and some.clip_index.tolist() == [2, 0, 1]


def test_columns_index_like_the_tensors_they_stand_for(tmp_path: Path):
    batches = _batches(batch_size=3, image_emb=False)
    write_latent_split(tmp_path / "val", batches, STAMP, part_windows=2)
    eager = _eager(batches)
    split = LatentSplit(tmp_path / "val", max_open=1)
    assert len(split) == 9 and "image_emb" not in split.names
    latents = split.column("latents")
    assert latents.shape == eager["latents"].shape and len(latents) == 9
    index = torch.tensor([7, 7, 0, 4, 5, 6, 2])  # repeats, runs across part boundaries, any order
    assert torch.equal(latents[index], eager["latents"][index])
    assert torch.equal(latents[2:8:2], eager["latents"][2:8:2]) and torch.equal(latents[-1], eager["latents"][-1])
    assert torch.equal(split.column("window_start")[np.array([3, 1])], eager["window_start"][[3, 1]])
    assert split.column("clip_index")[[8, 3, 0]].tolist() == [2, 1, 0]
    assert len(split._open) == 1  # the LRU closed the other parts
    with pytest.raises(IndexError, match="rows 0..9 asked for, the cache has 9 windows"):
        latents[torch.tensor([0, 9])]
    with pytest.raises(TypeError, match="1-D integer tensor"):
        latents[torch.tensor([True, False])]
    with pytest.raises(KeyError, match="no tensor 'image_emb'"):
        split.column("image_emb")
    split.close()
    assert not split._open


def test_a_batch_reads_only_its_rows(tmp_path: Path, monkeypatch):
    write_latent_split(tmp_path / "train", _batches(batch_size=2), STAMP, part_windows=3)
    read = []
    original = LatentSplit._slice

    def counting(self, part, name, start, stop):
        read.append(stop - start)
        return original(self, part, name, start, stop)

    monkeypatch.setattr(LatentSplit, "_slice", counting)
    split = LatentSplit(tmp_path / "train")
    split.column("latents")[torch.tensor([6, 1, 2])]
    assert sum(read) == 3  # rows 1-2 as one slice, row 6 alone: 3 rows read, not 9
    read.clear()
    assert split.shape("latents") == (9, 2, 2, 3, 3) and len(split.column("pose")) == 9 and not read  # index only


def test_a_failed_write_leaves_the_previous_cache_as_it_was(tmp_path: Path):
    directory = tmp_path / "train"
    write_latent_split(directory, _batches(), STAMP)
    before = load_latent_split(directory).latents

    def broken():
        batches = _batches(seed=1)
        yield batches[0]
        bad = batches[1]
        bad.tensors["latents"] = bad.tensors["latents"][:, :, :1]  # another window shape mid-stream
        yield bad

    with pytest.raises(ValueError, match=r"train: windows of clip a have tensors .* one split must share one window shape"):
        write_latent_split(directory, broken(), STAMP, part_windows=1)
    assert torch.equal(load_latent_split(directory).latents, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no temporary directory left
    with pytest.raises(ValueError, match="no windows to cache"):
        write_latent_split(tmp_path / "empty", iter([]), STAMP)
    assert not (tmp_path / "empty").exists()


def test_bad_caches_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing: no latent cache .run the latents stage"):
        LatentSplit(tmp_path / "missing")
    (tmp_path / "old.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"old.safetensors is a cache of the old single-file layout"):
        LatentSplit(tmp_path / "old")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="garbage/index.json: unreadable latent cache index"):
        LatentSplit(tmp_path / "garbage")

    directory = tmp_path / "train"
    write_latent_split(directory, _batches(), STAMP, part_windows=4)
    index = json.loads((directory / "index.json").read_text())
    (directory / "index.json").write_text(json.dumps({**index, "format": "talkalign-latent-split/0"}))
    with pytest.raises(ValueError, match="index.json: latent cache index format 'talkalign-latent-split/0'.*re-run"):
        LatentSplit(directory)
    # A part of another VAE (or another run) behind the index: refused when the part is opened, naming it.
    (directory / "index.json").write_text(json.dumps({**index, "vae_weights_digest": "another VAE"}))
    split = LatentSplit(directory)
    with pytest.raises(ValueError, match="part-00001.safetensors: .*disagree with the index.*re-run"):
        split.column("latents")[torch.tensor([5])]
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "part-00001.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="part-00001.safetensors: unreadable latent cache part"):
        LatentSplit(directory).read("latents", [5])
