"""The rating pool: the candidate videos a rater sees, as plain files under one directory.

    <pool>/index.json          {"format": "talkalign-rating-pool/1", "windows": {window_id: [candidate_id, ...]},
                                "videos": {candidate_id: "videos/<token>.mp4"}}
    <pool>/videos/<token>.mp4  the candidate video (with the window's audio muxed); the token is a hash of the
                               candidate id, so neither the page nor the file name tells a rater the generator

`pool_from_candidates` builds a pool from the candidates stage's directory (mp4 bytes copied out of its shards).
Every path is resolved inside the pool directory: an index (or a request) naming a file outside it is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from components.io.atomic import atomic_directory

FORMAT = "talkalign-rating-pool/1"
INDEX_FILE = "index.json"


class PoolError(ValueError):
    """The pool (or a path asked of it) cannot be used; the message names the file and the problem."""


def video_token(candidate_id: str) -> str:
    return hashlib.sha256(candidate_id.encode()).hexdigest()[:16]


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """root/relative, refused unless it resolves (symlinks followed) to a file inside root."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise PoolError(f"{relative}: outside the candidates directory {root}")
    if not path.is_file():
        raise PoolError(f"{relative}: no such file in the candidates directory {root}")
    return path


@dataclass(frozen=True)
class RatingPool:
    root: Path
    windows: dict[str, list[str]]  # window_id -> candidate ids, in index order
    videos: dict[str, str]  # candidate_id -> path relative to root

    @property
    def window_ids(self) -> list[str]:
        return list(self.windows)

    @property
    def candidate_ids(self) -> list[str]:
        return [c for ids in self.windows.values() for c in ids]

    def window_of(self, candidate_id: str) -> str:
        for wid, ids in self.windows.items():
            if candidate_id in ids:
                return wid
        raise PoolError(f"{candidate_id}: not a candidate of the pool {self.root}")

    def video_path(self, candidate_id: str) -> Path:
        if candidate_id not in self.videos:
            raise PoolError(f"{candidate_id}: not a candidate of the pool {self.root}")
        return resolve_inside(self.root, self.videos[candidate_id])


def load_pool(root: str | Path) -> RatingPool:
    root = Path(root)
    file = root / INDEX_FILE
    if not file.is_file():
        raise PoolError(f"{file}: no rating pool index (make one with pool_from_candidates or write_pool)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoolError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PoolError(f"{file}: not a rating pool (format {data.get('format') if isinstance(data, dict) else None!r})")
    windows = {str(w): [str(c) for c in ids] for w, ids in data["windows"].items()}
    videos = {str(c): str(p) for c, p in data["videos"].items()}
    missing = [c for ids in windows.values() for c in ids if c not in videos]
    if missing:
        raise PoolError(f"{file}: no video for candidate(s) {missing[:5]}")
    pool = RatingPool(root.resolve(), windows, videos)
    for cid in pool.candidate_ids:
        pool.video_path(cid)  # every video exists and lies inside the pool: fail at start, not mid-session
    return pool


def write_pool(root: str | Path, windows: dict[str, list[str]], video_bytes: dict[str, bytes]) -> RatingPool:
    """Publish a pool atomically from candidate mp4 bytes."""
    with atomic_directory(root) as out:
        (out / "videos").mkdir()
        videos = {}
        for cid, data in video_bytes.items():
            rel = f"videos/{video_token(cid)}.mp4"
            (out / rel).write_bytes(data)
            videos[cid] = rel
        (out / INDEX_FILE).write_text(json.dumps({"format": FORMAT, "windows": windows, "videos": videos}, indent=1))
    return load_pool(root)


def pool_from_candidates(candidates_dir: str | Path, root: str | Path) -> RatingPool:
    """A pool of the candidates stage's videos (mp4 bytes copied from its WebDataset shards, nothing decoded)."""
    import webdataset as wds

    from components.preference.candidates import read_index

    candidates_dir = Path(candidates_dir)
    index = read_index(candidates_dir)
    urls = [str(candidates_dir / name) for name in index["shards"]]
    videos = {json.loads(s["json"])["candidate_id"]: s["mp4"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}
    return write_pool(root, index["windows"], videos)
