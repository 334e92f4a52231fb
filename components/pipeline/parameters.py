"""The parameters of a pipeline run (the Prefect UI's run form) and the DVC command they make: `dvc repro`, or a
`dvc exp run -S key=value` when the run changes params."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_PARAMS", "PipelineParameters", "dvc_command", "hydra_value"]

DEFAULT_PARAMS = "params.yaml"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_STAGE = re.compile(r"^[A-Za-z0-9_.:/@-]+$")  # stage names (phase1@reshape), dvc.yaml:stage paths


class PipelineParameters(BaseModel):
    """What a pipeline run may change; the Prefect UI renders this as the run form."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        DEFAULT_PARAMS,
        description="params file of the profile, relative to the repository (params.yaml: toy; params.wan.yaml: "
        "cluster). Another file than params.yaml replaces params.yaml for the run (DVC tracks params.yaml).",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='dotted params keys and values, e.g. {"world.n_identities": 4}; run as `dvc exp run -S`',
    )
    stages: list[str] | None = Field(
        None, description="DVC targets (stage names such as shard or phase1@reshape); empty: the whole DAG"
    )
    force: bool = Field(False, description="rerun the stages even when DVC finds them up to date")
    pull: bool = Field(False, description="`dvc pull --allow-missing` first (a fresh checkout, e.g. a pod)")
    push: bool = Field(False, description="`dvc push` the outputs to the default DVC remote afterwards")
    experiment_name: str | None = Field(None, description="name of the DVC experiment (with overrides or a profile)")

    @field_validator("profile")
    @classmethod
    def _profile_inside_repo(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"profile must be a .yaml file inside the repository, got {value!r}")
        return value

    @field_validator("overrides")
    @classmethod
    def _dotted_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _KEY.match(key):
                raise ValueError(f"override key {key!r} must be a dotted params key such as world.n_identities")
            if isinstance(item, dict):  # DVC (Hydra) would merge it into the mapping, not replace it
                raise ValueError(f"override {key!r}: set the keys of a mapping one by one ({key}.name=value)")
            hydra_value(item)  # refuse what `-S` cannot carry before anything runs
        return value

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: list[str] | None) -> list[str] | None:
        for stage in value or []:
            if not _STAGE.match(stage) or stage.startswith("-"):
                raise ValueError(f"not a DVC stage name: {stage!r}")
        return value or None

    @property
    def is_experiment(self) -> bool:
        return bool(self.overrides) or Path(self.profile) != Path(DEFAULT_PARAMS)


def hydra_value(value: Any) -> str:
    """A value as DVC's `-S key=value` (Hydra override grammar) parses it back to the same YAML value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"override value {value!r}: only finite numbers")
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"  # YAML 1.1 (PyYAML) reads 1e-05 as a string, 1.0e-05 as a float
        return text
    if isinstance(value, str):
        if "${" in value or value.endswith("\\"):
            raise ValueError(f"override value {value!r}: '${{' and a trailing backslash are not supported")
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value:
            return f'"{value}"'
        raise ValueError(f"override value {value!r}: a string may hold ' or \", not both")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                raise ValueError(f"override mapping key {key!r}: letters, digits and '_' only")
            items.append(f"{key}:{hydra_value(item)}")
        return "{" + ",".join(items) + "}"
    raise ValueError(f"override value {value!r}: unsupported type {type(value).__name__}")


def dvc_command(parameters: PipelineParameters, dvc: str = "dvc") -> list[str]:
    """`dvc repro [targets]`, or `dvc exp run -S ++key=value ... [targets]` when the run changes params."""
    if parameters.is_experiment:
        cmd = [dvc, "exp", "run"]
        if parameters.experiment_name:
            cmd += ["--name", parameters.experiment_name]
        for key, value in parameters.overrides.items():
            cmd += ["-S", f"++{key}={hydra_value(value)}"]  # ++: set the key whether or not the file has it
    else:
        cmd = [dvc, "repro"]
    if parameters.force:
        cmd.append("--force")
    return cmd + list(parameters.stages or [])
