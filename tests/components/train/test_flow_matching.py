"""Training's side of flow matching: shifted noise levels (the model's shift, model/flow.py) and the velocity loss."""

import pytest
import torch

from components.model.flow import shift_sigma
from components.train.flow_matching import flow_matching_loss, sample_timesteps

SHAPE = (2, 4, 3, 2, 2)


def test_shifted_timesteps():
    a = sample_timesteps(10_000, shift=1.0, generator=torch.Generator().manual_seed(0))
    assert 0 < a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.02
    b = sample_timesteps(10_000, shift=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, 3 * a / (1 + 2 * a))  # same uniform draw, shifted
    torch.testing.assert_close(b, shift_sigma(a, 3.0))  # ... by the sampler's shift
    assert b.mean() > a.mean()  # shift > 1 favours high noise
    with pytest.raises(ValueError, match="shift must be positive"):
        sample_timesteps(4, shift=0.0)


def test_loss_reductions():
    out, target = torch.zeros(SHAPE), torch.ones(SHAPE)
    target[1] *= 2
    per_sample = flow_matching_loss(out, target, reduction="per_sample")
    assert per_sample.tolist() == [1.0, 4.0]
    assert flow_matching_loss(out, target).item() == pytest.approx(2.5)
    torch.testing.assert_close(flow_matching_loss(out, target), torch.nn.functional.mse_loss(out, target))
    with pytest.raises(ValueError, match="unknown reduction"):
        flow_matching_loss(out, target, reduction="sum")
