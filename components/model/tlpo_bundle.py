"""TLPO bundles: the base model plus its LoRA experts and their (timestep, layer) fusion.

The fused weights depend on the timestep, so they cannot be merged into static weights. A TLPO bundle is a
normal bundle of the *base* weights (what `save_bundle` writes, so every part loads as usual) plus

    tlpo.json             experts, LoRA targets, rank, alpha, n_layers, fusion ("gate" | "uniform"), gate sizes
                          and activation
    experts.safetensors   every expert's LoRA state, keys "<expert>/<peft key>"
    gate.safetensors      the TimestepLayerGate's weights (fusion "gate" only)

`save_tlpo_bundle` hands these to `save_bundle` as its extra files. `load_tlpo_bundle` (which loading.load_bundle
calls whenever it sees tlpo.json) loads the base bundle and calls `attach_tlpo`: the experts are rebuilt on the
loaded model and its forward is replaced (on the instance, so it stays a PortraitModel for every caller) by one
that computes the fusion weights from the call's timestep and runs inside `gated`. Samplers step a whole batch at one t; a call
whose samples have different timesteps is refused rather than silently fused at one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes

from components.config import GateActivation
from components.model.adapters import add_lora, load_lora_state_dict, lora_detached
from components.model.bundle import BundleError, ModelBundle, load_plain_bundle, save_bundle
from components.model.gate import TimestepLayerGate, activate_experts, gated, uniform_weights

TLPO_FILE = "tlpo.json"
EXPERTS_FILE = "experts.safetensors"
GATE_FILE = "gate.safetensors"
TLPO_FORMAT = "talkalign-tlpo-v1"


@dataclass(frozen=True)
class TlpoSpec:
    experts: list[str]
    targets: list[str]  # LoRA target groups (components/model/adapters.py LORA_TARGETS)
    rank: int
    alpha: float
    n_layers: int
    fusion: Literal["gate", "uniform"]
    freq_dim: int = 32
    hidden: int = 64
    format: str = TLPO_FORMAT
    gate_activation: GateActivation = "softmax"  # also what "uniform" fusion means: the experts' average or sum

    def new_gate(self) -> TimestepLayerGate:
        return TimestepLayerGate(self.n_layers, self.experts, freq_dim=self.freq_dim, hidden=self.hidden,
                                 activation=self.gate_activation)


@dataclass
class TlpoFusion:
    """What `attach_tlpo` put on a model (model.tlpo): a plain object, so the gate is no submodule of the model
    and never enters its saved state; the gate stays on the CPU (weights are moved to the call's device)."""

    spec: TlpoSpec
    gate: TimestepLayerGate | None

    def weights(self, timestep: torch.Tensor) -> torch.Tensor:
        """[n_layers + 1, n_experts] for one shared timestep."""
        t = torch.as_tensor(timestep).detach().reshape(-1).float().cpu()
        if not bool((t == t[0]).all()):
            raise ValueError(f"a TLPO model fuses its experts at one timestep per call, got {t.tolist()}")
        if self.gate is None:
            return uniform_weights(self.spec.n_layers, self.spec.experts, self.spec.gate_activation)
        with torch.no_grad():
            return self.gate(t[0])


# ----------------------------------------------------------------------------- save


def tlpo_files(spec: TlpoSpec, experts_state: dict[str, dict[str, torch.Tensor]],
               gate: TimestepLayerGate | None) -> dict[str, bytes]:
    """The extra files of a TLPO bundle, for save_bundle(extra_files=...)."""
    if sorted(experts_state) != sorted(spec.experts):
        raise ValueError(f"expert states {sorted(experts_state)} differ from the spec's {spec.experts}")
    if (gate is None) != (spec.fusion == "uniform"):
        raise ValueError(f"fusion {spec.fusion!r} {'takes no' if gate is not None else 'needs a'} gate")
    flat = {f"{expert}/{key}": value.detach().cpu().contiguous()
            for expert, state in experts_state.items() for key, value in state.items()}
    files = {TLPO_FILE: (json.dumps(asdict(spec), indent=2) + "\n").encode(), EXPERTS_FILE: save_safetensors_bytes(flat)}
    if gate is not None:
        files[GATE_FILE] = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in gate.state_dict().items()})
    return files


