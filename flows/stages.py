"""The stage registry: one `talkalign <stage>` sub-command per pipeline stage, each running one Prefect flow.

The CLI (flows/cli.py) builds its sub-commands from it, `talkalign serve` (flows/deployments.py) its deployments;
both import this module, never each other. Flows are named as "module:function" and imported only when run, so
`talkalign --help` and a params error stay instant. Also here: what both need to report a failed flow in one line.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

# sub-command -> (flow as "module:function", help)
STAGES: dict[str, tuple[str, str]] = {
    "synthesize": ("flows.data:synthesize_flow", "generate the synthetic talking-portrait world (toy profile)"),
    "ingest": ("flows.data:ingest_flow", "decode a folder of talking videos into samples; quarantine bad clips"),
    "validate": ("flows.data:validate_flow", "great-expectations checks over the clip manifest"),
    "shard": ("flows.data:shard_flow", "write WebDataset shards split by identity (local or s3://)"),
    "pretrain-vae": ("flows.train:pretrain_vae_flow", "train the toy video VAE (skipped with vae.pretrained_path)"),
    "latents": ("flows.train:latents_flow", "encode every training window once with the stage VAE"),
    "pretrain-dit": ("flows.train:pretrain_dit_flow", "train the base image-to-video DiT (toy profile)"),
    "phase1": ("flows.train:phase1_flow", "train the audio modulation, backbone frozen (--variant for the ablation)"),
    "phase2": ("flows.train:phase2_flow", "train the skeleton modulation, everything else frozen"),
    "sync-expert": ("flows.experts:sync_expert_flow",
                    "train the SyncNet-architecture sync expert (skipped with official weights)"),
    "candidates": ("flows.preference:candidates_flow", "K candidate videos per preference window from the generator pool"),
    "annotate": ("flows.preference:annotate_flow", "Likert ratings per candidate: simulated rater, human file, or the critic"),
    "critic": ("flows.critic:critic_flow", "train the Talking-Critic reward model on the ratings; held-out vs baselines"),
    "pairs": ("flows.preference:pairs_flow", "preference pairs (composite and per dimension) from the ratings"),
    "dpo": ("flows.alignment:dpo_flow", "Flow-DPO of the phase-2 model on curated pairs (LoRA; reference = adapters off)"),
    "tlpo": ("flows.alignment:tlpo_flow", "TLPO: a LoRA expert per preference dimension, fused by a (timestep, layer) gate"),
    "round": ("flows.rounds:round_flow", "one online preference round: the policy's own candidates, rated, paired, Flow-DPO"),
    "evaluate": ("flows.evaluate:evaluate_flow", "every model variant on the same held-out test windows"),
    "register": ("flows.register:register_flow", "register the evaluated model in MLflow; champion if the gates pass"),
}
# Stage options beyond --params/--set: sub-command -> {flag: (flow keyword, help)}.
STAGE_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "phase1": {"--variant": ("variant", "temporal motion modulation: reshape (ours), half (audio/2), downsample (audio/4)")},
    "round": {"--name": ("name", "the rounds.schedule entry to run (default: the first)")},
}


def load_flow(target: str) -> Callable[..., Any]:
    """Import the flow named "module:function"."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class StageFailed(Exception):
    """A flow that ran and failed (Prefect has marked its run failed; the cause is chained)."""


def console_without_tracebacks() -> None:
    """Prefect logs a failed flow's traceback to the console; keep only its one-line message there. The Prefect API
    (and so the UI) still gets the traceback: its handler sits on the flow-run logger and runs before the console's.
    Imports prefect first, so that its logging setup (done on import) cannot replace the filtered handler later."""
    import prefect  # noqa: F401

    def strip(record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.addFilter(strip)


def deterministic_torch() -> None:
    """Same inputs, same outputs: deterministic kernels (a warning where an op has none) and a fixed number of CPU
    threads (TALKALIGN_THREADS, default 2: the parallel reductions' summation order depends on it, so two runs agree
    bit for bit only at the same count)."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("TALKALIGN_THREADS", "2")))
