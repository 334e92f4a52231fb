"""Preference fine-tuning stages as Prefect flows: dpo (Flow-DPO with LoRA on the phase-2 model).

The policy is the phase-2 model plus peft LoRA adapters (components/train/dpo.py); the reference is the same
model with the adapters off, so no second copy of the weights is held. Training goes through the same loop as
every other stage (accelerate, resumable safetensors checkpoints of the adapters, MLflow logging); the result
is exported with the adapters merged into the weights, so it is a bundle like any other variant and runs in
`talkalign animate`. The adapters alone are kept beside it (lora.safetensors) for inspection.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow
from safetensors.torch import save_file

from components.config import load_params
from components.tracking import is_main_process, stage_run
from flows.logging import log_summary
from flows.train import LossModule, _training_summary, checkpoint_dir, mlflow_logger


@flow(name="dpo", log_prints=True)
def dpo_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.model.bundle import load_bundle, save_bundle
    from components.train.dpo import add_lora, dpo_step_loss, lora_state_dict, merge_lora
    from components.train.dpo_data import global_pair_batch, load_pair_tensors
    from components.train.loop import run_training, sliced

    params = load_params(params_path, overrides)
    cfg = params.dpo
    pairs_file = Path(cfg.pairs) / f"{cfg.pair_set}.jsonl"
    with stage_run("dpo", params, inputs=[cfg.base_model, cfg.candidates, cfg.pairs]) as run:
        bundle = load_bundle(cfg.base_model)
        model = bundle.model.train()
        targets = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        data = load_pair_tensors(cfg.candidates, pairs_file, bundle.meta.audio.features)
        text_emb = bundle.text_encoder([bundle.meta.default_prompt]).detach()
        print(f"dpo: {len(data['winner'])} pairs from {pairs_file}, LoRA rank {cfg.lora_rank} on {len(targets)} layers")
        if run is not None:
            mlflow.log_params({"n_pairs": len(data["winner"]), "lora_layers": len(targets)})
        result = run_training(
            name="dpo",
            model=LossModule(model, lambda m, batch: dpo_step_loss(m, batch, text_emb, cfg.beta)),
            trainable=[p for p in model.parameters() if p.requires_grad],
            batch_fn=sliced(lambda step, micro, rows, g: global_pair_batch(data, cfg, rows, g)),
            loss_fn=lambda m, batch: m(batch),
            cfg=cfg,
            ckpt_dir=checkpoint_dir("dpo", cfg.model_dump(), bundle.meta.model_dump(), str(pairs_file.resolve()),
                                    _file_digest(pairs_file)),
            log_fn=mlflow_logger(),
        )
        if not is_main_process():
            return _training_summary(result)
        adapters = lora_state_dict(model)
        merge_lora(model)
        bundle.model = model.eval()
        bundle.meta = bundle.meta.model_copy(update={
            "variant": "dpo",
            "lineage": {**bundle.meta.lineage, "stage": "dpo", "from": cfg.base_model, "pairs": str(pairs_file),
                        "beta": cfg.beta, "lora_rank": cfg.lora_rank},
        })
        save_bundle(cfg.output, bundle)
        staged = Path(cfg.output) / ".lora.safetensors.tmp"
        save_file(adapters, str(staged))
        staged.replace(Path(cfg.output) / "lora.safetensors")
        return log_summary({**_training_summary(result), "n_pairs": len(data["winner"])})


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
