"""Flow-matching training of the portrait model on cached VAE latents (pretrain_dit, phase1, phase2).

A global micro-batch is a pure function of (seed, step, micro): which windows, the noise, the noise levels and
the condition dropout are all drawn from one generator seeded by those three numbers. Each process then takes
its contiguous slice, so 1 process and N processes see exactly the same global batch, and a resumed run sees
the batches it would have seen without the interruption.
"""

from __future__ import annotations

import torch

from components.config import FlowTrainConfig
from components.model.portrait import PortraitModel
from components.train.flow_matching import add_noise, flow_matching_loss, sample_timesteps, sigma_to_timestep


def batch_generator(seed: int, step: int, micro: int) -> torch.Generator:
    # Large odd multipliers keep (step, micro) pairs from colliding for any realistic run length.
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7_919 + micro)


def global_flow_batch(
    data: dict[str, torch.Tensor], cfg: FlowTrainConfig, step: int, micro: int = 0
) -> dict[str, torch.Tensor]:
    """The whole micro-batch for one (step, micro): windows, noise, sigma and condition dropout.

    `data` holds `latents` [N,z,T',h,w] (normalised, latent frame 0 = the reference frame), `audio` [N,T,tok,d]
    and `pose` [N,T,J,3].
    """
    generator = batch_generator(cfg.seed, step, micro)
    n_windows = data["latents"].shape[0]
    index = torch.randint(n_windows, (cfg.batch_size,), generator=generator)
    latents = data["latents"][index]
    return {
        "latents": latents,
        "audio": data["audio"][index],
        "pose": data["pose"][index],
        "noise": torch.randn(latents.shape, generator=generator),
        "sigma": sample_timesteps(cfg.batch_size, cfg.timestep_shift, generator),
        "drop_audio": torch.rand(cfg.batch_size, generator=generator) < cfg.audio_dropout,
        "drop_pose": torch.rand(cfg.batch_size, generator=generator) < cfg.pose_dropout,
    }


def process_slice(batch: dict[str, torch.Tensor], process_index: int, num_processes: int) -> dict[str, torch.Tensor]:
    """This process's contiguous share of a global batch (the batch size must divide evenly)."""
    size = next(iter(batch.values())).shape[0]
    if size % num_processes:
        raise ValueError(f"batch of {size} does not split evenly over {num_processes} processes")
    share = size // num_processes
    lo = process_index * share
    return {key: value[lo : lo + share] for key, value in batch.items()}


def flow_loss(
    model: PortraitModel, batch: dict[str, torch.Tensor], text_emb: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Velocity MSE for one batch; conditions the model has no modulation for are not passed."""
    latents = batch["latents"]
    x_t, target = add_noise(latents, batch["noise"], batch["sigma"])
    modulation = model.cfg.modulation
    velocity = model(
        x_t,
        timestep=sigma_to_timestep(batch["sigma"]),
        ref_latents=latents[:, :, :1],
        audio_feats=batch["audio"] if modulation.audio.enabled else None,
        pose=batch["pose"] if modulation.skeleton.enabled else None,
        text_emb=text_emb.expand(latents.shape[0], -1, -1),
        drop_audio=batch["drop_audio"] if modulation.audio.enabled else None,
        drop_pose=batch["drop_pose"] if modulation.skeleton.enabled else None,
    )
    loss = flow_matching_loss(velocity, target)
    return loss, {"loss": loss.item()}
