"""Shards: identity splits, round trips through the stock webdataset reader, atomicity, S3."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from components.config import ShardConfig
from components.data import shards
from components.data.shards import (
    decode_sample,
    open_split,
    read_index,
    read_throughput,
    shard_urls,
    split_by_identity,
    write_shards,
)
from components.io.storage import StorageError

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------- a fake ingested dir


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def make_ingested(root: Path, n_identities: int = 12, clips_per_identity: int = 4, seed: int = 0) -> Path:
    """What the ingest stage leaves behind, in miniature: tiny bytes and arrays per clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_identities):
        for j in range(clips_per_identity):
            clip_id = f"id{i:02d}_clip{j}"
            clip_dir = root / "clips" / clip_id
            clip_dir.mkdir(parents=True)
            (clip_dir / "video.mp4").write_bytes(rng.bytes(300))
            (clip_dir / "audio.wav").write_bytes(rng.bytes(200))
            (clip_dir / "wav2vec.npy").write_bytes(_npy(rng.normal(size=(10, 4)).astype(np.float32)))
            (clip_dir / "mel.npy").write_bytes(_npy(rng.normal(size=(20, 8)).astype(np.float32)))
            (clip_dir / "pose.npy").write_bytes(_npy(rng.normal(size=(5, 10, 2)).astype(np.float32)))
            if j % 2 == 0:
                (clip_dir / "truth.json").write_text(json.dumps({"mouth_open": [0.1, 0.5]}))
            meta = {"clip_id": clip_id, "identity": f"person{i:02d}", "fps": 25, "n_frames": 5}
            (clip_dir / "meta.json").write_text(json.dumps(meta))
            rows.append({**meta, "source": "fake", "has_truth": j % 2 == 0})
    # Manifest order is not clip_id order: shards must sort anyway.
    rng.shuffle(rows)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def ingested(tmp_path) -> Path:
    return make_ingested(tmp_path / "ingested")


def cfg(**kw) -> ShardConfig:
    return ShardConfig(**{"maxcount": 8, "seed": 0, **kw})


def read_all(urls: list[str]) -> list[dict]:
    return list(wds.WebDataset(urls, shardshuffle=False))


def output_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def shards_intact(out: Path, index) -> bool:
    for split in index.splits.values():
        for info in split.shards:
            data = (out / info.name).read_bytes()
            if hashlib.sha256(data).hexdigest() != info.sha256 or len(data) != info.bytes:
                return False
    return True


# ----------------------------------------------------------------------------- splitting


def test_split_by_identity_is_deterministic_disjoint_and_sized():
    people = [f"p{i}" for i in range(12)]
    splits = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = split_by_identity(people, splits, seed=0)
    assert first == split_by_identity(list(reversed(people)) + people[:3], splits, seed=0)  # order, duplicates
    assert set(first) == set(people)  # every identity in exactly one split (a dict can't hold two)
    sizes = {s: sum(v == s for v in first.values()) for s in splits}
    assert sizes == {"train": 10, "val": 1, "test": 1}
    assert split_by_identity(people, splits, seed=1) != first


@pytest.mark.parametrize("n", [3, 4, 5, 7, 30])
def test_every_used_split_gets_an_identity_when_possible(n):
    splits = {"train": 0.8, "val": 0.1, "test": 0.1, "unused": 0.0}
    assignment = split_by_identity([f"p{i}" for i in range(n)], splits, seed=3)
    assert {"train", "val", "test"} <= set(assignment.values())
    assert "unused" not in assignment.values()


def test_split_config_rejects_names_that_break_shard_names():
    with pytest.raises(ValueError, match="split name 'tr.ain'"):
        ShardConfig(splits={"tr.ain": 0.9, "val": 0.1})
    with pytest.raises(ValueError, match="must sum to 1"):
        ShardConfig(splits={"train": 0.9, "val": 0.2})


# ----------------------------------------------------------------------------- local round trip


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


