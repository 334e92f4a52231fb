"""params.wan.yaml: the cluster profile validates, and its values are Wan2.1-I2V-14B's and Hallo4's."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from components.config import load_params

WAN = Path(__file__).resolve().parents[2] / "params.wan.yaml"


def test_wan_profile_validates_with_the_cluster_values():
    params = load_params(WAN)
    assert params.profile == "wan"
    backbone = params.model.backbone
    assert (backbone.num_layers, backbone.num_attention_heads, backbone.attention_head_dim) == (40, 40, 128)
    assert backbone.num_attention_heads * backbone.attention_head_dim == 5120
    assert (backbone.ffn_dim, backbone.text_dim, backbone.freq_dim) == (13824, 4096, 256)
    assert backbone.patch_size == (1, 2, 2) and backbone.latent_channels == params.vae.z_dim == 16
    assert params.data.frames == 81 and params.data.audio_features == "wav2vec"
    assert params.model.text.d_model == backbone.text_dim
    for phase in (params.phase1, params.phase2):  # Hallo4: 10k iterations, lr 1e-5, 2,000 warm-up steps, batch 8
        assert (phase.steps, phase.batch_size, phase.optim.lr, phase.optim.warmup_steps) == (10000, 8, 1e-5, 2000)
        assert phase.mixed_precision == "bf16" and phase.gradient_checkpointing
    assert all(path for path in (backbone.pretrained_path, params.vae.pretrained_path, params.ingest.audio.pretrained_path))


def test_wan_profile_uses_the_sections_of_the_toy_profile():
    """Every section of params.wan.yaml is a section of params.yaml: one set of keys, two sets of values."""
    wan = yaml.safe_load(WAN.read_text())
    toy = yaml.safe_load((WAN.parent / "params.yaml").read_text())
    assert set(wan) <= set(toy)


def test_wan_backbone_dims_build_the_14b_transformer_shape():
    """The backbone config builds (on the meta device: no memory) a WanTransformer3DModel of Wan2.1-14B's shape."""
    from components.model.portrait import build_backbone

    cfg = load_params(WAN).model.backbone.model_copy(update={"pretrained_path": None})
    with torch.device("meta"):
        model = build_backbone(cfg)
    assert model.config.in_channels == 36 and model.config.out_channels == 16  # 16 noisy + 16 reference + 4 mask
    assert len(model.blocks) == 40
    assert model.blocks[0].attn1.to_q.weight.shape == (5120, 5120)
    assert model.blocks[0].ffn.net[0].proj.weight.shape == (13824, 5120)
    n = sum(p.numel() for p in model.parameters())
    assert n == 16_394_878_784  # Wan2.1-I2V-14B, image context included (diffusers' count)


def test_wan_shards_and_validation_thresholds_follow_their_one_source():
    params = load_params(WAN)
    assert params.data.shards == params.shard.output == "s3://talkalign-data/shards"
    assert params.validation.min_duration_s == params.ingest.min_duration_s == 3.3  # one 81-frame window
    assert (params.validation.fps, params.validation.resolution) == (params.ingest.fps, params.ingest.resolution)


def test_wan_profile_names_every_stage_output():
    """The output paths are params (dvc.yaml reads them from the profile file): the wan file lists them too."""
    wan = yaml.safe_load(WAN.read_text())
    for section, keys in {"pretrain_vae": ("output", "metrics_path"), "pretrain_dit": ("output",),
                          "phase1": ("output",), "phase2": ("output", "base_model"),
                          "tlpo": ("output", "report_path", "figure_path")}.items():
        assert set(keys) <= set(wan[section]), section


def test_the_13b_profile_loads_with_an_i2v_1_3b_backbone():
    """params.wan13b.yaml: the same keys, an I2V-layout Wan2.1 1.3B (Wan2.1-Fun-1.3B-InP's dims)."""
    params = load_params(WAN.parent / "params.wan13b.yaml")
    b = params.model.backbone
    assert (b.num_layers, b.num_attention_heads, b.attention_head_dim, b.ffn_dim) == (30, 12, 128, 8960)
    assert (b.image_dim, b.added_kv_proj_dim, b.dtype) == (1280, 1536, "bfloat16")
    assert params.phase1.sample_every == params.phase2.sample_every == 0  # off under FSDP (stated in the file)
    assert load_params(WAN).phase1.sample_every == 0
