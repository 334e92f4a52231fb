"""Online preference rounds as a Prefect flow: `talkalign round --name round1` runs one entry of rounds.schedule
(components/preference/online_round.py: the policy's own candidates, rated, paired, Flow-DPO from it).

dvc.yaml runs one `round@<name>` stage per entry (foreach over rounds.schedule), each after the one it starts from.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from components.config import load_params
from components.tracking import is_main_process, metrics_logger, stage_run
from flows.logging import log_summary


@flow(name="round", log_prints=True)
def round_flow(params_path: str = "params.yaml", overrides: dict | None = None, name: str | None = None) -> dict:
    from components.preference.online_round import run_round

    params = load_params(params_path, overrides)
    name = name or next(iter(params.rounds.schedule), None)
    if name is None:
        raise ValueError("rounds.schedule is empty: there is no online round to run")
    policy = params.rounds.schedule.get(name, "")
    with stage_run("round", params, section="rounds", inputs=[params.data.latents_dir, policy],
                   extra_tags={"talkalign.round": name}) as run:
        done = run_round(params, name, log_fn=metrics_logger(), is_main=is_main_process())
        if run is not None:
            mlflow.set_tag("mlflow.runName", f"round:{name}")
            mlflow.log_params({"round": name, "policy": done.policy, "n_pairs": done.dpo.n_pairs})
        return log_summary(done.summary())
