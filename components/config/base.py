"""The base of every params class."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Strict(BaseModel):
    """Unknown keys fail (a typo in params.yaml must not be ignored) and values are frozen.

    A partial mapping for a nested section keeps that field's own default for what it omits: with
    `pretrain_vae.optim` defaulting to a cosine schedule, `optim: {lr: 1.0e-3}` changes the learning rate and keeps
    the cosine schedule (plain pydantic would start again from OptimConfig's class defaults).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_mapping_keeps_field_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            default, given = field.default, data.get(name)
            if isinstance(default, BaseModel) and isinstance(given, dict):
                # only where the field's default differs from its class's defaults (the nested class fills the rest)
                merged[name] = {**default.model_dump(exclude_defaults=True), **given}
        return merged
