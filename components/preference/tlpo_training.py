"""The tlpo stage's recipe (FantasyTalking2): one LoRA expert per preference dimension, each trained with
Flow-DPO on that dimension's pairs while the others are inactive; then a (timestep, layer) gate over the frozen
experts, trained on the composite pairs. TLPO's fusion depends on the timestep, so it cannot be merged: its
bundles carry the base weights plus the experts and the gate (components/model/tlpo_bundle.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import DistributedType

from components.config import DIMENSIONS, TlpoConfig
from components.model.adapters import add_lora, load_lora_state_dict, lora_state_dict, merge_lora
from components.model.bundle import save_bundle
from components.model.gate import TimestepLayerGate, activate_experts, clear_gate_scaling
from components.model.loading import load_bundle
from components.model.precision import place_for_training, torch_dtype
from components.model.tlpo_bundle import TlpoSpec, save_tlpo_bundle
from components.preference.pair_data import global_pair_batch, load_pair_tensors, needs_real_clips
from components.train.checkpoint_keys import checkpoint_dir, files_digest
from components.train.dpo import dpo_step_loss
from components.train.loop import run_training, sliced
from components.train.objective import Objective
from components.train.tlpo import gated_dpo_loss, shared_noise_level, train_only_expert


@dataclass
class TlpoRun:
    gate: TimestepLayerGate
    summary: dict
    n_pairs: int
    lora_layers: int
    experts: list[str] = field(default_factory=list)


def train_tlpo(cfg: TlpoConfig, log_fn_for=lambda prefix: None, is_main: bool = True) -> TlpoRun:
    """Experts, then the gate; the main process exports <output>/gated and <output>/uniform (the plain average of
    the experts, the ablation). `log_fn_for(prefix)` gives each training run its log_fn."""
    fsdp_launch = PartialState().distributed_type == DistributedType.FSDP
    if cfg.parallelism == "fsdp" or fsdp_launch:  # fully_shard works in place, once: experts and gate share one model
        raise ValueError("tlpo under FSDP is not supported: TLPO trains its experts and then the gate on one model in "
                         "several runs, and FSDP2 shards a model only once; set tlpo.parallelism: ddp and launch with "
                         "infra/accelerate/ddp_8gpu.yaml")
    experts = list(DIMENSIONS)
    pairs_files = {name: Path(cfg.pairs) / f"{name}.jsonl" for name in [*experts, "composite"]}
    bundle = load_bundle(cfg.base_model)
    model = bundle.model.train()
    for expert in experts:  # all injected up front (B = 0: no effect until trained)
        targets = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, adapter_name=expert)
    # every expert's LoRA in fp32 over the frozen (bf16) base, also those not training right now
    place_for_training(model, torch_dtype(model.cfg.backbone.dtype), also_fp32=lambda name: "lora_" in name)
    text_emb = bundle.text_encoder([bundle.meta.default_prompt]).detach()
    features = bundle.meta.audio.features
    # What an expert's result depends on (not the gate's budget `steps`): its checkpoints survive a gate rerun.
    shared = cfg.model_dump(exclude={"steps", "output", "report_path", "figure_path"})
    summary: dict = {}
    expert_ckpts = []
    for expert in experts:
        data = load_pair_tensors(cfg.candidates, pairs_files[expert], features, real=needs_real_clips(cfg))
        print(f"tlpo: expert {expert} on {len(data['winner'])} pairs, LoRA rank {cfg.lora_rank} on {len(targets)} layers")
        ckpt = checkpoint_dir("tlpo", "expert", expert, shared, bundle.meta.model_dump(),
                              str(pairs_files[expert].resolve()), files_digest(pairs_files[expert]))
        expert_ckpts.append(ckpt.name)
        result = run_training(
            name=f"tlpo_{expert}",
            model=Objective(lambda m, batch: dpo_step_loss(m, batch, text_emb, cfg.beta, cfg.sft_weight, cfg.sft_target),
                            model),
            trainable=train_only_expert(model, expert),
            batch_fn=sliced(lambda step, micro, rows, g, data=data: global_pair_batch(data, cfg, rows, g)),
            cfg=cfg.model_copy(update={"steps": cfg.expert_steps}),
            ckpt_dir=ckpt,
            log_fn=log_fn_for(f"{expert}/"),
        )
        summary[expert] = {**result.summary(), "n_pairs": len(data["winner"])}

    activate_experts(model, experts)
    gate = TimestepLayerGate(model.cfg.backbone.num_layers, experts, activation=cfg.gate_activation)
    data = load_pair_tensors(cfg.candidates, pairs_files["composite"], features)
    print(f"tlpo: gate on {len(data['winner'])} composite pairs, experts frozen")
    result = run_training(
        name="tlpo_gate",
        model=Objective(lambda m, g, batch: gated_dpo_loss(m, g, batch, text_emb, cfg.beta), model, gate=gate),
        trainable=list(gate.parameters()),
        batch_fn=sliced(lambda step, micro, rows, g: shared_noise_level(global_pair_batch(data, cfg, rows, g))),
        cfg=cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": cfg.gate_lr})}),
        ckpt_dir=checkpoint_dir("tlpo", "gate", cfg.model_dump(exclude={"output", "report_path", "figure_path"}), bundle.meta.model_dump(),
                                expert_ckpts, files_digest(pairs_files["composite"])),
        log_fn=log_fn_for(""),
    )
    clear_gate_scaling(model)  # the gate's last batch scaled the experts: the bundles carry the plain experts
    run = TlpoRun(gate=gate, summary={**result.summary(), "n_pairs": len(data["winner"]), "experts": summary},
                  n_pairs=len(data["winner"]), lora_layers=len(targets), experts=experts)
    if not is_main:
        return run

    gate = run.gate = gate.cpu().eval().requires_grad_(False)
    states = {expert: lora_state_dict(model, expert) for expert in experts}
    model.eval()
    lineage = {**bundle.meta.lineage, "stage": "tlpo", "from": cfg.base_model, "pairs": cfg.pairs,
               "beta": cfg.beta, "lora_rank": cfg.lora_rank, "experts": experts}
    for fusion, variant, fused_by in (("gate", "tlpo", gate), ("uniform", "tlpo_uniform", None)):
        spec = TlpoSpec(experts=experts, targets=list(cfg.lora_targets), rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                        n_layers=gate.n_layers, fusion=fusion, freq_dim=gate.freq_dim, hidden=gate.out.in_features,
                        gate_activation=cfg.gate_activation)
        bundle.meta = bundle.meta.model_copy(update={"variant": variant, "lineage": {**lineage, "fusion": fusion}})
        save_tlpo_bundle(Path(cfg.output) / ("gated" if fusion == "gate" else "uniform"), bundle, spec, states, fused_by)
    if cfg.export_experts:
        for expert in experts:
            export_expert(cfg, expert, states[expert], lineage)
    return run


def export_expert(cfg: TlpoConfig, expert: str, state: dict, lineage: dict) -> Path:
    """One expert alone merged into a fresh copy of the base: the single-dimension DPO model TLPO is compared with
    (<output>/expert_<dimension>, variant tlpo_expert_<dimension>)."""
    bundle = load_bundle(cfg.base_model)
    add_lora(bundle.model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    place_for_training(bundle.model, torch_dtype(bundle.model.cfg.backbone.dtype))
    load_lora_state_dict(bundle.model, state)
    merge_lora(bundle.model)
    bundle.model.eval()
    bundle.meta = bundle.meta.model_copy(update={
        "variant": f"tlpo_expert_{expert}", "lineage": {**lineage, "fusion": "single", "experts": [expert]}})
    out = Path(cfg.output) / f"expert_{expert}"
    save_bundle(out, bundle)
    return out