def test_maxcount_is_respected_and_shards_are_numbered(ingested, tmp_path):
    out = tmp_path / "shards"
    index = write_shards(cfg(maxcount=3), ingested, out, progress=False)
    for split, split_index in index.splits.items():
        names = [Path(i.name).name for i in split_index.shards]
        assert names == [f"{split}-{k:06d}.tar" for k in range(len(names))]
        for info in split_index.shards:
            with tarfile.open(out / info.name) as tar:
                keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
            assert len(keys) == info.n_samples <= 3
        assert all(i.n_samples == 3 for i in split_index.shards[:-1])  # only the last one is short


def test_same_inputs_give_the_same_bytes_and_digest(ingested, tmp_path):
    a = write_shards(cfg(), ingested, tmp_path / "a", progress=False)
    b = write_shards(cfg(), ingested, tmp_path / "b", progress=False)
    assert a.digest == b.digest and a.to_json() == b.to_json()
    other = write_shards(cfg(seed=5), ingested, tmp_path / "c", progress=False)
    assert other.digest != a.digest


def test_too_few_identities_leave_a_split_empty_and_reading_it_says_so(tmp_path):
    ingested = make_ingested(tmp_path / "ingested", n_identities=2, clips_per_identity=2)
    index = write_shards(cfg(), ingested, tmp_path / "out", progress=False)
    empty = [s for s, idx in index.splits.items() if idx.n_samples == 0]
    assert empty == ["test"] and index.splits["test"].shards == []  # train and val got one identity each
    with pytest.raises(ValueError, match=rf"split '{empty[0]}' has no shards"):
        open_split(tmp_path / "out", empty[0])
    with pytest.raises(ValueError, match=r"index\.json: no split 'holdout' \(have train, val, test\)"):
        shard_urls(tmp_path / "out", "holdout")


def test_decode_refuses_pickled_arrays():
    raw = {"__key__": "x", "__url__": "shard.tar", "mp4": b"", "wav": b"", "json": b"{}"}
    raw |= {k: _npy(np.zeros(2)) for k in ("wav2vec.npy", "mel.npy")}
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    raw["pose.npy"] = buf.getvalue()
    with pytest.raises(ValueError, match=r"shard\.tar sample x: cannot decode field 'pose\.npy'.*allow_pickle"):
        decode_sample(raw)


def test_bad_input_is_named(ingested, tmp_path):
    mel = ingested / "clips" / "id00_clip1" / "mel.npy"
    mel.rename(mel.with_suffix(".bak"))
    with pytest.raises(FileNotFoundError, match=r"id00_clip1/mel\.npy: missing \(listed in .*manifest\.jsonl:\d+\)"):
        write_shards(cfg(), ingested, tmp_path / "out", progress=False)
    mel.with_suffix(".bak").rename(mel)
    with open(ingested / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"clip_id": "a.b", "identity": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"manifest\.jsonl:49: clip_id 'a\.b'"):
        write_shards(cfg(), ingested, tmp_path / "out", progress=False)


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


# ----------------------------------------------------------------------------- atomicity


def _fail_on_call(n: int, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError("simulated crash")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["tar_writer", "publish"])
def test_a_crash_leaves_the_previous_dataset_intact(ingested, tmp_path, monkeypatch, where):
    out = tmp_path / "shards"
    old = write_shards(cfg(maxcount=4), ingested, out, progress=False)
    old_index_bytes = (out / "index.json").read_bytes()
    old_files = output_files(out)

    # New inputs, so the new run would produce a different dataset.
    (ingested / "clips" / "id03_clip0" / "video.mp4").write_bytes(b"changed")
    if where == "tar_writer":  # dies while writing the 2nd shard's samples
        monkeypatch.setattr(shards, "_write_tar", _fail_on_call(2, shards._write_tar))
    else:  # dies after the 1st new shard was published
        from components.io.storage import LocalStorage

        monkeypatch.setattr(LocalStorage, "put_file", _fail_on_call(2, LocalStorage.put_file))
    with pytest.raises(OSError, match="simulated crash"):
        write_shards(cfg(maxcount=4), ingested, out, progress=False)

    assert (out / "index.json").read_bytes() == old_index_bytes
    assert shards_intact(out, old)
    files = output_files(out)
    assert not any(f.endswith(".partial") or ".staging-" in f for f in files)
    extra = set(files) - set(old_files)
    if where == "tar_writer":
        assert not extra  # nothing was published
    else:  # the one shard published before the crash: complete, and named by no index
        assert len(extra) == 1 and extra.pop().endswith("-000000.tar")
    assert len(read_all(shard_urls(out, "train"))) == old.splits["train"].n_samples

    monkeypatch.undo()
    new = write_shards(cfg(maxcount=4), ingested, out, progress=False)
    assert new.digest != old.digest
    assert output_files(out) == sorted(["index.json", *new.shard_names()])


