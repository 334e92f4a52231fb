"""Params of the models: the portrait DiT (backbone, text encoder, motion modulation) and the video VAE."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict
from components.config.data import AudioEncoderConfig, Wav2Vec2Tiny

TemporalVariant = Literal["reshape", "half", "downsample"]
NullMode = Literal["zero", "learned"]
WAN_TEXT_TOKENS = 512  # text tokens diffusers' Wan attention assumes when image tokens precede them
# Storage dtype of frozen pretrained weights (bfloat16 on the cluster; diffusers keeps its _keep_in_fp32_modules in
# fp32); trainable weights are always float32 (components/model/precision.py).
WeightDtype = Literal["float32", "bfloat16"]


class AudioModulationConfig(Strict):
    enabled: bool = True
    # What data.audio_features hands the modulation per video frame: log-mel (the toy default) is 4 frames of
    # ingest.audio.n_mels = 40; wav2vec is ingest.audio.tokens_per_frame tokens of the encoder's hidden size.
    in_dim: int = Field(40, ge=1)
    tokens_per_frame: int = Field(4, ge=1)  # N_a: audio tokens per video frame
    # Neighbouring frames on each side appended to each frame's tokens. Keep 0 for the temporal ablation:
    # a window lets "downsample" see the frames it is meant to drop.
    window: int = Field(0, ge=0)
    temporal: TemporalVariant = "reshape"
    slot_embedding: bool = True
    null: NullMode = "learned"  # what replaces dropped audio (classifier-free guidance)


class SkeletonModulationConfig(Strict):
    enabled: bool = False  # phase 2 turns it on
    # Heatmap channels, one per joint of ingest.keypoints.joints (Params checks the two agree; kept here because
    # the model config travels alone in checkpoints and bundles).
    n_joints: int = Field(10, ge=1)
    # Tokens per frame = grid_h * grid_w. The paper reduces to the latent grid H' x W'; the default is the
    # transformer's patch grid at 64 px (latent 8x8, patch 2), which is ~10x cheaper on CPU.
    grid: tuple[int, int] = (4, 4)
    n_down: int = Field(2, ge=0)  # heatmaps are rendered at grid * 2**n_down and convolved down to grid
    sigma: float = Field(1.0, gt=0)  # Gaussian radius in heatmap pixels
    channels: int = Field(32, ge=1)
    feat_dim: int = Field(32, ge=1)  # d_k
    temporal: TemporalVariant = "reshape"
    slot_embedding: bool = True
    null: NullMode = "learned"


class ModulationConfig(Strict):
    rho: int = Field(4, ge=1)  # VAE temporal compression
    heads: int | None = None  # None -> as many heads as the backbone
    # joint: one cross-attention over [H_audio || H_skel] (eq. 8). separate: one zero-initialised
    # cross-attention per modality, so phase 2 adds its own "skeletal cross-attention" (section 3.5) and
    # starts from exactly the phase-1 model.
    fusion: Literal["joint", "separate"] = "separate"
    audio: AudioModulationConfig = AudioModulationConfig()
    skeleton: SkeletonModulationConfig = SkeletonModulationConfig()


class BackboneConfig(Strict):
    # Local Wan checkpoint root (with `transformer/`) or transformer directory; None -> a randomly initialised
    # backbone of these dimensions.
    pretrained_path: str | None = None
    latent_channels: int = Field(16, ge=1)  # VAE z_dim; the backbone takes 2*z + 4 input channels
    num_attention_heads: int = Field(4, ge=1)
    attention_head_dim: int = Field(16, ge=2)
    num_layers: int = Field(4, ge=1)
    ffn_dim: int = Field(256, ge=1)
    text_dim: int = Field(32, ge=1)
    freq_dim: int = Field(32, ge=2)
    patch_size: tuple[int, int, int] = (1, 4, 4)  # toy: 16x16 latent -> 4x4 tokens per frame (Wan2.1: (1, 2, 2))
    # I2V image context (Wan2.1-I2V: CLIP 1280-d tokens, added k/v at model width); None -> no image tokens.
    image_dim: int | None = Field(None, ge=1)
    added_kv_proj_dim: int | None = Field(None, ge=1)
    dtype: WeightDtype = "float32"  # frozen weights' dtype (load with torch_dtype)
    seed: int = 0


class TextEncoderConfig(Strict):
    # Local Wan checkpoint root with `text_encoder/` (umT5) and `tokenizer/`; None -> tiny random umT5 over bytes.
    pretrained_path: str | None = None
    max_length: int = Field(16, ge=2)  # Wan uses 512
    d_model: int = Field(32, ge=2)  # must equal backbone.text_dim
    num_layers: int = Field(1, ge=1)
    num_heads: int = Field(2, ge=1)
    d_ff: int = Field(64, ge=1)
    dtype: WeightDtype = "float32"  # the frozen encoder's weights; its embeddings are handed on in float32
    seed: int = 0


class ImageEncoderConfig(Strict):
    # Local Wan I2V checkpoint root with `image_encoder/` (CLIP vision) and `image_processor/` (CLIPImageProcessor):
    # the reference frame's CLIP hidden_states[-2] become the transformer's image tokens, as WanImageToVideoPipeline
    # does. Needed exactly when the backbone has image_dim (Wan2.1-I2V); the toy profile has none.
    pretrained_path: str
    dtype: WeightDtype = "float32"  # the Wan pipeline runs its CLIP in float32


class PortraitModelConfig(Strict):
    backbone: BackboneConfig = BackboneConfig()
    text: TextEncoderConfig = TextEncoderConfig()
    image_encoder: ImageEncoderConfig | None = None  # None: no CLIP image tokens (toy; backbones without image_dim)
    modulation: ModulationConfig = ModulationConfig()
    seed: int = 0  # initialisation of the modulation layers
    # Parts loaded unchanged from a checkpoint (backbone, VAE, encoders): copied into every bundle, or referenced
    # by checkpoint root + sha256 (components/model/pretrained_refs.py; the cluster profiles: no 30-65 GB copies).
    pretrained_in_bundles: Literal["copy", "reference"] = "copy"

    @model_validator(mode="after")
    def _image_tokens_configured(self) -> PortraitModelConfig:
        # diffusers' Wan attention takes the last 512 context tokens as text and the ones before as image tokens.
        image_dim = self.backbone.image_dim
        if image_dim is not None and self.image_encoder is None:
            raise ValueError(f"backbone.image_dim = {image_dim} (CLIP image tokens) needs image_encoder.pretrained_path")
        if image_dim is None and self.image_encoder is not None:
            raise ValueError("image_encoder is set but backbone.image_dim is null (the backbone takes no image tokens)")
        if image_dim is not None and self.text.max_length != WAN_TEXT_TOKENS:
            raise ValueError(f"text.max_length must be {WAN_TEXT_TOKENS} with image tokens (diffusers' Wan attention "
                             f"slices the last {WAN_TEXT_TOKENS} context tokens as text), got {self.text.max_length}")
        return self

    @model_validator(mode="after")
    def _text_width_matches(self) -> PortraitModelConfig:
        tiny = self.backbone.pretrained_path is None and self.text.pretrained_path is None
        if tiny and self.text.d_model != self.backbone.text_dim:
            raise ValueError(
                f"text.d_model ({self.text.d_model}) must equal backbone.text_dim ({self.backbone.text_dim})"
            )
        return self

    @classmethod
    def tiny(cls, **modulation: object) -> PortraitModelConfig:
        """A model smaller than the toy profile's (PortraitModelConfig() is that one), for unit tests: 2 layers of
        2 heads, joint fusion, and audio modulation sized for the tiny random wav2vec2 (ingest.audio.tiny's hidden
        size x its tokens per frame). Keyword arguments override ModulationConfig fields."""
        audio = AudioModulationConfig(in_dim=Wav2Vec2Tiny().hidden_size, tokens_per_frame=AudioEncoderConfig().tokens_per_frame)
        fields: dict[str, object] = {"fusion": "joint", "audio": audio, **modulation}
        return cls(backbone=BackboneConfig(num_attention_heads=2, num_layers=2, ffn_dim=64),
                   modulation=ModulationConfig.model_validate(fields))


class VaeConfig(Strict):
    # Local directory of a Wan checkpoint (with a `vae/` subfolder) or of the VAE itself; None -> tiny random VAE.
    pretrained_path: str | None = None
    base_dim: int = Field(16, ge=8)
    z_dim: int = Field(16, ge=1)
    dim_mult: tuple[int, ...] = (1, 2, 2)  # spatial compression 2^(len - 1): 4x (toy); Wan2.1 [1, 2, 4, 4] = 8x
    num_res_blocks: int = Field(1, ge=1)
    temperal_downsample: tuple[bool, ...] = (True, True)  # upstream spelling; one per downsampling: len(dim_mult) - 1
    dtype: WeightDtype = "float32"  # frozen VAE weights' dtype (load with torch_dtype)
    seed: int = 0

    @model_validator(mode="after")
    def _one_temporal_flag_per_downsampling(self) -> VaeConfig:
        # diffusers reads temperal_downsample[i] for i < len(dim_mult) - 1 in the encoder but reverses the whole list
        # for the decoder: a list of another length silently gives encoder and decoder different time ratios.
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries (one per "
                             f"downsampling), got {len(self.temperal_downsample)}")
        return self
