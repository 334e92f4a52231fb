"""The evaluate stage: every model variant on the same held-out test windows, with the same seeds.

Per variant: Sync-C / Sync-D (SyncNet protocol, with the official weights or our sync expert), the synthetic
world's ground-truth lip metrics, PSNR and SSIM against the true frames, and FID / FVD when their extractors are
given. Outputs: reports/metrics.json (DVC metric), reports/plots/<metric>.csv (DVC plots), a PNG overview,
side-by-side mp4s of a few windows, and reports/report.md, which says what every number means and what is missing.
Everything also goes to the stage's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from prefect import flow

from components.config import Params, load_params
from components.tracking import stage_run
from flows.train import write_json


def sync_expert_paragraph(expert, params: Params) -> str:
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


def fit_reader(params: Params, bundle, max_windows: int = 64):
    """The mouth reader (components/evaluation/mouth_reader.py), fitted on training windows: their true frames and
    their VAE reconstructions; scored on the validation windows the same two ways."""
    from components.data.latents import load_latent_cache
    from components.data.windows import load_split, make_windows
    from components.evaluation.generation import decode_to_frames
    from components.evaluation.mouth_reader import fit_mouth_reader

    def windows_and_recon(split: str, stride: int):
        cache = load_latent_cache(Path(params.data.latents_dir) / f"{split}.safetensors")
        windows = [w for c in load_split(params.data.shards, split) for w in make_windows(c, params.data.frames, stride)]
        if len(windows) != len(cache.latents):
            raise RuntimeError(f"{split} windows in the shards and in the latent cache differ: rerun the latents stage")
        rows = np.linspace(0, len(windows) - 1, min(max_windows, len(windows))).round().astype(int)
        truth = np.stack([windows[i].frames for i in rows])
        return truth, decode_to_frames(bundle, cache.latents[rows]), cache.mouth_box[rows].numpy(), cache.mouth_open[rows].numpy()

    truth, recon, box, opening = windows_and_recon("train", params.data.window_stride)
    reader = fit_mouth_reader(truth, box, opening, recon_frames=recon)
    truth, recon, box, opening = windows_and_recon("val", params.data.frames)
    scores = {"r_val_true_frames": reader.score(truth, box, opening), "r_val_vae_frames": reader.score(recon, box, opening)}
    print("mouth reader on validation windows: " + ", ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return reader, scores


def summarise_seeds(runs: list[dict[str, float]], seeds: list[int]) -> dict[str, dict]:
    """Per metric: the value of each seed, their mean and (sample) standard deviation."""
    out = {}
    for metric in runs[0]:
        values = [float(r[metric]) for r in runs if metric in r]
        if len(values) == len(runs) and all(np.isfinite(values)):
            out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                           "values": dict(zip(map(str, seeds), values))}
    return out


def critic_scorer(params: Params, mouth_box: np.ndarray, mel: np.ndarray):
    """video uint8 [N,T,H,W,3] -> mean critic score per dimension over the windows, or None without a critic.
    The critic (critic stage) was trained on candidates of the training split: the test windows are new to it."""
    from components.preference.critic import load_critic, score_videos

    if not (Path(params.critic.out_dir) / "critic.safetensors").exists():
        print(f"no critic at {params.critic.out_dir}: critic scores left out")
        return None
    critic = load_critic(params.critic.out_dir)

    def score(video: np.ndarray) -> dict[str, float]:
        return {f"critic_{d}": float(v.mean()) for d, v in score_videos(critic, video, mouth_box, mel).items()}

    return score


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.data.latents import load_latent_cache
    from components.data.windows import load_split, make_windows
    from components.evaluation.charts import write_overview_png, write_plot_data
    from components.evaluation.fid import FrechetScorer, unavailable_metrics
    from components.evaluation.generation import decode_to_frames, generate_test_windows
    from components.evaluation.grid import write_comparison_video
    from components.evaluation.metrics import lip_metrics, psnr, ssim
    from components.evaluation.report import METRICS, ReportInputs, write_report
    from components.evaluation.sync_inputs import clip_mfcc
    from components.evaluation.sync_metrics import SyncVideo, embed_audio, mean_sync_scores
    from components.evaluation.syncnet import load_sync_expert
    from components.model.bundle import load_bundle

    params = load_params(params_path, overrides)
    cfg = params.evaluation
    expert_dir = params.sync_expert.out_dir
    inputs = [params.data.latents_dir, expert_dir, *cfg.models.values()]
    with stage_run("evaluate", params, section="evaluation", inputs=inputs):
        cache = load_latent_cache(Path(params.data.latents_dir) / "test.safetensors")
        frames = params.data.frames
        clips = {c.clip_id: c for c in load_split(params.data.shards, "test")}
        windows = [w for c in clips.values() for w in make_windows(c, frames, frames)]
        n = len(windows) if cfg.max_windows is None else min(cfg.max_windows, len(windows))
        windows = windows[:n]
        if [(w.clip_id, w.start) for w in windows] != [
            (cache.clip_ids[int(c)], int(s)) for c, s in zip(cache.clip_index[:n], cache.window_start[:n])
        ]:
            raise RuntimeError("test windows in the shards and in the latent cache differ: rerun the latents stage")
        truth = np.stack([w.frames for w in windows])
        mouth_open, mouth_box = cache.mouth_open[:n].numpy(), cache.mouth_box[:n].numpy()
        first = load_bundle(next(iter(cfg.models.values())))
        reader, reader_scores = fit_reader(params, first)

        # Sync: each window's generated frames (frame 0 is the given reference) against its clip's real audio.
        expert = load_sync_expert(cfg.syncnet_weights, expert_dir)
        audio_emb = {
            cid: embed_audio(expert.model, clip_mfcc(expert.spec, c.mel, c.audio, c.sample_rate, c.fps))
            for cid, c in clips.items() if cid in {w.clip_id for w in windows}
        }

        def sync(video: np.ndarray) -> dict[str, float]:
            return mean_sync_scores(expert.model, [
                SyncVideo(video[i, 1:], mouth_box[i, 1:], audio_emb[w.clip_id], w.start + 1) for i, w in enumerate(windows)
            ])

        frechet = {}
        if cfg.fid_extractor:
            frechet["fid"] = FrechetScorer.build("fid", cfg.fid_extractor, truth[:, 1:].reshape(-1, *truth.shape[2:]))
        if cfg.fvd_extractor:
            frechet["fvd"] = FrechetScorer.build("fvd", cfg.fvd_extractor, truth[:, 1:])

        critic = critic_scorer(params, mouth_box, cache.audio_mel[:n].numpy())

        def scores(video: np.ndarray) -> dict[str, float]:
            out = {**sync(video), **lip_metrics(video, mouth_open, mouth_box, reader), "psnr": psnr(video, truth), "ssim": ssim(video, truth)}
            if critic is not None:
                out.update(critic(video))
            if "fid" in frechet:
                out["fid"] = frechet["fid"](video[:, 1:].reshape(-1, *video.shape[2:]))
            if "fvd" in frechet:
                out["fvd"] = frechet["fvd"](video[:, 1:])
            return out

        results: dict[str, dict[str, float]] = {
            # Upper bounds of the measures: the true frames, and the VAE's reconstruction of them.
            "ground_truth": {**sync(truth), **lip_metrics(truth, mouth_open, mouth_box, reader), **(critic(truth) if critic else {})},
        }
        results["vae_reconstruction"] = scores(decode_to_frames(first, cache.latents[:n]))
        shown: dict[str, np.ndarray] = {}  # variant -> its first grid windows
        for name, directory in cfg.models.items():
            bundle = load_bundle(directory)
            torch.manual_seed(0)
            generated = generate_test_windows(bundle, cache, params.sampling, max_windows=n)
            metrics = scores(generated.frames)
            if "audio" in bundle.model.motion:
                zeroed = generate_test_windows(bundle, cache, params.sampling, audio="zeroed", max_windows=n)
                metrics["lip_corr_audio_zeroed"] = lip_metrics(zeroed.frames, mouth_open, mouth_box, reader)["lip_corr"]
                metrics["sync_c_audio_zeroed"] = sync(zeroed.frames)["sync_c"]
            results[name] = metrics
            shown[name] = generated.frames[: cfg.grid_windows]
            print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        write_json(cfg.metrics_path, results)

        # Seed noise: the same variants from other noise, so differences can be weighed against it.
        seed_noise = {}
        for name in [v for v in cfg.seed_noise_variants if v in cfg.models]:
            bundle = load_bundle(cfg.models[name])
            runs = [results[name]]
            for seed in cfg.extra_seeds:
                sampling = params.sampling.model_copy(update={"seed": seed})
                runs.append(scores(generate_test_windows(bundle, cache, sampling, max_windows=n).frames))
            seed_noise[name] = summarise_seeds(runs, [params.sampling.seed, *cfg.extra_seeds])
        if seed_noise:
            write_json(cfg.seed_noise_path, seed_noise)

        # For people: charts, side-by-side videos, the report.
        order = list(METRICS)
        plot_files = write_plot_data(cfg.plots_dir, results, order)
        chart = write_overview_png(Path(cfg.figures_dir) / "metrics.png", results, order, {k: f"{v.label} ({v.better} is better)" for k, v in METRICS.items()})
        videos = []
        for i, w in enumerate(windows[: cfg.grid_windows]):
            clip = clips[w.clip_id]
            a, b = (int(round(t / clip.fps * clip.sample_rate)) for t in (w.start, w.start + frames))
            videos.append(write_comparison_video(
                Path(cfg.videos_dir) / f"{w.clip_id}_{w.start:04d}.mp4", truth[i, 0], truth[i],
                {name: v[i] for name, v in shown.items()}, clip.fps, clip.audio[a:b], clip.sample_rate,
            ))
        for stale in set(Path(cfg.videos_dir).glob("*.mp4")) - set(videos):
            stale.unlink()
        unavailable = unavailable_metrics(cfg.fid_extractor, cfg.fvd_extractor)
        sampling = params.sampling
        write_report(cfg.report_path, ReportInputs(
            results=results,
            unavailable=unavailable,
            sync_expert=sync_expert_paragraph(expert, params),
            n_windows=n,
            sampling=f"{sampling.steps} sampling steps, audio guidance {sampling.audio_guidance:g}, seed {sampling.seed}",
            chart=chart,
            videos=videos,
            seed_noise=seed_noise,
            comparisons=[tuple(c) for c in cfg.comparisons],
        ))

        for name, metrics in results.items():
            mlflow.log_metrics({f"{name}.{key}": value for key, value in metrics.items() if np.isfinite(value)})
        mlflow.log_artifact(cfg.metrics_path)
        mlflow.log_artifact(cfg.report_path)
        mlflow.log_artifact(str(chart), artifact_path="figures")
        for path in plot_files:
            mlflow.log_artifact(str(path), artifact_path="plots")
        for path in videos:
            mlflow.log_artifact(str(path), artifact_path="videos")
        mlflow.log_dict({"unavailable": unavailable, "sync_expert": {"source": expert.source, **expert.meta}},
                        "evaluation.json")
        mlflow.set_tag("talkalign.sync_expert", expert.source)
        mlflow.log_metrics({f"mouth_reader.{k}": v for k, v in reader_scores.items()})
        return results
