"""What a pipeline run reports: metrics rows, the promotion decision and the run summary as markdown."""

from __future__ import annotations

import math

from components.pipeline.summary import (
    flatten_numbers,
    markdown_table,
    metrics_table,
    promotion_markdown,
    run_summary_markdown,
)


def test_metrics_table_and_promotion_markdown(stage_metrics, refused_promotion):
    rows = metrics_table(stage_metrics)
    assert [row["model"] for row in rows] == ["phase1_reshape", "phase2"]
    assert rows[0]["psnr"] == 21.52 and rows[1]["lip_corr_audio_zeroed"] == "-"
    assert metrics_table({"psnr": 21.0}) == [{"metric": "psnr", "value": 21.0}]
    assert metrics_table(None) == []

    refused = promotion_markdown(refused_promotion, "reports/promotion.json")
    assert "**refused**: talkalign version 3" in refused and "promoted: no" in refused
    assert refused_promotion["reasons"][0] in refused and "| psnr | 20.1 | 21.0 | False |" in refused
    assert "promoted: yes" in promotion_markdown({"promoted": True, "reasons": []}, "p.json")
    assert "does not exist" in promotion_markdown(None, "reports/promotion.json")


def test_run_summary_and_flattened_metrics(stage_metrics, refused_promotion):
    summary = {
        "command": "dvc exp run -S ++world.n_identities=4", "profile": "params.yaml",
        "overrides": {"world.n_identities": 4}, "stages": None, "experiment": "sable-lobe", "git_commit": "abc",
        "mlflow_run_id": "r1", "tracking_uri": "sqlite:///m.db", "stages_run": [],
    }
    rows = metrics_table(stage_metrics)
    text = run_summary_markdown(summary, rows, "reports/metrics.json", "Promotion decision: none.")
    assert "- DVC experiment: `sable-lobe`" in text and "- stages: the whole DAG" in text
    assert "none (everything up to date)" in text and markdown_table(rows) in text
    assert "does not exist yet" in run_summary_markdown(summary, [], "reports/metrics.json", "")
    flat = flatten_numbers({"phase2": {"psnr": 21.9, "lip corr@5": 0.3, "bad": math.nan, "flag": True}})
    assert flat == {"phase2.psnr": 21.9, "phase2.lip corr_5": 0.3}
