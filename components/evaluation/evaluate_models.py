"""What the evaluate stage computes: every model variant on the same held-out test windows, with the same seeds.

Per variant: Sync-C / Sync-D (SyncNet protocol, with the official weights or our sync expert), the synthetic
world's ground-truth lip metrics (read by the mouth reader), PSNR and SSIM against the true frames, the critic's
scores when a critic was trained, and FID / FVD when their extractors are given. Upper bounds of the measures
come first: the true frames and the VAE's reconstruction of them. Variants in `seed_noise_variants` are sampled
again with each extra seed. Every run also keeps its per-window values (window_scores.py), so that each
comparison of two variants is a paired difference over the same windows and seeds with a bootstrap CI.
`evaluate_models` returns it all; evaluation_outputs.py writes the files (claims.py judges the papers' claims).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.config import DIMENSIONS, Params
from components.data.latents import LatentCache, LatentSplit, latent_split_dir
from components.data.windows import ClipSample, Window, iter_split, make_windows
from components.evaluation.fid import FrechetScorer, unavailable_metrics
from components.evaluation.generation import decode_to_frames, generate_test_windows
from components.evaluation.landmark_metrics import LandmarksInBackground, landmark_scorer
from components.evaluation.metrics import centred_truth, lip_readings, pooled_lip_corr, psnr_windows, ssim_windows
from components.evaluation.reader_fit import fit_reader
from components.evaluation.sync_inputs import clip_mfcc
from components.evaluation.sync_metrics import SyncVideo, embed_audio, sync_scores, sync_table
from components.evaluation.syncnet import SyncExpert, load_sync_expert
from components.evaluation.window_scores import PerWindow, WindowScores
from components.model.device import stage_device
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


def metric_sources(params: Params, expert: SyncExpert, scores: VideoScorer) -> dict[str, str]:
    """metric -> which extractor or model produced it, for the report."""
    sync = (f"official SyncNet weights ({expert.meta['weights']})" if expert.source == "official"
            else "talkalign's own sync expert (sync_expert stage)")
    reader = "talkalign's mouth reader (ridge on mouth-box pixels) vs the synthetic world's truth"
    cfg = params.evaluation
    out = {m: sync for m in ("sync_c", "sync_d", "sync_abs_offset", "sync_offset", "sync_c_audio_zeroed")}
    out |= {m: reader for m in ("lip_corr", "lip_err", "lip_corr_audio_zeroed")}
    out |= {"psnr": "pixels (no extractor)", "ssim": "pixels (no extractor)"}
    out |= {f"critic_{d}": "talkalign's Talking-Critic (critic stage)" for d in (*DIMENSIONS, "composite")}
    if cfg.fid_extractor:
        out["fid"] = f"Inception ({cfg.fid_extractor})"
    if cfg.fvd_extractor:
        out["fvd"] = f"I3D ({cfg.fvd_extractor})"
    if scores.landmarks is None:
        return out
    return out | {m: f"{text}, on the first {scores.landmark_n} of {scores.test.n} test windows"
                  for m, text in scores.landmarks.sources().items()}


def summarise_seeds(runs: list[Scores], seeds: list[int]) -> dict[str, dict]:
    """Per metric: the value of each seed, their mean and (sample) standard deviation."""
    out = {}
    for metric in runs[0]:
        values = [float(r[metric]) for r in runs if metric in r]
        if len(values) == len(runs) and all(np.isfinite(values)):
            out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                           "values": dict(zip(map(str, seeds), values))}
    return out


def critic_window_scorer(params: Params, mouth_box: np.ndarray, mel: np.ndarray, truth: np.ndarray | None = None
                         ) -> Callable[[np.ndarray], dict[str, np.ndarray]] | None:
    """video uint8 [N,T,H,W,3] -> critic_<dimension> (and critic_composite) -> score per window [N], or None
    without a critic. The critic (critic stage) was trained on candidates of the training split: the test windows
    are new to it. critic_composite weighs the dimensions by pairs.weights, each divided by its spread (std over
    windows) on the true frames `truth` when given: the dimensions' scales are arbitrary, and without this the one
    with the widest scale would be the composite. A fixed linear map, so paired differences stay paired."""
    from components.preference.critic import load_critic, score_videos

    if not (Path(params.critic.out_dir) / "critic.safetensors").exists():
        print(f"no critic at {params.critic.out_dir}: critic scores left out")
        return None
    critic = load_critic(params.critic.out_dir)
    weights = params.pairs.weights

    def raw(video: np.ndarray) -> dict[str, np.ndarray]:
        return {f"critic_{d}": np.asarray(v, np.float64) for d, v in score_videos(critic, video, mouth_box, mel).items()}

    spread = {d: 1.0 for d in DIMENSIONS}
    if truth is not None:
        on_truth = raw(truth)
        spread = {d: float(np.std(on_truth[f"critic_{d}"])) or 1.0 for d in DIMENSIONS}
    total = sum(weights.get(d, 0.0) for d in DIMENSIONS)

    def scores(video: np.ndarray) -> dict[str, np.ndarray]:
        out = raw(video)  # + the composite reward pairs are curated by (pairs.weights), on the critic's scores
        out["critic_composite"] = sum(weights.get(d, 0.0) * out[f"critic_{d}"] / spread[d] for d in DIMENSIONS) / total
        return out

    return scores


def critic_scorer(params: Params, mouth_box: np.ndarray, mel: np.ndarray) -> Callable[[np.ndarray], Scores] | None:
    """As critic_window_scorer, the mean over windows per dimension."""
    per_window = critic_window_scorer(params, mouth_box, mel)
    if per_window is None:
        return None
    return lambda video: {k: float(v.mean()) for k, v in per_window(video).items()}


@dataclass
class HeldOutWindows:
    """The first n test windows (n = evaluation.max_windows or all), as the shards and the latent cache hold them."""

    cache: LatentCache  # the first n rows of the test cache
    clips: dict[str, ClipSample]  # the clips the n windows come from
    windows: list[Window]
    truth: np.ndarray  # uint8 [n, T, H, W, 3]
    mouth_open: np.ndarray  # [n, T]
    mouth_box: np.ndarray  # [n, T, 4]

    @property
    def n(self) -> int:
        return len(self.windows)


def load_held_out_windows(params: Params) -> HeldOutWindows:
    """Streams the test split up to its n-th window (clips after it are never decoded) and reads n cache rows."""
    frames, max_windows = params.data.frames, params.evaluation.max_windows
    with LatentSplit(latent_split_dir(params.data.latents_dir, "test")) as split:
        n = len(split) if max_windows is None else min(max_windows, len(split))
        cache = split.load(range(n))
    clips: dict[str, ClipSample] = {}
    windows: list[Window] = []
    for clip in iter_split(params.data.shards, "test"):
        cut = make_windows(clip, frames, frames)
        if cut:
            clips[clip.clip_id] = clip
            windows += cut
        if max_windows is not None and len(windows) >= n:
            break  # all n read (with every window asked for, read on: the shards must not hold more than the cache)
    windows = windows if max_windows is None else windows[:n]
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
        self.critic = critic_window_scorer(params, test.mouth_box, test.cache.audio_mel[: test.n].numpy(), truth)
        self.lip_truth = centred_truth(test.mouth_open)
        # lip / hand landmark metrics measured with mediapipe (when its extractor env exists); none -> reasons
        self.landmark_n = test.n if cfg.landmark_windows is None else min(test.n, cfg.landmark_windows)
        self.landmarks, self.landmarks_unavailable = landmark_scorer(
            cfg.landmark_metrics, truth[: self.landmark_n], test.cache.audio_mel[: self.landmark_n].numpy(),
            params.ingest.keypoints.extractor_python)

    def sync_windows(self, video: np.ndarray) -> dict[str, np.ndarray]:
        """Per window: Sync-C, Sync-D and the AV offset (SyncNet protocol, each window one video)."""
        box = self.test.mouth_box
        scores = [sync_scores(sync_table(self.expert.model, SyncVideo(video[i, 1:], box[i, 1:], self.audio_emb[w.clip_id],
                                                                      w.start + 1)))
                  for i, w in enumerate(self.test.windows)]
        offsets = np.array([s.offset for s in scores], np.float64)
        return {"sync_c": np.array([s.sync_c for s in scores]), "sync_d": np.array([s.sync_d for s in scores]),
                "sync_offset": offsets, "sync_abs_offset": np.abs(offsets)}

    def sync(self, video: np.ndarray) -> Scores:
        """Means over windows, as papers report them; sync_offset is the median AV offset."""
        return _summary(self.sync_windows(video))

    def lip_windows(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The centred mouth openings read from the pixels [N, T-1] and the lip error per window [N]."""
        return lip_readings(video, self.test.mouth_open, self.test.mouth_box, self.reader)

    def lips(self, video: np.ndarray) -> Scores:
        opening, err = self.lip_windows(video)
        return {"lip_corr": pooled_lip_corr(opening, self.lip_truth), "lip_err": float(err.mean())}

    def ground_truth(self) -> Scores:
        """The measures' upper bounds on the true frames (no pixel or distribution distance: those are 0 there)."""
        truth = self.test.truth
        return {**self.sync(truth), **self.lips(truth), **(_summary(self.critic(truth)) if self.critic else {}),
                **(self.landmarks.ground_truth() if self.landmarks else {})}

    def __call__(self, video: np.ndarray) -> Scores:
        return self.score(video)[0]

    def score(self, video: np.ndarray, landmarks: bool = True) -> tuple[Scores, WindowScores]:
        """The summary (what metrics.json holds) and the per-window values behind it; `landmarks=False` skips the
        mediapipe measures (the extra sampling seeds: their comparisons use the per-window values only)."""
        truth = self.test.truth
        opening, lip_err = self.lip_windows(video)
        sync = self.sync_windows(video)
        values = {"lip_err": lip_err, "psnr": psnr_windows(video, truth), "ssim": ssim_windows(video, truth),
                  **(self.critic(video) if self.critic is not None else {})}
        out = {**_summary(sync), "lip_corr": pooled_lip_corr(opening, self.lip_truth), **_summary(values)}
        values |= sync
        if "fid" in self.frechet:
            out["fid"] = self.frechet["fid"](video[:, 1:].reshape(-1, *video.shape[2:]))
        if "fvd" in self.frechet:
            out["fvd"] = self.frechet["fvd"](video[:, 1:])
        if self.landmarks is not None and landmarks:
            out.update(self.landmarks(video[: self.landmark_n]))
        values.pop("sync_offset")  # a signed offset: its median is reported, a mean difference would mislead
        return out, WindowScores(values, opening)


