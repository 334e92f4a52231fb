"""What the candidates stage does: K videos per conditioning window of the preference split.

The windows are evenly spaced rows of the split's latent cache (cut the way the latents stage cut them), each
with its true frames, audio, pose and mouth boxes; every generator of candidates.pool renders all of them
(components/preference/candidates.py), one bundle in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.config import Params
from components.data.latents import LatentSplit, latent_split_dir
from components.data.windows import iter_split, make_windows, window_stride
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
    with LatentSplit(latent_split_dir(params.data.latents_dir, cfg.split)) as split:
        n_cached = len(split)
        rows = select_rows(n_cached, cfg.windows, cfg.window_phase)
        cache = split.load(rows)  # only the chosen windows' rows
    # Stream the split's clips, cut as the latents stage cut them, keeping the chosen windows and their clips' audio.
    stride = window_stride(cfg.split, params.data.frames, params.data.window_stride)
    wanted, chosen, audio, n = set(rows.tolist()), [], {}, 0
    fps = rate = None  # the first clip's, as before
    for clip in iter_split(params.data.shards, cfg.split):
        if fps is None:
            fps, rate = clip.fps, clip.sample_rate
        for w in make_windows(clip, params.data.frames, stride):
            if n in wanted:
                chosen.append(w.detached())
                audio[clip.clip_id] = clip.audio
            n += 1
    if n != n_cached or [(w.clip_id, w.start) for w in chosen] != [
        (cache.clip_ids[int(c)], int(s)) for c, s in zip(cache.clip_index, cache.window_start)
    ]:
        raise RuntimeError(f"{cfg.split}: {n} windows in the shards, {n_cached} in the latent cache (or other ones): "
                           "rerun the latents stage")
    cond = conditioning_windows(cache, chosen, np.arange(len(rows)), fps, rate, audio)
    meta = {"window_ids": [window_id(w.clip_id, w.start) for w in chosen], "clip_ids": [w.clip_id for w in chosen],
            "starts": [w.start for w in chosen], "fps": fps, "sample_rate": rate}
    index = write_candidates(cfg, params.sampling, cond, meta, load_bundle, progress=progress)
    result = CandidateSet(index=index, windows=len(rows))
    print(f"candidates: {result.videos} videos = {len(rows)} windows x {len(index['generators'])} generators "
          f"-> {cfg.out_dir}")
    return result
