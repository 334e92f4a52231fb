"""The `shard` stage: ingested clips -> WebDataset tar shards split by identity, local or on S3.

Why a version folder: shards are immutable once published, so a crash at any point leaves the
previous index.json and every shard it names untouched; the new dataset becomes visible in one
atomic step (the index write), and only then are the shards of older versions deleted. The same
inputs always give the same bytes (fixed tar mtime, sorted samples), so the same digest.

Shards are staged on local disk before publishing (inside the output directory for local output,
so publishing is a rename; in $TMPDIR for S3, which then needs room for one dataset version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import webdataset as wds
from tqdm import tqdm

from components.config import ShardConfig
from components.data.shards.identity_split import split_by_identity
from components.data.shards.index import INDEX_NAME, ShardIndex, ShardInfo, SplitIndex, dataset_digest
from components.data.shards.sample import CLIP_ID, OPTIONAL_FIELDS, REQUIRED_FIELDS
from components.io.atomic import TEMPORARY_NAME
from components.io.storage import TMP_SUFFIX, LocalStorage, Storage, open_storage

__all__ = ["Clip", "read_manifest", "remove_stale", "write_shards"]

log = logging.getLogger(__name__)

# What this module may delete during cleanup: its own shards, temporaries and staging folders (and the temporaries
# of Storage's atomic writes, components.io.atomic.TEMPORARY_NAME).
_OWNED = re.compile(r"^(?:[0-9a-f]{16}/)?[A-Za-z0-9_]+-\d{6}\.tar$|(^|/)\.staging-|" + re.escape(TMP_SUFFIX) + "$")
_TAR_MTIME = 0.0  # fixed, so identical inputs give byte-identical shards


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
    stale = [name for name in storage.list()
             if name not in keep and (_OWNED.search(name) or TEMPORARY_NAME.search(name))]
    for name in stale:
        storage.delete(name)
    return stale
