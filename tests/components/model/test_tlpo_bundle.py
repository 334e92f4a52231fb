"""TLPO bundles: the base weights as a normal bundle plus the experts and the gate; loading rebuilds the
experts and fuses them at each call's timestep, exactly as the in-memory gated model does. The plain loader
sees the base model; loading.load_bundle picks the TLPO loader by itself."""

from __future__ import annotations

import json

import pytest
import torch

from components.model.adapters import add_lora, lora_detached, lora_state_dict
from components.model.bundle import BundleError, load_plain_bundle, save_bundle
from components.model.flow import add_noise, sigma_to_timestep
from components.model.gate import TimestepLayerGate, activate_experts, gated, uniform_weights
from components.model.loading import load_bundle
from components.model.tlpo_bundle import TLPO_FILE, TlpoSpec, load_tlpo_bundle, save_tlpo_bundle

EXPERTS = ["lip_sync", "motion", "quality"]
TARGETS = ["attention", "modulation"]


@pytest.fixture(scope="module")
def tlpo_setup(make_tiny_bundle):
    torch.manual_seed(0)
    bundle = make_tiny_bundle(features="mel")
    model = bundle.model
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for expert in EXPERTS:
        add_lora(model, rank=2, alpha=2, groups=TARGETS, adapter_name=expert)
    with torch.no_grad():  # trained-looking experts, each different
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    activate_experts(model, EXPERTS)
    n_layers = model.cfg.backbone.num_layers
    gate = TimestepLayerGate(n_layers, EXPERTS)
    with torch.no_grad():
        gate.out.weight.normal_(0, 2.0)
    states = {e: lora_state_dict(model, e) for e in EXPERTS}
    return bundle, gate, states, base


def _velocity(model, bundle, sigma: float) -> torch.Tensor:
    """The model's velocity on one noisy clip at noise level sigma (mel audio, as the tiny bundle is)."""
    g = torch.Generator().manual_seed(3)
    z = bundle.vae.config.z_dim
    x0 = torch.randn(1, z, 3, 4, 4, generator=g)
    audio = torch.randn(1, 9, 4, 40, generator=g)
    x_t, _ = add_noise(x0, torch.randn(x0.shape, generator=g), torch.tensor([sigma]))
    text = bundle.text_encoder([bundle.meta.default_prompt])
    return model(x_t, sigma_to_timestep(torch.tensor([sigma])), x0, audio, None, text)


def _errors(model, bundle, sigma, weights=None):
    with torch.no_grad():
        if weights is None:
            return _velocity(model, bundle, sigma)
        with gated(model, weights, EXPERTS):
            return _velocity(model, bundle, sigma)


def _spec(model, fusion: str, gate_activation: str = "softmax") -> TlpoSpec:
    return TlpoSpec(experts=EXPERTS, targets=TARGETS, rank=2, alpha=2.0, n_layers=model.cfg.backbone.num_layers,
                    fusion=fusion, gate_activation=gate_activation)


def test_gated_export_loads_and_fuses_at_each_timestep(tlpo_setup, tmp_path):
    bundle, gate, states, base = tlpo_setup
    model = bundle.model
    save_tlpo_bundle(tmp_path / "gated", bundle, _spec(model, "gate"), states, gate)
    written = {p.name for p in (tmp_path / "gated").iterdir()}
    assert {"tlpo.json", "experts.safetensors", "gate.safetensors", "bundle.json"} <= written
    assert json.loads((tmp_path / "gated" / "tlpo.json").read_text())["experts"] == EXPERTS
    loaded = load_bundle(tmp_path / "gated")
    assert isinstance(loaded.model, type(model)) and loaded.model.tlpo.spec.fusion == "gate"
    with lora_detached(loaded.model):  # the saved base weights are the base model's
        for key, value in loaded.model.state_dict().items():
            torch.testing.assert_close(value, base[key])
    errors = []
    for sigma in (0.9, 0.1):
        expected = _errors(model, bundle, sigma, gate(torch.tensor(sigma * 1000)).detach())
        got = _errors(loaded.model, loaded, sigma)
        torch.testing.assert_close(got, expected)
        errors.append(got)
    # the fusion follows the call's timestep: t=900's weights at sigma 0.1 are not what the loaded model used
    assert not torch.allclose(_errors(model, bundle, 0.1, gate(torch.tensor(900.0)).detach()), errors[1])
    # the gate matters: the loaded model differs from the uniform fusion at the same timestep
    assert not torch.allclose(_errors(model, bundle, 0.1, uniform_weights(model.cfg.backbone.num_layers, EXPERTS)), errors[1])


