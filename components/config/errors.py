"""Params errors a user reads: one line naming the file, the key and what is wrong, never pydantic's dump."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError


class ParamsError(ValueError):
    """A params file or `--set` override that does not validate; str() is one line: file, key, problem."""


# pydantic error type -> what the value should have been
_EXPECTED = {
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "dict_type": "a mapping", "list_type": "a list", "tuple_type": "a list",
    "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys",
}  # fmt: skip
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}  # fmt: skip


def dotted(loc: Sequence[str | int]) -> str:
    """('candidates', 'pool', 0, 'seeds') -> 'candidates.pool[0].seeds'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The params class a field holds, and whether it holds a list of them (list[GeneratorSpec])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    for arg in args:
        model, _ = _model_in(arg)
        if model is not None:
            return model, origin not in (typing.Union, types.UnionType)
    return None, False


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of `model`, nested sections included (list items are not expanded)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        sub, is_list = _model_in(field.annotation)
        if sub is not None and not is_list:
            keys += valid_keys(sub, f"{prefix}{name}.")
    return keys


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The params class that holds the key loc[-1] (None when the path leaves the params classes)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections: the item's class
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_in(field.annotation)[0] if field is not None else None
    return model


def nearest_keys(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The valid keys closest to the unknown one at `loc` (at most two). Searched among every key of its section, so
    a key put in the wrong sub-section is found too (model.num_layers -> model.backbone.num_layers); at the top level
    and inside list items, among the keys beside it."""
    if len(loc) > 1 and not any(isinstance(p, int) for p in loc):
        section = _model_at(root, loc[:2])
        keys = valid_keys(section) if section is not None else []
        relative = ".".join(map(str, loc[1:]))
        same_name = [k for k in keys if k.rsplit(".", 1)[-1] == str(loc[-1])]
        found = same_name[:2] or difflib.get_close_matches(relative, keys, n=1)
        return [f"{loc[0]}.{key}" for key in found]
    parent = _model_at(root, loc)
    found = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1) if parent is not None else []
    return [dotted([*loc[:-1], key]) for key in found]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_one(error: Mapping[str, Any], root: type[BaseModel], moved: Mapping[str, str]) -> str:
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    key = dotted(loc)
    if kind == "extra_forbidden":
        if key in moved:
            return f"unknown key '{key}' (it follows '{moved[key]}': set that one)"
        suggestions = " or ".join(f"'{k}'" for k in nearest_keys(root, loc))
        return f"unknown key '{key}'" + (f" (did you mean {suggestions}?)" if suggestions else "")
    if kind == "missing":
        return f"{key}: required, but not given"
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        return message if not key or message.startswith(key) else f"{key}: {message}"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind == "literal_error":
        expected = f"one of {ctx.get('expected')}"
    elif kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        expected = f"a value {sign} {ctx.get(name)}"
    else:  # pydantic says "Input should be ..." for the rest
        expected = error["msg"].removeprefix("Input should be ").removeprefix("Input ")
    return f"{key}: expected {expected}, got {_short(error.get('input'))}"


def describe(exc: ValidationError, source: str, root: type[BaseModel], moved: Mapping[str, str] | None = None) -> str:
    """One line for a ValidationError of `root` loaded from `source`: each bad key once, '; ' between them.
    `moved` maps keys that are no longer set directly to the key they follow (data.shards -> shard.output)."""
    seen, parts = set(), []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if loc not in seen:
            seen.add(loc)
            parts.append(_describe_one(error, root, moved or {}))
    return f"{source}: " + "; ".join(parts)
