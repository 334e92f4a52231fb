"""The `shard` stage: ingested clips -> WebDataset tar shards split by identity, local or on S3.

Layout under the output root (a directory or s3://bucket/prefix):

    index.json                          which shards make the dataset, written last
    {version}/train-000000.tar          version = first 16 hex digits of the dataset digest
    {version}/val-000000.tar ...

Why a version folder: shards are immutable once published, so a crash at any point leaves the
previous index.json and every shard it names untouched; the new dataset becomes visible in one
atomic step (the index write), and only then are the shards of older versions deleted. The same
inputs always give the same bytes (fixed tar mtime, sorted samples), so the same digest.

Shards are staged on local disk before publishing (inside the output directory for local output,
so publishing is a rename; in $TMPDIR for S3, which then needs room for one dataset version).

Readers use the stock `webdataset.WebDataset` on the URLs from `shard_urls` (local paths, or for
S3 `pipe:` commands that stream each object through boto3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import webdataset as wds
from tqdm import tqdm

from components.config import ShardConfig
from components.io.storage import TMP_SUFFIX, LocalStorage, S3Storage, Storage, StorageError, open_storage

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "talkalign-shards/1"
CLIP_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # webdataset splits a member name at its first dot
# What this module may delete during cleanup: its own shards, temporaries and staging folders.
_OWNED = re.compile(r"^(?:[0-9a-f]{16}/)?[A-Za-z0-9_]+-\d{6}\.tar$|(^|/)\.staging-|" + re.escape(TMP_SUFFIX) + "$")

# Sample field -> file in data/ingested/clips/{clip_id}/.
REQUIRED_FIELDS = {
    "mp4": "video.mp4",
    "wav": "audio.wav",
    "wav2vec.npy": "wav2vec.npy",
    "mel.npy": "mel.npy",
    "pose.npy": "pose.npy",
}
OPTIONAL_FIELDS = {"truth.json": "truth.json"}
# Fields decode_sample turns into arrays / dicts; mp4 and wav stay bytes (decoded with PyAV / soundfile).
DECODED_FIELDS = ["wav2vec.npy", "mel.npy", "pose.npy", "json", "truth.json"]
_TAR_MTIME = 0.0  # fixed, so identical inputs give byte-identical shards


# ----------------------------------------------------------------------------- index


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


# ----------------------------------------------------------------------------- splitting


def _allocate(n: int, splits: dict[str, float]) -> dict[str, int]:
    """How many of n identities each split gets: largest remainder, then one for every split that can have one."""
    total = sum(splits.values())
    exact = {s: n * f / total for s, f in splits.items()}
    counts = {s: int(exact[s]) for s in splits}
    by_remainder = sorted(splits, key=lambda s: -(exact[s] - counts[s]))  # stable: ties keep dict order
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    # An empty split is useless (no validation, no test): move identities from the largest split
    # while it can spare one, biggest fractions first.
    used = sorted((s for s, f in splits.items() if f > 0), key=lambda s: -splits[s])
    for s in used:
        donor = max(used, key=lambda d: counts[d])
        if counts[s] == 0 and counts[donor] >= 2:
            counts[donor] -= 1
            counts[s] += 1
    return counts


def split_by_identity(identities: Iterable[str], splits: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each identity to one split, so no person appears in two splits.

    Deterministic in (set of identities, splits, seed) and independent of input order: identities
    are ordered by a seeded hash and cut into consecutive blocks sized by the split fractions.
    Every split with a fraction > 0 gets at least one identity when there are enough identities.
    """
    if not splits or any(f < 0 for f in splits.values()) or sum(splits.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {splits}")
    unique = sorted(set(identities))
    order = sorted(unique, key=lambda ident: hashlib.sha256(f"{seed}\0{ident}".encode()).hexdigest())
    assignment: dict[str, str] = {}
    start = 0
    for split, count in _allocate(len(order), splits).items():
        for ident in order[start : start + count]:
            assignment[ident] = split
        start += count
    return assignment


# ----------------------------------------------------------------------------- reading the ingested clips


@dataclass(frozen=True)
class Clip:
    clip_id: str
    identity: str
    dir: Path


def read_manifest(input_dir: str | Path) -> list[Clip]:
    """The clips listed in {input_dir}/manifest.jsonl, with their files checked to exist."""
    input_dir = Path(input_dir)
    manifest = input_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found (run the ingest stage first)")
    clips: dict[str, Clip] = {}
    for line_no, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from exc
        clip_id, identity = row.get("clip_id"), row.get("identity")
        if not isinstance(clip_id, str) or not CLIP_ID.match(clip_id):
            raise ValueError(f"{where}: clip_id {clip_id!r} must be letters, digits, '_' or '-' (no dots)")
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"{where}: clip {clip_id} has no identity")
        if clip_id in clips:
            raise ValueError(f"{where}: duplicate clip_id {clip_id}")
        clip_dir = input_dir / "clips" / clip_id
        for filename in [*REQUIRED_FIELDS.values(), "meta.json"]:
            if not (clip_dir / filename).is_file():
                raise FileNotFoundError(f"{clip_dir / filename}: missing (listed in {where})")
        clips[clip_id] = Clip(clip_id, identity, clip_dir)
    if not clips:
        raise ValueError(f"{manifest}: no clips listed")
    return sorted(clips.values(), key=lambda c: c.clip_id)


