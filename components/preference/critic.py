"""The Talking-Critic (FantasyTalking2's learned multi-dimensional reward model) at toy scale.

A candidate video (frames), its window's mouth boxes and audio log-mel -> one unbounded score per dimension
(lip_sync, motion, quality; higher = better). Three streams, one head each:

    lip_sync  mouth crops (components.evaluation.mouth_reader.mouth_crops, 16x16x3, and their change from the
              reference frame's crop) and the per-frame log-mel, projected to `width`, fused as [m, a, m*a]
              (the product lets the temporal conv see mouth/audio co-variation directly) -> temporal conv
    motion    frame differences (32x32 average-pooled frames) through a small conv -> temporal conv
    quality   each frame and its difference to the reference frame 0 (6 channels, 32x32) through a small conv

Explicit signal features enter as well (components of `signals`, per frame, full 64x64 resolution, grey 0-1,
times SIGNAL_SCALE): Laplacian sharpness, its change from frame 0, mean |frame - frame 0|, speed (mean
|first difference|), jitter (mean |second difference|), mouth-crop change from frame 0. The 32x32 pooling of the
conv streams would otherwise lose exactly the blur that the quality raters punish.

Training loss: Bradley-Terry per dimension, P(a beats b) = sigmoid(s_a - s_b), on pairs of candidates of the
same window whose aggregated training-rater scores differ. Why BT and not ordinal regression on the Likert
scores: a score is only comparable with the scores of the other candidates of the same conditioning (raters
calibrate to the videos in front of them; a hard window's best candidate may get a 3), and any per-rater or
per-window offset cancels in a within-window difference, while an ordinal model would have to learn those
offsets as if they were properties of the video. The score scale is therefore arbitrary per dimension (only
differences mean anything), which is all a reward for pair curation or DPO needs.

Storage: `critic.safetensors` (weights) + `critic.json` (format, architecture, meta), written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from components.config import DIMENSIONS, CriticConfig
from components.evaluation.mouth_reader import mouth_crops

FORMAT = "talkalign-critic/1"
POOL = 2  # conv streams see frames average-pooled by this factor (64 -> 32)
SIGNALS = ("sharpness", "sharpness_vs_ref", "diff_vs_ref", "speed", "jitter", "mouth_change")
SIGNAL_SCALE = 10.0  # pixel statistics on 0-1 are ~0.01-0.1; this brings them to ~unit scale

__all__ = [
    "FORMAT", "SIGNALS", "TalkingCritic", "bt_loss", "critic_inputs", "critic_scores", "frame_signals",
    "load_critic", "pair_loss", "rating_pairs", "save_critic", "train_critic",
]


# ----------------------------------------------------------------------------- inputs


def _grey(frames: np.ndarray) -> np.ndarray:
    return (np.asarray(frames, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def laplacian_sharpness(frames: np.ndarray) -> np.ndarray:
    """Mean |4-neighbour Laplacian| of the grey frames [T,H,W,3] uint8 -> [T] (0-1 pixel units)."""
    g = _grey(frames)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return np.abs(lap).mean(axis=(1, 2))


def frame_signals(frames: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """The explicit per-frame features [T, len(SIGNALS)] of one video (frames uint8 [T,H,W,3], mouth crops [T,D])."""
    g = _grey(frames)
    t = len(g)
    sharp = laplacian_sharpness(frames)
    speed, jitter = np.zeros(t, np.float32), np.zeros(t, np.float32)
    speed[1:] = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2))
    if t > 2:
        jitter[2:] = np.abs(np.diff(g, n=2, axis=0)).mean(axis=(1, 2))
    out = np.stack([
        sharp, sharp - sharp[0], np.abs(g - g[:1]).mean(axis=(1, 2)), speed, jitter,
        np.abs(mouth - mouth[:1]).mean(axis=1),
    ], axis=1)
    return (out * SIGNAL_SCALE).astype(np.float32)


def _pool(frames: np.ndarray) -> np.ndarray:
    """uint8 [T,H,W,3] -> uint8 [T,3,H/POOL,W/POOL] (kept uint8: the inputs of a whole pool stay small)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(x, POOL).round().clamp(0, 255).to(torch.uint8).numpy()


