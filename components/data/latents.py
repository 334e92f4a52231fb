"""VAE latents of training windows, encoded once per VAE and shared by every DiT stage.

One safetensors file holds, for N windows of T frames:

    latents        float32 [N, z, T', h, w]  normalised (see components.model.vae), posterior mode
    cond_latents   float32 [N, z, T', h, w]  the Wan I2V condition: [first frame, T-1 zero frames] encoded alike
    image_emb      float32 [N, tokens, d]    CLIP hidden_states[-2] of the first frame; only with an image encoder
    audio_mel      float32 [N, T, 4, n_mels] normalised log-mel (windows.normalise_mel: what the model sees)
    audio_wav2vec  float32 [N, T, tokens, d]
    pose           float32 [N, T, J, 3]
    mouth_open     float32 [N, T]            ground truth, NaN for clips without it
    mouth_box      float32 [N, T, 4]         x0, y0, x1, y1 pixels, NaN without truth
    window_start   int64   [N]               first frame of the window in its clip
    clip_index     int64   [N]               index into the clip_ids metadata list

and, as JSON strings in the safetensors metadata: format, clip_ids, identities (per clip), the VAE's config
and weights digests (a DiT stage refuses latents of another VAE), the latent mean/std used to normalise.

The reference image is the window's first frame. Its latent is `latents[:, :, :1]` (the causal VAE encodes
frame 0 alone, so latent frame 0 of a window equals the encoding of the first frame as a one-frame video, and
equals `cond_latents[:, :, :1]`); `cond_latents` and `image_emb` are what WanImageToVideoPipeline would condition
on for that reference (components/model/i2v_conditioning.py), computed once here for every DiT stage.

A split's cache is a directory, `<latents_dir>/<split>/` (`latent_split_dir`): parts, each such a file for some
consecutive windows (`part-00000.safetensors`, ...; clip_ids and clip_index local to the part), and `index.json`
(format LATENT_SPLIT_FORMAT: the parts in order with their window counts and, per part, the split-wide index of
each of its clips; the split's clip_ids, identities and VAE stamp). The latents stage writes it as a stream
(`write_latent_split`: one part in memory at a time, the directory appears whole or not at all); training reads
it lazily (`LatentSplit`, `LatentColumn`: only the rows a batch draws are read, through `safe_open` slices), and
the held-out stages load the few rows they use (`load_latent_split(directory, rows)`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from components.io.atomic import atomic_directory, atomic_file, write_json

__all__ = [
    "LATENT_CACHE_FORMAT",
    "LATENT_SPLIT_FORMAT",
    "PART_WINDOWS",
    "LatentCache",
    "LatentColumn",
    "LatentRows",
    "LatentSplit",
    "VaeStamp",
    "latent_split_dir",
    "load_latent_cache",
    "load_latent_split",
    "save_latent_cache",
    "write_latent_split",
]

LATENT_CACHE_FORMAT = "talkalign-latents/2"  # 2: cond_latents (+ image_emb)
_TENSORS = ("latents", "cond_latents", "audio_mel", "audio_wav2vec", "pose", "mouth_open", "mouth_box", "window_start", "clip_index")
LATENT_SPLIT_FORMAT = "talkalign-latent-split/1"
INDEX_NAME = "index.json"
# Windows per part file. The writer holds one part in memory: at the wan profile (81 frames, 480 x 832) a window's
# latents, condition latents and CLIP tokens are ~18 MB, so 64 windows are ~1.2 GB; the toy's are a few kB each.
PART_WINDOWS = 64


@dataclass
class LatentCache:
    latents: torch.Tensor  # float32 [N, z, T', h, w], normalised
    audio_mel: torch.Tensor  # float32 [N, T, 4, n_mels], normalised
    audio_wav2vec: torch.Tensor  # float32 [N, T, tokens, d]
    pose: torch.Tensor  # float32 [N, T, J, 3]
    mouth_open: torch.Tensor  # float32 [N, T]
    mouth_box: torch.Tensor  # float32 [N, T, 4]
    window_start: torch.Tensor  # int64 [N]
    clip_index: torch.Tensor  # int64 [N]
    clip_ids: list[str]
    identities: list[str]  # per clip, aligned with clip_ids
    vae_config_digest: str
    vae_weights_digest: str
    latents_mean: list[float]
    latents_std: list[float]
    cond_latents: torch.Tensor | None = None  # float32 [N, z, T', h, w]; required (None only while building)
    image_emb: torch.Tensor | None = None  # float32 [N, tokens, d] CLIP tokens; None without an image encoder

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def reference_latents(self) -> torch.Tensor:
        """[N, z, 1, h, w]: the first frame's latent (see the module docstring)."""
        return self.latents[:, :, :1]

    def condition(self, rows: slice | torch.Tensor) -> dict[str, torch.Tensor]:
        """The I2V conditioning of some windows: `cond` latents and, with an image encoder, `image_emb`."""
        out = {"cond": self.cond_latents[rows]}
        if self.image_emb is not None:
            out["image_emb"] = self.image_emb[rows]
        return out

    def check(self, where: str = "latent cache") -> None:
        """Raise ValueError naming `where` when the tensors disagree with each other or the clip list."""
        n = len(self.latents)
        if self.cond_latents is None or self.cond_latents.shape != self.latents.shape:
            found = None if self.cond_latents is None else tuple(self.cond_latents.shape)
            raise ValueError(f"{where}: cond_latents {found} must have the latents' shape {tuple(self.latents.shape)}")
        if self.image_emb is not None and (self.image_emb.ndim != 3 or len(self.image_emb) != n):
            raise ValueError(f"{where}: image_emb {tuple(self.image_emb.shape)} must be [{n}, tokens, dim]")
        bad = {name: tuple(getattr(self, name).shape) for name in _TENSORS if len(getattr(self, name)) != n}
        if bad:
            raise ValueError(f"{where}: {n} latents but first axes {bad}")
        frames = {name: getattr(self, name).shape[1] for name in ("audio_mel", "audio_wav2vec", "pose", "mouth_open")}
        if len(set(frames.values())) > 1 or self.mouth_box.shape[1:] != (frames["mouth_open"], 4):
            raise ValueError(f"{where}: per-frame tensors disagree: {frames}, mouth_box {tuple(self.mouth_box.shape)}")
        if n and (int(self.clip_index.min()) < 0 or int(self.clip_index.max()) >= len(self.clip_ids)):
            raise ValueError(f"{where}: clip_index outside the {len(self.clip_ids)} clip ids")
        if len(self.identities) != len(self.clip_ids):
            raise ValueError(f"{where}: {len(self.identities)} identities for {len(self.clip_ids)} clip ids")


