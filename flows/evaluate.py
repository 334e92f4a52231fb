"""The evaluate stage: every model variant on the same held-out test windows, with the same seeds."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from prefect import flow

from components.config import load_params
from components.tracking import stage_run
from flows.train import write_json


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.data.latents import load_latent_cache
    from components.data.windows import load_split, make_windows
    from components.evaluation.generation import decode_to_frames, generate_test_windows
    from components.evaluation.metrics import lip_metrics, psnr
    from components.model.bundle import load_bundle

    params = load_params(params_path, overrides)
    cfg = params.evaluation
    with stage_run("evaluate", params, section="evaluation", inputs=[params.data.latents_dir, *cfg.models.values()]):
        cache = load_latent_cache(Path(params.data.latents_dir) / "test.safetensors")
        frames = params.data.frames
        windows = [w for c in load_split(params.data.shards, "test") for w in make_windows(c, frames, frames)]
        n = len(windows) if cfg.max_windows is None else min(cfg.max_windows, len(windows))
        if [(w.clip_id, w.start) for w in windows[:n]] != [
            (cache.clip_ids[int(c)], int(s)) for c, s in zip(cache.clip_index[:n], cache.window_start[:n])
        ]:
            raise RuntimeError("test windows in the shards and in the latent cache differ: rerun the latents stage")
        truth = np.stack([w.frames for w in windows[:n]])
        mouth_open, mouth_box = cache.mouth_open[:n].numpy(), cache.mouth_box[:n].numpy()

        results: dict[str, dict[str, float]] = {
            # Upper bounds of the measure: the true frames, and the VAE's reconstruction of them.
            "ground_truth": lip_metrics(truth, mouth_open, mouth_box),
        }
        first = load_bundle(next(iter(cfg.models.values())))
        reconstruction = decode_to_frames(first, cache.latents[:n])
        results["vae_reconstruction"] = {**lip_metrics(reconstruction, mouth_open, mouth_box), "psnr": psnr(reconstruction, truth)}
        for name, directory in cfg.models.items():
            bundle = load_bundle(directory)
            torch.manual_seed(0)
            generated = generate_test_windows(bundle, cache, params.sampling, max_windows=n)
            metrics = {**lip_metrics(generated.frames, mouth_open, mouth_box), "psnr": psnr(generated.frames, truth)}
            if "audio" in bundle.model.motion:
                zeroed = generate_test_windows(bundle, cache, params.sampling, audio="zeroed", max_windows=n)
                metrics["lip_corr_audio_zeroed"] = lip_metrics(zeroed.frames, mouth_open, mouth_box)["lip_corr"]
            results[name] = metrics
            print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        write_json(cfg.metrics_path, results)
        mlflow.log_artifact(cfg.metrics_path)
        for name, metrics in results.items():
            mlflow.log_metrics({f"{name}.{key}": value for key, value in metrics.items()})
        return results