def video_inputs(videos: Sequence[np.ndarray], mouth_boxes: Sequence[np.ndarray],
                 mels: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """The critic's inputs of videos, each preprocessed once: frames uint8 [T,H,W,3], the mouth box per frame
    [T,4] and the window's log-mel [T,4,n_mels] ->

    mouth [N,T,2*768] (crops and their change from frame 0), mel [N,T,4*n_mels], frames uint8 [N,T,3,h,w]
    (pooled), signals [N,T,len(SIGNALS)].
    """
    mouth, mel, small, signals = [], [], [], []
    for frames, box, window_mel in zip(videos, mouth_boxes, mels, strict=True):
        crops = mouth_crops(frames, box)
        mouth.append(np.concatenate([crops, crops - crops[:1]], axis=1))
        mel.append(np.asarray(window_mel, np.float32).reshape(len(window_mel), -1))
        small.append(_pool(frames))
        signals.append(frame_signals(frames, crops))
    return {
        "mouth": torch.from_numpy(np.stack(mouth)), "mel": torch.from_numpy(np.stack(mel)),
        "frames": torch.from_numpy(np.stack(small)), "signals": torch.from_numpy(np.stack(signals)),
    }


def critic_inputs(candidates, windows: dict) -> dict[str, torch.Tensor]:
    """`video_inputs` of candidates (list of Candidate with frames), rows in the candidates' order."""
    for c in candidates:
        if c.frames is None:
            raise ValueError(f"{c.candidate_id}: the critic needs decoded frames (load_candidates(decode=True))")
    chosen = [windows[c.window_id] for c in candidates]
    return video_inputs([c.frames for c in candidates], [w.mouth_box for w in chosen], [w.mel for w in chosen])


# ----------------------------------------------------------------------------- model


def _tcn(channels_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(channels_in, width, 5, padding=2), nn.GELU(), nn.Conv1d(width, width, 5, padding=2), nn.GELU())


def _image_encoder(channels_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, width, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


class TalkingCritic(nn.Module):
    """inputs (a batch of critic_inputs rows) -> scores [N, len(DIMENSIONS)]; see the module docstring."""

    def __init__(self, width: int = 16, mouth_dim: int = 2 * 16 * 16 * 3, mel_dim: int = 4 * 40):
        super().__init__()
        self.arch = {"width": width, "mouth_dim": mouth_dim, "mel_dim": mel_dim}
        self.mouth_in = nn.Linear(mouth_dim, width)
        self.audio_in = nn.Linear(mel_dim, width)
        self.sync = _tcn(3 * width + 1, width)  # + the mouth-change signal
        self.motion_enc = _image_encoder(3, width)
        self.motion = _tcn(width + 2, width)  # + speed and jitter
        self.quality_enc = _image_encoder(6, width)
        self.quality = nn.Sequential(nn.Linear(width + 3, width), nn.GELU())  # + sharpness, its change, diff_vs_ref
        self.heads = nn.ModuleList([nn.Linear(width, 1) for _ in DIMENSIONS])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        sig = batch["signals"]
        n, t = sig.shape[:2]
        m, a = self.mouth_in(batch["mouth"]), self.audio_in(batch["mel"])
        x = torch.cat([m, a, m * a, sig[..., 5:6]], dim=-1).transpose(1, 2)
        lip = self.sync(x)[..., 1:].mean(-1)  # frame 0 is the given reference: no evidence of the generator

        f = batch["frames"].float() / 127.5 - 1.0  # [N,T,3,h,w]
        diff = (f[:, 1:] - f[:, :-1]).flatten(0, 1)
        d = self.motion_enc(diff * 4).view(n, t - 1, -1)  # x4: differences are small next to frames
        motion = self.motion(torch.cat([d, sig[:, 1:, 3:5]], dim=-1).transpose(1, 2)).mean(-1)

        pairs = torch.cat([f, (f - f[:, :1]) * 4], dim=2).flatten(0, 1)
        q = self.quality_enc(pairs).view(n, t, -1)
        quality = self.quality(torch.cat([q, sig[..., 0:3]], dim=-1))[:, 1:].mean(1)

        feats = (lip, motion, quality)
        return torch.cat([head(h) for head, h in zip(self.heads, feats)], dim=-1)


def bt_loss(winner: torch.Tensor, loser: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood: mean of -log sigmoid(s_winner - s_loser)."""
    return F.softplus(loser - winner).mean()


# ----------------------------------------------------------------------------- training


def rating_pairs(scores: pd.DataFrame, window_of: dict[str, str], min_margin: float = 0.0) -> pd.DataFrame:
    """Every within-window pair whose scores differ by more than min_margin, per dimension.

    scores: index candidate_id, a column per dimension (NaN = unrated). Returns columns window_id, dimension,
    winner, loser, margin (winner's score - loser's, > min_margin).
    """
    rows = []
    table = scores.assign(window_id=[window_of[c] for c in scores.index])
    for wid, group in table.groupby("window_id", sort=True):
        for dim in DIMENSIONS:
            s = group[dim].dropna()
            ids, vals = list(s.index), s.to_numpy(np.float64)
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    margin = vals[i] - vals[j]
                    if abs(margin) > min_margin:
                        win, lose = (ids[i], ids[j]) if margin > 0 else (ids[j], ids[i])
                        rows.append((wid, dim, win, lose, abs(margin)))
    return pd.DataFrame(rows, columns=["window_id", "dimension", "winner", "loser", "margin"])


def pair_loss(critic: TalkingCritic, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry loss of a batch of pairs: both sides scored in one forward, the pair's dimension picked."""
    n = len(batch["dim"])
    keys = ("mouth", "mel", "frames", "signals")
    both = critic({k: torch.cat([batch[f"w_{k}"], batch[f"l_{k}"]]) for k in keys})
    pick = batch["dim"][:, None]
    sw, sl = both[:n].gather(1, pick)[:, 0], both[n:].gather(1, pick)[:, 0]
    return bt_loss(sw, sl), {"pair_acc": float((sw > sl).float().mean())}


def train_critic(inputs: dict[str, torch.Tensor], pairs: np.ndarray, cfg: CriticConfig, ckpt_dir: str | Path,
                 log_fn=None, progress: bool = False):
    """Train a TalkingCritic on pairs [P, 3] int (winner row, loser row, dimension index) of `inputs`.

    Each step draws cfg.batch_size pairs uniformly (with replacement, from the step's seeded generator), so
    dimensions weigh by their pair counts. Returns (critic in eval mode, TrainResult).
    """
    from components.train.loop import run_training, sliced
    from components.train.objective import Objective

    pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.long)
    if pairs.ndim != 2 or pairs.shape[1] != 3 or len(pairs) == 0:
        raise ValueError(f"train_critic needs pairs [P>0, 3] (winner, loser, dimension), got {tuple(pairs.shape)}")
    with torch.random.fork_rng():  # the initial weights depend on the config's seed only
        torch.manual_seed(cfg.seed)
        critic = TalkingCritic(cfg.width, inputs["mouth"].shape[-1], inputs["mel"].shape[-1])

    def batch(step: int, micro: int, total: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        rows = pairs[torch.randint(len(pairs), (total,), generator=g)]
        out = {"dim": rows[:, 2]}
        for k, v in inputs.items():
            out[f"w_{k}"], out[f"l_{k}"] = v[rows[:, 0]], v[rows[:, 1]]
        return out

    result = run_training(name="critic", model=Objective(pair_loss, critic), trainable=list(critic.parameters()),
                          batch_fn=sliced(batch), cfg=cfg, ckpt_dir=ckpt_dir,
                          log_fn=log_fn, progress=progress)  # accelerate's device (a GPU when there is one)
    return critic.eval(), result


# ----------------------------------------------------------------------------- scoring and storage


@torch.no_grad()
def score_inputs(critic: TalkingCritic, inputs: dict[str, torch.Tensor], batch_size: int = 32) -> np.ndarray:
    critic.eval()
    n = len(inputs["signals"])
    device = next(critic.parameters()).device  # trained on accelerate's device; the inputs stay on the CPU
    out = [critic({k: v[i : i + batch_size].to(device) for k, v in inputs.items()}).cpu() for i in range(0, n, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(DIMENSIONS)), np.float32)


def critic_scores(critic: TalkingCritic, candidates, windows: dict) -> pd.DataFrame:
    """Scores of every candidate: index candidate_id, a column per dimension (higher = better)."""
    scores = score_inputs(critic, critic_inputs(candidates, windows))
    return pd.DataFrame(scores, index=pd.Index([c.candidate_id for c in candidates], name="candidate_id"),
                        columns=list(DIMENSIONS))


def score_videos(critic: TalkingCritic, videos: np.ndarray, mouth_boxes: np.ndarray, mels: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of videos that are not candidates (e.g. evaluate's generations): uint8 [N,T,H,W,3], mouth boxes
    [N,T,4], log-mel [N,T,4,n_mels] -> a score array [N] per dimension (higher = better)."""
    scores = score_inputs(critic, video_inputs(list(videos), list(mouth_boxes), list(mels)))
    return {dimension: scores[:, i] for i, dimension in enumerate(DIMENSIONS)}


def save_critic(directory: str | Path, critic: TalkingCritic, meta: dict[str, Any]) -> None:
    from components.io.atomic import atomic_directory

    with atomic_directory(Path(directory)) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}, str(tmp / "critic.safetensors"))
        config = {"format": FORMAT, "arch": critic.arch, "dimensions": list(DIMENSIONS), "signals": list(SIGNALS), "meta": meta}
        (tmp / "critic.json").write_text(json.dumps(config, indent=2, default=float))


def load_critic(directory: str | Path) -> TalkingCritic:
    """The critic of a save_critic directory, in eval mode; its saved meta is `critic.meta`."""
    path = Path(directory) / "critic.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no critic (run the critic stage)")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT or config.get("dimensions") != list(DIMENSIONS) or config.get("signals") != list(SIGNALS):
        raise ValueError(f"{path}: not a {FORMAT} critic for dimensions {DIMENSIONS} and signals {SIGNALS}")
    critic = TalkingCritic(**config["arch"])
    critic.load_state_dict(load_file(str(Path(directory) / "critic.safetensors")))
    critic.meta = config.get("meta", {})
    return critic.eval()
