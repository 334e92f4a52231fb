"""Cost of a Flow-DPO step against an ordinary flow-matching step on the same pair batch (toy sizes).

Both train the same LoRA adapters of the phase-2-shaped model on the same 2P latents (P winners + P losers):
flow matching = one forward + backward; DPO = the same plus a no-grad reference forward with the adapters off,
which costs less than a training forward (no autograd graph is kept). Time: both steps timed interleaved in one
process (FM DPO FM DPO ..., benchmarks/timing.py), the ratio per round. Memory: each mode once more in its own
process, so its peak is its own: the rise of the resident set from just before the first step to its peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

from benchmarks.timing import Row, ratio, ratio_row, seconds_row, time_calls, value_row

PAIRS = 4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _steps(modes: tuple[str, ...] = ("flow_matching", "dpo"), params_path: str = "params.yaml") -> dict:
    """mode -> one optimiser step of that mode, each with its own model and optimiser (same init, same batch)."""
    import torch

    from components.config import load_params
    from components.model.adapters import add_lora
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.train.dpo import dpo_step_loss, pair_velocity_errors
    from components.train.phases import phase_model_config

    params = load_params(params_path)
    cfg = phase_model_config(params, phase=2, variant="reshape")
    cfg = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"pretrained_path": None})})
    frames, res = params.data.frames, params.ingest.resolution
    spatial = res // 2 ** (len(params.vae.dim_mult) - 1)  # the VAE's spatial compression
    shape = (PAIRS, params.vae.z_dim, (frames - 1) // 4 + 1, spatial, spatial)
    audio = params.model.modulation.audio
    g = torch.Generator().manual_seed(0)
    batch = {
        "winner": torch.randn(shape, generator=g), "loser": torch.randn(shape, generator=g),
        "noise": torch.randn(shape, generator=g), "cond": torch.randn(shape, generator=g), "sigma": torch.rand(PAIRS, generator=g),
        "audio": torch.randn(PAIRS, frames, audio.tokens_per_frame, audio.in_dim, generator=g),
        "pose": torch.rand(PAIRS, frames, params.model.modulation.skeleton.n_joints, 3, generator=g),
    }
    text = TextEncoder(cfg.text)([""])

    def make(mode: str):
        model = PortraitModel.from_config(cfg)
        add_lora(model, rank=8, alpha=8, groups=["attention", "mlp", "modulation"])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            if mode == "dpo":
                loss, _ = dpo_step_loss(model, batch, text, beta=2500.0)
            else:
                err_w, err_l = pair_velocity_errors(model, batch, text)
                loss = torch.cat([err_w, err_l]).mean()
            loss.backward()
            optimizer.step()

        return step

    return {mode: make(mode) for mode in modes}


def _memory_worker(mode: str) -> None:
    step = _steps((mode,))[mode]
    before = _rss_mb()
    step()
    step()
    print(json.dumps({"memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}))


def _memory(mode: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = f"from benchmarks.preference import _memory_worker; _memory_worker({mode!r})"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["memory_mb"]


def bench_preference() -> list[Row]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # as the memory workers
    try:
        timed = time_calls(_steps())
    finally:
        torch.set_num_threads(threads)
    fm_mb, dpo_mb = _memory("flow_matching"), _memory("dpo")
    return [
        seconds_row("flow-matching step s (LoRA, 2x4 samples)", timed["flow_matching"], note=f"+{fm_mb:.0f} MB"),
        seconds_row("DPO step s (same batch)", timed["dpo"], note=f"+{dpo_mb:.0f} MB"),
        ratio_row("DPO / flow-matching time", ratio(timed["dpo"], timed["flow_matching"]), "x, interleaved (target <= 1.5)"),
        value_row("DPO / flow-matching peak memory", dpo_mb / max(fm_mb, 1e-6), "x, one process each (target <= 1.15)"),
    ]