def _summary(values: dict[str, np.ndarray]) -> Scores:
    """Per-window values -> the table's numbers: the mean over windows (the median for the signed AV offset)."""
    return {k: float(np.median(v) if k == "sync_offset" else np.mean(v)) for k, v in values.items()}


@dataclass
class Evaluation:
    results: dict[str, Scores]  # variant (and ground_truth, vae_reconstruction) -> metric -> value
    seed_noise: dict[str, dict]  # variant -> metric -> {mean, std, values per seed}
    reader_scores: Scores  # the mouth reader's validation accuracy (the ceiling of the lip scores)
    expert: SyncExpert
    unavailable: dict[str, str]  # metric -> why it was not computed
    test: HeldOutWindows
    shown: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> its first grid_windows generations
    sources: dict[str, str] = field(default_factory=dict)  # metric -> the extractor / model that measured it
    per_window: PerWindow = field(default_factory=PerWindow)  # every run's per-window values, for paired CIs


def evaluate_models(params: Params) -> Evaluation:
    """Generate and score the test windows with every bundle of evaluation.models; see the module docstring."""
    cfg = params.evaluation
    models = params.evaluated_models()  # evaluation.models, then the online rounds' models
    if cfg.variants is not None:
        unknown = sorted(set(cfg.variants) - set(models))
        if unknown:
            raise ValueError(f"evaluation.variants names {unknown}, which are not evaluated models ({sorted(models)})")
        models = {k: v for k, v in models.items() if k in cfg.variants}
    test = load_held_out_windows(params)
    first = load_bundle(next(iter(models.values())), device=stage_device())
    reader, reader_scores = fit_reader(params, first)
    expert = load_sync_expert(cfg.syncnet_weights, params.sync_expert.out_dir)
    scores = VideoScorer(params, test, expert, reader)

    background = LandmarksInBackground(scores.landmarks) if scores.landmarks is not None else None
    try:
        results, seed_noise, shown, per_window = _score_models(params, models, test, first, scores, background)
        if background is not None:
            background.finish()  # the landmark measures join each variant's metrics here
    finally:
        if background is not None:
            background.close()  # after an error: no worker left running

    return Evaluation(results=results, seed_noise=seed_noise, reader_scores=reader_scores, expert=expert,
                      unavailable={**unavailable_metrics(cfg.fid_extractor, cfg.fvd_extractor), **scores.landmarks_unavailable},
                      test=test, shown=shown, sources=metric_sources(params, expert, scores), per_window=per_window)


