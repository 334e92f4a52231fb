"""The dpo stage's recipe: Flow-DPO (train/dpo.py) of a bundle with peft LoRA adapters as the only trainable
weights; the reference is the same model with the adapters off, so no second copy of the weights is held.

The result is exported with the adapters merged into the weights, so it is a bundle like any other variant and
runs in `talkalign animate`; the adapters alone are kept beside it (lora.safetensors) for inspection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from components.config import DpoConfig
from components.io.atomic import atomic_file
from components.model.adapters import add_lora, lora_state_dict, merge_lora
from components.model.bundle import save_bundle
from components.model.loading import load_bundle
from components.model.precision import place_for_training, torch_dtype
from components.preference.pair_data import global_pair_batch, load_pair_tensors, needs_real_clips, reward_gap_weights
from components.train.checkpoint_keys import checkpoint_dir, files_digest
from components.train.dpo import dpo_step_loss
from components.train.fsdp import copy_exported, gather_named, has_sharded_parameters
from components.train.loop import TrainResult, run_training, sliced
from components.train.objective import Objective


@dataclass
class DpoRun:
    result: TrainResult
    n_pairs: int
    lora_layers: int
    pairs_file: Path


def train_dpo(cfg: DpoConfig, log_fn=None, is_main: bool = True, variant: str = "dpo") -> DpoRun:
    """Fine-tune cfg.base_model on cfg.pairs/<pair_set>.jsonl; the main process exports the bundle to cfg.output
    (its meta says `variant`: an online round's name for a round's model)."""
    pairs_file = Path(cfg.pairs) / f"{cfg.pair_set}.jsonl"
    bundle = load_bundle(cfg.base_model)
    model = bundle.model.train()
    targets = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    place_for_training(model, torch_dtype(model.cfg.backbone.dtype))  # LoRA in fp32 over the frozen (bf16) base
    data = load_pair_tensors(cfg.candidates, pairs_file, bundle.meta.audio.features, real=needs_real_clips(cfg))
    if cfg.pair_weighting == "reward_gap":
        data["pair_weight"] = reward_gap_weights(pairs_file)
    text_emb = bundle.text_encoder([bundle.meta.default_prompt]).detach()
    print(f"dpo: {len(data['winner'])} pairs from {pairs_file}, LoRA rank {cfg.lora_rank} on {len(targets)} layers")
    result = run_training(
        name=variant,
        model=Objective(lambda m, batch: dpo_step_loss(m, batch, text_emb, cfg.beta, cfg.sft_weight, cfg.sft_target),
                        model),
        trainable=[p for p in model.parameters() if p.requires_grad],
        batch_fn=sliced(lambda step, micro, rows, g: global_pair_batch(data, cfg, rows, g)),
        cfg=cfg,
        ckpt_dir=checkpoint_dir("dpo", cfg.model_dump(), bundle.meta.model_dump(), str(pairs_file.resolve()),
                                files_digest(pairs_file)),
        log_fn=log_fn,
    )
    run = DpoRun(result=result, n_pairs=len(data["winner"]), lora_layers=len(targets), pairs_file=pairs_file)
    lora_named = lambda m: [(n, p) for n, p in m.named_parameters() if "lora_" in n]  # noqa: E731
    export = gather_named(model, lora_named(model)) if has_sharded_parameters(model) else None  # every rank
    if not is_main:
        return run
    if export is not None:  # FSDP: the trained weights are shards; export from a plain copy holding the gathered LoRA
        bundle = load_bundle(cfg.base_model)
        model = bundle.model
        add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        place_for_training(model, torch_dtype(model.cfg.backbone.dtype))
        copy_exported(model, lora_named(model), export)
    adapters = lora_state_dict(model)
    merge_lora(model)
    bundle.model = model.eval()
    bundle.meta = bundle.meta.model_copy(update={
        "variant": variant,
        "lineage": {**bundle.meta.lineage, "stage": variant, "from": cfg.base_model, "pairs": str(pairs_file),
                    "beta": cfg.beta, "lora_rank": cfg.lora_rank},
    })
    save_bundle(cfg.output, bundle)
    with atomic_file(Path(cfg.output) / "lora.safetensors") as tmp:
        save_file(adapters, str(tmp))
    return run