def _load_sample(clip: Clip, split: str) -> dict[str, Any]:
    """One WebDataset sample: every value already bytes, so the shard holds exactly these bytes."""
    sample: dict[str, Any] = {"__key__": clip.clip_id}
    for key, filename in REQUIRED_FIELDS.items():
        if key.endswith(".npy"):
            _check_npy(clip.dir / filename)
        sample[key] = (clip.dir / filename).read_bytes()
    for key, filename in OPTIONAL_FIELDS.items():
        if (clip.dir / filename).is_file():
            sample[key] = (clip.dir / filename).read_bytes()
    meta_path = clip.dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    meta = {**meta, "clip_id": clip.clip_id, "identity": clip.identity, "split": split}
    sample["json"] = json.dumps(meta, sort_keys=True).encode()
    return sample


def _check_npy(path: Path) -> None:
    """Refuse arrays a reader could not load safely (object arrays need pickle)."""
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a plain .npy array: {exc}") from exc


# ----------------------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> int:
    count = 0
    with open(path, "wb") as stream:
        writer = wds.TarWriter(stream, mtime=_TAR_MTIME)
        for sample in samples:
            writer.write(sample)
            count += 1
        writer.close()
    return count


def _staging_dir(storage: Storage) -> tempfile.TemporaryDirectory:
    """Local output stages inside the output directory, so publishing a shard is a rename."""
    if isinstance(storage, LocalStorage):
        return tempfile.TemporaryDirectory(prefix=".staging-", dir=storage.root)
    return tempfile.TemporaryDirectory(prefix="talkalign-shards-")


