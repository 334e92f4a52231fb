"""What the evaluate stage computes: every model variant on the same held-out test windows, with the same seeds.

Per variant: Sync-C / Sync-D (SyncNet protocol, with the official weights or our sync expert), the synthetic
world's ground-truth lip metrics (read by the mouth reader), PSNR and SSIM against the true frames, the critic's
scores when a critic was trained, and FID / FVD when their extractors are given. Upper bounds of the measures
come first: the true frames and the VAE's reconstruction of them. Variants in `seed_noise_variants` are sampled
again with each extra seed, so a difference between variants can be weighed against what another seed changes.
`evaluate_models` returns it all; evaluation_outputs.py writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.config import Params
from components.data.latents import LatentCache, load_latent_cache
from components.data.windows import ClipSample, Window, load_split, make_windows
from components.evaluation.fid import FrechetScorer, unavailable_metrics
from components.evaluation.generation import decode_to_frames, generate_test_windows
from components.evaluation.metrics import lip_metrics, psnr, ssim
from components.evaluation.reader_fit import fit_reader
from components.evaluation.sync_inputs import clip_mfcc
from components.evaluation.sync_metrics import SyncVideo, embed_audio, mean_sync_scores
from components.evaluation.syncnet import SyncExpert, load_sync_expert
from components.model.loading import load_bundle

Scores = dict[str, float]


def sync_expert_paragraph(expert: SyncExpert, params: Params) -> str:
    """Which expert scored Sync-C / Sync-D, in words for the report."""
    spec = expert.spec
    if expert.source == "official":
        return (f"Scored with the **official SyncNet weights** (`{expert.meta['weights']}`) and syncnet_python's input "
                "conventions (224 px BGR crops on the 0-255 scale, python_speech_features MFCC). The crops come from the "
                "ground truth's mouth box instead of S3FD face tracks, so the numbers are close to, not identical with, "
                "what syncnet_python reports on the same videos.")
    meta = expert.meta
    segments = meta.get("segment_frames", params.data.frames)
    return (
        "Scored with **talkalign's own sync expert, not the official SyncNet weights** (none were given: "
        f"`evaluation.syncnet_weights`). It has the SyncNet architecture at {spec.width:g} of its width (grey "
        f"{spec.crop_size} px mouth crops, 13 MFCC from our log-mel) and was trained contrastively on the training "
        "split (in-sync vs shifted pairs) by the `sync_expert` stage. On the validation split it finds the true audio "
        f"offset within ±1 frame in {meta.get('val_offset_acc', float('nan')):.0%} of {segments}-frame segments "
        f"(chance {meta.get('val_chance_offset_acc', float('nan')):.0%}); in-sync vs shifted AUC "
        f"{meta.get('val_sync_auc', float('nan')):.2f}. Its distances live in its own embedding space: compare variants "
        "with each other, never with published Sync-C / Sync-D."
    )


def summarise_seeds(runs: list[Scores], seeds: list[int]) -> dict[str, dict]:
    """Per metric: the value of each seed, their mean and (sample) standard deviation."""
    out = {}
    for metric in runs[0]:
        values = [float(r[metric]) for r in runs if metric in r]
        if len(values) == len(runs) and all(np.isfinite(values)):
            out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                           "values": dict(zip(map(str, seeds), values))}
    return out


def critic_scorer(params: Params, mouth_box: np.ndarray, mel: np.ndarray) -> Callable[[np.ndarray], Scores] | None:
    """video uint8 [N,T,H,W,3] -> mean critic score per dimension over the windows, or None without a critic.
    The critic (critic stage) was trained on candidates of the training split: the test windows are new to it."""
    from components.preference.critic import load_critic, score_videos

    if not (Path(params.critic.out_dir) / "critic.safetensors").exists():
        print(f"no critic at {params.critic.out_dir}: critic scores left out")
        return None
    critic = load_critic(params.critic.out_dir)

    def score(video: np.ndarray) -> Scores:
        return {f"critic_{d}": float(v.mean()) for d, v in score_videos(critic, video, mouth_box, mel).items()}

    return score


@dataclass
class HeldOutWindows:
    """The first n test windows (n = evaluation.max_windows or all), as the shards and the latent cache hold them."""

    cache: LatentCache  # the whole test cache: generation takes its first n rows
    clips: dict[str, ClipSample]
    windows: list[Window]
    truth: np.ndarray  # uint8 [n, T, H, W, 3]
    mouth_open: np.ndarray  # [n, T]
    mouth_box: np.ndarray  # [n, T, 4]

    @property
    def n(self) -> int:
        return len(self.windows)


def load_held_out_windows(params: Params) -> HeldOutWindows:
    cache = load_latent_cache(Path(params.data.latents_dir) / "test.safetensors")
    frames, max_windows = params.data.frames, params.evaluation.max_windows
    clips = {c.clip_id: c for c in load_split(params.data.shards, "test")}
    windows = [w for c in clips.values() for w in make_windows(c, frames, frames)]
    n = len(windows) if max_windows is None else min(max_windows, len(windows))
    windows = windows[:n]
    if [(w.clip_id, w.start) for w in windows] != [
        (cache.clip_ids[int(c)], int(s)) for c, s in zip(cache.clip_index[:n], cache.window_start[:n])
    ]:
        raise RuntimeError("test windows in the shards and in the latent cache differ: rerun the latents stage")
    return HeldOutWindows(cache, clips, windows, np.stack([w.frames for w in windows]), cache.mouth_open[:n].numpy(),
                       cache.mouth_box[:n].numpy())


class VideoScorer:
    """Every measure of a set of generated test windows (uint8 [n,T,H,W,3], frame 0 = the given reference)."""

    def __init__(self, params: Params, test: HeldOutWindows, expert: SyncExpert, reader):
        cfg = params.evaluation
        self.test, self.expert, self.reader = test, expert, reader
        # Sync: each window's generated frames (frame 0 is the given reference) against its clip's real audio.
        used = {w.clip_id for w in test.windows}
        self.audio_emb = {
            cid: embed_audio(expert.model, clip_mfcc(expert.spec, c.mel, c.audio, c.sample_rate, c.fps))
            for cid, c in test.clips.items() if cid in used
        }
        truth = test.truth
        self.frechet: dict[str, FrechetScorer] = {}
        if cfg.fid_extractor:
            self.frechet["fid"] = FrechetScorer.build("fid", cfg.fid_extractor, truth[:, 1:].reshape(-1, *truth.shape[2:]))
        if cfg.fvd_extractor:
            self.frechet["fvd"] = FrechetScorer.build("fvd", cfg.fvd_extractor, truth[:, 1:])
        self.critic = critic_scorer(params, test.mouth_box, test.cache.audio_mel[: test.n].numpy())

    def sync(self, video: np.ndarray) -> Scores:
        box = self.test.mouth_box
        return mean_sync_scores(self.expert.model, [
            SyncVideo(video[i, 1:], box[i, 1:], self.audio_emb[w.clip_id], w.start + 1) for i, w in enumerate(self.test.windows)
        ])

    def lips(self, video: np.ndarray) -> Scores:
        return lip_metrics(video, self.test.mouth_open, self.test.mouth_box, self.reader)

    def ground_truth(self) -> Scores:
        """The measures' upper bounds on the true frames (no pixel or distribution distance: those are 0 there)."""
        truth = self.test.truth
        return {**self.sync(truth), **self.lips(truth), **(self.critic(truth) if self.critic else {})}

    def __call__(self, video: np.ndarray) -> Scores:
        truth = self.test.truth
        out = {**self.sync(video), **self.lips(video), "psnr": psnr(video, truth), "ssim": ssim(video, truth)}
        if self.critic is not None:
            out.update(self.critic(video))
        if "fid" in self.frechet:
            out["fid"] = self.frechet["fid"](video[:, 1:].reshape(-1, *video.shape[2:]))
        if "fvd" in self.frechet:
            out["fvd"] = self.frechet["fvd"](video[:, 1:])
        return out


