"""Model throughput at the toy profile's sizes (params.yaml): training samples/s per stage, sampling seconds
per generated second of video, and peak memory. Random inputs of the real shapes: no data or trained weights needed.
Every timing goes through benchmarks/timing.py: the phase-1 variants, the two VAE decode layouts and the two sampling
batchings are each timed interleaved in one process, so their ratios compare like with like.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import torch

from benchmarks.timing import Row, rate_row, ratio, ratio_row, seconds_row, time_call, time_calls, value_row
from components.config import PortraitModelConfig, load_params
from components.model.flow import add_noise, sample, sigma_to_timestep
from components.model.portrait import PortraitModel
from components.model.text_encoder import TextEncoder
from components.model.vae import build_vae, decode_latents, single_frame_convs
from components.train.flow_matching import flow_matching_loss
from components.train.vae_objective import vae_loss


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


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


def bench_model(params_path: str = "params.yaml") -> list[Row]:
    torch.manual_seed(0)
    params = load_params(params_path)
    rows: list[Row] = []
    frames, res = params.data.frames, params.ingest.resolution
    n_latent = (frames - 1) // 4 + 1

    vae = build_vae(params.vae)
    batch = params.pretrain_vae.batch_size
    video = torch.randint(0, 255, (batch, frames, res, res, 3), dtype=torch.uint8)
    mask = torch.zeros(batch, frames, res, res)
    seconds = time_call(_train_step(vae, lambda: vae_loss(vae, video, mask, params.pretrain_vae)[0]))
    rows.append(rate_row("pretrain_vae samples/s", seconds, batch, f"batch {batch} x {frames} frames, peak RSS {_peak_rss_mb():.0f} MB"))
    rows.extend(_vae_image_step(vae, params))

    batch = params.phase1.batch_size
    latents = torch.randn(batch, params.vae.z_dim, n_latent, res // 2 ** (len(params.vae.dim_mult) - 1), res // 2 ** (len(params.vae.dim_mult) - 1))
    audio = torch.randn(batch, frames, params.model.modulation.audio.tokens_per_frame, params.model.modulation.audio.in_dim)
    sigma = torch.rand(batch)
    x_t, target = add_noise(latents, torch.randn_like(latents), sigma)
    text = TextEncoder(params.model.text)([""]).expand(batch, -1, -1)
    steps: dict[str, Callable[[], None]] = {}
    for variant in (None, "reshape", "half", "downsample"):
        model = PortraitModel.from_config(_phase_config(params.model, variant))
        if variant is not None:
            model.freeze_backbone()

        def loss(model: PortraitModel = model, feats: torch.Tensor | None = audio if variant else None) -> torch.Tensor:
            out = model(x_t, sigma_to_timestep(sigma), latents, feats, None, text)
            return flow_matching_loss(out, target)

        steps[variant or "base"] = _train_step(model, loss)
    timed = time_calls(steps)  # base reshape half downsample, base reshape ... in one process
    for variant, seconds in timed.items():
        name = "pretrain_dit samples/s" if variant == "base" else f"phase1 ({variant}) samples/s"
        rows.append(rate_row(name, seconds, batch, f"batch {batch}, interleaved with the other variants"))
    rows.append(ratio_row("reshape / downsample step time", ratio(timed["reshape"], timed["downsample"]),
                          "x (channel expansion's overhead), per interleaved round"))

    model = PortraitModel.from_config(_phase_config(params.model, "reshape")).eval()
    ref, feats, text1 = latents[:1], audio[:1], text[:1]  # the I2V condition has the latents' shape
    sampling = params.sampling

    def velocity(x: torch.Tensor, t: torch.Tensor, dropped: bool) -> torch.Tensor:
        return model(x, t, ref, feats, None, text1, drop_audio=torch.tensor([dropped]))

    def generate() -> None:
        with torch.no_grad():
            out = sample(velocity, tuple(latents[:1].shape), sampling.steps, sampling.shift, sampling.audio_guidance,
                         torch.Generator().manual_seed(0))
            decode_latents(vae, out)

    video_s = (frames - 1) / params.ingest.fps  # each window adds frames-1 new frames (one overlaps the previous)
    rows.append(seconds_row("sampling s per generated s", time_call(generate), video_s,
                            f"{sampling.steps} steps, guidance {sampling.audio_guidance}, incl. VAE decode"))
    rows.extend(_decode_and_batching(vae, model, latents, audio, text, sampling))
    rows.append(value_row("peak RSS MB", _peak_rss_mb(), "whole benchmark process"))
    return rows


def _vae_image_step(vae, params) -> list[Row]:
    """The image phase's single-frame step through the full causal convs vs their current-frame tap alone
    (`single_frame_convs`: the same values, a third of the conv work)."""
    batch, res = params.pretrain_vae.image_batch_size, params.ingest.resolution
    still = torch.randint(0, 255, (batch, 1, res, res, 3), dtype=torch.uint8)
    mask = torch.zeros(batch, 1, res, res)
    full = _train_step(vae, lambda: vae_loss(vae, still, mask, params.pretrain_vae)[0])
    tapped = _train_step(vae, lambda: vae_loss(vae, still, mask, params.pretrain_vae)[0])

    def current_tap() -> None:
        with single_frame_convs(vae):
            tapped()

    timed = time_calls({"full": full, "current_tap": current_tap})
    return [rate_row("pretrain_vae image samples/s", timed["current_tap"], batch, f"batch {batch} stills, current-frame taps"),
            ratio_row("VAE image step full convs / current-frame tap", ratio(timed["full"], timed["current_tap"]),
                      "x, interleaved")]


def _decode_and_batching(vae, model, latents, audio, text, sampling) -> list[Row]:
    """What evaluate and candidates gain from channels-last VAE weights and from sampling windows together."""
    vae.eval()
    z = latents.detach()
    with torch.no_grad():
        decode = time_calls({"channels_last": lambda: decode_latents(vae, z),  # channels-last inside (model/vae.py)
                             "default": lambda: vae.decode(z).sample})  # the same decoder, default layout
    rows = [seconds_row("VAE decode s per window", decode["channels_last"], len(z), "channels-last weights"),
            ratio_row("VAE decode default layout / channels-last", ratio(decode["default"], decode["channels_last"]),
                      "x, interleaved")]

    n = len(latents)

    def sample_windows(batch: int) -> None:
        for start in range(0, n, batch):
            rows_ = slice(start, start + batch)
            k = len(latents[rows_])

            def velocity(x: torch.Tensor, t: torch.Tensor, dropped: bool) -> torch.Tensor:
                return model(x, t, latents[rows_], audio[rows_], None, text[rows_], drop_audio=torch.full((k,), dropped))

            sample(velocity, (k, *latents.shape[1:]), sampling.steps, sampling.shift, sampling.audio_guidance,
                   torch.Generator().manual_seed(0))

    with torch.no_grad():
        timed = time_calls({"one": lambda: sample_windows(1), "together": lambda: sample_windows(n)}, warmup=0)
    rows += [seconds_row(f"sampling s per window, {n} at once", timed["together"], n, ""),
             ratio_row(f"sampling one at a time / {n} at once", ratio(timed["one"], timed["together"]), "x, interleaved")]
    return rows
