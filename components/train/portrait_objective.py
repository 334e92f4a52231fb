"""Flow-matching training of the portrait model on cached VAE latents (pretrain_dit, phase1, phase2).

A global micro-batch is a pure function of the generator the training loop derives from (seed, step, micro):
which windows, the noise, the noise levels and the condition dropout are all drawn from it. The loop gives each
process its contiguous rows (`loop.sliced`), so 1 process and N processes see exactly the same global batch,
and a resumed run sees the batches it would have seen without the interruption.
"""

from __future__ import annotations

import torch

from components.config import FlowTrainConfig
from components.model.flow import add_noise, sigma_to_timestep
from components.model.portrait import PortraitModel
from components.train.flow_matching import flow_matching_loss, sample_timesteps


def global_flow_batch(
    data: dict[str, torch.Tensor], cfg: FlowTrainConfig, rows: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The whole micro-batch for one (step, micro): windows, noise, sigma and condition dropout.

    `data` holds `latents` [N,z,T',h,w] (normalised, latent frame 0 = the reference frame), the I2V condition of
    each window, `cond` [N,z,T',h,w] and, for backbones with image tokens, `image_emb` [N,tokens,d] (latent cache,
    LatentCache.condition), `audio` [N,T,tok,d] and `pose` [N,T,J,3].
    """
    n_windows = data["latents"].shape[0]
    index = torch.randint(n_windows, (rows,), generator=generator)
    latents = data["latents"][index]
    image = {"image_emb": data["image_emb"][index]} if "image_emb" in data else {}
    return {
        "latents": latents,
        "cond": data["cond"][index],
        **image,
        "audio": data["audio"][index],
        "pose": data["pose"][index],
        "noise": torch.randn(latents.shape, generator=generator),
        "sigma": sample_timesteps(rows, cfg.timestep_shift, generator),
        "drop_audio": torch.rand(rows, generator=generator) < cfg.audio_dropout,
        "drop_pose": torch.rand(rows, generator=generator) < cfg.pose_dropout,
    }


def flow_loss(
    model: PortraitModel, batch: dict[str, torch.Tensor], text_emb: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Velocity MSE for one batch; conditions the model has no modulation for are not passed."""
    latents = batch["latents"]
    x_t, target = add_noise(latents, batch["noise"], batch["sigma"])
    modulation = getattr(model, "module", model).cfg.modulation  # DDP wraps the model
    velocity = model(
        x_t,
        timestep=sigma_to_timestep(batch["sigma"]),
        cond_latents=batch["cond"],
        audio_feats=batch["audio"] if modulation.audio.enabled else None,
        pose=batch["pose"] if modulation.skeleton.enabled else None,
        text_emb=text_emb.to(latents.device).expand(latents.shape[0], -1, -1),  # the loop moves only the batch
        drop_audio=batch["drop_audio"] if modulation.audio.enabled else None,
        drop_pose=batch["drop_pose"] if modulation.skeleton.enabled else None,
        image_emb=batch.get("image_emb"),
    )
    loss = flow_matching_loss(velocity, target)
    return loss, {"loss": loss.item()}
