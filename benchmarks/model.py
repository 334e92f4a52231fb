"""Model throughput at the toy profile's sizes (params.yaml): training samples/s per stage, sampling seconds
per generated second of video, and peak memory. Random inputs of the real shapes: no data or trained weights needed.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch

from components.config import PortraitModelConfig, load_params
from components.model.flow import add_noise, sample, sigma_to_timestep
from components.model.portrait import PortraitModel
from components.model.text_encoder import TextEncoder
from components.model.vae import build_vae, decode_latents
from components.train.flow_matching import flow_matching_loss
from components.train.vae_objective import vae_loss


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _steps_per_s(step: Callable[[], None], warmup: int = 2, repeats: int = 8) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats / (time.perf_counter() - start)


def _train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def _phase_config(model: PortraitModelConfig, variant: str | None) -> PortraitModelConfig:
    audio = model.modulation.audio.model_copy(update={"enabled": variant is not None, "temporal": variant or "reshape"})
    skeleton = model.modulation.skeleton.model_copy(update={"enabled": False})
    return model.model_copy(update={"modulation": model.modulation.model_copy(update={"audio": audio, "skeleton": skeleton})})


def bench_model(params_path: str = "params.yaml") -> list[tuple[str, float, str]]:
    torch.manual_seed(0)
    params = load_params(params_path)
    rows: list[tuple[str, float, str]] = []
    frames, res = params.data.frames, params.ingest.resolution
    n_latent = (frames - 1) // 4 + 1

    vae = build_vae(params.vae)
    batch = params.pretrain_vae.batch_size
    video = torch.randint(0, 255, (batch, frames, res, res, 3), dtype=torch.uint8)
    mask = torch.zeros(batch, frames, res, res)
    rate = _steps_per_s(_train_step(vae, lambda: vae_loss(vae, video, mask, params.pretrain_vae)[0]), 1, 3)
    rows.append(("pretrain_vae samples/s", rate * batch, f"batch {batch} x {frames} frames, peak RSS {_peak_rss_mb():.0f} MB"))

    batch = params.phase1.batch_size
    latents = torch.randn(batch, params.vae.z_dim, n_latent, res // 8, res // 8)
    audio = torch.randn(batch, frames, params.model.modulation.audio.tokens_per_frame, params.model.modulation.audio.in_dim)
    sigma = torch.rand(batch)
    x_t, target = add_noise(latents, torch.randn_like(latents), sigma)
    text = TextEncoder(params.model.text)([""]).expand(batch, -1, -1)
    per_variant: dict[str, float] = {}
    for variant in (None, "reshape", "half", "downsample"):
        model = PortraitModel.from_config(_phase_config(params.model, variant))
        if variant is not None:
            model.freeze_backbone()
        feats = audio if variant else None

        def loss() -> torch.Tensor:
            out = model(x_t, sigma_to_timestep(sigma), latents[:, :, :1], feats, None, text)
            return flow_matching_loss(out, target)

        rate = _steps_per_s(_train_step(model, loss)) * batch
        name = f"phase1 ({variant}) samples/s" if variant else "pretrain_dit samples/s"
        per_variant[variant or "base"] = rate
        rows.append((name, rate, f"batch {batch}, peak RSS {_peak_rss_mb():.0f} MB"))
    rows.append(("reshape / downsample step cost", per_variant["downsample"] / per_variant["reshape"], "x (channel expansion's overhead)"))

    model = PortraitModel.from_config(_phase_config(params.model, "reshape")).eval()
    ref, feats, text1 = latents[:1, :, :1], audio[:1], text[:1]
    sampling = params.sampling

    def velocity(x: torch.Tensor, t: torch.Tensor, dropped: bool) -> torch.Tensor:
        return model(x, t, ref, feats, None, text1, drop_audio=torch.tensor([dropped]))

    start = time.perf_counter()
    with torch.no_grad():
        out = sample(velocity, tuple(latents[:1].shape), sampling.steps, sampling.shift, sampling.audio_guidance, torch.Generator().manual_seed(0))
        decode_latents(vae, out)
    seconds = time.perf_counter() - start
    video_s = (frames - 1) / params.ingest.fps  # each window adds frames-1 new frames (one overlaps the previous)
    rows.append(("sampling s per generated s", seconds / video_s, f"{sampling.steps} steps, guidance {sampling.audio_guidance}, incl. VAE decode"))
    rows.extend(_decode_and_batching(vae, model, latents, audio, text, sampling))
    rows.append(("peak RSS MB", _peak_rss_mb(), "whole benchmark process"))
    return rows


def _decode_and_batching(vae, model, latents, audio, text, sampling) -> list[tuple[str, float, str]]:
    """What evaluate and candidates gain from channels-last VAE weights and from sampling windows together."""
    vae.eval()
    z = latents.detach()
    with torch.no_grad():
        fast = 1 / _steps_per_s(lambda: decode_latents(vae, z), 1, 3)  # channels-last inside (components/model/vae.py)
        plain = 1 / _steps_per_s(lambda: vae.decode(z).sample, 1, 3)  # the same decoder, default layout
    rows = [("VAE decode s per window", fast / len(z), f"default layout / channels-last = {plain / fast:.2f}x")]

    n = len(latents)

    def sample_windows(batch: int) -> None:
        for start in range(0, n, batch):
            rows_ = slice(start, start + batch)
            k = len(latents[rows_])

            def velocity(x: torch.Tensor, t: torch.Tensor, dropped: bool) -> torch.Tensor:
                return model(x, t, latents[rows_, :, :1], audio[rows_], None, text[rows_], drop_audio=torch.full((k,), dropped))

            sample(velocity, (k, *latents.shape[1:]), sampling.steps, sampling.shift, sampling.audio_guidance,
                   torch.Generator().manual_seed(0))

    with torch.no_grad():
        one_by_one = 1 / _steps_per_s(lambda: sample_windows(1), 0, 1)
        together = 1 / _steps_per_s(lambda: sample_windows(n), 0, 1)
    rows.append((f"sampling s per window, {n} at once", together / n, f"one at a time / {n} at once = {one_by_one / together:.2f}x"))
    return rows
