"""A tiny Wan2.1-I2V checkpoint in the real layout, stored in bf16, through the wan profile's code paths: the checks
and every loader, one phase-1 step (frozen bf16 backbone, fp32 modulation), a reference bundle, one DPO step on
that bundle with fp32 LoRA, and one `animate` call: each with bf16 weights and fp32 inputs on the CPU, as a GPU
run has them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import FlowTrainConfig, OptimConfig, Params
from components.model.adapters import add_lora
from components.model.checkpoint_checks import check_params_checkpoints
from components.model.i2v_conditioning import encode_condition, image_encoder_for
from components.model.loading import load_bundle
from components.model.precision import place_for_training, torch_dtype
from components.model.pretrained_refs import REFS_FILE
from components.model.text_encoder import TextEncoder
from components.model.vae import latent_frames
from components.train.dpo import dpo_step_loss
from components.train.loop import run_training, sliced
from components.train.objective import Objective
from components.train.phases import phase1_model, save_phase_bundle, stage_vae
from components.train.portrait_objective import flow_loss, global_flow_batch
from tests.components.model.conftest import CLIP_DIM, FRAMES, PROMPT, RES, TEXT_DIM, Z, save_tiny_wan_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return save_tiny_wan_checkpoint(tmp_path_factory.mktemp("wan") / "Wan2.1-I2V-tiny-Diffusers")


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKALIGN_CACHE_DIR", str(tmp_path / "cache"))


def wan_params(root: Path, tmp: Path) -> Params:
    """The toy profile with the wan profile's model keys pointed at the tiny checkpoint."""
    base = Params().model_dump()
    ckpt = str(root)
    # the tiny checkpoint is Wan-shaped (8x VAE, patch 2), unlike the toy profile's 4x VAE and patch 4
    base["vae"].update(pretrained_path=ckpt, z_dim=Z, dtype="bfloat16", dim_mult=(1, 2, 2, 2), temperal_downsample=(False, True, True))
    base["model"]["backbone"].update(pretrained_path=ckpt, latent_channels=Z, patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                     num_layers=2, ffn_dim=32, text_dim=TEXT_DIM, freq_dim=16, image_dim=CLIP_DIM,
                                     added_kv_proj_dim=16, dtype="bfloat16")
    base["model"]["text"].update(pretrained_path=ckpt, max_length=512, d_model=TEXT_DIM, dtype="bfloat16")
    base["model"]["image_encoder"] = {"pretrained_path": ckpt}
    base["model"]["pretrained_in_bundles"] = "reference"
    base["ingest"]["resolution"] = RES
    base["data"].update(frames=FRAMES, prompt=PROMPT)
    base["pretrain_dit"]["output"] = str(tmp / "base")
    return Params.model_validate(base)


def training_data(params: Params, n: int = 2) -> dict[str, torch.Tensor]:
    """Windows as the latents stage caches them: condition latents from the stored-bf16 VAE, CLIP image tokens."""
    vae = stage_vae(params)
    encoder = image_encoder_for(params.model.backbone, params.model.image_encoder)
    images = np.random.default_rng(0).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)
    reference = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        cond = encode_condition(vae, reference, FRAMES).float()
    t_lat = latent_frames(FRAMES)
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(n, Z, t_lat, RES // 8, RES // 8, generator=g), "cond": cond,
            "image_emb": encoder(images), "audio": torch.randn(n, FRAMES, 4, 40, generator=g),
            "pose": torch.rand(n, FRAMES, 10, 3, generator=g)}


def test_phase1_step_reference_bundle_dpo_step_and_animate(root, tmp_path):
    from components.inference.animate import animate

    params = wan_params(root, tmp_path)
    check_params_checkpoints(params)
    model = phase1_model(params, "reshape")
    dtypes = {p.dtype for p in model.backbone_parameters()}
    assert torch.bfloat16 in dtypes and all(p.dtype == torch.float32 for _, p in model.named_modulation_parameters())
    frozen_before = {n: p.detach().clone() for n, p in model.transformer.named_parameters() if not p.requires_grad}
    modulation_before = {n: p.detach().clone() for n, p in model.named_modulation_parameters()}

    data = training_data(params)
    text_emb = TextEncoder(model.cfg.text)([PROMPT])
    assert text_emb.dtype == torch.float32 and text_emb.shape == (1, 512, TEXT_DIM)
    cfg = FlowTrainConfig(steps=1, batch_size=2, checkpoint_every=1, log_every=1, sample_every=0,
                          optim=OptimConfig(lr=1e-2, warmup_steps=0))
    result = run_training(name="phase1", model=Objective(lambda m, b: flow_loss(m, b, text_emb), model),
                          batch_fn=sliced(lambda step, micro, rows, g: global_flow_batch(data, cfg, rows, g)),
                          cfg=cfg, ckpt_dir=tmp_path / "ckpt", progress=False)
    assert np.isfinite(result.summary()["final_loss"])
    assert any(not torch.equal(p, modulation_before[n]) for n, p in model.named_modulation_parameters())
    for name, p in model.transformer.named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name

    save_phase_bundle(tmp_path / "phase1", params, model, "reshape", {"stage": "phase1"})
    assert (tmp_path / "phase1" / REFS_FILE).is_file() and not (tmp_path / "phase1" / "transformer").exists()
    bundle = load_bundle(tmp_path / "phase1")

    # one DPO step on the bundle: LoRA in fp32 over the bf16 base, the reference = adapters off
    policy = bundle.model.train()
    add_lora(policy, 2, 2, ["attention"])
    place_for_training(policy, torch_dtype(policy.cfg.backbone.dtype))
    lora = [p for n, p in policy.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    pair = {"winner": data["latents"][:1], "loser": data["latents"][1:], "cond": data["cond"][:1],
            "image_emb": data["image_emb"][:1], "audio": data["audio"][:1], "pose": data["pose"][:1],
            "noise": torch.randn_like(data["latents"][:1]), "sigma": torch.tensor([0.5])}
    loss, stats = dpo_step_loss(policy, pair, bundle.text_encoder([PROMPT]), beta=100.0)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(stats["reward_margin"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)

    image = np.random.default_rng(1).integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    video = animate(load_bundle(tmp_path / "phase1"), image, np.zeros(16000 * FRAMES // 25, np.float32), 16000, steps=1)
    assert video.shape == (FRAMES, RES, RES, 3) and video.dtype == np.uint8
