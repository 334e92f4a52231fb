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


def test_logit_normal_timesteps_avoid_the_ends():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    logit = sample_timesteps(20_000, shift=1.0, generator=g(), sampling="logit_normal")
    torch.testing.assert_close(logit, torch.sigmoid(torch.randn(20_000, generator=g())))
    uniform = sample_timesteps(20_000, shift=1.0, generator=g())
    ends = lambda s: float(((s < 0.1) | (s > 0.9)).float().mean())  # noqa: E731
    assert ends(logit) < 0.5 * ends(uniform)  # uniform puts 20 % there, the logit-normal about 6 %
    shifted = sample_timesteps(8, 3.0, g(), sampling="logit_normal")
    torch.testing.assert_close(shifted, shift_sigma(torch.sigmoid(torch.randn(8, generator=g())), 3.0))
    with pytest.raises(ValueError, match="uniform or logit_normal"):
        sample_timesteps(4, sampling="beta")


def test_loss_reductions():
    out, target = torch.zeros(SHAPE), torch.ones(SHAPE)
    target[1] *= 2
    per_sample = flow_matching_loss(out, target, reduction="per_sample")
    assert per_sample.tolist() == [1.0, 4.0]
    assert flow_matching_loss(out, target).item() == pytest.approx(2.5)
    torch.testing.assert_close(flow_matching_loss(out, target), torch.nn.functional.mse_loss(out, target))
    with pytest.raises(ValueError, match="unknown reduction"):
        flow_matching_loss(out, target, reduction="sum")
