import json

import pytest
import torch
from safetensors import safe_open

from components.config import BackboneConfig, PortraitModelConfig, SkeletonModulationConfig
from components.model.i2v_conditioning import i2v_condition
from components.model.portrait import (
    PortraitModel,
    build_backbone,
    load_backbone,
)

B, T, T_LAT, Z, H, W, J = 2, 17, 5, 16, 8, 8, 5
SKELETON = SkeletonModulationConfig(enabled=True, n_joints=J, grid=(4, 4), n_down=1, channels=8, feat_dim=8)


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "noisy_latents": torch.randn(B, Z, T_LAT, H, W, generator=g),
        "timestep": torch.tensor([700.0, 150.0]),
        "cond_latents": torch.randn(B, Z, T_LAT, H, W, generator=g),
        "audio_feats": torch.randn(B, T, 2, 32, generator=g),
        "pose": torch.rand(B, T, J, 3, generator=g),
        "text_emb": torch.randn(B, 16, 32, generator=g),
    }


def bare_output(backbone, x: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = torch.cat([x["noisy_latents"], i2v_condition(x["cond_latents"])], dim=1)
    return backbone(hidden, timestep=x["timestep"], encoder_hidden_states=x["text_emb"], return_dict=False)[0]


def randomize_output_projections(model: PortraitModel, seed: int = 1) -> None:
    """Give the zero-initialised cross-attention outputs weights, as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                out = attn.attn.to_out[0]
                out.weight.copy_(torch.randn(out.weight.shape, generator=g) * 0.2)
                out.bias.copy_(torch.randn(out.bias.shape, generator=g) * 0.2)


def run(model: PortraitModel, x: dict[str, torch.Tensor], **overrides) -> torch.Tensor:
    args = {**x, **overrides}
    if "skeleton" not in model.motion:
        args["pose"] = None
    return model(**args)


def test_i2v_condition_layout():
    latents = torch.randn(1, Z, T_LAT, H, W)
    cond = i2v_condition(latents)
    assert cond.shape == (1, 4 + Z, T_LAT, H, W)
    assert (cond[:, :4, 0] == 1).all() and (cond[:, :4, 1:] == 0).all()  # mask: latent frame 0 is given
    assert torch.equal(cond[:, 4:], latents)


def test_condition_must_span_every_latent_frame_and_image_tokens_match_the_backbone():
    model = PortraitModel.from_config(PortraitModelConfig.tiny())
    x = make_inputs()
    with pytest.raises(ValueError, match="cond_latents .* must have the shape of noisy_latents"):
        run(model, x, cond_latents=x["cond_latents"][:, :, :1])
    with pytest.raises(ValueError, match="no image_dim"):
        run(model, x, image_emb=torch.zeros(B, 3, 8))


@pytest.mark.parametrize("skeleton", [False, True])
def test_zero_init_reproduces_the_bare_backbone_exactly(skeleton):
    cfg = PortraitModelConfig.tiny(skeleton=SKELETON if skeleton else SkeletonModulationConfig())
    model = PortraitModel.from_config(cfg)
    x = make_inputs()
    out = run(model, x)
    assert out.shape == (B, Z, T_LAT, H, W)
    assert torch.equal(out, bare_output(build_backbone(cfg.backbone), x))


def test_audio_reaches_only_its_latent_frame():
    # One block: the motion cross-attention is the last thing that touches the tokens, so an audio change in
    # video frames 5..8 (latent frame 2) may move latent frame 2 of the velocity and nothing else.
    cfg = PortraitModelConfig.tiny().model_copy(update={"backbone": BackboneConfig(num_layers=1, num_attention_heads=2, ffn_dim=64)})
    model = PortraitModel.from_config(cfg)
    randomize_output_projections(model)
    x = make_inputs()
    base = run(model, x)
    bumped = x["audio_feats"].clone()
    bumped[:, 5:9] += 1.0
    delta = (run(model, x, audio_feats=bumped) - base).abs().amax(dim=(0, 1, 3, 4))
    assert (delta > 0).tolist() == [False, False, True, False, False]


def test_frozen_backbone_gets_no_gradients():
    model = PortraitModel.from_config(PortraitModelConfig.tiny(skeleton=SKELETON))
    model.freeze_backbone()
    x = make_inputs()
    drop = torch.tensor([True, False])  # so the learned nulls get a gradient too
    run(model, x, drop_audio=drop, drop_pose=drop).pow(2).mean().backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    grads = {name: p.grad for name, p in model.named_modulation_parameters()}
    # Zero-initialised output: at step 0 only the output projections learn (this is why training starts there).
    for name, grad in grads.items():
        is_out = ".attn.to_out." in name
        assert grad is not None and (grad.abs().sum() > 0) == is_out, name

    model.zero_grad(set_to_none=True)
    randomize_output_projections(model)
    run(model, x, drop_audio=drop, drop_pose=drop).pow(2).mean().backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    dead = [name for name, p in model.named_modulation_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def _grads(model: PortraitModel) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    # Two forwards then one backward (as DPO does with winner and loser) with different audio.
    a, b = make_inputs(0), make_inputs(1)
    loss = run(model, a).pow(2).mean() - 0.5 * run(model, b, drop_audio=torch.tensor([False, True])).pow(2).mean()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    model = PortraitModel.from_config(PortraitModelConfig.tiny())
    randomize_output_projections(model)
    plain = _grads(model)
    model.enable_gradient_checkpointing()
    assert model.transformer.gradient_checkpointing
    checkpointed = _grads(model)
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_must_go_through_the_portrait_model():
    model = PortraitModel.from_config(PortraitModelConfig.tiny())
    model.transformer.enable_gradient_checkpointing()  # default diffusers function: cannot see motion tokens
    with pytest.raises(RuntimeError, match="PortraitModel.enable_gradient_checkpointing"):
        run(model, make_inputs())


def test_backbone_round_trips_through_diffusers_format(tmp_path):
    cfg = PortraitModelConfig.tiny()
    bare = build_backbone(cfg.backbone)
    bare.save_pretrained(tmp_path / "wan" / "transformer")
    x = make_inputs()
    with torch.no_grad():
        expected = bare_output(bare, x)
        for path in [tmp_path / "wan", tmp_path / "wan" / "transformer"]:  # checkpoint root or component dir
            assert torch.equal(bare_output(load_backbone(path), x), expected)
        pretrained = cfg.model_copy(update={"backbone": BackboneConfig(pretrained_path=str(tmp_path / "wan"))})
        assert torch.equal(run(PortraitModel.from_config(pretrained), x), expected)
    with pytest.raises(FileNotFoundError, match="no diffusers config.json"):
        load_backbone(tmp_path / "nowhere")


def test_portrait_model_round_trips(tmp_path):
    model = PortraitModel.from_config(PortraitModelConfig.tiny(skeleton=SKELETON))
    randomize_output_projections(model)
    model.save_pretrained(tmp_path / "model")
    model.save_pretrained(tmp_path / "model")  # replacing an existing directory works too
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "modulation.safetensors",
        "portrait_config.json",
        "transformer",
    ]
    # The transformer is saved bare: a plain WanTransformer3DModel has exactly these weights.
    with safe_open(str(tmp_path / "model" / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        saved_keys = set(f.keys())
    assert saved_keys == set(build_backbone(model.cfg.backbone).state_dict())
    assert isinstance(model.transformer.blocks[0], type(model.modulated_blocks()[0]))  # wrappers restored

    loaded = PortraitModel.from_pretrained(tmp_path / "model")
    x = make_inputs()
    with torch.no_grad():
        assert torch.equal(run(loaded, x), run(model, x))
    assert json.loads((tmp_path / "model" / "portrait_config.json").read_text())["modulation"]["skeleton"]["enabled"]


def test_phase2_separate_fusion_starts_from_the_phase1_model(tmp_path):
    phase1 = PortraitModel.from_config(PortraitModelConfig.tiny(fusion="separate"))
    randomize_output_projections(phase1)
    phase1.save_modulation(tmp_path / "phase1.safetensors")

    phase2 = PortraitModel.from_config(PortraitModelConfig.tiny(fusion="separate", skeleton=SKELETON))
    with pytest.raises(ValueError, match="missing weights"):
        phase2.load_modulation(tmp_path / "phase1.safetensors")
    missing = phase2.load_modulation(tmp_path / "phase1.safetensors", allow_missing=True)
    assert missing and all(n.startswith("motion.skeleton.") or ".skeleton." in n for n in missing)
    x = make_inputs()
    with torch.no_grad():
        assert torch.equal(run(phase2, x), run(phase1, x))  # new skeletal cross-attention starts at zero
    phase2.save_modulation(tmp_path / "phase2.safetensors")
    with pytest.raises(ValueError, match="layers this model does not have"):
        phase1.load_modulation(tmp_path / "phase2.safetensors")


def test_a_backbone_cannot_be_wrapped_twice():
    model = PortraitModel.from_config(PortraitModelConfig.tiny())
    with pytest.raises(ValueError, match="already belongs"):
        PortraitModel(model.cfg, model.transformer)


def test_inputs_are_checked_and_missing_conditions_use_the_null():
    model = PortraitModel.from_config(PortraitModelConfig.tiny())
    randomize_output_projections(model)
    x = make_inputs()
    with pytest.raises(ValueError, match="skeleton input given but skeleton modulation is disabled"):
        model(**x)
    with pytest.raises(ValueError, match="does not match"):
        run(model, x, audio_feats=x["audio_feats"][:, :13])
    with torch.no_grad():
        no_audio = run(model, x, audio_feats=None)
        dropped = run(model, x, drop_audio=torch.tensor([True, True]))
        assert torch.equal(no_audio, dropped)
        assert not torch.equal(no_audio, run(model, x))


def test_no_modulation_variant_is_the_bare_backbone():
    cfg = PortraitModelConfig.tiny(audio={"enabled": False, "in_dim": 32, "tokens_per_frame": 2})
    model = PortraitModel.from_config(cfg)
    assert list(model.named_modulation_parameters()) == []
    x = make_inputs()
    assert torch.equal(run(model, x, audio_feats=None), bare_output(build_backbone(cfg.backbone), x))
