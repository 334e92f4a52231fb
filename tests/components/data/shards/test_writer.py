"""Writing shards: numbering, reproducible bytes, named bad input, atomic publishing, S3."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import webdataset as wds

from components.config import ShardConfig
from components.data.shards import writer
from components.data.shards.reader import shard_urls
from components.data.shards.writer import write_shards
from components.io.storage import StorageError

REPO = Path(__file__).resolve().parents[4]


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
        monkeypatch.setattr(writer, "_write_tar", _fail_on_call(2, writer._write_tar))
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
from components.data.shards import writer
real, calls = writer._write_tar, []
def dying(path, samples):
    calls.append(path)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, samples)
writer._write_tar = dying
writer.write_shards(ShardConfig(maxcount=4), {str(ingested)!r}, {str(out)!r}, progress=False)
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
    (out / f".index.{'0' * 32}.tmp.json").write_text("{")  # left by an interrupted atomic write
    again = write_shards(cfg(maxcount=2), ingested, out, progress=False)
    assert again.digest == first.digest and shards_intact(out, first)  # identical rerun: same files

    second = write_shards(cfg(maxcount=16), ingested, out, progress=False)
    assert len(second.shard_names()) < len(first.shard_names())
    assert output_files(out) == sorted(["README.txt", "index.json", *second.shard_names()])
    assert len(read_all(shard_urls(out, "train"))) == second.splits["train"].n_samples


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
