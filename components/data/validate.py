"""Great-expectations suite over the ingest manifest, and the data report that explains its verdict.

One row per ingested clip (see components.data.ingest). The suite checks what training relies on:
durations in range, the ingest fps and resolution, audible audio, audio/video lengths that agree,
keypoints inside [0, 1] with no NaN, no nulls, unique clip ids. `validate_manifest` always writes a
markdown report (counts per identity, duration and loudness stats, every expectation with the clip ids
that broke it) and a json result, then raises DataValidationError if anything failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import ValidationConfig
from components.data.quarantine import read_quarantine
from components.io.atomic import atomic_file

MANIFEST_COLUMNS = (
    "clip_id", "identity", "source", "n_frames", "fps", "width", "height", "duration_s", "audio_duration_s",
    "av_mismatch_s", "audio_rms_db", "n_joints", "kp_min", "kp_max", "kp_nan", "has_truth",
)  # fmt: skip
_MAX_IDS_SHOWN = 20


class DataValidationError(ValueError):
    """The manifest broke the suite; the message names the failures and the report to read."""

    def __init__(self, message: str, result: "ValidationResult"):
        super().__init__(message)
        self.result = result


@dataclass
class ExpectationOutcome:
    label: str  # what was expected, in words
    expectation: str  # great-expectations type, e.g. expect_column_values_to_be_between
    column: str | None
    success: bool
    unexpected_count: int = 0
    failing_clips: list[str] = field(default_factory=list)
    observed: Any = None  # table-level expectations: what was seen
    error: str | None = None  # the expectation could not run at all


@dataclass
class ValidationResult:
    success: bool
    manifest: str
    n_rows: int
    n_failed: int  # expectations that failed
    expectations: list[ExpectationOutcome]
    failing_rows: list[dict[str, Any]]  # manifest rows that broke at least one expectation
    report_path: str
    result_path: str

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest as a DataFrame; rows parsed with the json module so NaN values survive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: malformed manifest row ({exc})") from exc
    if not rows:  # an empty manifest fails on its row count, not on columns it cannot have
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return pd.DataFrame(rows)


def _suite(cfg: ValidationConfig, fps: int, resolution: int, n_joints: int | None) -> list[tuple[str, Any]]:
    import great_expectations.expectations as gxe

    def between(column: str, lo: float | None = None, hi: float | None = None, label: str = "") -> tuple[str, Any]:
        return label, gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi)

    checks = [
        ("at least one clip", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
        ("manifest has every column",
         gxe.ExpectTableColumnsToMatchSet(column_set=list(MANIFEST_COLUMNS), exact_match=False)),
        ("clip_id is unique", gxe.ExpectColumnValuesToBeUnique(column="clip_id")),
        between("duration_s", cfg.min_duration_s, cfg.max_duration_s,
                f"{cfg.min_duration_s:g} s <= duration_s <= {cfg.max_duration_s:g} s"),
        between("fps", fps, fps, f"fps == {fps}"),
        between("width", resolution, resolution, f"width == {resolution}"),
        between("height", resolution, resolution, f"height == {resolution}"),
        between("audio_rms_db", cfg.min_audio_rms_db, None, f"audio_rms_db >= {cfg.min_audio_rms_db:g} dBFS"),
        between("av_mismatch_s", 0, cfg.max_av_mismatch_s, f"0 <= av_mismatch_s <= {cfg.max_av_mismatch_s:g} s"),
        between("kp_min", 0, None, "kp_min >= 0"),
        between("kp_max", None, 1, "kp_max <= 1"),
        between("kp_nan", 0, 0, "kp_nan == 0"),
        between("n_frames", 1, None, "n_frames >= 1"),
    ]  # fmt: skip
    if n_joints is not None:
        checks.append(between("n_joints", n_joints, n_joints, f"n_joints == {n_joints}"))
    checks += [(f"{c} is not null", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in MANIFEST_COLUMNS]
    return checks


def run_suite(
    df: pd.DataFrame, cfg: ValidationConfig, fps: int, resolution: int, n_joints: int | None = None
) -> list[ExpectationOutcome]:
    """Run the suite in a fresh ephemeral context (re-adding names to one context collides)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = context.data_sources.add_pandas("manifest").add_dataframe_asset("clips")
    batch_definition = batch.add_batch_definition_whole_dataframe("all_clips")
    # A column the manifest lacks fails the column-set check; its own checks are reported, not run.
    checks, missing = [], []
    for label, expectation in _suite(cfg, fps, resolution, n_joints):
        column = getattr(expectation, "column", None)
        (missing if column is not None and column not in df.columns else checks).append((label, expectation))
    suite = context.suites.add(gx.ExpectationSuite(name="clip_manifest"))
    for _, expectation in checks:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="clip_manifest", data=batch_definition, suite=suite)
    )
    frame = df.reset_index(drop=True)
    run = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})

    raw_ids = frame["clip_id"] if "clip_id" in frame.columns else pd.Series([None] * len(frame))
    ids = [str(v) if pd.notna(v) else None for v in raw_ids]
    # Match results to checks by expectation id rather than trusting the order they come back in.
    by_id = {r.expectation_config.id: r for r in run.results}
    outcomes = []
    for (label, _), expectation in zip(checks, suite.expectations):
        r = by_id[expectation.id]
        info = r.exception_info or {}
        error = info.get("exception_message") if info.get("raised_exception") else None
        index = r.result.get("unexpected_index_list") or []
        failing = [ids[i] if ids[i] is not None else f"row {i + 1}" for i in index if isinstance(i, Integral)]
        outcomes.append(
            ExpectationOutcome(
                label=label,
                expectation=r.expectation_config.type,
                column=r.expectation_config.kwargs.get("column"),
                success=bool(r.success),
                unexpected_count=int(r.result.get("unexpected_count") or 0),
                failing_clips=list(dict.fromkeys(failing)),
                # details says what a column-set check missed; observed_value is the plain table-level value
                observed=_jsonable(r.result.get("details") or r.result.get("observed_value")),
                error=error,
            )
        )
    for label, expectation in missing:
        outcomes.append(
            ExpectationOutcome(
                label=label,
                expectation=expectation.expectation_type,
                column=expectation.column,
                success=False,
                unexpected_count=len(frame),
                error=f"column {expectation.column!r} missing from the manifest",
            )
        )
    return outcomes


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _stats_table(df: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| statistic | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    numeric = df[columns].apply(pd.to_numeric, errors="coerce")
    for name, fn in (("min", "min"), ("mean", "mean"), ("median", "median"), ("max", "max")):
        values = getattr(numeric, fn)()
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    return lines


def render_report(result: ValidationResult, df: pd.DataFrame, quarantine_path: str | Path | None = None) -> str:
    n_failed, n_all = len(result.failures), len(result.expectations)
    verdict = "PASSED" if result.success else f"FAILED ({n_failed} of {n_all} expectations)"
    lines = [
        "# Data report",
        "",
        f"- manifest: `{result.manifest}`",
        f"- clips: {result.n_rows}, identities: {df['identity'].nunique() if 'identity' in df else 'unknown'}",
        f"- suite: **{verdict}**",
    ]
    quarantined = read_quarantine(quarantine_path) if quarantine_path else []
    if quarantine_path:
        lines.append(f"- quarantined at ingest: {len(quarantined)} (`{quarantine_path}`)")
    lines.append("")

    if result.failures:
        lines += ["## Failures", ""]
        for e in result.failures:
            shown = ", ".join(f"`{c}`" for c in e.failing_clips[:_MAX_IDS_SHOWN])
            more = f" and {len(e.failing_clips) - _MAX_IDS_SHOWN} more" if len(e.failing_clips) > _MAX_IDS_SHOWN else ""
            what = f"{e.unexpected_count} clip(s): {shown}{more}" if e.failing_clips else f"observed {e.observed}"
            lines.append(f"- **{e.label}**: {e.error or what}")
        lines.append("")

    if len(df) and {"identity", "clip_id", "duration_s"} <= set(df.columns):
        per_identity = df.groupby("identity", dropna=False).agg(
            clips=("clip_id", "size"), seconds=("duration_s", lambda s: pd.to_numeric(s, errors="coerce").sum())
        )
        lines += ["## Clips per identity", "", "| identity | clips | seconds |", "|---|---|---|"]
        lines += [f"| {ident} | {int(row.clips)} | {row.seconds:.1f} |" for ident, row in per_identity.iterrows()]
        lines.append("")
    stats = [c for c in ("duration_s", "audio_duration_s", "av_mismatch_s", "audio_rms_db", "n_frames") if c in df]
    if len(df) and stats:
        lines += ["## Durations and loudness", ""] + _stats_table(df, stats) + [""]

    lines += ["## Expectations", "", "| | expectation | failing | offending clips |", "|---|---|---|---|"]
    for e in result.expectations:
        mark = "pass" if e.success else "**FAIL**"
        ids = ", ".join(e.failing_clips[:_MAX_IDS_SHOWN]) + (" ..." if len(e.failing_clips) > _MAX_IDS_SHOWN else "")
        detail = e.error or ids or ("" if e.success or e.observed is None else f"observed {e.observed}")
        lines.append(f"| {mark} | {e.label} | {e.unexpected_count} | {detail} |")

    if quarantined:
        lines += ["", "## Quarantined at ingest", "", "| clip | reason |", "|---|---|"]
        lines += [f"| {q.clip} | {q.reason.replace('|', '/')} |" for q in quarantined]
    return "\n".join(lines) + "\n"


def _one_failure(e: ExpectationOutcome, max_ids: int = 5) -> str:
    if not e.failing_clips:
        return f"{e.label} ({e.error or f'observed {e.observed}'})"
    more = " ..." if len(e.failing_clips) > max_ids else ""
    return f"{e.label} ({e.unexpected_count} clip(s): {', '.join(e.failing_clips[:max_ids])}{more})"


def validate_manifest(
    cfg: ValidationConfig,
    manifest_path: str | Path | None = None,
    *,
    expected_fps: int,
    expected_resolution: int,
    expected_n_joints: int | None = None,
    report_path: str | Path | None = None,
    result_path: str | Path | None = None,
    quarantine_path: str | Path | None = None,
    raise_on_failure: bool = True,
) -> ValidationResult:
    """Validate the manifest, write the markdown report and json result, raise DataValidationError on failure."""
    manifest_path = Path(manifest_path if manifest_path is not None else cfg.manifest)
    report_path = Path(report_path if report_path is not None else cfg.report_path)
    result_path = Path(result_path if result_path is not None else cfg.result_path)
    df = read_manifest(manifest_path)
    outcomes = run_suite(df, cfg, fps=expected_fps, resolution=expected_resolution, n_joints=expected_n_joints)

    failing_ids = {c for e in outcomes if not e.success for c in e.failing_clips}
    failing_rows = [_jsonable(r) for r in df.to_dict(orient="records") if str(r.get("clip_id")) in failing_ids]
    result = ValidationResult(
        success=all(e.success for e in outcomes),
        manifest=str(manifest_path),
        n_rows=len(df),
        n_failed=sum(not e.success for e in outcomes),
        expectations=outcomes,
        failing_rows=failing_rows,
        report_path=str(report_path),
        result_path=str(result_path),
    )
    _atomic_write(report_path, render_report(result, df, quarantine_path))
    _atomic_write(result_path, json.dumps(asdict(result), indent=1, ensure_ascii=False, default=str) + "\n")

    if not result.success and raise_on_failure:
        summary = "; ".join(_one_failure(e) for e in result.failures)
        raise DataValidationError(
            f"{manifest_path}: data validation failed, {len(result.failures)} of {len(outcomes)} expectations: "
            f"{summary}. Report: {report_path}",
            result,
        )
    return result
