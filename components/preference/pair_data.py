"""Preference pairs as training tensors for Flow-DPO, and the global micro-batch drawn from them.

A pair row of the pairs stage (data/pairs/<set>.jsonl: window_id, winner, loser, ...) becomes the two
candidates' sampled latents (what the generators produced, stored by the candidates stage) plus the
conditioning both were generated from: the window's I2V condition (its cached condition latents and, with an image
encoder, CLIP image tokens), audio features and pose. As for flow matching, a global micro-batch is a pure function
of the loop's generator (which pairs, the shared noise and the shared noise level of each pair), so 1 and N
processes see the same batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from components.config import PreferenceTrainConfig
from components.train.flow_matching import sample_timesteps


class PairDataError(ValueError):
    """The pairs file does not match the candidates it names."""


def read_pairs(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"{path}: no pairs file (run the pairs stage first)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise PairDataError(f"{path}: no pairs")
    return rows


def load_pair_tensors(candidates_dir: str | Path, pairs_path: str | Path, audio_features: str, real: bool = False
                      ) -> dict[str, torch.Tensor]:
    """winner/loser [P,z,T',h,w], cond [P,z,T',h,w] (+ image_emb [P,tokens,d]), audio [P,T,tok,d], pose [P,T,J,3]
    for every pair of the file; with `real`, also the window's true clip latents [P,z,T',h,w] (dpo.sft_target)."""
    from components.preference.candidates import load_candidates, load_windows

    pairs = read_pairs(pairs_path)
    windows = load_windows(candidates_dir)
    latents = {c.candidate_id: c.latents for c in load_candidates(candidates_dir, decode=False)}
    missing = sorted({p[k] for p in pairs for k in ("winner", "loser") if p[k] not in latents}
                     | {p["window_id"] for p in pairs if p["window_id"] not in windows})
    if missing:
        raise PairDataError(f"{pairs_path}: {len(missing)} ids are not in {candidates_dir}, e.g. {missing[:3]}")
    window_of = [windows[p["window_id"]] for p in pairs]
    stack = lambda xs: torch.from_numpy(np.stack(xs).astype(np.float32))  # noqa: E731
    image = {"image_emb": stack([w.image_emb for w in window_of])} if window_of[0].image_emb is not None else {}
    true_clip = {"real": stack([w.latents for w in window_of])} if real else {}
    return {
        "winner": stack([latents[p["winner"]] for p in pairs]),
        "loser": stack([latents[p["loser"]] for p in pairs]),
        "cond": stack([w.cond_latents for w in window_of]),
        **image,
        "audio": stack([w.mel if audio_features == "mel" else w.wav2vec for w in window_of]),
        "pose": stack([w.pose for w in window_of]),
        **true_clip,
    }


def needs_real_clips(cfg: PreferenceTrainConfig) -> bool:
    """Whether the training's SFT term reads the windows' real clips (load_pair_tensors(real=...))."""
    return cfg.sft_weight > 0 and cfg.sft_target == "real"


def global_pair_batch(
    data: dict[str, torch.Tensor], cfg: PreferenceTrainConfig, rows: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """`rows` pairs with one noise and one noise level per pair, shared by its winner and loser."""
    index = torch.randint(data["winner"].shape[0], (rows,), generator=generator)
    batch = {key: value[index] for key, value in data.items()}
    batch["noise"] = torch.randn(batch["winner"].shape, generator=generator)
    batch["sigma"] = sample_timesteps(rows, cfg.timestep_shift, generator, sampling=cfg.timestep_sampling)
    return batch


def reward_gap_weights(pairs_path: str | Path) -> torch.Tensor:
    """[P] per-pair loss weights proportional to the pair's reward gap, mean 1 (VideoDPO's weighting: a clear
    preference teaches more than a near tie)."""
    gaps = torch.tensor([float(p["reward_winner"]) - float(p["reward_loser"]) for p in read_pairs(pairs_path)])
    if not bool((gaps > 0).all()):
        raise PairDataError(f"{pairs_path}: reward gap weighting needs every winner's reward above its loser's")
    return gaps / gaps.mean()
