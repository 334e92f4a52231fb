"""Identity splits: deterministic, disjoint, sized by the fractions, every used split non-empty."""

from __future__ import annotations

import pytest

from components.config import ShardConfig
from components.data.shards.identity_split import split_by_identity


def test_split_by_identity_is_deterministic_disjoint_and_sized():
    people = [f"p{i}" for i in range(12)]
    splits = {"train": 0.8, "val": 0.1, "test": 0.1}
    first = split_by_identity(people, splits, seed=0)
    assert first == split_by_identity(list(reversed(people)) + people[:3], splits, seed=0)  # order, duplicates
    assert set(first) == set(people)  # every identity in exactly one split (a dict can't hold two)
    sizes = {s: sum(v == s for v in first.values()) for s in splits}
    assert sizes == {"train": 10, "val": 1, "test": 1}
    assert split_by_identity(people, splits, seed=1) != first


@pytest.mark.parametrize("n", [3, 4, 5, 7, 30])
def test_every_used_split_gets_an_identity_when_possible(n):
    splits = {"train": 0.8, "val": 0.1, "test": 0.1, "unused": 0.0}
    assignment = split_by_identity([f"p{i}" for i in range(n)], splits, seed=3)
    assert {"train", "val", "test"} <= set(assignment.values())
    assert "unused" not in assignment.values()


def test_split_config_rejects_names_that_break_shard_names():
    with pytest.raises(ValueError, match="split name 'tr.ain'"):
        ShardConfig(splits={"tr.ain": 0.9, "val": 0.1})
    with pytest.raises(ValueError, match="must sum to 1"):
        ShardConfig(splits={"train": 0.9, "val": 0.2})
