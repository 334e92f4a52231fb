"""index.json: which shards make the dataset, per split, and the dataset digest MLflow logs as its version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.io.storage import S3Storage, open_storage

__all__ = ["INDEX_FORMAT", "INDEX_NAME", "ShardIndex", "ShardInfo", "SplitIndex", "dataset_digest", "read_index"]

INDEX_NAME = "index.json"
INDEX_FORMAT = "talkalign-shards/1"


@dataclass(frozen=True)
class ShardInfo:
    name: str  # relative to the output root: "{version}/{split}-{NNNNNN}.tar"
    n_samples: int
    sha256: str
    bytes: int


@dataclass
class SplitIndex:
    n_samples: int = 0
    identities: list[str] = field(default_factory=list)
    clip_ids: list[str] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)


@dataclass
class ShardIndex:
    digest: str  # sha256 over the shard digests: the dataset version MLflow logs
    version: str  # the folder the shards live in
    splits: dict[str, SplitIndex]
    config: dict[str, Any]  # maxcount, splits, seed: what decided the layout
    manifest_sha256: str  # the ingested manifest the shards were built from
    format: str = INDEX_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()  # field and split order as written

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardIndex":
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"unknown shard index format {data.get('format')!r} (expected {INDEX_FORMAT})")
        splits = {
            name: SplitIndex(
                n_samples=s["n_samples"],
                identities=list(s["identities"]),
                clip_ids=list(s["clip_ids"]),
                shards=[ShardInfo(**info) for info in s["shards"]],
            )
            for name, s in data["splits"].items()
        }
        fields = {k: data[k] for k in ("digest", "version", "config", "manifest_sha256")}
        return cls(splits=splits, format=data["format"], **fields)

    def shard_names(self) -> set[str]:
        return {info.name for split in self.splits.values() for info in split.shards}


def dataset_digest(shards: dict[str, list[ShardInfo]]) -> str:
    """sha256 over "split/basename sha256" lines: changes iff any shard's content or membership does."""
    lines = [
        f"{split}/{Path(info.name).name} {info.sha256}\n"
        for split in sorted(shards)
        for info in shards[split]
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_index(output_uri: str | Path) -> ShardIndex:
    storage = open_storage(output_uri)
    uri = storage.uri(INDEX_NAME)
    if isinstance(storage, S3Storage):
        storage.ensure_ready()  # a dead endpoint fails in seconds, not after the full retry budget
    if not storage.exists(INDEX_NAME):
        raise FileNotFoundError(f"{uri}: no shard index (run the shard stage first)")
    try:
        return ShardIndex.from_dict(json.loads(storage.get_bytes(INDEX_NAME)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{uri}: invalid shard index: {exc}") from exc
