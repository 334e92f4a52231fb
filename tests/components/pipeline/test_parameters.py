"""Pipeline parameters: the DVC command they make, overrides that reach params.yaml typed, refused inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.config import load_params
from components.pipeline.parameters import PipelineParameters, dvc_command, hydra_value

REPO = Path(__file__).resolve().parents[3]


def test_dvc_command_is_repro_or_an_experiment():
    assert dvc_command(PipelineParameters()) == ["dvc", "repro"]
    assert dvc_command(PipelineParameters(stages=["shard"], force=True)) == ["dvc", "repro", "--force", "shard"]
    run = PipelineParameters(
        overrides={"world.n_identities": 4, "phase1.optim.lr": 1e-05}, stages=["phase1@reshape"], experiment_name="lr"
    )
    assert dvc_command(run) == [
        "dvc", "exp", "run", "--name", "lr", "-S", "++world.n_identities=4", "-S", "++phase1.optim.lr=1.0e-05",
        "phase1@reshape",
    ]
    assert PipelineParameters(profile="params.wan.yaml").is_experiment  # the profile replaces params.yaml
    assert PipelineParameters(stages=[]).stages is None


def test_overrides_reach_params_yaml_with_their_types(tmp_path):
    """What `dvc exp run -S` writes into params.yaml loads as the same Params as load_params(overrides)."""
    from dvc.utils.hydra import apply_overrides

    overrides = {
        "world.n_identities": 4,
        "world.speech": "syllables",
        "world.syllable_rate_hz": [2.5, 6.0],
        "phase1.optim.lr": 1e-05,
        "phase1.optim.weight_decay": 0.01,  # not in params.yaml: ++ adds it
        "phase1.gradient_checkpointing": True,
        "vae.pretrained_path": None,
        "ingest.audio.pretrained_path": "/models/it's here",
        "evaluation.models.phase2": "models/phase2b",
    }
    cmd = dvc_command(PipelineParameters(overrides=overrides))
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    apply_overrides(str(params_file), [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"])
    assert load_params(params_file) == load_params(REPO / "params.yaml", overrides)


@pytest.mark.parametrize(
    "bad",
    [
        {"profile": "../params.yaml"},
        {"profile": "/etc/params.yaml"},
        {"profile": "params.json"},
        {"overrides": {"world n": 1}},
        {"overrides": {"evaluation.models": {"phase2": "models/phase2"}}},  # DVC would merge, not replace
        {"overrides": {"world.speech": "${oc.env:HOME}"}},
        {"stages": ["--force"]},
        {"stages": ["shard; rm -rf ."]},
        {"unknown": 1},
    ],
)
def test_parameters_reject_what_dvc_should_never_see(bad):
    with pytest.raises(ValueError):
        PipelineParameters(**bad)


def test_values_hydra_cannot_round_trip_are_refused():
    for value in ("${oc.env:HOME}", "both ' and \"", float("nan"), object()):
        with pytest.raises(ValueError):
            hydra_value(value)