def test_a_killed_run_leaves_nothing_visible(ingested, tmp_path):
    """SIGKILL mid-run (no cleanup code runs): only hidden staging leftovers, removed by the next run."""
    out = tmp_path / "shards"
    old = write_shards(cfg(maxcount=4), ingested, out, progress=False)
    old_index_bytes = (out / "index.json").read_bytes()
    (ingested / "clips" / "id03_clip0" / "video.mp4").write_bytes(b"changed")
    script = f"""
import os, signal
from components.config import ShardConfig
from components.data import shards
real, calls = shards._write_tar, []
def dying(path, samples):
    calls.append(path)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, samples)
shards._write_tar = dying
shards.write_shards(ShardConfig(maxcount=4), {str(ingested)!r}, {str(out)!r}, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()

    assert (out / "index.json").read_bytes() == old_index_bytes and shards_intact(out, old)
    leftovers = set(output_files(out)) - {"index.json", *old.shard_names()}
    assert leftovers and all(f.startswith(".staging-") and f.endswith(".partial") for f in leftovers)

    new = write_shards(cfg(maxcount=4), ingested, out, progress=False)
    assert output_files(out) == sorted(["index.json", *new.shard_names()])
    assert not any(p.name.startswith(".staging-") for p in out.iterdir())


def test_rerun_removes_stale_shards_but_not_other_files(ingested, tmp_path):
    out = tmp_path / "shards"
    first = write_shards(cfg(maxcount=2), ingested, out, progress=False)
    (out / "README.txt").write_text("not ours")
    again = write_shards(cfg(maxcount=2), ingested, out, progress=False)
    assert again.digest == first.digest and shards_intact(out, first)  # identical rerun: same files

    second = write_shards(cfg(maxcount=16), ingested, out, progress=False)
    assert len(second.shard_names()) < len(first.shard_names())
    assert output_files(out) == sorted(["README.txt", "index.json", *second.shard_names()])
    assert len(read_all(shard_urls(out, "train"))) == second.splits["train"].n_samples


# ----------------------------------------------------------------------------- S3


def test_s3_round_trip_matches_local(ingested, tmp_path, s3_bucket, s3_server):
    local = write_shards(cfg(maxcount=16), ingested, tmp_path / "local", progress=False)
    uri = f"s3://{s3_bucket}/datasets/toy"
    remote = write_shards(cfg(maxcount=16), ingested, uri, progress=False)
    assert remote.to_json() == local.to_json()  # same bytes, same digest, wherever they live

    for split in local.splits:
        urls = shard_urls(uri, split)
        assert all(u.startswith("pipe:") for u in urls)
        from_s3 = read_all(urls)
        from_disk = read_all(shard_urls(tmp_path / "local", split))
        assert [s["__key__"] for s in from_s3] == [s["__key__"] for s in from_disk]
        for a, b in zip(from_s3, from_disk):
            assert {k: v for k, v in a.items() if not k.startswith("__")} == {
                k: v for k, v in b.items() if not k.startswith("__")
            }

    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(keys) == sorted(f"datasets/toy/{n}" for n in ["index.json", *local.shard_names()])

    # A rerun with other settings swaps the index and then drops the old version's objects.
    write_shards(cfg(maxcount=48), ingested, uri, progress=False)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert len(keys) == 1 + 3 and f"datasets/toy/{local.shard_names().pop()}" not in keys


def test_unreachable_s3_endpoint_fails_fast(ingested, aws_env, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"s3://bucket/prefix: cannot reach S3 endpoint http://127\.0\.0\.1"):
        write_shards(cfg(), ingested, "s3://bucket/prefix", progress=False)
    assert time.monotonic() - start < 10
