from pathlib import Path

import pytest

from components.config import Params, load_params

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_as_the_toy_profile():
    params = load_params(REPO / "params.yaml")
    assert params.profile == "toy"
    assert params.ingest.fps == 25 and params.world.fps == 25
    assert params.shard.splits == {"train": 0.8, "val": 0.1, "test": 0.1}


def test_overrides_are_typed_and_dotted(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: toy\n")
    params = load_params(path, {"world.n_identities": 3, "shard.output": "s3://b/p"})
    assert params.world.n_identities == 3
    assert params.shard.output == "s3://b/p"


def test_typo_in_params_fails_naming_the_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("world:\n  n_identitys: 3\n")
    with pytest.raises(ValueError, match=r"(?s)params\.yaml.*n_identitys"):
        load_params(path)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        Params.model_validate({"shard": {"splits": {"train": 0.5, "test": 0.1}}})


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")
