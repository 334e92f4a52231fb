"""Expert models the evaluation needs, as stage flows. Today: the sync expert behind Sync-C / Sync-D.

sync_expert: with `evaluation.syncnet_weights` (the official SyncNet weights) there is nothing to train: the stage
checks that they load and records where they are. Otherwise it trains our SyncNet-architecture expert on the
training split and measures it on the validation split (components/evaluation/sync_expert_training.py).
"""

from __future__ import annotations

from prefect import flow

from components.config import load_params
from components.evaluation.sync_expert_training import train_sync_expert, write_sync_expert
from components.tracking import metrics_logger, stage_run
from flows.logging import log_summary


@flow(name="sync-expert", log_prints=True)
def sync_expert_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    with stage_run("sync_expert", params, inputs=[params.data.shards]):
        run = train_sync_expert(params, log_fn=metrics_logger())
        write_sync_expert(params.sync_expert, run)
        return log_summary(run.report) if run.source == "talkalign" else {}
