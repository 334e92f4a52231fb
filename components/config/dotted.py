"""Dotted keys (`a.b.c`) into nested dicts of params: the one implementation that params overrides, MLflow's param
logging, DVC's `${a.b}` interpolation and the ablation table read and write through."""

from __future__ import annotations

from typing import Any

__all__ = ["flatten", "get_dotted", "has_dotted", "set_dotted"]

_MISSING = object()


def get_dotted(tree: Any, dotted: str, default: Any = _MISSING) -> Any:
    """tree[a][b][c] for "a.b.c" (a digit part indexes a list); `default` when a part is missing, else KeyError."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif default is _MISSING:
            raise KeyError(dotted)
        else:
            return default
    return node


def has_dotted(tree: Any, dotted: str) -> bool:
    """Whether every part of "a.b.c" is a key of a mapping (lists are values here, as params files keep them)."""
    node = tree
    for part in dotted.split("."):
        if not (isinstance(node, dict) and part in node):
            return False
        node = node[part]
    return True


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """tree[a][b][c] = value, creating missing sections; ValueError when a part on the way is a value."""
    keys = dotted.split(".")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"'{'.'.join(keys[: depth + 1])}' is a value, not a section")
    node[keys[-1]] = value


def flatten(tree: dict[str, Any], prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """{"a.b.c": value} of every leaf; an empty section is dropped, or kept as the value {} with keep_empty."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and (value or not keep_empty):
            flat.update(flatten(value, f"{prefix}{key}.", keep_empty))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
