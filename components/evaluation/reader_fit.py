"""The mouth reader the evaluate and annotate stages share, fitted on the pipeline's own windows.

Fitted on training windows, on their true frames and their VAE reconstructions (the domain generated video
lives in), and scored on the validation windows the same two ways: those two numbers are the ceiling of every
lip score the reader gives (components/evaluation/mouth_reader.py).
"""

from __future__ import annotations

import numpy as np

from components.config import Params
from components.data.latents import LatentSplit, latent_split_dir
from components.data.windows import iter_windows, pick_windows
from components.evaluation.generation import decode_to_frames
from components.evaluation.mouth_reader import MouthReader, fit_mouth_reader


def _windows_and_recon(params: Params, bundle, split: str, max_windows: int):
    """(true frames, VAE reconstructions, mouth boxes, mouth opening) of up to max_windows evenly spaced windows;
    the split is streamed and only those windows and their cache rows are kept."""
    with LatentSplit(latent_split_dir(params.data.latents_dir, split)) as cache:
        n_cached = len(cache)
        rows = np.linspace(0, n_cached - 1, min(max_windows, n_cached)).round().astype(int)
        latents, box, opening = (cache.read(name, rows) for name in ("latents", "mouth_box", "mouth_open"))
    picked, n = pick_windows(iter_windows(params.data.shards, split, params.data.frames, params.data.window_stride),
                             rows)
    if n != n_cached:
        raise RuntimeError(f"{split} windows in the shards and in the latent cache differ: rerun the latents stage")
    by_row = dict(zip(sorted(set(rows.tolist())), picked))  # picked: each wanted row once, in stream order
    truth = np.stack([by_row[int(i)].frames for i in rows])
    recon = decode_to_frames(bundle, latents)
    return truth, recon, box.numpy(), opening.numpy()


def fit_reader(params: Params, bundle, max_windows: int = 64) -> tuple[MouthReader, dict[str, float]]:
    """(reader, its validation scores {r_val_true_frames, r_val_vae_frames}); `bundle` gives the VAE."""
    truth, recon, box, opening = _windows_and_recon(params, bundle, "train", max_windows)
    reader = fit_mouth_reader(truth, box, opening, recon_frames=recon)
    truth, recon, box, opening = _windows_and_recon(params, bundle, "val", max_windows)
    scores = {"r_val_true_frames": reader.score(truth, box, opening),
              "r_val_vae_frames": reader.score(recon, box, opening)}
    print("mouth reader on validation windows: " + ", ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return reader, scores
