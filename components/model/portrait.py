"""The talking-portrait model: a diffusers `WanTransformer3DModel` (image-to-video) + motion modulation.

Inputs to the transformer follow Wan2.1 I2V exactly (i2v_conditioning.py): channels [noisy latents | mask (4) |
condition latents], the condition being the normalised VAE encoding of [reference frame, zero frames], and, for
backbones with image_dim, the reference's CLIP tokens as `encoder_hidden_states_image`.

Motion modulation (modulation.py) is injected without touching diffusers: every `WanTransformerBlock` in
`transformer.blocks` is replaced by a `ModulatedWanBlock` that runs the original block, then adds the
frame-aligned motion cross-attention. Wan blocks take no extra conditioning, so `PortraitModel.forward`
hands the motion tokens to the wrappers for the duration of one forward call. Gradient checkpointing must use
`PortraitModel.enable_gradient_checkpointing()`: its checkpoint function passes the tokens to the checkpointed
call explicitly, so the recomputation in backward sees the very tokens of that forward (several forwards
before one backward, as in DPO, stay correct).

Saving: `save_pretrained(dir)` writes `transformer/` in diffusers format (bare blocks: loads into a plain
WanTransformer3DModel), `modulation.safetensors` and `portrait_config.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.utils.checkpoint
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from safetensors import safe_open
from safetensors.torch import save_file

from components.config import BackboneConfig, PortraitModelConfig
from components.io.atomic import atomic_directory, atomic_file
from components.model.i2v_conditioning import MASK_CHANNELS, WAN_TEXT_TOKENS, i2v_condition
from components.model.modulation import (
    AudioModulation,
    FrameAlignedCrossAttention,
    SkeletonModulation,
    latent_length,
)
from components.model.precision import frozen_precision_autocast, torch_dtype
from components.model.vae import resolve_component_dir

MODULATION_FILE = "modulation.safetensors"
CONFIG_FILE = "portrait_config.json"


def load_backbone(local_dir: str | Path, dtype: torch.dtype = torch.float32) -> WanTransformer3DModel:
    """A pretrained WanTransformer3DModel from a local checkpoint root or transformer directory (never downloads),
    stored in `dtype` (diffusers keeps its _keep_in_fp32_modules in float32)."""
    root, subfolder = resolve_component_dir(local_dir, "transformer")
    try:
        return WanTransformer3DModel.from_pretrained(root, subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{local_dir}: could not load WanTransformer3DModel: {exc}") from exc


def _checkpoint_root(path: str | Path) -> Path | None:
    """The root holding `transformer/` that `path` names (None: a bare transformer directory, not referenceable)."""
    root, subfolder = resolve_component_dir(path, "transformer")
    return root.resolve() if subfolder == "transformer" else None


def build_backbone(cfg: BackboneConfig) -> WanTransformer3DModel:
    if cfg.pretrained_path is not None:
        return load_backbone(cfg.pretrained_path, torch_dtype(cfg.dtype))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return WanTransformer3DModel(
            patch_size=cfg.patch_size,
            num_attention_heads=cfg.num_attention_heads,
            attention_head_dim=cfg.attention_head_dim,
            in_channels=2 * cfg.latent_channels + MASK_CHANNELS,
            out_channels=cfg.latent_channels,
            text_dim=cfg.text_dim,
            freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim,
            num_layers=cfg.num_layers,
            image_dim=cfg.image_dim,
            added_kv_proj_dim=cfg.added_kv_proj_dim,
        )


# ---------------------------------------------------------------- block wrapper


class ModulatedWanBlock(nn.Module):
    """A WanTransformerBlock followed by the frame-aligned motion cross-attention(s): Z' = block(Z) + Attn(Z, H)."""

    def __init__(self, block: WanTransformerBlock, attentions: dict[str, FrameAlignedCrossAttention]):
        super().__init__()
        self.block = block
        self.motion_attn = nn.ModuleDict(attentions)
        self.motion: dict[str, torch.Tensor] | None = None  # set by PortraitModel for one forward call

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb, motion=None) -> torch.Tensor:
        # Same positional signature as WanTransformerBlock, so WanTransformer3DModel.forward calls it unchanged;
        # `motion` is given explicitly by the checkpoint function (it goes through the module call, so FSDP's
        # pre-forward hook gathers the block's weights at the recompute too).
        return self.forward_with_motion(hidden_states, encoder_hidden_states, temb, rotary_emb,
                                        self.motion if motion is None else motion)

    def forward_with_motion(self, hidden_states, encoder_hidden_states, temb, rotary_emb, motion) -> torch.Tensor:
        hidden_states = self.block(hidden_states, encoder_hidden_states, temb, rotary_emb)
        for name, tokens in (motion or {}).items():
            hidden_states = hidden_states + self.motion_attn[name](hidden_states, tokens)
        return hidden_states