def write_shards(
    cfg: ShardConfig,
    input_dir: str | Path | None = None,
    output_uri: str | Path | None = None,
    progress: bool = True,
) -> ShardIndex:
    """Write the ingested clips as WebDataset shards split by identity; return the published index.

    input_dir / output_uri default to cfg.input_dir / cfg.output. Per split, samples are sorted by
    clip_id and cut into `{split}-{NNNNNN}.tar` of at most cfg.maxcount samples.
    """
    input_dir = Path(input_dir if input_dir is not None else cfg.input_dir)
    output_uri = str(output_uri if output_uri is not None else cfg.output)
    storage = open_storage(output_uri)
    storage.ensure_ready()  # a missing bucket or dead endpoint fails before any work

    clips = read_manifest(input_dir)
    assignment = split_by_identity([c.identity for c in clips], cfg.splits, cfg.seed)
    by_split = {split: [c for c in clips if assignment[c.identity] == split] for split in cfg.splits}

    splits: dict[str, SplitIndex] = {}
    with _staging_dir(storage) as staging, tqdm(
        total=len(clips), desc=f"shard -> {storage.root_uri}", unit="clip", disable=not progress
    ) as bar:
        # 1. Write every shard to local staging files (nothing visible changes yet).
        staged: dict[str, Path] = {}
        for split, split_clips in by_split.items():
            index = SplitIndex(
                n_samples=len(split_clips),
                identities=sorted({c.identity for c in split_clips}),
                clip_ids=[c.clip_id for c in split_clips],
            )
            for shard_no, start in enumerate(range(0, len(split_clips), cfg.maxcount)):
                chunk = split_clips[start : start + cfg.maxcount]
                basename = f"{split}-{shard_no:06d}.tar"
                path = Path(staging) / (basename + TMP_SUFFIX)
                n = _write_tar(path, (_load_sample(c, split) for c in chunk))
                bar.update(n)
                index.shards.append(ShardInfo(basename, n, _sha256(path), path.stat().st_size))
                staged[basename] = path
            splits[split] = index

        # 2. Publish the shards under the version folder, which no index names yet.
        digest = dataset_digest({s: idx.shards for s, idx in splits.items()})
        version = digest[:16]
        for index in splits.values():
            for i, info in enumerate(index.shards):
                index.shards[i] = ShardInfo(f"{version}/{info.name}", info.n_samples, info.sha256, info.bytes)
                storage.put_file(staged[info.name], index.shards[i].name, move=True)

    # 3. The commit point: one atomic write of the index.
    result = ShardIndex(
        digest=digest,
        version=version,
        splits=splits,
        config={"maxcount": cfg.maxcount, "splits": dict(cfg.splits), "seed": cfg.seed},
        manifest_sha256=_sha256(input_dir / "manifest.jsonl"),
    )
    storage.put_bytes(result.to_json(), INDEX_NAME)

    # 4. Only now remove what no index names: older versions, leftovers of crashed runs.
    removed = remove_stale(storage, result)
    counts = ", ".join(f"{s}={idx.n_samples}" for s, idx in splits.items())
    log.info("wrote %s (%s) digest %s; removed %d stale objects", storage.root_uri, counts, digest[:16], len(removed))
    return result


def remove_stale(storage: Storage, index: ShardIndex) -> list[str]:
    """Delete shards and temporaries this module wrote that `index` does not name; other files stay."""
    keep = index.shard_names() | {INDEX_NAME}
    stale = [name for name in storage.list() if name not in keep and _OWNED.search(name)]
    for name in stale:
        storage.delete(name)
    return stale


# ----------------------------------------------------------------------------- reading


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


_DECODER = wds.autodecode.Decoder([], only=DECODED_FIELDS)


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """npy fields -> arrays (numpy's reader, allow_pickle=False), json fields -> dicts, mp4/wav stay bytes.

    Keys are unchanged ("wav2vec.npy", "json", ...). A missing or undecodable field raises an
    error naming the shard and the sample.
    """
    where = f"{sample.get('__url__', '?')} sample {sample.get('__key__', '?')}"
    missing = [k for k in [*REQUIRED_FIELDS, "json"] if k not in sample]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    try:
        return _DECODER(sample)
    except wds.autodecode.DecodingError as exc:
        raise ValueError(f"{where}: cannot decode field {exc.k!r}: {exc.__cause__}") from exc


def read_throughput(output_uri: str | Path, split: str) -> float:
    """Samples per second through the stock reader plus decode_sample, start-up included."""
    start = time.perf_counter()
    n = sum(1 for _ in open_split(output_uri, split, decode=True))
    return n / (time.perf_counter() - start)


__all__ = [
    "ShardIndex",
    "ShardInfo",
    "SplitIndex",
    "StorageError",
    "decode_sample",
    "open_split",
    "read_index",
    "read_manifest",
    "read_throughput",
    "remove_stale",
    "shard_urls",
    "split_by_identity",
    "write_shards",
]
