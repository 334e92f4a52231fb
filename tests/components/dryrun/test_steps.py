"""The dry run on the meta device: the 1.3B profile's steps at full size in seconds, and the guard's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from components.config import load_params
from components.dryrun.guard import MetaGuard, PlacementError
from components.dryrun.report import table
from components.dryrun.steps import run_stage

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wan13b():
    return load_params(REPO / "params.wan13b.yaml")


def test_phase1_and_sample_of_the_13b_profile_run_on_meta(wan13b):
    phase1 = run_stage(wan13b, "phase1", gpus=8)
    assert 1.8e9 < phase1.total_params < 1.9e9 and phase1.trainable_params == 284_788_224  # 30 x 4 x 1536^2 + ...
    assert phase1.tokens_per_clip == 21 * 30 * 30 and phase1.clips == 1  # 81 frames at 480 px, patch 1x2x2
    assert phase1.flops > 3e14  # forward + recompute + backward of 1 clip
    assert 0 < phase1.activation_bytes < phase1.activation_bytes_no_ckpt / 5  # checkpointing keeps boundaries only
    sample = run_stage(wan13b, "sample", gpus=8)
    assert not sample.trains and sample.activation_bytes == 0 and sample.flops > 1e14
    text = table(wan13b, [phase1, sample])
    assert "| phase1 |" in text and "| sample |" in text and "10,000" in text


def test_guard_refuses_mixed_dtypes_outside_autocast_and_casts_inside():
    x = torch.empty(2, 8, device="meta")
    w = torch.empty(4, 8, device="meta", dtype=torch.bfloat16)
    with pytest.raises(PlacementError, match="outside autocast"):
        with MetaGuard(autocast=False):
            F.linear(x, w)
    with MetaGuard(autocast=True):
        assert F.linear(x, w).dtype == torch.bfloat16
        assert F.layer_norm(x.bfloat16(), (8,)).dtype == torch.float32
        assert torch.isnan(torch.tensor(x.sum().item()))  # no value on meta: NaN, and the step goes on


def test_guard_refuses_a_cpu_tensor_meeting_the_meta_model():
    with pytest.raises(PlacementError, match="cpu"):
        with MetaGuard(autocast=True):
            F.linear(torch.zeros(2, 8), torch.empty(4, 8, device="meta"))
