"""Preference data stages as Prefect flows: candidates -> annotate -> (critic) -> pairs.

candidates  K videos per conditioning window of the preference split, from the generator pool in params
            (components/preference/generate.py)
annotate    Likert 1-5 per candidate and dimension: the simulated rater (default), human ratings from a file,
            or the critic; validated, aggregated over raters, reported with every count (annotation.py)
pairs       preference pairs per composite reward and per dimension (TLPO's sets), with a strategy and a margin
            (pair_sets.py)
"""

from __future__ import annotations

import mlflow
from prefect import flow

from components.config import load_params
from components.preference.annotation import annotate, write_annotation
from components.preference.generate import generate_candidates
from components.preference.pair_sets import curate_pair_sets, read_scores, write_pair_sets
from components.tracking import stage_run
from flows.logging import log_summary


@flow(name="candidates", log_prints=True)
def candidates_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    models = sorted({g.model for g in params.candidates.pool if g.kind == "model"})
    with stage_run("candidates", params, inputs=[params.data.latents_dir, *models]):
        candidates = generate_candidates(params)
        mlflow.log_dict(candidates.index, "candidates_index.json")
        return log_summary(candidates.summary())


@flow(name="annotate", log_prints=True)
def annotate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    cfg = params.annotate
    inputs = [params.candidates.out_dir] + ([cfg.human_ratings] if cfg.source == "human" and cfg.human_ratings else [])
    with stage_run("annotate", params, inputs=inputs):
        annotation = annotate(params)
        report = write_annotation(params, annotation)
        mlflow.log_artifact(str(report))
        return log_summary(annotation.summary())


@flow(name="pairs", log_prints=True)
def pairs_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    params = load_params(params_path, overrides)
    cfg = params.pairs
    with stage_run("pairs", params, inputs=[cfg.ratings]):
        sets = curate_pair_sets(read_scores(cfg.ratings), cfg)
        figure = write_pair_sets(cfg, sets)
        mlflow.log_artifact(cfg.report_path)
        mlflow.log_artifact(str(figure), artifact_path="figures")
        return log_summary(sets.summary)
