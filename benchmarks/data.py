"""Data-stage throughput: synthesize, ingest (clips/s, x real time) and shard reading (samples/s)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from components.config import IngestConfig, ShardConfig, WorldConfig
from components.data.ingest import ingest_folder
from components.data.shards import read_throughput, write_shards
from components.data.synthetic import synthesize_world


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
    return rows
