"""Pairs as DPO training data: reward-gap weights and the noise levels a batch draws."""

import json

import pytest
import torch

from components.config import DpoConfig
from components.preference.pair_data import PairDataError, global_pair_batch, reward_gap_weights


def _pairs(path, gaps):
    path.write_text("".join(json.dumps({"window_id": "w", "winner": f"a{i}", "loser": f"b{i}", "reward_winner": 1.0 + g,
                                        "reward_loser": 1.0}) + "\n" for i, g in enumerate(gaps)))
    return path


def test_reward_gap_weights_are_proportional_with_mean_one(tmp_path):
    weights = reward_gap_weights(_pairs(tmp_path / "p.jsonl", [0.5, 1.0, 1.5]))
    torch.testing.assert_close(weights, torch.tensor([0.5, 1.0, 1.5]))
    with pytest.raises(PairDataError, match="winner's reward above its loser's"):
        reward_gap_weights(_pairs(tmp_path / "tie.jsonl", [1.0, 0.0]))


def test_a_batch_carries_its_pairs_weights_and_the_configured_noise_levels():
    data = {"winner": torch.zeros(4, 2, 1, 2, 2), "loser": torch.ones(4, 2, 1, 2, 2),
            "pair_weight": torch.tensor([0.5, 1.0, 1.5, 1.0])}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    batch = global_pair_batch(data, DpoConfig(), 6, g())
    index = torch.randint(4, (6,), generator=g())
    torch.testing.assert_close(batch["pair_weight"], data["pair_weight"][index])  # follows the drawn pairs
    logit = global_pair_batch(data, DpoConfig(timestep_sampling="logit_normal"), 6, g())
    assert not torch.allclose(logit["sigma"], batch["sigma"]) and torch.equal(logit["noise"], batch["noise"])