def test_uniform_export_equals_uniform_weights(tlpo_setup, tmp_path):
    bundle, _, states, _ = tlpo_setup
    model = bundle.model
    save_tlpo_bundle(tmp_path / "uniform", bundle, _spec(model, "uniform"), states, None)
    assert not (tmp_path / "uniform" / "gate.safetensors").exists()
    loaded = load_bundle(tmp_path / "uniform")
    for sigma in (0.7, 0.2):
        expected = _errors(model, bundle, sigma, uniform_weights(model.cfg.backbone.num_layers, EXPERTS))
        torch.testing.assert_close(_errors(loaded.model, loaded, sigma), expected)


def test_sigmoid_uniform_export_is_the_sum_of_the_experts(tlpo_setup, tmp_path):
    bundle, _, states, _ = tlpo_setup
    model = bundle.model
    save_tlpo_bundle(tmp_path / "sum", bundle, _spec(model, "uniform", "sigmoid"), states, None)
    loaded = load_bundle(tmp_path / "sum")
    ones = torch.ones(model.cfg.backbone.num_layers + 1, len(EXPERTS))
    torch.testing.assert_close(loaded.model.tlpo.weights(torch.tensor(300.0)), ones)
    expected = _errors(model, bundle, 0.4, ones)
    torch.testing.assert_close(_errors(loaded.model, loaded, 0.4), expected)
    assert not torch.allclose(expected, _errors(model, bundle, 0.4, uniform_weights(model.cfg.backbone.num_layers, EXPERTS)))


def test_a_call_with_mixed_timesteps_is_refused(tlpo_setup, tmp_path):
    bundle, gate, states, _ = tlpo_setup
    save_tlpo_bundle(tmp_path / "gated", bundle, _spec(bundle.model, "gate"), states, gate)
    loaded = load_bundle(tmp_path / "gated")
    with pytest.raises(ValueError, match="one timestep per call"):
        loaded.model.tlpo.weights(torch.tensor([100.0, 200.0]))


def test_the_plain_loader_sees_the_base_model_and_load_bundle_picks_tlpo(tlpo_setup, tmp_path):
    bundle, gate, states, base = tlpo_setup
    save_tlpo_bundle(tmp_path / "gated", bundle, _spec(bundle.model, "gate"), states, gate)
    plain = load_plain_bundle(tmp_path / "gated")
    assert not hasattr(plain.model, "tlpo") and plain.model.state_dict().keys() == base.keys()
    assert all(torch.equal(v, base[k]) for k, v in plain.model.state_dict().items())
    direct = load_tlpo_bundle(tmp_path / "gated")
    torch.testing.assert_close(_errors(direct.model, direct, 0.3), _errors(load_bundle(tmp_path / "gated").model, direct, 0.3))
    assert not direct.model.training and not any(m.training for m in direct.model.modules())
    with lora_detached(bundle.model):
        plain_path = save_bundle(tmp_path / "plain", bundle)
    with pytest.raises(BundleError, match="not a TLPO bundle"):
        load_tlpo_bundle(plain_path)


def test_a_broken_tlpo_description_names_the_file(tlpo_setup, tmp_path):
    bundle, gate, states, _ = tlpo_setup
    path = save_tlpo_bundle(tmp_path / "gated", bundle, _spec(bundle.model, "gate"), states, gate)
    spec = json.loads((path / TLPO_FILE).read_text())
    (path / TLPO_FILE).write_text(json.dumps({**spec, "format": "something-else"}))
    with pytest.raises(BundleError, match=r"tlpo\.json: format 'something-else'"):
        load_bundle(path)
    (path / TLPO_FILE).write_text(json.dumps({**spec, "experts": ["lip_sync", "style"]}))
    with pytest.raises(BundleError, match="no weights for expert 'style'"):
        load_bundle(path)
