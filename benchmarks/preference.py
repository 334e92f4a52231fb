"""Cost of a Flow-DPO step against an ordinary flow-matching step on the same pair batch (toy sizes).

Both train the same LoRA adapters of the phase-2-shaped model on the same 2P latents (P winners + P losers):
flow matching = one forward + backward; DPO = the same plus a no-grad reference forward with the adapters off,
which costs less than a training forward (no autograd graph is kept). Each mode runs in its own process, so its peak
memory is its own: memory is the rise of the resident set from just before the first step to its peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

PAIRS = 4
REPEATS = 6


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(mode: str, params_path: str = "params.yaml") -> None:
    import torch

    from components.config import load_params
    from components.model.adapters import add_lora
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.train.dpo import dpo_step_loss, pair_velocity_errors
    from components.train.phases import phase_model_config

    torch.manual_seed(0)
    params = load_params(params_path)
    cfg = phase_model_config(params, phase=2, variant="reshape")
    cfg = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"pretrained_path": None})})
    model = PortraitModel.from_config(cfg)
    add_lora(model, rank=8, alpha=8, groups=["attention", "mlp", "modulation"])
    frames, res = params.data.frames, params.ingest.resolution
    spatial = res // 8  # the toy VAE's 8x
    shape = (PAIRS, params.vae.z_dim, (frames - 1) // 4 + 1, spatial, spatial)
    audio = params.model.modulation.audio
    batch = {
        "winner": torch.randn(shape), "loser": torch.randn(shape), "noise": torch.randn(shape),
        "sigma": torch.rand(PAIRS),
        "audio": torch.randn(PAIRS, frames, audio.tokens_per_frame, audio.in_dim),
        "pose": torch.rand(PAIRS, frames, params.model.modulation.skeleton.n_joints, 3),
    }
    text = TextEncoder(cfg.text)([""])
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

    before = _rss_mb()
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(REPEATS):
        step()
    seconds = (time.perf_counter() - start) / REPEATS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "memory_mb": peak - before}))


def _run(mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = f"from benchmarks.preference import _worker; _worker({mode!r})"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_preference() -> list[tuple[str, float, str]]:
    fm, dpo = _run("flow_matching"), _run("dpo")
    return [
        ("flow-matching step s (LoRA, 2x4 samples)", fm["seconds"], f"+{fm['memory_mb']:.0f} MB"),
        ("DPO step s (same batch)", dpo["seconds"], f"+{dpo['memory_mb']:.0f} MB"),
        ("DPO / flow-matching time", dpo["seconds"] / fm["seconds"], "x (target <= 1.5)"),
        ("DPO / flow-matching peak memory", dpo["memory_mb"] / max(fm["memory_mb"], 1e-6), "x (target <= 1.15)"),
    ]
