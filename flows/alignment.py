"""Preference fine-tuning stages as Prefect flows: dpo (Flow-DPO with LoRA on the phase-2 model) and tlpo
(FantasyTalking2: one LoRA expert per preference dimension, fused by a (timestep, layer) gate).

The policy is the phase-2 model plus peft LoRA adapters (components/train/dpo.py); the reference is the same
model with the adapters off, so no second copy of the weights is held. Training goes through the same loop as
every other stage (accelerate, resumable safetensors checkpoints of the adapters, MLflow logging); the result
is exported with the adapters merged into the weights, so it is a bundle like any other variant and runs in
`talkalign animate`. The adapters alone are kept beside it (lora.safetensors) for inspection.
TLPO's fusion depends on the timestep, so it cannot be merged: its bundles carry the base weights plus the
experts and the gate, and load_bundle fuses them at every call (components/model/tlpo_bundle.py).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch
from prefect import flow
from safetensors.torch import save_file

from components.config import load_params
from components.tracking import is_main_process, stage_run
from flows.logging import log_summary
from flows.train import LossModule, _training_summary, checkpoint_dir, files_digest, mlflow_logger


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
                                    files_digest(pairs_file)),
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


TLPO_REPORT = Path("reports/tlpo.json")
TLPO_FIGURE = Path("reports/tlpo_gate.png")  # not under reports/figures: that is an output of evaluate
GATE_GRID = [float(t) for t in range(0, 1001, 50)]  # timesteps the report tabulates the gate on


@flow(name="tlpo", log_prints=True)
def tlpo_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Experts (Flow-DPO on pairs/<dimension>.jsonl, the others inactive), then the gate on composite pairs."""
    from components.config import DIMENSIONS
    from components.model.bundle import load_bundle
    from components.model.tlpo_bundle import TlpoSpec, save_tlpo_bundle
    from components.train.dpo import add_lora, dpo_step_loss, lora_state_dict
    from components.train.dpo_data import global_pair_batch, load_pair_tensors
    from components.train.loop import run_training, sliced
    from components.train.tlpo import (
        GatedPolicy, TimestepLayerGate, activate_experts, shared_noise_level, train_only_expert,
    )

    params = load_params(params_path, overrides)
    cfg = params.tlpo
    experts = list(DIMENSIONS)
    pairs_files = {name: Path(cfg.pairs) / f"{name}.jsonl" for name in [*experts, "composite"]}
    with stage_run("tlpo", params, section="tlpo", inputs=[cfg.base_model, cfg.candidates, cfg.pairs]) as run:
        bundle = load_bundle(cfg.base_model)
        model = bundle.model.train()
        for expert in experts:  # all injected up front (B = 0: no effect until trained)
            targets = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, adapter_name=expert)
        text_emb = bundle.text_encoder([bundle.meta.default_prompt]).detach()
        features = bundle.meta.audio.features
        # What an expert's result depends on (not the gate's budget `steps`): its checkpoints survive a gate rerun.
        shared = cfg.model_dump(exclude={"steps", "output"})
        summary: dict = {}
        expert_ckpts = []
        for expert in experts:
            data = load_pair_tensors(cfg.candidates, pairs_files[expert], features)
            print(f"tlpo: expert {expert} on {len(data['winner'])} pairs, LoRA rank {cfg.lora_rank} on {len(targets)} layers")
            ckpt = checkpoint_dir("tlpo", "expert", expert, shared, bundle.meta.model_dump(),
                                  str(pairs_files[expert].resolve()), files_digest(pairs_files[expert]))
            expert_ckpts.append(ckpt.name)
            result = run_training(
                name=f"tlpo_{expert}",
                model=LossModule(model, lambda m, batch: dpo_step_loss(m, batch, text_emb, cfg.beta)),
                trainable=train_only_expert(model, expert),
                batch_fn=sliced(lambda step, micro, rows, g, data=data: global_pair_batch(data, cfg, rows, g)),
                loss_fn=lambda m, batch: m(batch),
                cfg=cfg.model_copy(update={"steps": cfg.expert_steps}),
                ckpt_dir=ckpt,
                log_fn=mlflow_logger(f"{expert}/"),
            )
            summary[expert] = {**_training_summary(result), "n_pairs": len(data["winner"])}

        activate_experts(model, experts)
        gate = TimestepLayerGate(model.cfg.backbone.num_layers, experts)
        data = load_pair_tensors(cfg.candidates, pairs_files["composite"], features)
        print(f"tlpo: gate on {len(data['winner'])} composite pairs, experts frozen")
        if run is not None:
            mlflow.log_params({"n_pairs": len(data["winner"]), "lora_layers": len(targets), "experts": ",".join(experts)})
        result = run_training(
            name="tlpo_gate",
            model=GatedPolicy(model, gate, text_emb, cfg.beta),
            trainable=list(gate.parameters()),
            batch_fn=sliced(lambda step, micro, rows, g: shared_noise_level(global_pair_batch(data, cfg, rows, g))),
            loss_fn=lambda m, batch: m(batch),
            cfg=cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": cfg.gate_lr})}),
            ckpt_dir=checkpoint_dir("tlpo", "gate", cfg.model_dump(exclude={"output"}), bundle.meta.model_dump(),
                                    expert_ckpts, files_digest(pairs_files["composite"])),
            log_fn=mlflow_logger(),
        )
        summary = {**_training_summary(result), "n_pairs": len(data["winner"]), "experts": summary}
        if not is_main_process():
            return summary

        gate = gate.cpu().eval().requires_grad_(False)
        states = {expert: lora_state_dict(model, expert) for expert in experts}
        model.eval()
        lineage = {**bundle.meta.lineage, "stage": "tlpo", "from": cfg.base_model, "pairs": cfg.pairs,
                   "beta": cfg.beta, "lora_rank": cfg.lora_rank, "experts": experts}
        for fusion, variant, fused_by in (("gate", "tlpo", gate), ("uniform", "tlpo_uniform", None)):
            spec = TlpoSpec(experts=experts, targets=list(cfg.lora_targets), rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                            n_layers=gate.n_layers, fusion=fusion, freq_dim=gate.freq_dim, hidden=gate.out.in_features)
            bundle.meta = bundle.meta.model_copy(update={"variant": variant, "lineage": {**lineage, "fusion": fusion}})
            save_tlpo_bundle(Path(cfg.output) / ("gated" if fusion == "gate" else "uniform"), bundle, spec, states, fused_by)
        _gate_report(gate)
        return log_summary(summary)


def _gate_report(gate) -> None:
    """reports/tlpo.json (the gate's weights on a timestep grid) and the figure, both logged to MLflow."""
    from components.evaluation.gate_chart import shown_layers, write_gate_png
    from components.model.tlpo_bundle import gate_table
    from flows.train import write_json

    with torch.no_grad():
        table = gate_table(gate, GATE_GRID).numpy()
    write_json(TLPO_REPORT, {
        "experts": gate.experts, "n_layers": gate.n_layers, "timesteps": GATE_GRID,
        "layers": [f"block_{i}" for i in range(gate.n_layers)] + ["outside_blocks"],
        "weights": table.round(6).tolist(),  # [timestep][layer][expert]
    })
    write_gate_png(TLPO_FIGURE, GATE_GRID, table, gate.experts, shown_layers(gate.n_layers))
    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(TLPO_REPORT))
        mlflow.log_artifact(str(TLPO_FIGURE), artifact_path="figures")
