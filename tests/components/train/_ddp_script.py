"""Train a tiny MLP with run_training; used by the loop tests as a subprocess (plain or `accelerate launch`).

    python _ddp_script.py --ckpt-dir D --out final.safetensors [--steps 20 --batch-size 8 ...]

The main process writes the final trainable weights to --out and prints one JSON line with the TrainResult.
TALKALIGN_TEST_BATCH_SLEEP=<seconds> makes every batch_fn call sleep (so a test can kill the run mid-way).
The test files import `build_model`, `batch_fn` and `loss_fn` from here (and wrap them as Objective(loss_fn, model)),
so in-process and launched runs train exactly the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # launched as a script: make `components` importable
    sys.path.insert(0, str(REPO))

from components.config import OptimConfig, TrainLoopConfig  # noqa: E402
from components.train.loop import end_distributed, run_training, sliced  # noqa: E402
from components.train.objective import Objective  # noqa: E402

IN, HIDDEN, OUT = 4, 16, 3
TRUE_W = torch.linspace(-1, 1, IN * OUT).view(IN, OUT)


def build_model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(1234)  # the same initial weights in every process and run
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Dropout(dropout), nn.Linear(HIDDEN, OUT))


def _global_batch(step: int, micro: int, total: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    delay = float(os.environ.get("TALKALIGN_TEST_BATCH_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    x = torch.randn(total, IN, generator=generator)
    y = x @ TRUE_W + 0.1 * torch.randn(total, OUT, generator=generator)
    return {"x": x, "y": y}


batch_fn = sliced(_global_batch)


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    pred = model(batch["x"])
    loss = (pred - batch["y"]).pow(2).mean()
    return loss, {"pred_abs": pred.detach().abs().mean().item()}


def make_cfg(steps: int, batch_size: int, grad_accum: int, checkpoint_every: int) -> TrainLoopConfig:
    return TrainLoopConfig(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, checkpoint_every=checkpoint_every,
        log_every=5, seed=7, keep_checkpoints=3,
        optim=OptimConfig(lr=1e-2, warmup_steps=3, schedule="cosine", weight_decay=0.01, grad_clip=1.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = build_model(args.dropout)
    cfg = make_cfg(args.steps, args.batch_size, args.grad_accum, args.checkpoint_every)
    result = run_training(name="tiny", model=Objective(loss_fn, model), trainable=None, batch_fn=batch_fn, cfg=cfg,
                          ckpt_dir=args.ckpt_dir, progress=False)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
        print(json.dumps({"steps_done": result.steps_done, "resumed_from": result.resumed_from,
                          "final_loss": result.final_loss, "num_processes": state.num_processes}), flush=True)
    end_distributed()


if __name__ == "__main__":
    main()
