"""RNG states: captured, carried as bytes without pickle, restored so the same numbers come out again."""

from __future__ import annotations

import random

import numpy as np
import torch

from components.train.rng_state import RngState, capture_rng_state, restore_rng_state


def _draw() -> tuple[float, float, float]:
    return torch.rand(()).item(), float(np.random.rand()), random.random()


def test_restore_repeats_every_generator_and_bytes_round_trip():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    state = capture_rng_state()
    first = _draw()
    restore_rng_state(RngState.from_bytes(state.to_bytes()))
    assert _draw() == first
    restore_rng_state(state)
    assert _draw() == first


def test_tensors_carry_a_prefix_for_each_rank():
    state = capture_rng_state()
    tensors = state.to_tensors(prefix="rank3/")
    assert set(tensors) == {"rank3/torch_cpu"} | {f"rank3/cuda{i}" for i in range(len(state.torch_cuda))}
    back = RngState.from_tensors(tensors, state.numpy, state.python, prefix="rank3/")
    assert torch.equal(back.torch_cpu, state.torch_cpu) and back.numpy == state.numpy
