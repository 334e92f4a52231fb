"""Our Wan I2V conditioning equals diffusers' WanImageToVideoPipeline's on a tiny checkpoint in the real layout:
condition latents + mask (`prepare_latents`), CLIP image tokens (`encode_image`), the padded prompt
(`encode_prompt`) and so the transformer's whole input; a bundle carries the image encoder in the same layout;
a checkpoint without image_encoder/ for a transformer with image_dim is refused naming both."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image

from components.config import (
    BackboneConfig,
    ImageEncoderConfig,
    PortraitModelConfig,
)
from components.model.bundle import BundleAudio, BundleError, BundleMeta, ModelBundle, load_plain_bundle, save_bundle
from components.model.i2v_conditioning import (
    encode_condition,
    i2v_condition,
    image_encoder_for,
    load_image_encoder,
)
from components.model.portrait import PortraitModel, load_backbone
from components.model.text_encoder import TextEncoder
from components.model.vae import load_vae
from tests.components.model.conftest import CLIP_DIM, FRAMES, PROMPT, RES, TEXT_DIM, Z
from tests.components.model.conftest import wan_portrait_config as portrait_config


@pytest.fixture(scope="module")
def checkpoint(wan_checkpoint):
    return wan_checkpoint


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    return WanImageToVideoPipeline.from_pretrained(checkpoint, dtype=torch.float32, local_files_only=True)


def reference_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (RES, RES, 3), dtype=np.uint8)


def test_layout_is_the_real_one(checkpoint):
    for part in ("transformer", "vae", "text_encoder", "image_encoder"):
        assert (checkpoint / part / "config.json").is_file() and list((checkpoint / part).glob("*.safetensors")), part
    assert (checkpoint / "model_index.json").is_file() and (checkpoint / "tokenizer" / "tokenizer.json").is_file()
    assert (checkpoint / "image_processor" / "preprocessor_config.json").is_file()
    assert (checkpoint / "scheduler" / "scheduler_config.json").is_file()
    from safetensors import safe_open

    with safe_open(str(next((checkpoint / "transformer").glob("*.safetensors"))), framework="pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16


def test_condition_latents_and_mask_equal_prepare_latents(checkpoint, pipeline):
    image = reference_image()
    # The pipeline preprocesses a PIL image to [-1, 1] itself; ours reads uint8 frames: the same numbers.
    pixels = pipeline.video_processor.preprocess(Image.fromarray(image), height=RES, width=RES).to(torch.float32)
    ours_pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    torch.testing.assert_close(ours_pixels, pixels, rtol=0, atol=1e-6)

    _, condition = pipeline.prepare_latents(pixels, 2, Z, RES, RES, FRAMES, torch.float32, torch.device("cpu"),
                                            torch.Generator().manual_seed(0))
    vae = load_vae(checkpoint).float()
    ours = i2v_condition(encode_condition(vae, torch.from_numpy(np.stack([image, image])), FRAMES))
    assert ours.shape == condition.shape == (2, 4 + Z, 3, RES // 8, RES // 8)
    torch.testing.assert_close(ours, condition, rtol=1e-5, atol=1e-5)
    assert ours[:, 4:, 1:].abs().max() > 0  # frames 1.. are the VAE's encoding of zero frames, not zeros


def test_image_tokens_equal_encode_image(checkpoint, pipeline):
    images = [reference_image(0), reference_image(1)]
    expected = pipeline.encode_image(images, torch.device("cpu"))
    ours = load_image_encoder(checkpoint, image_dim=CLIP_DIM)(np.stack(images))
    assert ours.shape == expected.shape == (2, (32 // 8) ** 2 + 1, CLIP_DIM)  # patches + class token
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_portrait_forward_is_the_pipeline_transformer_call(checkpoint, pipeline, monkeypatch):
    """With zero-initialised modulation, our whole input (noisy | mask | condition, 512 padded text tokens,
    CLIP tokens) gives the pipeline transformer's velocity."""
    from diffusers.pipelines.wan import pipeline_wan_i2v

    # The pipeline cleans prompts with ftfy (not installed here); for this ASCII prompt that is the identity.
    monkeypatch.setattr(pipeline_wan_i2v, "ftfy", SimpleNamespace(fix_text=lambda text: text), raising=False)
    image = reference_image()
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    latents, condition = pipeline.prepare_latents(pixels, 1, Z, RES, RES, FRAMES, torch.float32, torch.device("cpu"),
                                                  torch.Generator().manual_seed(0))
    prompt_embeds, _ = pipeline.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=512)
    image_embeds = pipeline.encode_image(image, torch.device("cpu"))
    timestep = torch.tensor([700.0])
    with torch.no_grad():
        expected = pipeline.transformer(torch.cat([latents, condition], dim=1), timestep=timestep,
                                        encoder_hidden_states=prompt_embeds, encoder_hidden_states_image=image_embeds,
                                        return_dict=False)[0]
    cfg = portrait_config(checkpoint)
    model = PortraitModel(cfg, load_backbone(checkpoint).float()).eval()
    text = TextEncoder(cfg.text)
    text.model.float()  # transformers keeps the stored bf16; the pipeline was loaded in fp32
    text_emb = text([PROMPT])
    assert text_emb.shape == prompt_embeds.shape == (1, 512, TEXT_DIM)
    torch.testing.assert_close(text_emb, prompt_embeds, rtol=1e-5, atol=1e-5)
    encoder = image_encoder_for(cfg.backbone, cfg.image_encoder)
    cond_latents = encode_condition(load_vae(checkpoint).float(), torch.from_numpy(image)[None], FRAMES)
    with torch.no_grad():
        ours = model(latents, timestep, cond_latents, None, None, text_emb, image_emb=encoder(image[None]))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="image_dim = 16: it needs image_emb"):
        model(latents, timestep, cond_latents, None, None, text_emb)
    with pytest.raises(ValueError, match="512"):
        model(latents, timestep, cond_latents, None, None, text_emb[:, :16], image_emb=encoder(image[None]))


