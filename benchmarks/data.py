"""Data-stage throughput: synthesize, ingest (clips/s, x real time) and shard writing / reading (samples/s).

Each row: warm-up, then 5 timed repeats (benchmarks/timing.py), every repeat on a fresh directory so no cache of
an earlier repeat helps; local and S3 shard reads are timed interleaved for their ratio.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from benchmarks.timing import Row, rate_row, ratio, ratio_row, time_call, time_calls
from components.config import IngestConfig, ShardConfig, WorldConfig
from components.data.ingest import ingest_folder
from components.data.shards.reader import open_split
from components.data.shards.writer import write_shards
from components.data.synthetic.world import synthesize_world


def bench_data(n_identities: int = 2, clips_per_identity: int = 2, duration_s: float = 2.0) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = WorldConfig(n_identities=n_identities, clips_per_identity=clips_per_identity, duration_s=duration_s,
                            speech="syllables")
        n_clips = n_identities * clips_per_identity
        video_s = n_clips * duration_s
        fresh = (root / f"run{i}" for i in itertools.count())

        def synthesize() -> None:
            synthesize_world(world, next(fresh), progress=False)

        seconds = time_call(synthesize)
        rows.append(rate_row("synthesize clips/s", seconds, n_clips, f"{video_s / seconds.median:.1f}x real time, "
                             f"{n_clips} clips a repeat"))
        raw = root / "raw"
        synthesize_world(world, raw, progress=False)

        def ingest() -> None:
            out = next(fresh)
            ingest_folder(IngestConfig(), raw, out / "ingested", out / "quarantine.jsonl", progress=False)

        seconds = time_call(ingest)
        rows.append(rate_row("ingest clips/s", seconds, n_clips, f"{video_s / seconds.median:.1f}x real time"))
        ingest_folder(IngestConfig(), raw, root / "ingested", root / "quarantine.jsonl", progress=False)

        shards = ShardConfig(maxcount=2, splits={"train": 1.0})

        def write() -> None:
            out = next(fresh)
            write_shards(shards, root / "ingested", str(out), progress=False)
            shutil.rmtree(out)

        rows.append(rate_row("shard write samples/s", time_call(write), n_clips))
        write_shards(shards, root / "ingested", str(root / "shards"), progress=False)
        with local_s3() as bucket_uri:
            write_shards(shards, root / "ingested", bucket_uri, progress=False)
            reads = time_calls({"local": lambda: _read(root / "shards"), "s3": lambda: _read(bucket_uri)})
        rows.append(rate_row("shard read samples/s (stock webdataset reader)", reads["local"], n_clips,
                             "start-up included"))
        rows.append(rate_row("shard read samples/s from S3 (moto_server, loopback)", reads["s3"], n_clips))
        rows.append(ratio_row("shard read S3 / local time", ratio(reads["s3"], reads["local"]), "x, interleaved"))
    return rows


def _read(uri: str | Path) -> int:
    """Every train sample through the stock reader plus decode (components/data/shards/reader.py)."""
    return sum(1 for _ in open_split(uri, "train", decode=True))


@contextmanager
def local_s3() -> Iterator[str]:
    """An S3-compatible server on loopback (moto_server) with one bucket; yields s3://bucket/prefix."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {key: os.environ.get(key) for key in [*env, "S3_ENDPOINT_URL"]}
    try:
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update({**env, "S3_ENDPOINT_URL": endpoint})
        client = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):  # up in well under a second; bounded wait
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        yield "s3://bench/shards"
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
