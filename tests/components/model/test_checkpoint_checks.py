"""Bad pretrained directories fail before anything loads: tiny checkpoints saved in the real diffusers layout."""

from __future__ import annotations

import json

import pytest
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from components.config import BackboneConfig, ModulationConfig, VaeConfig
from components.model.checkpoint_checks import (
    CheckpointMismatch,
    check_transformer,
    check_vae,
    expected_transformer_config,
)

CFG = BackboneConfig(num_attention_heads=2, attention_head_dim=8, num_layers=1, ffn_dim=32, text_dim=16, freq_dim=8)


def _save_transformer(root, **changes):
    config = {**expected_transformer_config(CFG), **changes}
    WanTransformer3DModel(**config).save_pretrained(root / "transformer")


def test_matching_i2v_checkpoint_passes(tmp_path):
    _save_transformer(tmp_path)
    check_transformer(str(tmp_path), CFG, ModulationConfig())


def test_missing_path_names_the_key(tmp_path):
    with pytest.raises(CheckpointMismatch, match=r"model.backbone.pretrained_path: .*nowhere does not exist"):
        check_transformer(str(tmp_path / "nowhere"), CFG, ModulationConfig())


def test_text_to_video_checkpoint_is_refused(tmp_path):
    _save_transformer(tmp_path, in_channels=16)
    with pytest.raises(CheckpointMismatch, match=r"transformer/config.json: in_channels = 16: a text-to-video .* 36"):
        check_transformer(str(tmp_path), CFG, ModulationConfig())


def test_dims_that_disagree_with_the_profile_are_listed(tmp_path):
    _save_transformer(tmp_path, num_attention_heads=4)
    with pytest.raises(CheckpointMismatch, match=r"num_attention_heads = 4, the profile \(model.backbone.num_attention_heads\) expects 2"):
        check_transformer(str(tmp_path), CFG, ModulationConfig())
    with pytest.raises(CheckpointMismatch, match="does not divide into model.modulation.heads = 3"):
        check_transformer(str(tmp_path), CFG.model_copy(update={"num_attention_heads": 4}), ModulationConfig(heads=3))


def test_image_tokens_without_an_image_encoder_are_refused(tmp_path):
    cfg = CFG.model_copy(update={"image_dim": 12, "added_kv_proj_dim": 16})
    WanTransformer3DModel(**expected_transformer_config(cfg)).save_pretrained(tmp_path / "transformer")
    with pytest.raises(CheckpointMismatch, match=r"no image_encoder/config.json, but .* has image_dim = 12"):
        check_transformer(str(tmp_path), cfg, ModulationConfig())
    (tmp_path / "image_encoder").mkdir()
    (tmp_path / "image_encoder" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    check_transformer(str(tmp_path), cfg, ModulationConfig())


def test_vae_without_latent_statistics_is_refused(tmp_path):
    AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False]).save_pretrained(tmp_path / "vae")
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    config.pop("latents_mean")
    (tmp_path / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatch, match=r"vae/config.json: latents_mean = None; expected a list of 4"):
        check_vae(str(tmp_path), VaeConfig(z_dim=4))
