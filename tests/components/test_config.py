from pathlib import Path

import pytest
import yaml

from components.config import (
    DpoConfig,
    Params,
    ParamsError,
    PortraitModelConfig,
    PreferenceTrainConfig,
    TlpoConfig,
    TrainingDataConfig,
    load_params,
    parse_overrides,
)

REPO = Path(__file__).resolve().parents[2]


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every leaf a params file sets (mappings of sections are walked, values kept)."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        section = isinstance(value, dict) and key not in ("splits", "weights", "models", "schedule")  # dict-valued fields
        out.update(_leaves(value, f"{dotted}.") if section else {dotted: value})
    return out


def _value(params: Params, dotted: str) -> object:
    node: object = params
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def test_class_defaults_are_the_toy_profile():
    """One source per value: every key params.yaml sets equals the class default, and so does everything else."""
    loaded, defaults = load_params(REPO / "params.yaml"), Params()
    listed = _leaves(yaml.safe_load((REPO / "params.yaml").read_text()))
    disagree = {key: (_value(loaded, key), _value(defaults, key)) for key in listed}
    disagree = {key: pair for key, pair in disagree.items() if pair[0] != pair[1]}
    assert disagree == {}, f"params.yaml (value, class default) disagree: {disagree}"
    assert loaded == defaults


def test_repo_params_load_as_the_toy_profile():
    params = load_params(REPO / "params.yaml")
    assert params.profile == "toy"
    assert params.ingest.fps == 25 and params.world.fps == 25
    assert params.shard.splits == {"train": 0.625, "val": 0.125, "test": 0.25}


def test_output_paths_are_params():
    params = Params()
    assert (params.pretrain_vae.output, params.pretrain_vae.metrics_path) == ("models/vae", "reports/pretrain_vae.json")
    assert params.pretrain_dit.output == "models/base"
    assert (params.phase1.output, params.phase2.output) == ("models/phase1", "models/phase2")
    assert params.phase2.base_model == "models/phase1/reshape"
    assert (params.tlpo.report_path, params.tlpo.figure_path) == ("reports/tlpo.json", "reports/tlpo_gate.png")


def test_data_shards_is_shard_output(tmp_path):
    params = load_params(REPO / "params.yaml", {"shard.output": "s3://bucket/shards"})
    assert params.data.shards == "s3://bucket/shards"
    assert Params().data.shards == TrainingDataConfig().shards == "data/shards"
    with pytest.raises(ParamsError, match=r"unknown key 'data\.shards' \(it follows 'shard\.output'"):
        load_params(REPO / "params.yaml", {"data.shards": "elsewhere"})


def test_validation_checks_ingests_own_thresholds():
    joints = ["head", "neck", "l_shoulder", "r_shoulder", "pelvis"]
    params = load_params(REPO / "params.yaml", {"ingest.min_duration_s": 3.3, "ingest.fps": 30,
                                                "ingest.keypoints.joints": joints, "model.modulation.skeleton.n_joints": 5})
    assert (params.validation.min_duration_s, params.validation.fps, params.validation.n_joints) == (3.3, 30, 5)
    assert params.validation.max_av_mismatch_s == params.ingest.max_av_mismatch_s
    assert params.validation.min_audio_rms_db == params.ingest.min_audio_rms_db
    with pytest.raises(ParamsError, match="it follows 'ingest.min_duration_s'"):
        load_params(REPO / "params.yaml", {"validation.min_duration_s": 2.0})


