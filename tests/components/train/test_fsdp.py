"""FSDP2 training of the real tiny portrait model on 2 gloo processes (`accelerate launch`, _fsdp_script.py):
the same weights as 1 process, gradient checkpointing through the block's module call, sharded checkpoints that
resume after a kill and reshard into 1 process, export gathered for rank 0, sampling refused."""

from __future__ import annotations

import importlib.util
import json
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

from components.train.fsdp import block_units, copy_exported, gather_named

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_fsdp_script.py"
REPO = HERE.parents[2]
STEPS = 4  # checkpoint every 2: step-000002 and step-000004


def _load_script():
    spec = importlib.util.spec_from_file_location("talkalign_test_fsdp_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "true", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _launch(out: Path, stages: str) -> list[str]:
    return [str(Path(sys.executable).parent / "accelerate"), "launch",
            "--config_file", str(REPO / "infra/accelerate/cpu_2proc.yaml"), "--main_process_port", "0",
            str(SCRIPT), "--out", str(out), "--stages", stages, "--steps", str(STEPS), "--checkpoint-every", "2"]


def _report(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, dict]:
    """One 2-process FSDP launch: phase 1, DPO, and the refused sampling."""
    out = tmp_path_factory.mktemp("fsdp2")
    done = subprocess.run(_launch(out, "phase1,dpo,refuse"), env=_env(), capture_output=True, text=True,
                          timeout=300, cwd=out)
    return out, _report(done)


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> tuple[Path, dict]:
    """The same stages in this process (1 process: parallelism=fsdp has no effect), 1 thread like the launch."""
    out = tmp_path_factory.mktemp("single")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = {stage: script.train_stage(stage, out, STEPS, 2) for stage in ("phase1", "dpo")}
    finally:
        torch.set_num_threads(before)
    return out, report


@pytest.mark.slow
def test_two_fsdp_processes_match_one_process(two, one):
    """Same global batch (4 rows, 2 per process; phase 1 with grad accumulation 2): the exported trainable
    weights agree within 1e-4 (measured ~1e-7 for phase 1, ~3e-6 for DPO's LoRA)."""
    (two_dir, two_report), (one_dir, one_report) = two, one
    assert two_report["num_processes"] == 2
    for stage, initial in (("phase1", dict(script.tiny_portrait().named_modulation_parameters())), ("dpo", None)):
        assert two_report[stage]["sharded"] and not one_report[stage]["sharded"]
        assert two_report[stage]["units"] == 2  # one FSDP unit per transformer block (+ the root)
        fsdp_weights, single = load_file(str(two_dir / f"{stage}.safetensors")), load_file(str(one_dir / f"{stage}.safetensors"))
        assert _max_diff(fsdp_weights, single) < 1e-4
        fsdp_full = load_file(str(two_dir / f"{stage}_full.safetensors"))  # gather_full_state: by module name
        assert _max_diff(fsdp_full, load_file(str(one_dir / f"{stage}_full.safetensors"))) < 1e-4
        assert len(fsdp_full) == len(fsdp_weights) and all(k.startswith("model.") for k in fsdp_full)
        if initial is not None:
            assert _max_diff(fsdp_weights, {k: v.detach() for k, v in initial.items()}) > 1e-3  # it trained
        else:
            assert len(fsdp_weights) == 50 and all(".lora_" in k for k in fsdp_weights)
            assert all(torch.equal(fsdp_full[f"model.{k}"], v) for k, v in fsdp_weights.items())
            assert max(v.abs().max().item() for k, v in fsdp_weights.items() if "lora_B" in k) > 1e-3  # B left 0


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_through_the_block_module(two, one):
    """With checkpointing every block module is called again in backward (where FSDP gathers its weights):
    phase 1: 4 steps x 2 micro-batches x (forward + recompute) = 16; DPO: 4 x (policy + recompute + reference)."""
    for report in (two[1], one[1]):
        assert report["phase1"]["checkpointing"] and report["dpo"]["checkpointing"]
        assert report["phase1"]["block_calls"] == 16
        assert report["dpo"]["block_calls"] == 12


@pytest.mark.slow
def test_sharded_checkpoints_are_safetensors_and_json_only(two):
    out, _ = two
    root = out / "ckpt_phase1"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000004"]
    assert (root / "latest").read_text().strip() == "step-000004"
    step = root / "step-000004"
    state = json.loads((step / "state.json").read_text())
    assert (state["layout"], state["num_processes"], state["step"]) == ("sharded", 2, 4)
    shards = sorted(p.name for p in (step / "sharded").iterdir())
    assert shards == sorted(state["shards"]) and len(shards) == 2  # one file per process, nothing else (no .metadata)
    files = [p for p in step.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    keys: set[str] = set()
    for shard in shards:
        with safe_open(str(step / "sharded" / shard), "pt") as f:
            keys |= set(f.keys())
    assert {k.split("/")[0] for k in keys} == {"model", "optim"}
    assert {f"model/{k}" for k in state["model_entries"]} <= keys


@pytest.mark.slow
def test_sharded_checkpoint_loads_into_one_process(two, tmp_path):
    """2 processes wrote the shards; 1 process resumes them (resharding): a finished run loads its final weights."""
    out, _ = two
    shutil.copytree(out / "ckpt_phase1", tmp_path / "ckpt_phase1")
    torch.set_num_threads(1)
    report = script.train_stage("phase1", tmp_path, STEPS, 2)
    assert (report["steps_done"], report["resumed_from"]) == (0, STEPS)
    assert _max_diff(load_file(str(tmp_path / "phase1.safetensors")), load_file(str(out / "phase1.safetensors"))) == 0.0


@pytest.mark.slow
def test_killed_fsdp_run_resumes_from_its_shards(two, tmp_path):
    """SIGKILL both processes (and the launcher) after the step-2 checkpoint, relaunch: it resumes from the
    shards and ends with the weights of the uninterrupted 2-process run."""
    out = tmp_path / "run"
    out.mkdir()
    slow = subprocess.Popen(_launch(out, "phase1"), env=_env(TALKALIGN_TEST_BATCH_SLEEP="0.4"), cwd=out,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not (out / "ckpt_phase1/step-000002").is_dir() or len(list((out / "pids").glob("rank*"))) < 2:
            assert slow.poll() is None, slow.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no step-2 checkpoint after 120 s"
            time.sleep(0.05)
    finally:
        for pid_file in sorted((out / "pids").glob("rank*")):  # the workers run in sessions of their own
            _kill(int(pid_file.read_text()))
        os.killpg(slow.pid, signal.SIGKILL)  # the launcher
        slow.communicate()
    assert not (out / "ckpt_phase1/step-000004").exists() and not (out / "phase1.safetensors").exists()

    report = _report(subprocess.run(_launch(out, "phase1"), env=_env(), capture_output=True, text=True,
                                    timeout=300, cwd=out))["phase1"]
    assert (report["resumed_from"], report["steps_done"]) == (2, 2)
    assert report["block_calls"] == 8  # only the 2 remaining steps ran
    uninterrupted = load_file(str(two[0] / "phase1.safetensors"))
    assert _max_diff(load_file(str(out / "phase1.safetensors")), uninterrupted) <= 1e-6


@pytest.mark.slow
def test_sampling_is_refused_under_fsdp(two):
    assert "sample_every=1 with FSDP" in two[1]["refused"] and "set sample_every: 0" in two[1]["refused"]


def test_block_units_are_the_transformer_blocks():
    model = script.tiny_portrait()
    assert block_units(model) == list(model.transformer.blocks)  # ModulatedWanBlock, the diffusers block inside
    assert block_units(nn.Sequential(nn.Linear(2, 2), nn.Tanh())) == []  # root unit only


def test_gather_named_refuses_parameters_the_model_no_longer_has():
    model = script.tiny_portrait()
    stale = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="not .or no longer. parameters of PortraitModel"):
        gather_named(model, [("x", stale)])
    got = gather_named(model, model.named_modulation_parameters())  # one process: plain copies
    assert got.keys() == model.modulation_state_dict().keys()


def test_copy_exported_loads_gathered_weights_into_a_plain_model_and_names_mismatches():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    export = gather_named(source, source.named_parameters())  # one process: a plain CPU copy
    copy_exported(target, target.named_parameters(), export)
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"missing \['bias'\]"):
        copy_exported(target, target.named_parameters(), {"weight": export["weight"]})
    with pytest.raises(ValueError, match=r"weight: exported shape \(2, 4\), model has \(2, 3\)"):
        copy_exported(target, target.named_parameters(), {**export, "weight": torch.zeros(2, 4)})
