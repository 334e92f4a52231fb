"""The report a person reads first, the DVC plot files and the PNG overview."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from components.evaluation.charts import write_overview_png, write_plot_data
from components.evaluation.report import METRICS, ReportInputs, render_report, write_report

RESULTS = {
    "ground_truth": {"sync_c": 6.0, "sync_d": 0.4, "lip_corr": 0.99, "lip_err": 0.02},
    "phase1_reshape": {"sync_c": 2.5, "sync_d": 0.8, "lip_corr": 0.41, "lip_err": 0.1, "psnr": 24.123, "ssim": 0.81,
                       "sync_c_audio_zeroed": 0.3},
    "phase1_downsample": {"sync_c": 1.0, "sync_d": 0.9, "lip_corr": 0.12, "lip_err": 0.2, "psnr": 23.0, "ssim": 0.8,
                          "sync_c_audio_zeroed": 0.2},
}


def _inputs(tmp_path) -> ReportInputs:
    return ReportInputs(
        results=RESULTS,
        unavailable={"fid": "no Inception extractor given", "hkc": "no hand keypoint detector"},
        sync_expert="Scored with talkalign's own sync expert, not the official SyncNet weights.",
        n_windows=8,
        sampling="20 sampling steps, audio guidance 2, seed 0",
        chart=tmp_path / "reports" / "figures" / "metrics.png",
        videos=[tmp_path / "reports" / "videos" / "id001_clip00_0000.mp4"],
    )


def test_report_has_the_table_the_expert_the_meanings_and_what_is_missing(tmp_path):
    text = render_report(_inputs(tmp_path), tmp_path / "reports" / "report.md")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| variant |"))
    assert header.split(" | ")[1:3] == ["Sync-C ↑", "Sync-D ↓"]  # sync first, in METRICS order
    row = next(line for line in lines if line.startswith("| **phase1_reshape** |"))
    assert "| 2.500 |" in row and "| 24.123 |" in row
    truth_row = next(line for line in lines if line.startswith("| *ground_truth* |"))
    assert "–" in truth_row  # no PSNR for the truth itself
    assert "not the official SyncNet weights" in text
    assert "![metrics per variant](figures/metrics.png)" in text  # relative to the report
    assert "(videos/id001_clip00_0000.mp4)" in text
    assert "| `fid` | no Inception extractor given |" in text and "| `hkc` |" in text
    for metric in ("sync_c", "lip_corr", "psnr", "ssim"):
        assert f"(`{metric}`) | {METRICS[metric].better} |" in text


def test_write_report_writes_the_file(tmp_path):
    path = write_report(tmp_path / "reports" / "report.md", _inputs(tmp_path))
    assert path.read_text().startswith("# Evaluation report")
    assert not list(path.parent.glob(".*tmp*"))


def test_plot_data_is_one_csv_per_metric_and_stale_files_go(tmp_path):
    (tmp_path / "fvd.csv").write_text("variant,value\nold,1\n")
    files = write_plot_data(tmp_path, RESULTS, list(METRICS))
    assert [f.stem for f in files][:2] == ["sync_c", "sync_d"]
    assert not (tmp_path / "fvd.csv").exists()
    rows = list(csv.DictReader((tmp_path / "psnr.csv").open()))
    assert rows == [{"variant": "phase1_reshape", "value": "24.123"}, {"variant": "phase1_downsample", "value": "23"}]
    assert len(list(csv.DictReader((tmp_path / "sync_c.csv").open()))) == 3


def test_overview_png_is_an_image(tmp_path):
    path = write_overview_png(tmp_path / "metrics.png", RESULTS, list(METRICS), {k: v.label for k, v in METRICS.items()})
    image = np.asarray(Image.open(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert image.std() > 10  # something is drawn


def test_comparisons_are_paired_differences_with_their_ci(tmp_path):
    from components.evaluation.bootstrap import Interval

    inputs = _inputs(tmp_path)
    inputs.differences = {("dpo", "phase2"): {"lip_corr": Interval(0.05, 0.01, 0.09, 8, 3),
                                              "psnr": Interval(-0.2, -0.5, 0.1, 8, 3)}}
    inputs.claims = tmp_path / "reports" / "claims.md"
    inputs.seed_noise = {"dpo": {"psnr": {"mean": 21.0, "std": 0.1, "values": {"0": 21.0, "1": 21.1, "2": 20.9}}}}
    text = render_report(inputs, tmp_path / "reports" / "report.md")
    assert "### dpo − phase2" in text and "[claims.md](claims.md)" in text
    assert "| lip corr ↑ | +0.050 | [+0.010, +0.090] | 8 × 3 | **yes** |" in text
    assert "| PSNR (dB) ↑ | −0.200 | [−0.500, +0.100] | 8 × 3 | no |" in text
    assert "within noise" not in text and "twice the standard error" not in text  # the old 2-SE rule is gone
    assert "| dpo | 21.000 ± 0.100 |" in text
