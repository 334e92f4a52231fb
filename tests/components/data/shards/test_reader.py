"""Reading shards through the stock webdataset reader: round trip, per-rank shares, shuffling, empty splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from components.config import ShardConfig
from components.data.shards.index import read_index
from components.data.shards.reader import open_split, read_throughput, shard_urls
from components.data.shards.sample import decode_sample
from components.data.shards.writer import write_shards


def cfg(**kw) -> ShardConfig:
    return ShardConfig(**{"maxcount": 8, "seed": 0, **kw})


def read_all(urls: list[str]) -> list[dict]:
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_round_trip_through_the_stock_reader(ingested, tmp_path):
    out = tmp_path / "shards"
    index = write_shards(cfg(), ingested, out, progress=False)
    manifest = [json.loads(line) for line in (ingested / "manifest.jsonl").read_text().splitlines()]
    identity_of = {row["clip_id"]: row["identity"] for row in manifest}

    assert sum(s.n_samples for s in index.splits.values()) == len(manifest) == 48
    assert read_index(out) == index
    seen_identities: set[str] = set()
    for split, split_index in index.splits.items():
        samples = read_all(shard_urls(out, split))
        keys = [s["__key__"] for s in samples]
        assert keys == sorted(split_index.clip_ids) == split_index.clip_ids
        assert len(keys) == split_index.n_samples == sum(i.n_samples for i in split_index.shards)
        identities = {identity_of[k] for k in keys}
        assert identities == set(split_index.identities) and not identities & seen_identities
        seen_identities |= identities
        for raw in samples:
            clip_dir = ingested / "clips" / raw["__key__"]
            assert raw["mp4"] == (clip_dir / "video.mp4").read_bytes()
            assert raw["wav"] == (clip_dir / "audio.wav").read_bytes()
            assert ("truth.json" in raw) == (clip_dir / "truth.json").exists()
            sample = decode_sample(raw)
            for field in ("wav2vec", "mel", "pose"):
                assert np.array_equal(sample[f"{field}.npy"], np.load(clip_dir / f"{field}.npy"))
            assert sample["json"]["split"] == split and sample["json"]["fps"] == 25
            assert sample["mp4"] == raw["mp4"]  # media stays bytes for PyAV / soundfile
            if "truth.json" in raw:
                assert sample["truth.json"] == {"mouth_open": [0.1, 0.5]}
    assert set(index.splits) == {"train", "val", "test"} and all(s.n_samples for s in index.splits.values())


def test_too_few_identities_leave_a_split_empty_and_reading_it_says_so(tmp_path, make_ingested):
    ingested = make_ingested(tmp_path / "ingested", n_identities=2, clips_per_identity=2)
    index = write_shards(cfg(splits={"train": 0.8, "val": 0.1, "test": 0.1}), ingested, tmp_path / "out", progress=False)
    empty = [s for s, idx in index.splits.items() if idx.n_samples == 0]
    assert empty == ["test"] and index.splits["test"].shards == []  # train and val got one identity each
    with pytest.raises(ValueError, match=rf"split '{empty[0]}' has no shards"):
        open_split(tmp_path / "out", empty[0])
    with pytest.raises(ValueError, match=r"index\.json: no split 'holdout' \(have train, val, test\)"):
        shard_urls(tmp_path / "out", "holdout")


def test_nodes_and_workers_get_disjoint_shards(ingested, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    write_shards(cfg(maxcount=4), ingested, out, progress=False)
    everything = {s["__key__"] for s in open_split(out, "train")}
    per_rank = []
    for rank in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        per_rank.append({s["__key__"] for s in open_split(out, "train")})
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == everything


def test_shuffled_and_resampled_reading(ingested, tmp_path):
    out = tmp_path / "shards"
    write_shards(cfg(maxcount=4), ingested, out, progress=False)
    ordered = [s["__key__"] for s in open_split(out, "train")]
    shuffled = [s["__key__"] for s in open_split(out, "train", shuffle=True, seed=1)]
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    endless = open_split(out, "train", resampled=True, decode=True)
    drawn = [s for _, s in zip(range(3 * len(ordered)), endless)]
    assert len(drawn) == 3 * len(ordered) and isinstance(drawn[0]["pose.npy"], np.ndarray)


def test_read_throughput_reads_every_sample(ingested, tmp_path):
    out = tmp_path / "shards"
    index = write_shards(cfg(maxcount=4), ingested, out, progress=False)
    assert index.splits["val"].n_samples > 0 and read_throughput(out, "val") > 0
