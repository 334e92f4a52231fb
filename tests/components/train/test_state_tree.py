"""Nested state <-> JSON skeleton + tensors: int keys, tuples and None survive; objects are refused by path."""

from __future__ import annotations

import json

import pytest
import torch

from components.train.state_tree import flatten_state, unflatten_state


def test_flatten_round_trips_int_keys_tuples_and_rejects_objects():
    tree = {"state": {0: {"step": 3, "m": torch.ones(2)}}, "groups": [{"betas": (0.9, 0.99), "lr": None}]}
    skeleton, tensors = flatten_state(tree)
    json.dumps(skeleton)  # JSON-able
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["groups"] == [{"betas": (0.9, 0.99), "lr": None}]
    assert back["state"][0]["step"] == 3 and torch.equal(back["state"][0]["m"], torch.ones(2))
    with pytest.raises(TypeError, match="groups/0/fn: cannot store a function"):
        flatten_state({"groups": [{"fn": lambda: 0}]})
