"""The mouth reader the evaluate and annotate stages share, fitted on the pipeline's own windows.

Fitted on training windows, on their true frames and their VAE reconstructions (the domain generated video
lives in), and scored on the validation windows the same two ways: those two numbers are the ceiling of every
lip score the reader gives (components/evaluation/mouth_reader.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.config import Params
from components.data.latents import load_latent_cache
from components.data.windows import split_windows
from components.evaluation.generation import decode_to_frames
from components.evaluation.mouth_reader import MouthReader, fit_mouth_reader


def _windows_and_recon(params: Params, bundle, split: str, max_windows: int):
    """(true frames, VAE reconstructions, mouth boxes, mouth opening) of up to max_windows evenly spaced windows."""
    cache = load_latent_cache(Path(params.data.latents_dir) / f"{split}.safetensors")
    windows = split_windows(params.data.shards, split, params.data.frames, params.data.window_stride)
    if len(windows) != len(cache.latents):
        raise RuntimeError(f"{split} windows in the shards and in the latent cache differ: rerun the latents stage")
    rows = np.linspace(0, len(windows) - 1, min(max_windows, len(windows))).round().astype(int)
    truth = np.stack([windows[i].frames for i in rows])
    recon = decode_to_frames(bundle, cache.latents[rows])
    return truth, recon, cache.mouth_box[rows].numpy(), cache.mouth_open[rows].numpy()


def fit_reader(params: Params, bundle, max_windows: int = 64) -> tuple[MouthReader, dict[str, float]]:
    """(reader, its validation scores {r_val_true_frames, r_val_vae_frames}); `bundle` gives the VAE."""
    truth, recon, box, opening = _windows_and_recon(params, bundle, "train", max_windows)
    reader = fit_mouth_reader(truth, box, opening, recon_frames=recon)
    truth, recon, box, opening = _windows_and_recon(params, bundle, "val", max_windows)
    scores = {"r_val_true_frames": reader.score(truth, box, opening),
              "r_val_vae_frames": reader.score(recon, box, opening)}
    print("mouth reader on validation windows: " + ", ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return reader, scores
