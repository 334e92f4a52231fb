"""The toy video VAE's recipe (pretrain_vae stage): a short warm-up on single frames, then full windows, with
the mouth region weighted; then per-channel latent statistics, the reconstruction report, and the save."""

from __future__ import annotations

from pathlib import Path

import torch

from components.config import ImageCorpusConfig, Params
from components.data.synthetic.image_corpus import render_image_corpus
from components.data.windows import Window, split_windows
from components.io.atomic import atomic_directory
from components.model.vae import (
    build_vae,
    encode_video,
    latent_stats,
    per_frame_init,
    set_latent_stats,
    single_frame_convs,
)
from components.train.checkpoint_keys import checkpoint_dir, shards_digest
from components.train.loop import TrainResult, run_training, sliced
from components.train.objective import Objective
from components.train.vae_objective import box_mask, reconstruction_report, vae_loss, window_batch


def corpus_stills(cfg: ImageCorpusConfig, like: Window, mouth_width_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames uint8 [N,H,W,3], mouth masks float [N,H,W]) of the image corpus at the shards' resolution."""
    resolution = like.frames.shape[1]
    corpus = render_image_corpus(cfg.identities, cfg.frames_per_identity, resolution, cfg.seed, mouth_width_frac)
    return torch.from_numpy(corpus.frames), torch.from_numpy(box_mask(corpus.mouth_box, resolution, resolution))


def pretrain_vae(params: Params, log_fn_for=lambda prefix: None, is_main: bool = True) -> tuple[dict, dict]:
    """Train the VAE on params' shards and save it to pretrain_vae.output (main process only). Returns the
    training summary and the validation reconstruction report (empty on other processes). `log_fn_for(prefix)`
    gives each training phase its log_fn (the flow passes MLflow's)."""
    cfg = params.pretrain_vae
    frames = params.data.frames
    train = split_windows(params.data.shards, "train", frames, params.data.window_stride)
    val = split_windows(params.data.shards, "val", frames, params.data.window_stride)
    vae = build_vae(params.vae)
    if cfg.init == "per_frame":
        per_frame_init(vae)

    def window_rows(step: int, micro: int, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(train), (rows,), generator=generator).tolist()
        video, mouth_mask = window_batch([train[i] for i in picks])
        return {"frames": video, "mouth_mask": mouth_mask}

    use_corpus = cfg.image_corpus is not None and cfg.image_steps > 0  # only the image phase draws stills
    corpus = corpus_stills(cfg.image_corpus, train[0], params.world.mouth_width_frac) if use_corpus else None

    def image_rows(step: int, micro: int, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        picks = torch.randint(len(train), (rows,), generator=generator).tolist()
        at = torch.randint(frames, (rows,), generator=generator).tolist()
        video, mouth_mask = window_batch([train[i] for i in picks])
        index = torch.arange(rows)
        still, still_mask = video[index, at], mouth_mask[index, at]
        if corpus is not None:  # each row: a corpus still with probability `share`, else the train frame
            from_corpus = torch.rand(rows, generator=generator) < cfg.image_corpus.share
            drawn = torch.randint(len(corpus[0]), (rows,), generator=generator)
            still = torch.where(from_corpus[:, None, None, None], corpus[0][drawn], still)
            still_mask = torch.where(from_corpus[:, None, None], corpus[1][drawn], still_mask)
        return {"frames": still[:, None], "mouth_mask": still_mask[:, None]}

    objective = Objective(lambda m, batch: vae_loss(m, batch["frames"], batch["mouth_mask"], cfg), vae)

    def train_phase(name: str, batch_fn, phase_cfg, log_prefix: str = "") -> TrainResult:
        return run_training(
            name=name, model=objective, trainable=list(vae.parameters()), batch_fn=sliced(batch_fn), cfg=phase_cfg,
            ckpt_dir=checkpoint_dir(name, phase_cfg.model_dump(), params.vae.model_dump(), shards_digest(params.data.shards)),
            log_fn=log_fn_for(log_prefix),
        )

    if cfg.image_steps:
        image_optim = cfg.optim.model_copy(update={"lr": cfg.image_lr or cfg.optim.lr})
        image_cfg = cfg.model_copy(update={"steps": cfg.image_steps, "batch_size": cfg.image_batch_size, "optim": image_optim})
        with single_frame_convs(vae):  # exact, and ~1.5x faster per image step
            train_phase("pretrain_vae_image", image_rows, image_cfg, "image.")
    result = train_phase("pretrain_vae", window_rows, cfg)  # its cfg includes image_steps: a new recipe restarts it
    summary = {"train_windows": len(train), "val_windows": len(val), **result.summary()}
    if not is_main:  # rank 0 measures, saves and reports; the weights are identical on every rank
        return summary, {}
    vae.eval()
    with torch.no_grad():
        sample = [train[i] for i in range(0, len(train), max(1, len(train) // 64))]
        raw = torch.cat([encode_video(vae, window_batch([w])[0]) for w in sample])  # stats still 0/1 here
    set_latent_stats(vae, *latent_stats(raw))
    with atomic_directory(Path(cfg.output)) as tmp:  # never half a model on disk
        vae.save_pretrained(tmp)
    return summary, reconstruction_report(vae, val)
