"""Load any talkalign bundle: a plain one (bundle.py) or a TLPO one, whose experts are fused per timestep
(tlpo_bundle.py). It sits above both, so neither imports the other back: tlpo_bundle builds on bundle, and
bundle knows nothing of TLPO."""

from __future__ import annotations

from pathlib import Path

import torch

from components.model.bundle import ModelBundle, load_plain_bundle, resolve_model_uri
from components.model.tlpo_bundle import is_tlpo_bundle, load_tlpo_bundle


def load_bundle(path: str | Path, tracking_uri: str | None = None, device: torch.device | str | None = None) -> ModelBundle:
    """Load a bundle from a directory or an MLflow URI; BundleError says which part is missing or wrong.
    `device`: where its parts go (the no-grad stages pass model.device.stage_device(): the GPU when there is one)."""
    directory = resolve_model_uri(path, tracking_uri=tracking_uri)
    bundle = load_tlpo_bundle(directory) if is_tlpo_bundle(directory) else load_plain_bundle(directory)
    return bundle if device is None else bundle.to(device)
