"""The evaluate stage: every model variant on the same held-out test windows, with the same seeds.

Per variant: Sync-C / Sync-D, the synthetic world's ground-truth lip metrics, PSNR and SSIM, critic scores, and
FID / FVD when their extractors are given (components/evaluation/evaluate_models.py). Outputs: reports/metrics.json
(DVC metric), reports/plots/<metric>.csv (DVC plots), a PNG overview, side-by-side mp4s of a few windows, and
reports/report.md (components/evaluation/evaluation_outputs.py). Everything also goes to the stage's MLflow run.
"""

from __future__ import annotations

import mlflow
import numpy as np
from prefect import flow

from components.config import load_params
from components.evaluation.evaluate_models import evaluate_models
from components.evaluation.evaluation_outputs import write_evaluation
from components.tracking import stage_run


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    inputs = [params.data.latents_dir, params.sync_expert.out_dir, *params.evaluated_models().values()]
    with stage_run("evaluate", params, section="evaluation", inputs=inputs):
        evaluation = evaluate_models(params)
        files = write_evaluation(params, evaluation)

        for name, metrics in evaluation.results.items():
            mlflow.log_metrics({f"{name}.{key}": value for key, value in metrics.items() if np.isfinite(value)})
        mlflow.log_artifact(str(files.metrics))
        mlflow.log_artifact(str(files.report))
        mlflow.log_artifact(str(files.claims))
        mlflow.log_artifact(str(files.claims_metrics))
        mlflow.log_artifact(str(files.chart), artifact_path="figures")
        for path in files.plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        for path in files.videos:
            mlflow.log_artifact(str(path), artifact_path="videos")
        expert = evaluation.expert
        mlflow.log_dict({"unavailable": evaluation.unavailable, "sync_expert": {"source": expert.source, **expert.meta}},
                        "evaluation.json")
        mlflow.set_tag("talkalign.sync_expert", expert.source)
        mlflow.log_metrics({f"mouth_reader.{k}": v for k, v in evaluation.reader_scores.items()})
        if files.rounds_figure is not None:
            mlflow.log_artifact(str(files.rounds_figure), artifact_path="figures")
        for k, name in enumerate(params.rounds.schedule, start=1):  # each online round's model: a run of its own
            if name not in evaluation.results:  # left out by evaluation.variants
                continue
            with mlflow.start_run(run_name=f"evaluate:{name}", nested=True,
                                  tags={"talkalign.stage": "evaluate_round", "talkalign.round": name}):
                mlflow.log_params({"round": k, "model": params.rounds.model_dir(name),
                                   "policy": params.rounds.schedule[name]})
                mlflow.log_metrics({key: v for key, v in evaluation.results[name].items() if np.isfinite(v)})
        return evaluation.results
