"""Data-stage throughput: synthesize, ingest (clips/s, x real time) and shard reading (samples/s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from components.config import IngestConfig, ShardConfig, WorldConfig
from components.data.ingest import ingest_folder
from components.data.shards.reader import read_throughput
from components.data.shards.writer import write_shards
from components.data.synthetic.world import synthesize_world


def bench_data(n_identities: int = 6, clips_per_identity: int = 4, duration_s: float = 2.0) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = WorldConfig(n_identities=n_identities, clips_per_identity=clips_per_identity, duration_s=duration_s, speech="syllables")
        n_clips = n_identities * clips_per_identity
        video_s = n_clips * duration_s

        start = time.perf_counter()
        synthesize_world(world, root / "raw", progress=False)
        synth_s = time.perf_counter() - start
        rows.append(("synthesize clips/s", n_clips / synth_s, f"{video_s / synth_s:.1f}x real time"))

        summary = ingest_folder(IngestConfig(), root / "raw", root / "ingested", root / "quarantine.jsonl", progress=False)
        rows.append(("ingest clips/s", summary.clips_per_s, f"{video_s / summary.seconds:.1f}x real time"))

        shards = ShardConfig(maxcount=8, splits={"train": 1.0})
        start = time.perf_counter()
        write_shards(shards, root / "ingested", str(root / "shards"), progress=False)
        write_s = time.perf_counter() - start
        rows.append(("shard write samples/s", n_clips / write_s, ""))

        read = read_throughput(str(root / "shards"), "train")
        rows.append(("shard read samples/s (stock webdataset reader)", read, f"{read / summary.clips_per_s:.0f}x ingest rate"))

        with local_s3() as bucket_uri:
            write_shards(shards, root / "ingested", bucket_uri, progress=False)
            remote = read_throughput(bucket_uri, "train")
        rows.append(("shard read samples/s from S3 (moto_server, loopback)", remote, f"{remote / read:.2f}x local"))
    return rows


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