def test_partial_nested_mapping_keeps_the_sections_own_default(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pretrain_vae:\n  optim: {lr: 1.0e-3}\n")
    optim = load_params(path).pretrain_vae.optim
    assert optim.lr == 1e-3
    assert (optim.schedule, optim.warmup_steps) == (Params().pretrain_vae.optim.schedule, 30)  # not OptimConfig's


def test_dpo_and_tlpo_share_one_base():
    assert issubclass(DpoConfig, PreferenceTrainConfig) and issubclass(TlpoConfig, PreferenceTrainConfig)
    shared = {"base_model", "candidates", "pairs", "beta", "lora_rank", "lora_alpha", "lora_targets", "output"}
    assert shared <= set(PreferenceTrainConfig.model_fields)
    assert Params().dpo.beta == Params().tlpo.beta == 250.0


def test_tiny_model_is_smaller_than_the_toy_profile_and_fits_the_tiny_wav2vec2():
    tiny, toy = PortraitModelConfig.tiny(), PortraitModelConfig()
    assert tiny.backbone.num_layers < toy.backbone.num_layers and tiny.backbone.ffn_dim < toy.backbone.ffn_dim
    assert PortraitModelConfig.tiny(fusion="separate").modulation.fusion == "separate"
    Params(data=TrainingDataConfig(audio_features="wav2vec"), model=tiny)  # validates: 2 tokens x 32 per frame


def test_overrides_are_typed_and_dotted(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: toy\n")
    params = load_params(path, {"world.n_identities": 3, "shard.output": "s3://b/p"})
    assert params.world.n_identities == 3
    assert params.shard.output == "s3://b/p"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"shard.maxcnt": 3}, "params.yaml: unknown key 'shard.maxcnt' (did you mean 'shard.maxcount'?)"),
    ({"dpo.beta": "fast"}, "params.yaml: dpo.beta: expected a number, got 'fast'"),
    ({"model.num_layers": 3}, "params.yaml: unknown key 'model.num_layers' (did you mean 'model.backbone.num_layers' or "
                              "'model.text.num_layers'?)"),
    ({"shrd.maxcount": 3}, "params.yaml: unknown key 'shrd' (did you mean 'shard'?)"),
    ({"candidates.pool": [{"name": "a", "modl": "m"}]},
     "params.yaml: unknown key 'candidates.pool[0].modl' (did you mean 'candidates.pool[0].model'?)"),
    ({"data.audio_features": "mfcc"}, "params.yaml: data.audio_features: expected one of 'mel' or 'wav2vec', got 'mfcc'"),
    ({"ingest.fps": 0}, "params.yaml: ingest.fps: expected a value >= 1, got 0"),
    ({"shard.splits": {"train": 0.5}}, "params.yaml: shard.splits fractions must sum to 1, got 0.5"),
    ({"shard.output.bucket": "b"}, "params.yaml: --set shard.output.bucket: 'shard.output' is a value, not a section"),
])  # fmt: skip
def test_bad_params_are_one_line_naming_file_key_and_fix(tmp_path, overrides, message):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ParamsError) as caught:
        load_params(path, overrides)
    assert str(caught.value) == message.replace("params.yaml", str(path), 1)


def test_typo_in_params_fails_naming_the_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("world:\n  n_identitys: 3\n")
    with pytest.raises(ValueError, match=rf"^{path}: unknown key 'world.n_identitys' \(did you mean 'world.n_identities'\?\)$"):
        load_params(path)


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("world: [unclosed\n")
    with pytest.raises(ParamsError, match=rf"^{path}: not valid YAML: [^\n]*line 2") as caught:
        load_params(path)
    assert "\n" not in str(caught.value)


def test_bad_set_syntax_is_a_params_error():
    assert parse_overrides(["a.b=3", "c=[1, 2]", "d=null"]) == {"a.b": 3, "c": [1, 2], "d": None}
    with pytest.raises(ParamsError, match="--set expects key=value, got 'shard.maxcount'"):
        parse_overrides(["shard.maxcount"])


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        Params.model_validate({"shard": {"splits": {"train": 0.5, "test": 0.1}}})


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_dotted_keys_read_write_and_flatten_one_way():
    from components.config.dotted import flatten, get_dotted, has_dotted, set_dotted

    tree = {"a": {"b": {"c": 1}, "list": [10, 20], "empty": {}}}
    assert get_dotted(tree, "a.b.c") == 1 and get_dotted(tree, "a.list.1") == 20
    assert get_dotted(tree, "a.x", None) is None
    with pytest.raises(KeyError):
        get_dotted(tree, "a.x")
    assert has_dotted(tree, "a.b") and not has_dotted(tree, "a.list.1")  # lists are values in params files
    set_dotted(tree, "a.new.d", 2)
    assert tree["a"]["new"] == {"d": 2}
    with pytest.raises(ValueError, match="'a.b.c' is a value"):
        set_dotted(tree, "a.b.c.d", 3)
    assert flatten(tree) == {"a.b.c": 1, "a.list": [10, 20], "a.new.d": 2}
    assert flatten(tree, keep_empty=True)["a.empty"] == {}
