"""The GPU check's code path on the CPU (the toy profile), and its answer where no GPU is."""

from __future__ import annotations

import math

import torch

from benchmarks import gpu_check


def test_every_stage_runs_and_reports_on_the_toy_profile(monkeypatch):
    monkeypatch.chdir(gpu_check.__file__.rsplit("/benchmarks/", 1)[0])  # params.yaml lives at the repo root
    torch.manual_seed(0)
    small = {"data.frames": 5, "ingest.resolution": 32, "model.backbone.num_layers": 1}
    rows = gpu_check.run("params.yaml", torch.device("cpu"), sample_steps=2, overrides=small)
    assert [r["stage"].split()[0] for r in rows] == ["phase1", "sample", "dpo"]
    for row in rows:
        assert row["s_per_step"] > 0 and row["tflop_per_step"] > 0
        assert math.isnan(row["mfu"])  # no known peak on a CPU: MFU is not made up


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
