"""Preference fine-tuning stages as Prefect flows: dpo (Flow-DPO with LoRA on the phase-2 model) and tlpo
(FantasyTalking2: one LoRA expert per preference dimension, fused by a (timestep, layer) gate).

The recipes are components/preference/dpo_training.py and components/preference/tlpo_training.py; these flows open the
stage's MLflow run, call them, and log what they report.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from components.config import load_params
from components.tracking import is_main_process, metrics_logger, stage_run
from flows.logging import log_summary


@flow(name="dpo", log_prints=True)
def dpo_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    from components.preference.dpo_training import train_dpo

    params = load_params(params_path, overrides)
    cfg = params.dpo
    with stage_run("dpo", params, inputs=[cfg.base_model, cfg.candidates, cfg.pairs]) as run:
        trained = train_dpo(cfg, log_fn=metrics_logger(), is_main=is_main_process())
        if run is not None:
            mlflow.log_params({"n_pairs": trained.n_pairs, "lora_layers": trained.lora_layers})
        return log_summary({**trained.result.summary(), "n_pairs": trained.n_pairs})


@flow(name="tlpo", log_prints=True)
def tlpo_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Experts (Flow-DPO on pairs/<dimension>.jsonl, the others inactive), then the gate on composite pairs."""
    from components.evaluation.gate_report import write_gate_report
    from components.preference.tlpo_training import train_tlpo

    params = load_params(params_path, overrides)
    cfg = params.tlpo
    with stage_run("tlpo", params, section="tlpo", inputs=[cfg.base_model, cfg.candidates, cfg.pairs]) as run:
        trained = train_tlpo(cfg, log_fn_for=metrics_logger, is_main=is_main_process())
        if run is not None:
            mlflow.log_params({"n_pairs": trained.n_pairs, "lora_layers": trained.lora_layers,
                               "experts": ",".join(trained.experts)})
        if not is_main_process():
            return trained.summary
        write_gate_report(trained.gate, cfg.report_path, cfg.figure_path)
        if run is not None:
            mlflow.log_artifact(cfg.report_path)
            mlflow.log_artifact(cfg.figure_path, artifact_path="figures")
        return log_summary(trained.summary)
