"""The critic stage: train the Talking-Critic on the ratings of the candidates and measure it on held-out
windows and raters against no-learning baselines (components/preference/critic_run.py).

Reads params.candidates.out_dir and params.critic.ratings/ratings.jsonl. Writes params.critic.out_dir
(critic.safetensors, critic.json, scores.csv), params.critic.metrics_path (json) and the markdown report next to it.
"""

from __future__ import annotations

from prefect import flow

from components.config import load_params
from components.preference.critic_run import train_and_evaluate_critic, write_critic
from components.tracking import metrics_logger, stage_run
from flows.logging import log_summary


@flow(name="critic", log_prints=True)
def critic_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    cfg = params.critic
    with stage_run("critic", params, section="critic", inputs=[params.candidates.out_dir, cfg.ratings]):
        run = train_and_evaluate_critic(params, log_fn=metrics_logger("train/"), progress=True)
        write_critic(cfg, run)
        return log_summary(run.log_metrics())
