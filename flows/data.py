"""Data stages as Prefect flows: synthesize -> ingest -> validate -> shard.

Each flow is thin: load typed params, open the stage's MLflow run, call the component, log what it measured.
DVC runs them through the `talkalign` CLI (dvc.yaml); each one can also be run alone or from a Prefect deployment.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
from prefect import flow

from components.config import load_params
from components.tracking import stage_run
from flows.logging import log_summary


@flow(name="synthesize", log_prints=True)
def synthesize_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Generate the synthetic talking-portrait world (toy profile); the wan profile brings its own videos."""
    from components.data.synthetic.world import synthesize_world

    params = load_params(params_path, overrides)
    out_dir = Path(params.world.out_dir)
    with stage_run("synthesize", params, section="world"):
        if params.profile != "toy":
            # Keep the DVC output present but empty: ingest reads the user's folder (ingest.input_dir) instead.
            out_dir.mkdir(parents=True, exist_ok=True)
            print(f"profile {params.profile}: no synthetic world; ingest reads {params.ingest.input_dir}")
            return {"n_clips": 0}
        summary = synthesize_world(params.world, out_dir)
        return log_summary(summary)


@flow(name="ingest", log_prints=True)
def ingest_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Decode any folder of talking videos into frame-aligned training samples; quarantine bad clips."""
    from components.data.ingest import ingest_folder

    params = load_params(params_path, overrides)
    cfg = params.ingest
    with stage_run("ingest", params, inputs=[cfg.input_dir]):
        summary = None
        try:
            summary = ingest_folder(cfg, Path(cfg.input_dir), Path(cfg.out_dir), Path(cfg.quarantine_path))
        finally:
            # The quarantine list is the evidence a failed run needs most: log it whatever happened.
            if Path(cfg.quarantine_path).exists():
                mlflow.log_artifact(cfg.quarantine_path)
        result = log_summary(summary)
        print(f"ingested {result.get('n_ok')} clips, quarantined {result.get('n_quarantined')} -> {cfg.quarantine_path}")
        return result


@flow(name="validate", log_prints=True)
def validate_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Run the great-expectations suite over the clip manifest; fail with a readable report."""
    from components.data.validate import validate_manifest

    params = load_params(params_path, overrides)
    cfg = params.validation
    with stage_run("validate", params, section="validation", inputs=[params.ingest.out_dir]):
        try:
            result = validate_manifest(
                cfg,
                Path(cfg.manifest),
                expected_fps=params.ingest.fps,
                expected_resolution=params.ingest.resolution,
                expected_n_joints=params.ingest.keypoints.n_joints,
                quarantine_path=params.ingest.quarantine_path,
            )
        finally:
            for path in (cfg.report_path, cfg.result_path):
                if Path(path).exists():
                    mlflow.log_artifact(path)
        return log_summary(result)


@flow(name="shard", log_prints=True)
def shard_flow(params_path: str = "params.yaml", overrides: dict | None = None) -> dict:
    """Write WebDataset shards split by identity, locally or to s3://, and log them as an MLflow dataset."""
    import pandas as pd

    from components.data.shards.writer import write_shards

    params = load_params(params_path, overrides)
    cfg = params.shard
    with stage_run("shard", params, inputs=[cfg.input_dir]):
        index = write_shards(cfg, Path(cfg.input_dir), cfg.output)
        index_dict = index.to_dict() if hasattr(index, "to_dict") else dict(index)
        local_index = _local_index_copy(cfg.output, index_dict)
        mlflow.log_artifact(str(local_index))
        manifest = pd.read_json(Path(cfg.input_dir) / "manifest.jsonl", lines=True)
        for split in index_dict.get("splits", {}):
            rows = manifest[manifest["clip_id"].isin(set(index_dict["splits"][split].get("clip_ids", [])))]
            dataset = mlflow.data.from_pandas(
                rows if len(rows) else manifest.head(0),
                source=cfg.output,
                name=f"talkalign-{split}",
                digest=index_dict["digest"][:16],
            )
            mlflow.log_input(dataset, context=split)
        mlflow.set_tag("talkalign.dataset_digest", index_dict["digest"])
        return log_summary(index_dict)


def _local_index_copy(output: str, index: dict) -> Path:
    """Shards on S3 still leave their index in data/shards/ so DVC versions which shards a run used."""
    if not output.startswith("s3://"):
        return Path(output) / "index.json"
    local = Path("data/shards")
    if local.exists():
        shutil.rmtree(local)
    local.mkdir(parents=True)
    path = local / "index.json"
    path.write_text(json.dumps(index, indent=2))
    return path
