"""Nested state dicts (an optimizer's, a scheduler's) <-> a JSON-able skeleton plus safetensors-ready tensor leaves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["flatten_state", "unflatten_state"]


def flatten_state(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state_dict into a JSON-able skeleton and its tensor leaves.

    Tensors become {"__tensor__": key} in the skeleton; tuples {"__tuple__": [...]}; dicts with non-string
    keys {"__int_keys__": {...}} (torch's own optimizer state is keyed by int parameter index).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(node, Mapping):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in node.items()}
            if all(isinstance(k, int) and not isinstance(k, bool) for k in node):
                return {"__int_keys__": {str(k): walk(v, f"{path}/{k}" if path else str(k)) for k, v in node.items()}}
            raise TypeError(f"state at {path or '/'}: dict keys must be all str or all int, got {list(node)[:5]}")
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"state at {path or '/'}: cannot store a {type(node).__name__} in safetensors/JSON")

    return walk(tree, ""), tensors


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__tuple__"}:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if set(skeleton) == {"__int_keys__"}:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton["__int_keys__"].items()}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    return skeleton
