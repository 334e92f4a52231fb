"""A tiny Wan2.1-I2V checkpoint in the real diffusers layout (model_index.json, transformer/, vae/, text_encoder/ umT5,
tokenizer/, image_encoder/ CLIP vision, image_processor/, scheduler/), written by WanImageToVideoPipeline's own
save_pretrained with the weights stored in bf16, as the released checkpoints are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from components.config import (
    AudioModulationConfig,
    BackboneConfig,
    ImageEncoderConfig,
    ModulationConfig,
    PortraitModelConfig,
    TextEncoderConfig,
)

Z, RES, FRAMES, TEXT_DIM, CLIP_DIM = 4, 32, 9, 16, 16
PROMPT = "a person talking to the camera"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built offline with the tokenizers API (pad 0, end 1), standing in for umT5's."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(PROMPT.split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def save_tiny_wan_checkpoint(root: Path) -> Path:
    """model_index.json, transformer/, vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/,
    scheduler/: written by the pipeline's own save_pretrained, weights stored in bf16."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                               num_heads=2, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=8, z_dim=Z, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           temperal_downsample=[False, True, True],
                           latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[0.5, 2.0, 1.0, 1.5])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=2 * Z + 4, out_channels=Z, text_dim=TEXT_DIM, freq_dim=16,
                                        ffn_dim=32, num_layers=2, image_dim=CLIP_DIM, added_kv_proj_dim=16)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=CLIP_DIM, intermediate_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, patch_size=8))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder.to(torch.bfloat16), vae=vae.to(torch.bfloat16),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), image_processor=image_processor,
        image_encoder=image_encoder.to(torch.bfloat16), transformer=transformer.to(torch.bfloat16),
    )
    pipe.save_pretrained(root, safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def wan_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_wan_checkpoint(tmp_path_factory.mktemp("ckpt") / "Wan2.1-I2V-tiny-Diffusers")


def wan_portrait_config(root, **changes) -> PortraitModelConfig:
    return PortraitModelConfig(
        backbone=BackboneConfig(pretrained_path=str(root), latent_channels=Z, text_dim=TEXT_DIM, image_dim=CLIP_DIM,
                                added_kv_proj_dim=16),
        text=TextEncoderConfig(pretrained_path=str(root), max_length=512, d_model=TEXT_DIM),
        image_encoder=ImageEncoderConfig(pretrained_path=str(root)),
        modulation=ModulationConfig(fusion="joint", audio=AudioModulationConfig(in_dim=40, tokens_per_frame=4)),
        **changes,
    )
