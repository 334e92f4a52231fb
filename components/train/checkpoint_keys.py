"""Where a stage's resumable checkpoints live: checkpoints/<stage>/<digest of its config and inputs>/.

A killed `dvc repro` resumes where it stopped, while a params or input change starts a fresh run instead of
resuming a stale one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHECKPOINTS = Path("checkpoints")  # local state, never versioned (.gitignore)


def checkpoint_dir(stage: str, *parts: Any) -> Path:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return CHECKPOINTS / stage / digest


def files_digest(*paths: str | Path) -> str:
    """sha256 of the files' bytes, in order (16 hex digits): a checkpoint key that changes with its input files."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def shards_digest(shards_dir: str | Path) -> str:
    """The digest the shard stage wrote into its index (what the training data is), or 'unknown'."""
    index = Path(shards_dir) / "index.json"
    return json.loads(index.read_text())["digest"] if index.exists() else "unknown"
