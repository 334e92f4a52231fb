"""The GPU check (`make gpu-check`): the 1.3B profile's architecture with random weights in bf16 on one GPU.

    python -m benchmarks.gpu_check [--params params.wan13b.yaml] [--tiny]

Times one phase-1 step, one DPO pair step and one 4-step sample of the profile's window (81 frames at 480 px for
params.wan13b.yaml), each after one warm-up: seconds per step, peak GPU memory, and MFU (FLOPs counted by
torch.utils.flop_counter on the same step, over the GPU's dense bf16 peak). The models, batches and losses are
the pipeline's own (components/dryrun/meta_model.py builds them on the GPU instead of the meta device).
Elsewhere it prints "no CUDA device" and exits 0; `--tiny` runs the toy profile on the CPU to test the code path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from components.config import load_params
from components.dryrun.meta_model import meta_dpo_model, meta_portrait
from components.dryrun.steps import IMAGE_TOKENS, Shapes
from components.model.flow import sample
from components.train.dpo import dpo_step_loss
from components.train.portrait_objective import flow_loss

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per GPU


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _randomise(model: torch.nn.Module) -> None:
    with torch.no_grad():  # LoRA B and zero-initialised outputs would make the steps trivially cheap to check
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.normal_(0.0, 0.02)


def _timed(step: Callable[[], None], device: torch.device) -> tuple[float, int, float]:
    """(seconds of one step after a warm-up, peak memory bytes, FLOPs of one step)."""
    step()  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return seconds, peak, float(counter.get_total_flops())


def _conditions(params, shapes: Shapes, rows: int, device: torch.device) -> dict[str, torch.Tensor]:
    audio, skel = params.model.modulation.audio, params.model.modulation.skeleton
    out = {"audio": torch.randn(rows, shapes.frames, audio.tokens_per_frame, audio.in_dim, device=device),
           "pose": torch.rand(rows, shapes.frames, skel.n_joints, 3, device=device)}
    if params.model.backbone.image_dim:
        out["image_emb"] = torch.randn(rows, IMAGE_TOKENS, params.model.backbone.image_dim, device=device)
    return out


def _latents(params, shapes: Shapes, rows: int, device: torch.device) -> torch.Tensor:
    return torch.randn(rows, params.vae.z_dim, shapes.latent_frames, shapes.latent_h, shapes.latent_w, device=device)


def run(params_path: str, device: torch.device, sample_steps: int = 4, overrides: dict | None = None) -> list[dict]:
    params = load_params(params_path, overrides)
    shapes = Shapes.of(params)
    text = torch.randn(1, params.model.text.max_length, params.model.text.d_model, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = []

    def report(stage: str, step: Callable[[], None], clips: int) -> None:
        seconds, peak, flops = _timed(step, device)
        top = _peak(device)
        rows.append({"stage": stage, "s_per_step": seconds, "peak_gb": peak / 1e9, "tflop_per_step": flops / 1e12,
                     "mfu": flops / seconds / top if top else float("nan"), "clips": clips})

    # phase 1: audio modulation trainable, backbone frozen (bf16), one clip
    model = meta_portrait(params, phase=1, device=device)
    _randomise(model)
    if params.phase1.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    latents = _latents(params, shapes, 1, device)
    batch = {"latents": latents, "cond": torch.randn_like(latents), "noise": torch.randn_like(latents),
             "sigma": torch.rand(1, device=device), "drop_audio": torch.zeros(1, dtype=torch.bool, device=device),
             "drop_pose": torch.zeros(1, dtype=torch.bool, device=device), **_conditions(params, shapes, 1, device)}

    def phase1_step() -> None:
        with autocast:
            loss, _ = flow_loss(model, batch, text)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    report("phase1", phase1_step, 1)

    # sampling: the phase-1 model, audio CFG (two forwards per step), no grad
    cond = _conditions(params, shapes, 1, device)
    cond_latents = _latents(params, shapes, 1, device)

    def velocity(x: torch.Tensor, timestep: torch.Tensor, drop: bool) -> torch.Tensor:
        drop_audio = torch.full((x.shape[0],), drop, device=device)
        return model(x, timestep, cond_latents, cond["audio"], None, text, drop_audio=drop_audio,
                     image_emb=cond.get("image_emb")).float()

    def sample_call() -> None:
        with torch.no_grad(), autocast:
            sample(velocity, tuple(cond_latents.shape), steps=sample_steps, shift=params.sampling.shift,
                   guidance=params.sampling.audio_guidance, device=device)

    report(f"sample ({sample_steps} steps, {shapes.frames} frames)", sample_call, 1)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # DPO: the phase-2 model with LoRA, one pair (policy with grad + reference without)
    model = meta_dpo_model(params, device=device)
    _randomise(model)
    if params.dpo.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    winner = _latents(params, shapes, 1, device)
    pair = {"winner": winner, "loser": torch.randn_like(winner), "noise": torch.randn_like(winner),
            "cond": torch.randn_like(winner), "sigma": torch.rand(1, device=device), "ref": winner[:, :, :1],
            **_conditions(params, shapes, 1, device)}

    def dpo_step() -> None:
        with autocast:
            loss, _ = dpo_step_loss(model, pair, text, params.dpo.beta)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    report("dpo (1 pair)", dpo_step, 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.wan13b.yaml")
    parser.add_argument("--tiny", action="store_true", help="the toy profile on the CPU (tests the code path)")
    args = parser.parse_args(argv)
    if args.tiny:
        device, params_path = torch.device("cpu"), "params.yaml"
    elif not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one (nothing run)")
        return 0
    else:
        device, params_path = torch.device("cuda"), args.params
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, profile {params_path}")
    for row in run(params_path, device):
        print(f"{row['stage']:<28} {row['s_per_step']:8.3f} s/step  peak {row['peak_gb']:6.1f} GB  "
              f"{row['tflop_per_step']:9.1f} TFLOP/step  MFU {row['mfu']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
