"""What the candidates stage does: K videos per conditioning window of the preference split.

The windows are evenly spaced rows of the split's latent cache (cut the way the latents stage cut them), each
with its true frames, audio, pose and mouth boxes; every generator of candidates.pool renders all of them
(components/preference/candidates.py), one bundle in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.data.latents import load_latent_cache
from components.data.windows import load_split, make_windows
from components.model.loading import load_bundle
from components.preference.candidates import conditioning_windows, select_rows, write_candidates


def window_id(clip_id: str, start: int) -> str:
    return f"{clip_id}_{start:04d}"


@dataclass
class CandidateSet:
    index: dict  # candidates.out_dir/index.json: window_id -> candidate ids, generators, shards
    windows: int  # conditioning windows rendered

    @property
    def videos(self) -> int:
        return sum(len(ids) for ids in self.index["windows"].values())

    def summary(self) -> dict[str, int]:
        return {"candidates": self.videos, "windows": self.windows, "generators": len(self.index["generators"])}


def generate_candidates(params: Params, progress: bool = True) -> CandidateSet:
    """Render every generator of params.candidates.pool on the chosen windows into candidates.out_dir."""
    cfg = params.candidates
    cache = load_latent_cache(Path(params.data.latents_dir) / f"{cfg.split}.safetensors")
    stride = params.data.window_stride if cfg.split == "train" else params.data.frames  # as the latents stage cut them
    clips = load_split(params.data.shards, cfg.split)
    windows = [w for c in clips for w in make_windows(c, params.data.frames, stride)]
    if len(windows) != len(cache):
        raise RuntimeError(f"{cfg.split}: {len(windows)} windows in the shards, {len(cache)} in the latent cache: "
                           "rerun the latents stage")
    rows = select_rows(len(cache), cfg.windows)
    chosen = [windows[i] for i in rows]
    fps, rate = clips[0].fps, clips[0].sample_rate
    cond = conditioning_windows(cache, chosen, rows, fps, rate, {c.clip_id: c.audio for c in clips})
    meta = {"window_ids": [window_id(w.clip_id, w.start) for w in chosen], "clip_ids": [w.clip_id for w in chosen],
            "starts": [w.start for w in chosen], "fps": fps, "sample_rate": rate}
    index = write_candidates(cfg, params.sampling, cond, meta, load_bundle, progress=progress)
    result = CandidateSet(index=index, windows=len(rows))
    print(f"candidates: {result.videos} videos = {len(rows)} windows x {len(index['generators'])} generators "
          f"-> {cfg.out_dir}")
    return result
