"""The training loop: resume after kill -9, grad accumulation, 2-process gloo parity, trainable-only, logging."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

from components.config import OptimConfig, TrainLoopConfig
from components.train.checkpoint import CheckpointError
from components.train.loop import BatchSlice, lr_factor, make_accelerator, run_training, step_generator
from components.train.objective import Objective

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_ddp_script.py"
REPO = HERE.parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("talkalign_test_ddp_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _load_script()


@pytest.fixture
def one_thread():
    # The subprocesses run with 1 intra-op thread; match it so float reductions happen in the same order.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_in_process(ckpt_dir: Path, steps: int = 20, batch_size: int = 8, grad_accum: int = 1,
                      dropout: float = 0.0, **kw) -> tuple[nn.Module, object]:
    model = tiny.build_model(dropout)
    cfg = tiny.make_cfg(steps, batch_size, grad_accum, checkpoint_every=5)
    result = run_training(name="tiny", model=Objective(tiny.loss_fn, model), trainable=None, batch_fn=tiny.batch_fn,
                          cfg=cfg, ckpt_dir=ckpt_dir, progress=False, **kw)
    return model, result


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _script_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("WORLD_SIZE", None)
    return env


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, one_thread):
    """kill -9 a 20-step run (checkpoint every 5, dropout on so RNG restore matters) after its step-10
    checkpoint, restart it: the final weights equal those of an uninterrupted run."""
    ckpt_dir, out = tmp_path / "ckpt", tmp_path / "resumed.safetensors"
    args = [sys.executable, str(SCRIPT), "--ckpt-dir", str(ckpt_dir), "--out", str(out), "--dropout", "0.2"]
    slow = subprocess.Popen(args, env=_script_env(TALKALIGN_TEST_BATCH_SLEEP="0.15"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (ckpt_dir / "step-000010").is_dir():
        assert slow.poll() is None, slow.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no step-10 checkpoint after 60 s"
        time.sleep(0.02)
    slow.send_signal(signal.SIGKILL)
    slow.communicate()
    assert slow.returncode == -signal.SIGKILL
    assert not out.exists()

    done = subprocess.run(args, env=_script_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["resumed_from"] in (10, 15) and report["steps_done"] == 20 - report["resumed_from"]

    reference, _ = _train_in_process(tmp_path / "reference", dropout=0.2)
    diff = _max_diff(load_file(str(out)), {k: v.detach() for k, v in reference.state_dict().items()})
    assert diff <= 1e-6, f"resumed run differs from the uninterrupted one by {diff}"


def test_rerun_on_finished_checkpoints_is_a_no_op_that_loads_final_weights(tmp_path: Path):
    trained, first = _train_in_process(tmp_path, steps=10)
    again, second = _train_in_process(tmp_path, steps=10)
    assert (first.steps_done, first.resumed_from) == (10, None)
    assert (second.steps_done, second.resumed_from) == (0, 10)
    assert second.final_loss == first.final_loss
    assert _max_diff(trained.state_dict(), again.state_dict()) == 0.0


class WithNull(nn.Module):
    """A trainable parameter that gets its first gradient late (like a learned null-audio embedding)."""

    def __init__(self):
        super().__init__()
        self.net = tiny.build_model()
        self.null = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _null_batch(step: int, micro: int, rows: BatchSlice, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {**tiny.batch_fn(step, micro, rows, generator), "use_null": torch.tensor(float(step >= 4))}


def _null_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    loss, metrics = tiny.loss_fn(model, batch)
    if batch["use_null"] > 0:
        loss = loss + model.null.pow(2).sum()
    return loss, metrics


def test_resume_before_a_parameter_ever_had_a_gradient(tmp_path: Path):
    """The step-3 checkpoint has no AdamW state for `null`; resuming from it must not invent one."""
    cfg = tiny.make_cfg(steps=8, batch_size=4, grad_accum=1, checkpoint_every=3)
    full = WithNull()
    run_training(name="null", model=Objective(_null_loss, full), trainable=None, batch_fn=_null_batch, cfg=cfg,
                 ckpt_dir=tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full/step-000003", tmp_path / "resumed/step-000003")  # as if killed at step 4
    resumed = WithNull()
    result = run_training(name="null", model=Objective(_null_loss, resumed), trainable=None, batch_fn=_null_batch,
                          cfg=cfg, ckpt_dir=tmp_path / "resumed", progress=False)
    assert result.resumed_from == 3
    assert not torch.equal(full.null, torch.ones(3))  # it did train after step 4
    assert _max_diff(full.state_dict(), resumed.state_dict()) == 0.0


def test_grad_accumulation_matches_the_bigger_batch(tmp_path: Path):
    """Indexed data (rows.sample_ids): 8 x accum 1 and 4 x accum 2 train on the same 8 samples per step."""
    torch.manual_seed(0)
    data_x, data_y = torch.randn(64, 5), torch.randn(64, 2)

    def batch_fn(step: int, micro: int, rows: BatchSlice, generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids = torch.tensor(list(rows.sample_ids)) % len(data_x)
        return {"x": data_x[ids], "y": data_y[ids]}

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]):
        return (model(batch["x"]) - batch["y"]).pow(2).mean(), {}

    weights = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(1)
        model = nn.Linear(5, 2)
        cfg = TrainLoopConfig(steps=6, batch_size=batch_size, grad_accum=accum, checkpoint_every=100, log_every=3,
                              optim=OptimConfig(lr=0.05, grad_clip=0.5))
        run_training(name="accum", model=Objective(loss_fn, model), trainable=None, batch_fn=batch_fn, cfg=cfg,
                     ckpt_dir=tmp_path / f"{batch_size}x{accum}", progress=False)
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    moved = _max_diff(weights[0], {k: torch.zeros_like(v) for k, v in weights[0].items()})
    assert moved > 0.1  # it trained
    assert _max_diff(*weights) < 1e-6


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path, one_thread):
    """accelerate launch (2 CPU processes, gloo, global batch 8 = 4 per process) vs 1 process, 10 steps:
    max abs weight difference < 1e-5 (measured ~3e-8: only the order of the gradient sums differs)."""
    out = tmp_path / "ddp.safetensors"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch",
           "--config_file", str(REPO / "infra/accelerate/cpu_2proc.yaml"), "--main_process_port", "0",
           str(SCRIPT), "--ckpt-dir", str(tmp_path / "ddp"), "--out", str(out), "--steps", "10"]
    done = subprocess.run(cmd, env=_script_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["num_processes"] == 2 and report["steps_done"] == 10

    single, _ = _train_in_process(tmp_path / "single", steps=10)
    ddp_weights = load_file(str(out))
    assert _max_diff(ddp_weights, {k: v.detach() for k, v in single.state_dict().items()}) < 1e-5
    initial = tiny.build_model().state_dict()
    assert _max_diff(ddp_weights, initial) > 1e-2  # and it did train
    with safe_open(str(tmp_path / "ddp/step-000010/rng.safetensors"), "pt") as f:  # both ranks' RNG saved
        assert {k.split("/")[0] for k in f.keys()} == {"rank0", "rank1"}


class FrozenFirst(nn.Module):
    def __init__(self, hidden: int = 6):
        super().__init__()
        torch.manual_seed(3)
        self.encoder = nn.Linear(tiny.IN, hidden)
        self.head = nn.Linear(hidden, tiny.OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.encoder(x)))


def test_frozen_params_never_change_nor_enter_the_checkpoint(tmp_path: Path):
    model = FrozenFirst()
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    cfg = tiny.make_cfg(steps=6, batch_size=4, grad_accum=1, checkpoint_every=3)
    run_training(name="frozen", model=Objective(tiny.loss_fn, model), trainable=list(model.head.parameters()),
                 batch_fn=tiny.batch_fn, cfg=cfg, ckpt_dir=tmp_path, progress=False)
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in encoder_before.items())
    assert not model.encoder.weight.requires_grad
    assert not torch.equal(model.head.weight, head_before)
    with safe_open(str(tmp_path / "step-000006/model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["model.head.bias", "model.head.weight"]  # the Objective's names

    # The same checkpoints into a model that trains the encoder too: refused, naming the checkpoint.
    other = FrozenFirst()
    with pytest.raises(CheckpointError, match=r"step-000006: .*not in the checkpoint: model.encoder.bias, model.encoder.weight"):
        run_training(name="frozen", model=Objective(tiny.loss_fn, other), trainable=None, batch_fn=tiny.batch_fn,
                     cfg=cfg.model_copy(update={"steps": 9}), ckpt_dir=tmp_path, progress=False)


def test_logging_schedule_and_metrics(tmp_path: Path):
    logged: list[tuple[int, dict[str, float]]] = []
    model = tiny.build_model()
    cfg = TrainLoopConfig(steps=12, batch_size=4, checkpoint_every=100, log_every=5, seed=1,
                          optim=OptimConfig(lr=0.1, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1))
    result = run_training(name="log", model=Objective(tiny.loss_fn, model), trainable=None, batch_fn=tiny.batch_fn,
                          cfg=cfg, ckpt_dir=tmp_path, log_fn=lambda s, m: logged.append((s, m)), progress=False)
    assert [s for s, _ in logged] == [5, 10, 12]  # every log_every steps and the last one
    assert set(logged[0][1]) == {"loss", "pred_abs", "lr", "grad_norm", "samples_per_s", "step_s"}
    assert [m["lr"] for _, m in logged] == pytest.approx([0.1 * lr_factor(s - 1, cfg.optim, 12) for s in (5, 10, 12)])
    assert result.final_loss == logged[-1][1]["loss"] and result.history[-1]["step"] == 12
    assert result.samples_per_s > 0 and result.steps_done == 12
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["step-000012"]  # the last step is saved


def test_lr_schedule():
    warm = OptimConfig(lr=1.0, warmup_steps=4)
    assert [lr_factor(s, warm, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = OptimConfig(lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(2, cos, 12) == pytest.approx(1.0)
    assert lr_factor(11, cos, 12) == pytest.approx(0.1)
    assert lr_factor(6, cos, 12) < lr_factor(5, cos, 12)


def test_sampling_does_not_change_training(tmp_path: Path):
    """sample_fn runs in eval mode without grad, and its RNG use is undone: same weights as without it."""
    seen: list[tuple[int, bool, bool]] = []

    def sample_fn(model: nn.Module, step: int) -> None:
        seen.append((step, model.training, torch.is_grad_enabled()))
        torch.rand(100)  # consumes the RNG that dropout uses

    cfg = tiny.make_cfg(steps=6, batch_size=4, grad_accum=1, checkpoint_every=100).model_copy(
        update={"sample_every": 2})
    weights = []
    for fn in (None, sample_fn):
        model = tiny.build_model(dropout=0.3)
        run_training(name="s", model=Objective(tiny.loss_fn, model), trainable=None, batch_fn=tiny.batch_fn, cfg=cfg,
                     ckpt_dir=tmp_path / str(fn is None), sample_fn=fn, progress=False)
        weights.append(model.state_dict())
    assert seen == [(2, False, False), (4, False, False), (6, False, False)]
    assert _max_diff(*weights) == 0.0


def test_stage_name_mismatch_is_refused(tmp_path: Path):
    _train_in_process(tmp_path, steps=5)
    model = tiny.build_model()
    with pytest.raises(CheckpointError, match="checkpoint of stage 'tiny', not 'other'"):
        run_training(name="other", model=Objective(tiny.loss_fn, model), trainable=None, batch_fn=tiny.batch_fn,
                     cfg=tiny.make_cfg(10, 8, 1, 5), ckpt_dir=tmp_path, progress=False)


def test_non_finite_gradient_stops_with_the_step(tmp_path: Path):
    def bad_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
        return model(batch["x"]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="non-finite gradient norm .* at step 0"):
        run_training(name="nan", model=Objective(bad_loss, tiny.build_model()), trainable=None, batch_fn=tiny.batch_fn,
                     cfg=tiny.make_cfg(3, 4, 1, 5), ckpt_dir=tmp_path, progress=False)


def test_gradient_checkpointing_switch(tmp_path: Path):
    class WithSwitch(FrozenFirst):
        enabled = False

        def enable_gradient_checkpointing(self) -> None:
            self.enabled = True

    cfg = tiny.make_cfg(2, 4, 1, 5).model_copy(update={"gradient_checkpointing": True})
    model = WithSwitch()
    run_training(name="gc", model=Objective(tiny.loss_fn, model), trainable=None, batch_fn=tiny.batch_fn, cfg=cfg,
                 ckpt_dir=tmp_path / "a", progress=False)
    assert model.enabled
    with pytest.raises(ValueError, match=r"none of \['FrozenFirst'\] has enable_gradient_checkpointing"):
        run_training(name="gc", model=Objective(tiny.loss_fn, FrozenFirst()), trainable=None,
                     batch_fn=tiny.batch_fn, cfg=cfg, ckpt_dir=tmp_path / "b", progress=False)


def test_world_size_mismatch_is_caught(tmp_path: Path, monkeypatch):
    cfg = tiny.make_cfg(2, 4, 1, 5)
    accelerator = make_accelerator(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun, with an Accelerator that did not join the group
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 but the Accelerator runs 1 process"):
        run_training(name="w", model=Objective(tiny.loss_fn, tiny.build_model()), trainable=None,
                     batch_fn=tiny.batch_fn, cfg=cfg, ckpt_dir=tmp_path, accelerator=accelerator, progress=False)


def test_step_generator_depends_only_on_seed_step_micro():
    a = torch.rand(3, generator=step_generator(7, 4, 1))
    assert torch.equal(a, torch.rand(3, generator=step_generator(7, 4, 1)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(7, 4, 0)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(7, 5, 1)))
    assert not math.isnan(a.sum().item())