def _score_models(params: Params, models: dict[str, str], test: HeldOutWindows, first, scores: VideoScorer,
                  background: LandmarksInBackground | None
                  ) -> tuple[dict[str, Scores], dict[str, dict], dict[str, np.ndarray], PerWindow]:
    """Generate and score every variant (and the upper bounds); the landmark measures go to `background`."""
    cfg, n = params.evaluation, test.n
    batch = cfg.sample_batch_size

    def score(video: np.ndarray) -> tuple[Scores, WindowScores]:
        metrics, windows = scores.score(video, landmarks=False)
        if background is not None:
            background.submit(video[: scores.landmark_n], metrics)
        return metrics, windows

    results: dict[str, Scores] = {"ground_truth": scores.ground_truth()}
    results["vae_reconstruction"] = score(decode_to_frames(first, test.cache.latents[:n]))[0]
    per_window = PerWindow(lip_truth=scores.lip_truth, resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed)
    shown: dict[str, np.ndarray] = {}
    for name, directory in models.items():
        bundle = load_bundle(directory, device=stage_device())
        torch.manual_seed(0)
        generated = generate_test_windows(bundle, test.cache, params.sampling, max_windows=n, sample_batch_size=batch)
        metrics, windows = score(generated.frames)
        per_window.add(name, params.sampling.seed, windows)
        if "audio" in bundle.model.motion and name in cfg.audio_zeroed_variants:
            zeroed = generate_test_windows(bundle, test.cache, params.sampling, audio="zeroed", max_windows=n,
                                            sample_batch_size=batch)
            metrics["lip_corr_audio_zeroed"] = scores.lips(zeroed.frames)["lip_corr"]
            metrics["sync_c_audio_zeroed"] = scores.sync(zeroed.frames)["sync_c"]
        results[name] = metrics
        shown[name] = generated.frames[: cfg.grid_windows]
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))

    seed_noise = {}
    for name in [v for v in cfg.seed_noise_variants if v in models]:
        bundle = load_bundle(models[name], device=stage_device())
        runs = [results[name]]
        for seed in cfg.extra_seeds:
            sampling = params.sampling.model_copy(update={"seed": seed})
            video = generate_test_windows(bundle, test.cache, sampling, max_windows=n, sample_batch_size=batch).frames
            metrics, windows = scores.score(video, landmarks=False)
            runs.append(metrics)
            per_window.add(name, seed, windows)
        seed_noise[name] = summarise_seeds(runs, [params.sampling.seed, *cfg.extra_seeds])

    return results, seed_noise, shown, per_window
