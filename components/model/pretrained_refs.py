"""Bundles that point at an unchanged pretrained part instead of copying it (the wan profile's 30-65 GB backbone).

A bundle directory normally holds every part (`transformer/`, `vae/`, `text_encoder/` + `tokenizer/`,
`image_encoder/` + `image_processor/`). With `model.pretrained_in_bundles: reference`, a part that was loaded
from a checkpoint and never changed is written as an entry of `pretrained_refs.json` instead:

    {"format": "talkalign-pretrained-refs-v1",
     "parts": {"transformer": {"root": "/ckpt/Wan2.1-I2V-14B-480P-Diffusers", "digest": "sha256:..."}, ...}}

`root` is the checkpoint root that holds the part's directory under the same name (the diffusers layout of a
Wan checkpoint and of a bundle agree), `digest` the sha256 over that directory's files. Loading resolves each part
to the bundle itself or to its referenced root and refuses a root whose files changed. File hashes are cached by
(path, size, mtime) under $TALKALIGN_CACHE_DIR (default ~/.cache/talkalign), so a 60 GB checkpoint is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.io.atomic import write_json

REFS_FILE = "pretrained_refs.json"
REFS_FORMAT = "talkalign-pretrained-refs-v1"
CHUNK = 16 << 20


class PretrainedRefError(ValueError):
    """A referenced pretrained part is missing or changed; the message names the bundle, the part and the root."""


def _cache_file() -> Path:
    return Path(os.environ.get("TALKALIGN_CACHE_DIR", Path.home() / ".cache" / "talkalign")) / "file_digests.json"


def _file_sha256(path: Path, cache: dict[str, dict]) -> str:
    stat = path.stat()
    key = str(path.resolve())
    hit = cache.get(key)
    if hit and hit["size"] == stat.st_size and hit["mtime_ns"] == stat.st_mtime_ns:
        return hit["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": h.hexdigest()}
    return cache[key]["sha256"]


def directory_digest(directory: Path) -> str:
    """sha256 over the sorted relative names and contents of every file under `directory`."""
    cache_file = _cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    before = json.dumps(cache, sort_keys=True)
    h = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(directory)).encode() + b"\0" + _file_sha256(file, cache).encode() + b"\0")
    if json.dumps(cache, sort_keys=True) != before:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache_file, cache)
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return "sha256:" + h.hexdigest()


def write_refs(directory: Path, sources: dict[str, Path]) -> None:
    """Reference each part name -> checkpoint root that holds `<root>/<name>/` (written into `directory`)."""
    parts = {name: {"root": str(Path(root).resolve()), "digest": directory_digest(Path(root) / name)}
             for name, root in sorted(sources.items())}
    write_json(directory / REFS_FILE, {"format": REFS_FORMAT, "parts": parts})


def read_refs(directory: Path) -> dict[str, dict]:
    file = directory / REFS_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PretrainedRefError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != REFS_FORMAT or not isinstance(data.get("parts"), dict):
        raise PretrainedRefError(f"{file}: not a {REFS_FORMAT} file")
    return data["parts"]


def part_root(directory: Path, name: str, verify: bool = True) -> Path:
    """The root that holds part `name`: the bundle itself when it has `name/`, else the referenced checkpoint root
    (its digest checked when `verify`). Neither: the bundle directory (the caller's missing-file check names it)."""
    if (directory / name).is_dir():
        return directory
    ref = read_refs(directory).get(name)
    if ref is None:
        return directory
    root = Path(ref["root"])
    if not (root / name).is_dir():
        raise PretrainedRefError(f"{directory}: {name}/ is referenced at {root / name}, which does not exist; "
                                 f"mount the checkpoint there or re-export the bundle with model.pretrained_in_bundles: copy")
    if verify:
        found = directory_digest(root / name)
        if found != ref["digest"]:
            raise PretrainedRefError(f"{directory}: {name}/ is referenced at {root / name} with digest {ref['digest']}, "
                                     f"the files there now hash to {found}: the checkpoint changed since the bundle was made")
    return root


# A part is referenced only whole: the text encoder with its tokenizer, the CLIP model with its processor.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "transformer": ("transformer",),
    "vae": ("vae",),
    "text_encoder": ("text_encoder", "tokenizer"),
    "image_encoder": ("image_encoder", "image_processor"),
}


def checkpoint_sources(vae: str | None, text_encoder: str | None, image_encoder: str | None) -> dict[str, Path]:
    """Part directory name -> checkpoint root, for the parts a profile loads from checkpoint roots (paths given as
    a component directory itself are left out: only a root's `<name>/` can be referenced)."""
    sources: dict[str, Path] = {}
    for group, path in (("vae", vae), ("text_encoder", text_encoder), ("image_encoder", image_encoder)):
        if path is None:
            continue
        root = Path(path).resolve()
        if all((root / name).is_dir() for name in PART_GROUPS[group]):
            sources.update({name: root for name in PART_GROUPS[group]})
    return sources


def referenceable(sources: dict[str, Path]) -> dict[str, Path]:
    """The sources whose whole group comes from one root (what save_bundle may leave out and reference)."""
    keep: dict[str, Path] = {}
    for names in PART_GROUPS.values():
        roots = {sources.get(name) for name in names}
        if len(roots) == 1 and None not in roots:
            keep.update({name: sources[name] for name in names})
    return keep
