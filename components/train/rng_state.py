"""One process's random generators (torch CPU + CUDA, numpy, python `random`): capture, restore, and carry them as
safetensors + JSON (never pickle), between processes or into a checkpoint."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["RngState", "capture_rng_state", "restore_rng_state"]

log = logging.getLogger(__name__)


@dataclass
class RngState:
    """One process's random generators. Tensors go to safetensors, numpy/python states to JSON."""

    torch_cpu: torch.Tensor  # uint8, torch.get_rng_state()
    torch_cuda: list[torch.Tensor] = field(default_factory=list)  # uint8 per visible device
    numpy: dict[str, Any] = field(default_factory=dict)
    python: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """A self-contained safetensors blob (JSON states in its metadata), to send between processes."""
        from safetensors.torch import save

        meta = {"numpy": json.dumps(self.numpy), "python": json.dumps(self.python)}
        return save(self.to_tensors(), metadata=meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "RngState":
        from safetensors.torch import load

        header_len = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})
        return cls.from_tensors(load(blob), json.loads(meta["numpy"]), json.loads(meta["python"]))

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {f"{prefix}torch_cpu": self.torch_cpu.contiguous()}
        out.update({f"{prefix}cuda{i}": s.cpu().contiguous() for i, s in enumerate(self.torch_cuda)})
        return out

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], numpy_state: dict, python_state: dict, prefix: str = ""
    ) -> "RngState":
        n_cuda = sum(1 for k in tensors if k.startswith(f"{prefix}cuda"))
        return cls(
            torch_cpu=tensors[f"{prefix}torch_cpu"],
            torch_cuda=[tensors[f"{prefix}cuda{i}"] for i in range(n_cuda)],
            numpy=numpy_state,
            python=python_state,
        )


def capture_rng_state() -> RngState:
    """This process's torch (CPU and initialised CUDA), numpy and python RNG states."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return RngState(
        torch_cpu=torch.get_rng_state(),
        torch_cuda=list(cuda),
        numpy={"kind": kind, "key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": cached},
        python={"version": version, "internal": list(internal), "gauss_next": gauss_next},
    )


def restore_rng_state(state: RngState) -> None:
    torch.set_rng_state(state.torch_cpu)
    if state.torch_cuda and torch.cuda.is_available():
        if len(state.torch_cuda) != torch.cuda.device_count():
            log.warning("checkpoint has %d CUDA RNG states, %d devices visible: CUDA RNG not restored",
                        len(state.torch_cuda), torch.cuda.device_count())
        else:
            torch.cuda.set_rng_state_all(state.torch_cuda)
    n = state.numpy
    np.random.set_state((n["kind"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state.python
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