def checkpoint_modulated_block(block: nn.Module, *args):
    """Gradient-checkpoint function for WanTransformer3DModel whose blocks may be ModulatedWanBlocks.

    The motion tokens are read now, at forward time, and passed to `checkpoint` as an input, so the
    recomputation during backward uses them even if another forward has set different tokens since.
    """
    if isinstance(block, ModulatedWanBlock):
        return torch.utils.checkpoint.checkpoint(block, *args, block.motion, use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)


# ---------------------------------------------------------------- the model


class PortraitModel(nn.Module):
    """Velocity model v(x_t, t | reference, audio, skeleton, text) for flow matching."""

    def __init__(self, cfg: PortraitModelConfig, transformer: WanTransformer3DModel):
        super().__init__()
        self.cfg = cfg
        bcfg, mcfg = transformer.config, cfg.modulation
        z = cfg.backbone.latent_channels
        if bcfg.in_channels != 2 * z + MASK_CHANNELS or bcfg.out_channels != z:
            raise ValueError(
                f"backbone has in/out channels {bcfg.in_channels}/{bcfg.out_channels}; an I2V backbone for "
                f"{z} latent channels needs {2 * z + MASK_CHANNELS}/{z}"
            )
        if any(isinstance(b, ModulatedWanBlock) for b in transformer.blocks):
            raise ValueError("this transformer already belongs to a PortraitModel (its blocks are wrapped)")
        if bcfg.patch_size[0] != 1:
            raise ValueError(f"frame-aligned modulation needs temporal patch 1, backbone has {tuple(bcfg.patch_size)}")
        dim = bcfg.num_attention_heads * bcfg.attention_head_dim
        heads = mcfg.heads or bcfg.num_attention_heads
        self.rho = mcfg.rho
        self.transformer = transformer
        # The checkpoint root whose transformer/ these backbone weights are, while unchanged (merge_lora clears it):
        # a bundle may then reference it instead of copying it (pretrained_refs.py).
        self.backbone_source: Path | None = None

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.motion = nn.ModuleDict()
            if mcfg.audio.enabled:
                self.motion["audio"] = AudioModulation(mcfg.audio, dim, mcfg.rho)
            if mcfg.skeleton.enabled:
                self.motion["skeleton"] = SkeletonModulation(mcfg.skeleton, dim, mcfg.rho)
            streams = list(self.motion) if mcfg.fusion == "separate" else (["joint"] if len(self.motion) else [])
            for i, block in enumerate(transformer.blocks):
                attentions = {s: FrameAlignedCrossAttention(dim, heads, eps=bcfg.eps) for s in streams}
                transformer.blocks[i] = ModulatedWanBlock(block, attentions)

    @classmethod
    def from_config(cls, cfg: PortraitModelConfig) -> "PortraitModel":
        model = cls(cfg, build_backbone(cfg.backbone))
        if cfg.backbone.pretrained_path is not None:
            model.backbone_source = _checkpoint_root(cfg.backbone.pretrained_path)
        return model

    # -- structure

    def modulated_blocks(self) -> list[ModulatedWanBlock]:
        return [b for b in self.transformer.blocks if isinstance(b, ModulatedWanBlock)]

    def named_modulation_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters added by the modulation, named as in `modulation_state_dict`.

        `motion.audio.*` / `motion.skeleton.*` are eq. 6-7 per modality; `blocks.{i}.{stream}.*` the eq. 8
        cross-attention of block i (stream `joint`, or `audio` / `skeleton` with fusion="separate").
        """
        for name, p in self.motion.named_parameters():
            yield f"motion.{name}", p
        for i, block in enumerate(self.modulated_blocks()):
            for name, p in block.motion_attn.named_parameters():
                yield f"blocks.{i}.{name}", p

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        ours = {id(p) for _, p in self.named_modulation_parameters()}
        return (p for p in self.transformer.parameters() if id(p) not in ours)

    def freeze_backbone(self) -> None:
        for p in self.backbone_parameters():
            p.requires_grad_(False)

    @contextmanager
    def bare_backbone(self) -> Iterator[WanTransformer3DModel]:
        """The transformer with its original blocks in place (for diffusers-format saving)."""
        wrappers = list(self.transformer.blocks)
        for i, w in enumerate(wrappers):
            if isinstance(w, ModulatedWanBlock):
                self.transformer.blocks[i] = w.block
        try:
            yield self.transformer
        finally:
            for i, w in enumerate(wrappers):
                self.transformer.blocks[i] = w

    # -- gradient checkpointing

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint_modulated_block)

    def disable_gradient_checkpointing(self) -> None:
        self.transformer.disable_gradient_checkpointing()

    # -- forward

    def motion_tokens(
        self,
        audio_feats: torch.Tensor | None,
        pose: torch.Tensor | None,
        n_latent: int,
        batch: int,
        drop: dict[str, torch.Tensor | None],
        like: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Projected motion tokens per attention stream, each [B, T', M, dim]. A missing input is its null."""
        inputs = {"audio": audio_feats, "skeleton": pose}
        tokens: dict[str, torch.Tensor] = {}
        for name, feats in inputs.items():
            if name not in self.motion:
                if feats is not None:
                    raise ValueError(f"{name} input given but {name} modulation is disabled in the config")
                continue
            module = self.motion[name]
            if feats is None:
                tokens[name] = module.project.null_tokens(batch, n_latent, like)
                continue
            if feats.shape[0] != batch or latent_length(feats.shape[1], self.rho) != n_latent:
                raise ValueError(
                    f"{name} input {tuple(feats.shape)} does not match {batch} clips of {n_latent} latent frames "
                    f"({self.rho * (n_latent - 1) + 1} video frames)"
                )
            tokens[name] = module(feats.to(like.dtype), drop[name])
        if self.cfg.modulation.fusion == "joint" and tokens:
            return {"joint": torch.cat(list(tokens.values()), dim=2)}  # H = [H_audio || H_skel]
        return tokens

    @property
    def image_dim(self) -> int | None:
        """Width of the CLIP image tokens the backbone takes (Wan2.1-I2V: 1280), None when it takes none."""
        return self.transformer.config.image_dim

    def check_image_tokens(self, image_emb: torch.Tensor | None, text_emb: torch.Tensor) -> None:
        """Image tokens exactly when the backbone has image_dim, and then the 512 text tokens diffusers slices by."""
        if self.image_dim is None:
            if image_emb is not None:
                raise ValueError("image_emb given, but the backbone has no image_dim (it takes no image tokens)")
            return
        if image_emb is None:
            raise ValueError(f"the backbone has image_dim = {self.image_dim}: it needs image_emb (CLIP tokens of the "
                             "reference, i2v_conditioning.ImageEncoder)")
        if image_emb.ndim != 3 or image_emb.shape[-1] != self.image_dim:
            raise ValueError(f"image_emb must be [B, tokens, {self.image_dim}], got {tuple(image_emb.shape)}")
        if text_emb.shape[1] != WAN_TEXT_TOKENS:
            raise ValueError(f"with image tokens the text must have {WAN_TEXT_TOKENS} tokens (diffusers' Wan attention "
                             f"slices the last {WAN_TEXT_TOKENS} as text), got {text_emb.shape[1]}")

    @contextmanager
    def _bound_motion(self, motion: dict[str, torch.Tensor]) -> Iterator[None]:
        blocks = self.modulated_blocks()
        for block in blocks:
            block.motion = motion
        try:
            yield
        finally:
            for block in blocks:
                block.motion = None

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timestep: torch.Tensor,
        cond_latents: torch.Tensor,
        audio_feats: torch.Tensor | None,
        pose: torch.Tensor | None,
        text_emb: torch.Tensor,
        drop_audio: torch.Tensor | None = None,
        drop_pose: torch.Tensor | None = None,
        image_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity [B, z, T', h, w].

        noisy_latents [B,z,T',h,w]; timestep [B] (sigma * 1000); cond_latents [B,z,T',h,w]: the normalised VAE
        encoding of [reference frame, zero frames] (i2v_conditioning.encode_condition, cached by the latents stage);
        audio_feats [B,T,N_a,d_a] and pose [B,T,J,3] with T = 4(T'-1)+1 (None -> null condition);
        text_emb [B,L,text_dim]; drop_audio / drop_pose bool [B] replace that condition by its learned null
        (CFG training / the unconditional pass; also what a missing input becomes); image_emb: CLIP image
        tokens [B, 257, image_dim] (i2v_conditioning.ImageEncoder), required exactly when the backbone has image_dim
        (Wan2.1-I2V); then text_emb must have the 512 tokens diffusers' Wan attention assumes.
        """
        tf = self.transformer
        if tf.gradient_checkpointing and tf._gradient_checkpointing_func is not checkpoint_modulated_block:
            raise RuntimeError("enable gradient checkpointing through PortraitModel.enable_gradient_checkpointing()")
        if noisy_latents.ndim != 5:
            raise ValueError(f"noisy_latents must be [B,z,T',h,w], got {tuple(noisy_latents.shape)}")
        batch, _, n_latent = noisy_latents.shape[:3]
        if cond_latents.shape != noisy_latents.shape:
            raise ValueError(f"cond_latents {tuple(cond_latents.shape)} must have the shape of noisy_latents "
                             f"{tuple(noisy_latents.shape)} (the VAE encoding of [reference, zero frames])")
        self.check_image_tokens(image_emb, text_emb)
        hidden = torch.cat([noisy_latents, i2v_condition(cond_latents.to(noisy_latents.dtype))], dim=1)
        drop = {"audio": drop_audio, "skeleton": drop_pose}
        with frozen_precision_autocast(self, noisy_latents.device):
            motion = self.motion_tokens(audio_feats, pose, n_latent, batch, drop, noisy_latents)
            with self._bound_motion(motion):
                velocity = tf(
                    hidden,
                    timestep=timestep,
                    encoder_hidden_states=text_emb,
                    encoder_hidden_states_image=None if image_emb is None else image_emb.to(noisy_latents.dtype),
                    return_dict=False,
                )[0]
        return velocity.to(noisy_latents.dtype)

    # -- persistence

    def modulation_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_modulation_parameters()}

    def save_modulation(self, path: str | Path) -> None:
        """The modulation weights (everything the backbone lacks) as safetensors, written atomically."""
        tensors = {k: v.contiguous().cpu() for k, v in self.modulation_state_dict().items()}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata={"portrait_config": self.cfg.model_dump_json()})

    def load_modulation(self, path: str | Path, allow_missing: bool = False) -> list[str]:
        """Load modulation weights; returns the names left at their initial values (only with allow_missing,
        e.g. the new skeleton layers when phase 2 starts from a phase-1 file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: modulation weights not found")
        ours = dict(self.named_modulation_parameters())
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            unexpected = sorted(names - ours.keys())
            if unexpected:
                raise ValueError(f"{path}: weights for layers this model does not have: {unexpected[:5]}")
            missing = sorted(ours.keys() - names)
            if missing and not allow_missing:
                raise ValueError(f"{path}: missing weights for {missing[:5]} ({len(missing)} in all)")
            with torch.no_grad():
                for name in names:
                    value = f.get_tensor(name)
                    if value.shape != ours[name].shape:
                        raise ValueError(
                            f"{path}: {name} has shape {tuple(value.shape)}, model expects {tuple(ours[name].shape)}"
                        )
                    ours[name].copy_(value)
        return missing

    def save_pretrained(self, directory: str | Path, backbone: bool = True) -> None:
        """Write `transformer/` (diffusers; left out with backbone=False, for a bundle that references it),
        `modulation.safetensors` and `portrait_config.json`.

        The directory is assembled under a temporary name and swapped in, so a crash never leaves half a model.
        """
        with atomic_directory(directory) as tmp:
            if backbone:
                with self.bare_backbone() as bare:
                    bare.save_pretrained(tmp / "transformer", safe_serialization=True)
            self.save_modulation(tmp / MODULATION_FILE)
            (tmp / CONFIG_FILE).write_text(self.cfg.model_dump_json(indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone_root: str | Path | None = None) -> "PortraitModel":
        """A saved model; its transformer/ from `backbone_root` when given (a bundle that references its backbone),
        stored in the config's backbone dtype."""
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory}: not a saved PortraitModel (no {CONFIG_FILE})")
        try:
            cfg = PortraitModelConfig.model_validate(json.loads(config_file.read_text()))
        except ValueError as exc:
            raise ValueError(f"{config_file}: invalid portrait config: {exc}") from exc
        root = Path(backbone_root) if backbone_root is not None else directory
        backbone = cfg.backbone.model_copy(update={"pretrained_path": str(root)})
        cfg = cfg.model_copy(update={"backbone": backbone})
        model = cls(cfg, load_backbone(root, torch_dtype(cfg.backbone.dtype)))
        model.backbone_source = _checkpoint_root(root)
        model.load_modulation(directory / MODULATION_FILE)
        return model
