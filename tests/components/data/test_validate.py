import json
import math

import pytest

from components.config import ValidationConfig
from components.data.validate import DataValidationError, read_manifest, validate_manifest


def _row(clip_id: str, identity: str = "id000", **overrides) -> dict:
    row = {
        "clip_id": clip_id, "identity": identity, "source": f"{clip_id}.mp4", "n_frames": 50, "fps": 25,
        "width": 64, "height": 64, "duration_s": 2.0, "audio_duration_s": 2.048, "av_mismatch_s": 0.048,
        "audio_rms_db": -20.0, "n_joints": 10, "kp_min": 0.05, "kp_max": 0.95, "kp_nan": 0, "has_truth": True,
    }  # fmt: skip
    row.update(overrides)
    return row


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _validate(tmp_path, rows, **kwargs):
    _write(tmp_path / "manifest.jsonl", rows)
    return validate_manifest(
        ValidationConfig(), tmp_path / "manifest.jsonl", expected_fps=25, expected_resolution=64, expected_n_joints=10,
        report_path=tmp_path / "reports" / "data_report.md", result_path=tmp_path / "reports" / "data.json", **kwargs,
    )  # fmt: skip


GOOD = [_row("a"), _row("b"), _row("c", identity="id001", duration_s=3.0, audio_rms_db=-30.0)]


def test_good_manifest_passes_and_reports(tmp_path):
    result = _validate(tmp_path, GOOD)
    assert result.success and result.n_rows == 3 and result.failures == [] and result.failing_rows == []
    report = (tmp_path / "reports" / "data_report.md").read_text()
    assert "**PASSED**" in report and "clips: 3, identities: 2" in report
    assert "| id000 | 2 | 4.0 |" in report and "| id001 | 1 | 3.0 |" in report
    assert "| max | 3.000 |" in report  # duration stats
    saved = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert saved["success"] is True and len(saved["expectations"]) == len(result.expectations) > 20


def test_broken_manifest_fails_with_a_readable_report(tmp_path):
    rows = GOOD + [
        _row("nan_kp", kp_nan=4, kp_min=float("nan")),
        _row("wrong_fps", fps=30),
        _row("too_long", duration_s=900.0),
        _row("quiet", audio_rms_db=-70.0),
        _row("outside", kp_max=1.2, av_mismatch_s=0.5),
        _row("a"),  # duplicate id
    ]
    with pytest.raises(DataValidationError) as info:
        _validate(tmp_path, rows)
    message = str(info.value)
    assert "data_report.md" in message and "fps == 25 (1 clip(s): wrong_fps)" in message
    result = info.value.result
    failing = {e.label: e.failing_clips for e in result.failures}
    assert failing == {
        "clip_id is unique": ["a"],
        "1 s <= duration_s <= 600 s": ["too_long"],
        "fps == 25": ["wrong_fps"],
        "audio_rms_db >= -50 dBFS": ["quiet"],
        "0 <= av_mismatch_s <= 0.2 s": ["outside"],
        "kp_max <= 1": ["outside"],
        "kp_nan == 0": ["nan_kp"],
        "kp_min is not null": ["nan_kp"],
    }
    assert {r["clip_id"] for r in result.failing_rows} == {"a", "nan_kp", "wrong_fps", "too_long", "quiet", "outside"}
    assert math.isnan(next(r for r in result.failing_rows if r["clip_id"] == "nan_kp")["kp_min"])

    report = (tmp_path / "reports" / "data_report.md").read_text()
    assert "**FAILED (8 of" in report
    assert "- **kp_nan == 0**: 1 clip(s): `nan_kp`" in report
    assert "| **FAIL** | fps == 25 | 1 | wrong_fps |" in report
    assert "| pass | width == 64 | 0 |  |" in report
    saved = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert saved["success"] is False


def test_missing_column_and_empty_manifest(tmp_path):
    rows = [{k: v for k, v in _row(c).items() if k != "kp_nan"} for c in "ab"]
    result = _validate(tmp_path, rows, raise_on_failure=False)
    failing = {e.label: (e.error, e.observed) for e in result.failures}
    assert failing["manifest has every column"][1] == {"mismatched": {"missing": ["kp_nan"]}}
    assert failing["kp_nan == 0"][0] == "column 'kp_nan' missing from the manifest"
    with pytest.raises(DataValidationError, match="at least one clip"):
        _validate(tmp_path, [])


def test_unreadable_manifests(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps(_row("a")) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: malformed"):
        read_manifest(tmp_path / "bad.jsonl")
