"""index.json: a round trip through JSON, a digest that follows content, errors naming the file."""

from __future__ import annotations

import json

import pytest

from components.data.shards.index import ShardIndex, ShardInfo, SplitIndex, dataset_digest, read_index


def _index() -> ShardIndex:
    info = ShardInfo("0123456789abcdef/train-000000.tar", 3, "a" * 64, 1024)
    split = SplitIndex(n_samples=3, identities=["p1"], clip_ids=["c1", "c2", "c3"], shards=[info])
    return ShardIndex("d" * 64, "d" * 16, {"train": split}, {"maxcount": 8}, "m" * 64)


def test_index_round_trips_through_json(tmp_path):
    index = _index()
    (tmp_path / "index.json").write_bytes(index.to_json())
    assert read_index(tmp_path) == index
    assert index.shard_names() == {"0123456789abcdef/train-000000.tar"}


def test_digest_follows_shard_content_and_membership():
    a = {"train": [ShardInfo("v/train-000000.tar", 3, "a" * 64, 10)]}
    moved = {"train": [ShardInfo("w/train-000000.tar", 3, "a" * 64, 10)]}  # another version folder, same shard
    assert dataset_digest(a) == dataset_digest(moved)
    assert dataset_digest(a) != dataset_digest({"train": [ShardInfo("v/train-000000.tar", 3, "b" * 64, 10)]})
    assert dataset_digest(a) != dataset_digest({"val": a["train"]})


def test_a_missing_or_foreign_index_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"index\.json: no shard index \(run the shard stage first\)"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({**_index().to_dict(), "format": "other/9"}))
    with pytest.raises(ValueError, match=r"index\.json: invalid shard index: unknown shard index format 'other/9'"):
        read_index(tmp_path)