def save_tlpo_bundle(directory: str | Path, bundle: ModelBundle, spec: TlpoSpec,
                     experts_state: dict[str, dict[str, torch.Tensor]], gate: TimestepLayerGate | None) -> Path:
    """Write `bundle` (its model may carry the experts: they are detached for the base weights) as a TLPO bundle."""
    files = tlpo_files(spec, experts_state, gate)
    with lora_detached(bundle.model):
        return save_bundle(directory, bundle, extra_files=files)


# ----------------------------------------------------------------------------- load


def is_tlpo_bundle(directory: str | Path) -> bool:
    return (Path(directory) / TLPO_FILE).is_file()


def read_spec(directory: Path) -> TlpoSpec:
    data = json.loads((directory / TLPO_FILE).read_text())
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != TLPO_FORMAT:
        raise ValueError(f"{directory / TLPO_FILE}: format {found!r}, expected {TLPO_FORMAT!r}")
    try:
        return TlpoSpec(**data)
    except TypeError as exc:  # unknown or missing keys
        raise ValueError(f"{directory / TLPO_FILE}: invalid TLPO description: {exc}") from exc


def attach_tlpo(model: nn.Module, directory: str | Path) -> TlpoFusion:
    """Rebuild the experts of a TLPO bundle on its loaded base model and make every forward call fused."""
    directory = Path(directory)
    spec = read_spec(directory)
    flat = load_file(str(directory / EXPERTS_FILE))
    for expert in spec.experts:
        add_lora(model, spec.rank, spec.alpha, spec.targets, adapter_name=expert)
        state = {key.split("/", 1)[1]: value for key, value in flat.items() if key.split("/", 1)[0] == expert}
        if not state:
            raise ValueError(f"{directory / EXPERTS_FILE}: no weights for expert {expert!r}")
        load_lora_state_dict(model, state, adapter_name=expert)
    activate_experts(model, spec.experts)
    gate = None
    if spec.fusion == "gate":
        gate = spec.new_gate()
        gate.load_state_dict(load_file(str(directory / GATE_FILE)))
        gate.requires_grad_(False).eval()
    fusion = TlpoFusion(spec, gate)
    install_fusion(model, fusion.weights, spec.experts)
    model.tlpo = fusion
    return fusion


def load_tlpo_bundle(path: str | Path, tracking_uri: str | None = None) -> ModelBundle:
    """A TLPO bundle from a directory or an MLflow URI: the base bundle, its experts attached and fused."""
    bundle = load_plain_bundle(path, tracking_uri=tracking_uri)
    if not is_tlpo_bundle(bundle.path):
        raise BundleError(f"{bundle.path}: not a TLPO bundle (no {TLPO_FILE})")
    try:
        attach_tlpo(bundle.model, bundle.path)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BundleError(f"{bundle.path}: cannot load the TLPO experts: {exc}") from exc
    return bundle.eval()  # the new adapter layers too


def install_fusion(model: nn.Module, weights_of: Callable[[torch.Tensor], torch.Tensor], experts: Sequence[str]) -> None:
    """Replace the instance's forward: fusion weights from the call's timestep, the class's forward inside `gated`."""
    base_forward = type(model).forward

    def forward(noisy_latents: torch.Tensor, timestep: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weights = weights_of(timestep).to(noisy_latents.device)
        with gated(model, weights, experts):
            return base_forward(model, noisy_latents, timestep, *args, **kwargs)

    model.forward = forward


def gate_table(fusion_weights: Callable[[torch.Tensor], torch.Tensor], timesteps: Sequence[float]) -> torch.Tensor:
    """Fusion weights on a timestep grid: [n_timesteps, n_layers + 1, n_experts]."""
    return torch.stack([fusion_weights(torch.tensor(float(t))) for t in timesteps])