def save_latent_cache(path: str | Path, cache: LatentCache) -> None:
    """Write the cache as one safetensors file, atomically (components.io.atomic)."""
    path = Path(path)
    cache.check(str(path))
    tensors = {name: getattr(cache, name).contiguous() for name in _TENSORS}
    if cache.image_emb is not None:
        tensors["image_emb"] = cache.image_emb.contiguous()
    metadata = {
        "format": LATENT_CACHE_FORMAT,
        "clip_ids": json.dumps(cache.clip_ids),
        "identities": json.dumps(cache.identities),
        "vae_config_digest": cache.vae_config_digest,
        "vae_weights_digest": cache.vae_weights_digest,
        "latents_mean": json.dumps(cache.latents_mean),
        "latents_std": json.dumps(cache.latents_std),
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_latent_cache(path: str | Path) -> LatentCache:
    """Read a cache written by `save_latent_cache`; a missing, foreign or inconsistent file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no latent cache (run the latent encoding first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            found = metadata.get("format") or ""
            if found.startswith("talkalign-latents/") and found != LATENT_CACHE_FORMAT:
                raise ValueError(f"{path}: latent cache format {found}, expected {LATENT_CACHE_FORMAT} "
                                 "(re-run the latents stage)")
            if metadata.get("format") != LATENT_CACHE_FORMAT:
                raise ValueError(f"{path}: not a latent cache (format {metadata.get('format')!r}, "
                                 f"expected {LATENT_CACHE_FORMAT})")
            missing = [name for name in _TENSORS if name not in f.keys()]
            if missing:
                raise ValueError(f"{path}: latent cache lacks tensors {missing}")
            tensors = {name: f.get_tensor(name) for name in _TENSORS}
            image_emb = f.get_tensor("image_emb") if "image_emb" in f.keys() else None
        cache = LatentCache(
            **tensors,
            clip_ids=list(json.loads(metadata["clip_ids"])),
            identities=list(json.loads(metadata["identities"])),
            vae_config_digest=metadata["vae_config_digest"],
            vae_weights_digest=metadata["vae_weights_digest"],
            latents_mean=[float(v) for v in json.loads(metadata["latents_mean"])],
            latents_std=[float(v) for v in json.loads(metadata["latents_std"])],
            image_emb=image_emb,
        )
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable latent cache ({type(exc).__name__}: {exc})") from exc
    cache.check(str(path))
    return cache


# ----------------------------------------------------------------------------- a split: parts + index.json


@dataclass
class VaeStamp:
    """Which VAE encoded a cache (a DiT stage refuses latents of another VAE) and the statistics it normalised with."""

    config_digest: str
    weights_digest: str
    latents_mean: list[float]
    latents_std: list[float]


@dataclass
class LatentRows:
    """Consecutive windows of a split, encoded: every tensor of LatentCache but clip_index (first axis = windows;
    image_emb only with an image encoder), and the clip and identity of each window."""

    tensors: dict[str, torch.Tensor]
    clip_ids: list[str]
    identities: list[str]

    def __len__(self) -> int:
        return len(self.clip_ids)


def latent_split_dir(latents_dir: str | Path, split: str) -> Path:
    """Where the latents stage writes a split's cache."""
    return Path(latents_dir) / split


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def write_latent_split(directory: str | Path, batches: Iterable[LatentRows], vae: VaeStamp,
                       part_windows: int = PART_WINDOWS) -> int:
    """Write a split's cache from a stream of encoded windows, part by part; returns the number of windows.

    A part is written as soon as it holds `part_windows` windows or more (whole batches), so memory is one part
    plus one batch. The directory is filled under a temporary name and replaces `directory` only when complete
    (components.io.atomic.atomic_directory): a failure midway leaves the previous cache as it was."""
    directory = Path(directory)
    if part_windows < 1:
        raise ValueError(f"part_windows must be >= 1, got {part_windows}")
    position: dict[str, int] = {}  # clip id -> its index in the split's clip list
    clip_ids: list[str] = []
    identities: list[str] = []
    parts: list[dict] = []
    pending: list[LatentRows] = []
    first: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None
    with atomic_directory(directory) as tmp:

        def write_part() -> None:
            ids = [c for b in pending for c in b.clip_ids]
            local: dict[str, int] = {}
            for c in ids:
                local.setdefault(c, len(local))
            tensors = {name: torch.cat([b.tensors[name] for b in pending]) for name in pending[0].tensors}
            name = f"part-{len(parts):05d}.safetensors"
            save_latent_cache(tmp / name, LatentCache(
                **tensors,
                clip_index=torch.tensor([local[c] for c in ids], dtype=torch.int64),
                clip_ids=list(local),
                identities=[identities[position[c]] for c in local],
                vae_config_digest=vae.config_digest,
                vae_weights_digest=vae.weights_digest,
                latents_mean=vae.latents_mean,
                latents_std=vae.latents_std,
            ))
            parts.append({"file": name, "windows": len(ids), "clips": [position[c] for c in local]})
            pending.clear()

        for batch in batches:
            found = {name: (tuple(t.shape[1:]), t.dtype) for name, t in batch.tensors.items()}
            if first is None:
                first = found
            elif found != first:
                raise ValueError(f"{directory}: windows of clip {batch.clip_ids[0]} have tensors {found}, "
                                 f"the earlier ones {first}: one split must share one window shape")
            bad = {name: len(t) for name, t in batch.tensors.items() if len(t) != len(batch)}
            if bad or len(batch.identities) != len(batch):
                raise ValueError(f"{directory}: a batch of {len(batch)} windows has first axes {bad} and "
                                 f"{len(batch.identities)} identities")
            for c, identity in zip(batch.clip_ids, batch.identities):
                if c not in position:
                    position[c] = len(clip_ids)
                    clip_ids.append(c)
                    identities.append(identity)
            pending.append(batch)
            if sum(len(b) for b in pending) >= part_windows:
                write_part()
        if pending:
            write_part()
        if not parts:
            raise ValueError(f"{directory}: no windows to cache")
        tensors = {name: {"dtype": _dtype_name(dtype), "shape": list(shape)} for name, (shape, dtype) in first.items()}
        tensors["clip_index"] = {"dtype": "int64", "shape": []}
        write_json(tmp / INDEX_NAME, {
            "format": LATENT_SPLIT_FORMAT,
            "windows": sum(p["windows"] for p in parts),
            "clip_ids": clip_ids,
            "identities": identities,
            "vae_config_digest": vae.config_digest,
            "vae_weights_digest": vae.weights_digest,
            "latents_mean": vae.latents_mean,
            "latents_std": vae.latents_std,
            "tensors": tensors,
            "parts": parts,
        })
    return sum(p["windows"] for p in parts)


def _read_index(directory: Path) -> dict:
    path = directory / INDEX_NAME
    if not path.is_file():
        old = directory.with_name(f"{directory.name}.safetensors")
        hint = f" ({old} is a cache of the old single-file layout)" if old.is_file() else ""
        raise FileNotFoundError(f"{directory}: no latent cache{hint} (run the latents stage)")
    try:
        index = json.loads(path.read_text())
        found = index.get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: unreadable latent cache index ({type(exc).__name__}: {exc})") from exc
    if found != LATENT_SPLIT_FORMAT:
        raise ValueError(f"{path}: latent cache index format {found!r}, expected {LATENT_SPLIT_FORMAT} (re-run the latents stage)")
    return index


@dataclass(frozen=True)
class _Part:
    path: Path
    windows: int
    clips: torch.Tensor  # int64: the split-wide clip index of each of the part's clips


class LatentSplit:
    """A split's latent cache read lazily: the index at once, the rows of a tensor only when they are asked for.

    At most `max_open` part files are open at a time (the least recently used is closed first); each part is
    checked against the index (format, VAE stamp, number of windows) when it is first opened."""

    def __init__(self, directory: str | Path, max_open: int = 8):
        self.directory = Path(directory)
        index = _read_index(self.directory)
        try:
            self.clip_ids = [str(c) for c in index["clip_ids"]]
            self.identities = [str(i) for i in index["identities"]]
            self.vae = VaeStamp(index["vae_config_digest"], index["vae_weights_digest"],
                                [float(v) for v in index["latents_mean"]], [float(v) for v in index["latents_std"]])
            self._tensors = {name: (tuple(spec["shape"]), getattr(torch, spec["dtype"])) for name, spec in index["tensors"].items()}
            self._parts = [_Part(self.directory / p["file"], int(p["windows"]), torch.tensor(p["clips"], dtype=torch.int64))
                           for p in index["parts"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.directory / INDEX_NAME}: malformed latent cache index ({type(exc).__name__}: {exc})") from exc
        missing = [name for name in _TENSORS if name not in self._tensors]
        if missing:
            raise ValueError(f"{self.directory / INDEX_NAME}: latent cache lacks tensors {missing}")
        self._starts = np.cumsum([0] + [p.windows for p in self._parts])
        self._max_open = max(1, max_open)
        self._open: OrderedDict[int, object] = OrderedDict()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __enter__(self) -> LatentSplit:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def names(self) -> tuple[str, ...]:
        """The tensors the cache holds (image_emb only when it was encoded with an image encoder)."""
        return tuple(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return (len(self), *self._tensor(name)[0])

    def column(self, name: str) -> LatentColumn:
        self._tensor(name)
        return LatentColumn(self, name)

    def read(self, name: str, rows: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The given rows of one tensor, in the order given (repeats allowed); clip_index is split-wide. Runs of
        consecutive rows in one part are read as one slice."""
        shape, dtype = self._tensor(name)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return torch.empty((0, *shape), dtype=dtype)
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"{self.directory}: rows {rows.min()}..{rows.max()} asked for, the cache has {len(self)} windows")
        part = np.searchsorted(self._starts, rows, side="right") - 1
        local = rows - self._starts[part]
        pieces, i = [], 0
        while i < len(rows):
            j = i + 1
            while j < len(rows) and part[j] == part[i] and local[j] == local[j - 1] + 1:
                j += 1
            piece = self._slice(int(part[i]), name, int(local[i]), int(local[j - 1]) + 1)
            pieces.append(self._parts[int(part[i])].clips[piece] if name == "clip_index" else piece)
            i = j
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def load(self, rows: Sequence[int] | np.ndarray | torch.Tensor | None = None) -> LatentCache:
        """The given rows (all by default) as one in-memory LatentCache, clip_ids split-wide."""
        rows = np.arange(len(self)) if rows is None else rows
        tensors = {name: self.read(name, rows) for name in self.names}
        cache = LatentCache(**tensors, clip_ids=list(self.clip_ids), identities=list(self.identities),
                            vae_config_digest=self.vae.config_digest, vae_weights_digest=self.vae.weights_digest,
                            latents_mean=list(self.vae.latents_mean), latents_std=list(self.vae.latents_std))
        cache.check(str(self.directory))
        return cache

    def close(self) -> None:
        while self._open:
            self._open.popitem(last=False)[1].__exit__(None, None, None)

    def _tensor(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        if name not in self._tensors:
            raise KeyError(f"{self.directory}: the latent cache has no tensor {name!r} (has {', '.join(self._tensors)})")
        return self._tensors[name]

    def _slice(self, part: int, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of one part's tensor: the only place rows are read from disk."""
        return self._file(part).get_slice(name)[start:stop]

    def _file(self, part: int):
        if part in self._open:
            self._open.move_to_end(part)
            return self._open[part]
        info = self._parts[part]
        try:
            handle = safe_open(str(info.path), framework="pt")
            metadata = handle.metadata() or {}
            windows = handle.get_slice("latents").get_shape()[0]
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{info.path}: unreadable latent cache part ({type(exc).__name__}: {exc})") from exc
        stamp = (metadata.get("format"), metadata.get("vae_config_digest"), metadata.get("vae_weights_digest"), windows)
        expected = (LATENT_CACHE_FORMAT, self.vae.config_digest, self.vae.weights_digest, info.windows)
        if stamp != expected:
            handle.__exit__(None, None, None)
            raise ValueError(f"{info.path}: (format, VAE config digest, VAE weights digest, windows) {stamp} disagree "
                             f"with the index {expected} (re-run the latents stage)")
        self._open[part] = handle
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)[1].__exit__(None, None, None)
        return handle


class LatentColumn:
    """One tensor of a split's cache (e.g. latents [N, z, T', h, w]) that reads rows from disk only when indexed:
    `column[index]` with a 1-D integer tensor / array / list, a slice or an int, like the tensor it stands for."""

    def __init__(self, split: LatentSplit, name: str):
        self.split, self.name = split, name

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.split.shape(self.name))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            return self.split.read(self.name, np.arange(*index.indices(len(self))))
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            return self.split.read(self.name, [i])[0]
        rows = torch.as_tensor(index)
        if rows.ndim != 1 or rows.dtype == torch.bool or rows.is_floating_point():
            raise TypeError(f"{self.split.directory} {self.name}: index rows with a 1-D integer tensor, got {rows.dtype} {tuple(rows.shape)}")
        return self.split.read(self.name, rows.numpy())


def load_latent_split(directory: str | Path, rows: Sequence[int] | np.ndarray | torch.Tensor | None = None) -> LatentCache:
    """Some rows (all by default) of a split's cache in memory; for the held-out stages' few windows."""
    with LatentSplit(directory) as split:
        return split.load(rows)
