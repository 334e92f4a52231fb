"""Reading a split: the URLs of its shards and a stock `webdataset.WebDataset` over them (local paths, or for S3
`pipe:` commands that stream each object through boto3)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import webdataset as wds

from components.data.shards.index import INDEX_NAME, read_index
from components.data.shards.sample import decode_sample
from components.io.storage import S3Storage, open_storage

__all__ = ["open_split", "read_throughput", "shard_urls"]


def shard_urls(output_uri: str | Path, split: str) -> list[str]:
    """URLs the stock webdataset reader opens: local paths, or `pipe:` commands streaming from S3."""
    storage = open_storage(output_uri)
    index = read_index(output_uri)
    if split not in index.splits:
        raise ValueError(f"{storage.uri(INDEX_NAME)}: no split {split!r} (have {', '.join(index.splits)})")
    names = [info.name for info in index.splits[split].shards]
    if isinstance(storage, S3Storage):
        return [f"pipe:{storage.stream_command(name)}" for name in names]
    return [storage.uri(name) for name in names]


def open_split(
    output_uri: str | Path,
    split: str,
    *,
    shuffle: bool = False,
    resampled: bool = False,
    decode: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 64,
    nodesplitter: Callable | None = wds.split_by_node,
    workersplitter: Callable | None = wds.split_by_worker,
) -> wds.WebDataset:
    """A stock `webdataset.WebDataset` over one split's shards.

    Multi-node training gets a disjoint share of shards per rank (`split_by_node`, from RANK /
    WORLD_SIZE or torch.distributed) and per DataLoader worker (`split_by_worker`); with fewer
    shards than ranks x workers some get none, so size maxcount for the cluster. `resampled`
    draws shards with replacement forever (use with a fixed number of steps).
    """
    urls = shard_urls(output_uri, split)
    if not urls:
        raise ValueError(f"{output_uri}: split {split!r} has no shards (too few identities for the split fractions?)")
    dataset = wds.WebDataset(
        urls,
        shardshuffle=len(urls) if shuffle and not resampled else False,
        detshuffle=True,
        seed=seed,
        resampled=resampled,
        nodesplitter=nodesplitter,
        workersplitter=workersplitter,
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer)
    if decode:
        dataset = dataset.map(decode_sample)
    return dataset


def read_throughput(output_uri: str | Path, split: str) -> float:
    """Samples per second through the stock reader plus decode_sample, start-up included."""
    start = time.perf_counter()
    n = sum(1 for _ in open_split(output_uri, split, decode=True))
    return n / (time.perf_counter() - start)
