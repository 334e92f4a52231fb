"""Train the tiny real portrait model with run_training under FSDP2; used by test_fsdp.py, launched on 2 gloo
processes (`accelerate launch`), or imported for the 1-process reference runs.

    python _fsdp_script.py --out DIR [--stages phase1,dpo,refuse] [--steps 4] [--checkpoint-every 2]

Stages (gradient checkpointing on in both):
  phase1  flow matching of the audio modulation, backbone frozen (components/train/portrait_objective.py)
  dpo     Flow-DPO with LoRA adapters as the only trainable weights (components/train/dpo.py)
  refuse  run_training with a sample_fn and sample_every > 0: must be refused under FSDP (records the message)
Each trained stage checkpoints to DIR/ckpt_<stage> and its final weights are exported through fsdp.gather_named
and fsdp.gather_full_state (every rank takes part; rank 0 writes DIR/<stage>.safetensors and
DIR/<stage>_full.safetensors). Rank 0 prints one JSON line with what happened.
TALKALIGN_TEST_BATCH_SLEEP=<seconds> makes every batch function sleep (so a test can kill the run mid-way); each
process writes its pid to DIR/pids/rank<r> (the launcher starts the workers in sessions of their own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # launched as a script: make `components` importable
    sys.path.insert(0, str(REPO))

from components.config import AudioModulationConfig, DpoConfig, FlowTrainConfig, OptimConfig, PortraitModelConfig  # noqa: E402
from components.model.adapters import add_lora  # noqa: E402
from components.model.portrait import PortraitModel  # noqa: E402
from components.preference.pair_data import global_pair_batch  # noqa: E402
from components.train.dpo import dpo_step_loss  # noqa: E402
from components.train.fsdp import block_units, gather_full_state, gather_named, is_sharded  # noqa: E402
from components.train.loop import end_distributed, run_training, sliced  # noqa: E402
from components.train.objective import Objective  # noqa: E402
from components.train.portrait_objective import flow_loss, global_flow_batch  # noqa: E402

N, Z, T_LAT, H, W, T, AUDIO_DIM = 6, 16, 3, 4, 4, 9, 8
TEXT = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))


def tiny_portrait() -> PortraitModel:
    """The tiny WanTransformer3DModel + audio modulation of the unit tests, its output projections non-zero."""
    torch.manual_seed(0)
    model = PortraitModel.from_config(PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=AUDIO_DIM,
                                                                                          tokens_per_frame=2)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                attn.attn.to_out[0].weight.copy_(torch.randn(attn.attn.to_out[0].weight.shape, generator=g) * 0.2)
    return model


def _data(kind: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    latents = torch.randn(N, Z, T_LAT, H, W, generator=g)
    common = {"cond": torch.randn(N, Z, T_LAT, H, W, generator=g), "audio": torch.randn(N, T, 2, AUDIO_DIM, generator=g)}
    if kind == "phase1":
        return {"latents": latents, **common, "pose": torch.rand(N, T, 5, 3, generator=g)}
    return {"winner": latents, "loser": latents + 0.5 * torch.randn(latents.shape, generator=g), **common}


def stage_cfg(stage: str, steps: int, checkpoint_every: int) -> FlowTrainConfig:
    # the pair batches of the other stages read the preference keys (timestep_sampling): a DpoConfig
    kind = FlowTrainConfig if stage == "phase1" else DpoConfig
    return kind(
        steps=steps, batch_size=4, grad_accum=2 if stage == "phase1" else 1, checkpoint_every=checkpoint_every,
        log_every=1, seed=3, keep_checkpoints=2, gradient_checkpointing=True, parallelism="fsdp",
        audio_dropout=0.3, optim=OptimConfig(lr=3e-3 if stage == "phase1" else 1e-2, warmup_steps=1, weight_decay=0.01),
    )


def _sleepy(fn):
    delay = float(os.environ.get("TALKALIGN_TEST_BATCH_SLEEP", "0"))

    def wrapped(*args):
        if delay:
            time.sleep(delay)
        return fn(*args)

    return wrapped


def build_stage(stage: str, steps: int, checkpoint_every: int):
    """(objective module, trainable parameters, batch_fn, cfg, a function giving the named parameters the stage
    exports: called after training, because sharding replaces the parameter objects)."""
    cfg = stage_cfg(stage, steps, checkpoint_every)
    model = tiny_portrait()
    data = _data(stage)
    if stage == "phase1":
        model.freeze_backbone()
        objective = Objective(lambda m, batch: flow_loss(m, batch, TEXT), model)
        batch_fn = sliced(_sleepy(lambda step, micro, rows, g: global_flow_batch(data, cfg, rows, g)))
        exported = model.named_modulation_parameters
    else:
        add_lora(model, rank=4, alpha=4.0, groups=["attention", "modulation"])
        objective = Objective(lambda m, batch: dpo_step_loss(m, batch, TEXT, beta=50.0), model)
        batch_fn = sliced(_sleepy(lambda step, micro, rows, g: global_pair_batch(data, cfg, rows, g)))
        def exported():
            return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    return objective, trainable, batch_fn, cfg, exported


def train_stage(stage: str, out: Path, steps: int, checkpoint_every: int) -> dict:
    objective, trainable, batch_fn, cfg, exported = build_stage(stage, steps, checkpoint_every)
    # Count the calls of each block module: with gradient checkpointing the recomputation in backward must call
    # the block module again (FSDP's pre-forward hook, registered the same way, then gathers its weights).
    units, calls = block_units(objective.model), []
    for unit in units:
        unit.register_forward_pre_hook(lambda module, args: calls.append(1))
    result = run_training(name=stage, model=objective, trainable=trainable, batch_fn=batch_fn, cfg=cfg,
                          ckpt_dir=out / f"ckpt_{stage}", progress=False)
    weights = gather_named(objective, exported())  # collective: every rank, rank 0 receives
    full = gather_full_state(objective)  # collective: all trainable parameters and buffers, by module name
    if weights:
        save_file(weights, str(out / f"{stage}.safetensors"))
        save_file(full, str(out / f"{stage}_full.safetensors"))
    return {"steps_done": result.steps_done, "resumed_from": result.resumed_from, "final_loss": result.final_loss,
            "sharded": is_sharded(objective), "units": len(units), "block_calls": len(calls) / len(units),
            "checkpointing": objective.model.transformer.gradient_checkpointing}


def refused_sampling(out: Path) -> str:
    objective, trainable, batch_fn, cfg, _ = build_stage("phase1", 1, 1)
    try:
        run_training(name="refuse", model=objective, trainable=trainable, batch_fn=batch_fn,
                     cfg=cfg.model_copy(update={"sample_every": 1}), ckpt_dir=out / "ckpt_refuse",
                     sample_fn=lambda module, step: None, progress=False)
    except ValueError as exc:
        return str(exc)
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stages", default="phase1")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    from accelerate import PartialState

    state = PartialState(cpu=True)
    pids = args.out / "pids"  # so a test can SIGKILL the workers (torchrun starts each in its own session)
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"rank{state.process_index}").write_text(str(os.getpid()))
    report: dict = {"num_processes": state.num_processes}
    for stage in args.stages.split(","):
        if stage == "refuse":
            report["refused"] = refused_sampling(args.out)
        else:
            report[stage] = train_stage(stage, args.out, args.steps, args.checkpoint_every)
    if state.is_main_process:
        print(json.dumps(report), flush=True)
    end_distributed()


if __name__ == "__main__":
    main()

