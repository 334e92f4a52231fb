"""Fixtures shared by tests of several components packages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from components.config import (
    AudioModulationConfig,
    Params,
    PortraitModelConfig,
    SamplingConfig,
    SkeletonModulationConfig,
    TrainingDataConfig,
    VaeConfig,
)


def _trained_looking(model, seed: int = 1):
    """Non-zero motion cross-attention outputs (they start at zero), so audio and pose change the velocity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                out = attn.attn.to_out[0]
                out.weight.copy_(torch.randn(out.weight.shape, generator=g) * 0.2)
                out.bias.copy_(torch.randn(out.bias.shape, generator=g) * 0.2)
    return model


@pytest.fixture(scope="session")
def make_tiny_bundle() -> Callable[..., object]:
    """make(features="wav2vec"|"mel", skeleton=False) -> a ModelBundle of tiny random parts (defaults' sizes)."""
    from components.model.bundle import BundleMeta, ModelBundle
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.model.vae import build_vae, set_latent_stats

    def make(features: str = "wav2vec", skeleton: bool = False) -> ModelBundle:
        if features == "wav2vec":
            audio = AudioModulationConfig(in_dim=32, tokens_per_frame=2)  # tiny wav2vec2: 2 tokens x 32 per frame
        else:
            audio = AudioModulationConfig(in_dim=40, tokens_per_frame=4)  # log-mel: 4 frames x 40 mels per frame
        sk = SkeletonModulationConfig(enabled=skeleton, n_joints=10, grid=(2, 2), n_down=1, channels=8, feat_dim=8)
        cfg = PortraitModelConfig.tiny(audio=audio, skeleton=sk)
        model = _trained_looking(PortraitModel.from_config(cfg)).eval()
        vae = build_vae(VaeConfig())
        z = vae.config.z_dim
        set_latent_stats(vae, [0.1 * i for i in range(z)], [1.0 + 0.05 * i for i in range(z)])
        params = Params(
            data=TrainingDataConfig(audio_features=features), model=cfg, sampling=SamplingConfig(steps=3)
        )
        meta = BundleMeta.from_params(params, variant=f"tiny-{features}", lineage={"run_id": "abc", "phase": "phase1"})
        return ModelBundle(meta, model, vae, TextEncoder(cfg.text))

    return make