def test_bundle_carries_the_image_encoder_in_the_real_layout(checkpoint, tmp_path):
    from components.inference.animate import animate

    cfg = portrait_config(checkpoint)
    model = PortraitModel.from_config(cfg)
    vae = load_vae(checkpoint)
    meta = BundleMeta(variant="tiny-i2v", fps=25, resolution=RES, frames=FRAMES, sample_rate=16000,
                      audio=BundleAudio(features="mel", n_mels=40, tokens_per_frame=4), default_prompt=PROMPT)
    encoder = image_encoder_for(cfg.backbone, cfg.image_encoder)
    text = TextEncoder(cfg.text)
    text.model.float()  # the stored bf16 text encoder's precision handling is not what this test is about
    bundle = ModelBundle(meta, model, vae, text, image_encoder=encoder)
    path = save_bundle(tmp_path / "bundle", bundle)
    assert (path / "image_encoder" / "config.json").is_file()
    assert (path / "image_processor" / "preprocessor_config.json").is_file()
    loaded = load_plain_bundle(path)
    image = reference_image()
    torch.testing.assert_close(loaded.image_encoder(image[None]), encoder(image[None]), rtol=0, atol=1e-6)
    video = animate(loaded, image, np.zeros(16000 * 9 // 25, np.float32), 16000, steps=1)
    assert video.shape == (9, RES, RES, 3) and video.dtype == np.uint8

    no_encoder = r"without: parts do not fit together: the transformer has image_dim = 16 but there is no image encoder"
    with pytest.raises(BundleError, match=no_encoder):
        save_bundle(tmp_path / "without", ModelBundle(meta, model, vae, text))
    shutil.rmtree(path / "image_encoder")
    with pytest.raises(BundleError, match=r"missing image_encoder/config.json \(transformer/config.json has image_dim = 16"):
        load_plain_bundle(path)


def test_missing_image_encoder_dir_is_named_with_the_key(checkpoint, tmp_path):
    root = tmp_path / "no-clip"
    shutil.copytree(checkpoint, root, ignore=shutil.ignore_patterns("image_encoder"))
    backbone = BackboneConfig(pretrained_path=str(root), latent_channels=Z, text_dim=TEXT_DIM)
    with pytest.raises(FileNotFoundError, match=rf"{root}: no image_encoder/config.json \(the transformer has image_dim = 16"):
        image_encoder_for(backbone, ImageEncoderConfig(pretrained_path=str(root)))
    with pytest.raises(ValueError, match="backbone.image_dim = 16 .* needs image_encoder.pretrained_path"):
        PortraitModelConfig.model_validate({**portrait_config(checkpoint).model_dump(), "image_encoder": None})