@dataclass
class Evaluation:
    results: dict[str, Scores]  # variant (and ground_truth, vae_reconstruction) -> metric -> value
    seed_noise: dict[str, dict]  # variant -> metric -> {mean, std, values per seed}
    reader_scores: Scores  # the mouth reader's validation accuracy (the ceiling of the lip scores)
    expert: SyncExpert
    unavailable: dict[str, str]  # metric -> why it was not computed
    test: HeldOutWindows
    shown: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> its first grid_windows generations


def evaluate_models(params: Params) -> Evaluation:
    """Generate and score the test windows with every bundle of evaluation.models; see the module docstring."""
    cfg = params.evaluation
    test = load_held_out_windows(params)
    n = test.n
    first = load_bundle(next(iter(cfg.models.values())))
    reader, reader_scores = fit_reader(params, first)
    expert = load_sync_expert(cfg.syncnet_weights, params.sync_expert.out_dir)
    scores = VideoScorer(params, test, expert, reader)

    results: dict[str, Scores] = {"ground_truth": scores.ground_truth()}
    results["vae_reconstruction"] = scores(decode_to_frames(first, test.cache.latents[:n]))
    shown: dict[str, np.ndarray] = {}
    for name, directory in cfg.models.items():
        bundle = load_bundle(directory)
        torch.manual_seed(0)
        generated = generate_test_windows(bundle, test.cache, params.sampling, max_windows=n)
        metrics = scores(generated.frames)
        if "audio" in bundle.model.motion:
            zeroed = generate_test_windows(bundle, test.cache, params.sampling, audio="zeroed", max_windows=n)
            metrics["lip_corr_audio_zeroed"] = scores.lips(zeroed.frames)["lip_corr"]
            metrics["sync_c_audio_zeroed"] = scores.sync(zeroed.frames)["sync_c"]
        results[name] = metrics
        shown[name] = generated.frames[: cfg.grid_windows]
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))

    seed_noise = {}
    for name in [v for v in cfg.seed_noise_variants if v in cfg.models]:
        bundle = load_bundle(cfg.models[name])
        runs = [results[name]]
        for seed in cfg.extra_seeds:
            sampling = params.sampling.model_copy(update={"seed": seed})
            runs.append(scores(generate_test_windows(bundle, test.cache, sampling, max_windows=n).frames))
        seed_noise[name] = summarise_seeds(runs, [params.sampling.seed, *cfg.extra_seeds])

    return Evaluation(results=results, seed_noise=seed_noise, reader_scores=reader_scores, expert=expert,
                      unavailable=unavailable_metrics(cfg.fid_extractor, cfg.fvd_extractor), test=test, shown=shown)
