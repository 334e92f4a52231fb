"""The rectified-flow schedule and the Euler sampler: x_t and the velocity target as diffusers defines them, the
shift, and a sampler that lands on the target of a straight flow and applies guidance."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from components.config import PortraitModelConfig
from components.model.flow import add_noise, sample, shift_sigma, sigma_to_timestep
from components.model.portrait import PortraitModel

SHAPE = (2, 4, 3, 2, 2)


def test_noise_and_target_identities():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    sigma = torch.tensor([0.0, 1.0])
    x_t, target = add_noise(x0, noise, sigma)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], noise[1])  # the two ends of the path
    assert torch.equal(target, noise - x0)

    sigma = torch.tensor([0.3, 0.8])
    x_t, target = add_noise(x0, noise, sigma)
    s = sigma.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x_t - s * target, x0)  # x0 = x_t - sigma v
    torch.testing.assert_close(x_t + (1 - s) * target, noise)  # noise = x_t + (1 - sigma) v
    # Same convention as diffusers' scheduler.scale_noise
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    expected = sched.scale_noise(x0, t.view(1), noise)
    torch.testing.assert_close(add_noise(x0, noise, (t / 1000).expand(2))[0], expected)
    with pytest.raises(ValueError, match="differ in shape"):
        add_noise(x0, noise[:1], sigma)


def test_timestep_input_and_the_schedulers_shift():
    assert torch.equal(sigma_to_timestep(torch.tensor([0.25])), torch.tensor([250.0]))
    # the scheduler's training sigmas use the same shift
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    torch.testing.assert_close(sched.sigmas, shift_sigma(torch.arange(1000, 0, -1) / 1000, 3.0))


def oracle(point: torch.Tensor):
    """The exact velocity field of a flow onto one point: v = (x_t - x0) / sigma."""
    return lambda x, t, _dropped: (x - point) / (t.view(-1, 1, 1, 1, 1) / 1000)


def test_euler_sampler_lands_on_the_target_and_applies_guidance():
    cond, uncond = torch.full(SHAPE, 0.5), torch.full(SHAPE, -1.0)
    g = torch.Generator().manual_seed(0)
    out = sample(oracle(cond), SHAPE, steps=4, shift=3.0, generator=g)
    torch.testing.assert_close(out, cond, atol=1e-5, rtol=0)  # straight paths: Euler is exact

    def model_fn(x, t, dropped):
        return oracle(uncond if dropped else cond)(x, t, dropped)

    # v_uncond + g (v_cond - v_uncond) is the field onto uncond + g (cond - uncond)
    guided = sample(model_fn, SHAPE, steps=4, shift=3.0, guidance=2.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(guided, uncond + 2.0 * (cond - uncond), atol=1e-5, rtol=0)


def test_sampler_is_deterministic_for_a_seed_with_a_real_model():
    model = PortraitModel.from_config(PortraitModelConfig.tiny()).eval()
    with torch.no_grad():  # non-zero motion output so guidance matters
        for block in model.modulated_blocks():
            torch.nn.init.normal_(block.motion_attn["joint"].attn.to_out[0].weight, std=0.5)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 16, 3, 4, 4, generator=g)  # I2V condition latents
    audio = torch.randn(1, 9, 2, 32, generator=g)  # 9 frames -> 3 latent frames
    text = torch.randn(1, 8, 32, generator=g)

    def model_fn(x, t, dropped):
        return model(x, t, cond, audio, None, text, drop_audio=torch.tensor([dropped]))

    shape = (1, 16, 3, 4, 4)
    calls = []
    counted = lambda x, t, d: calls.append(d) or model_fn(x, t, d)  # noqa: E731
    a = sample(counted, shape, steps=3, shift=2.0, guidance=2.5, generator=torch.Generator().manual_seed(7))
    assert calls == [False, True] * 3 and torch.isfinite(a).all()
    b = sample(model_fn, shape, steps=3, shift=2.0, guidance=2.5, generator=torch.Generator().manual_seed(7))
    c = sample(model_fn, shape, steps=3, shift=2.0, guidance=2.5, generator=torch.Generator().manual_seed(8))
    d = sample(model_fn, shape, steps=3, shift=2.0, guidance=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)
