"""The papers' claims the toy profile tests, judged by the evaluate stage from its own measurements.

Each claim is a few checks; a check is a paired difference (variant - baseline, window_scores.py) with its 95 %
bootstrap CI, and a rule on that CI:
- better: the CI lies wholly on the better side of 0 (beyond noise);
- within tolerance: the CI's worse-side bound is within `tolerance` of 0 (non-inferiority, e.g. PSNR within 0.3 dB);
- not worse: the CI reaches 0 or the better side (not worse beyond noise: "within CI of it").
A check holds, does not hold, or is not measured (a variant or metric absent from this run). A claim holds when
`require` of its checks hold (all by default), does not hold when too few can, and is not measured otherwise.
The critic's claim reads reports/critic.json (held-out pair accuracy of the critic and of its baseline).
`judge_claims` returns the verdicts; `write_claims` writes evaluation.claims_path and the DVC metric file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from components.evaluation.bootstrap import Interval, paired_bootstrap
from components.evaluation.report import METRICS
from components.evaluation.window_scores import PerWindow
from components.io.atomic import atomic_file, write_json

__all__ = ["CheckResult", "ClaimResult", "DIMENSION_MEASURES", "judge_claims", "render_claims", "write_claims"]

Verdict = Literal["holds", "does not hold", "not measured"]
Rule = Literal["better", "within", "not_worse"]

# The measure each preference dimension is judged on: the world's ground truth where it has one, else the critic.
DIMENSION_MEASURES = {"lip_sync": "lip_corr", "motion": "critic_motion", "quality": "psnr"}
# Variants tuned on one dimension only, when the run evaluates them (evaluation.models keys).
SINGLE_DIMENSION_VARIANTS = {d: (f"dpo_{d}", f"tlpo_expert_{d}") for d in DIMENSION_MEASURES}
LIP_MEASURES = ("lip_corr", "lip_err", "sync_c")
Z95 = 1.959964


@dataclass
class CheckResult:
    label: str  # what is compared, e.g. "dpo − phase2"
    metric: str
    rule: Rule
    interval: Interval | None  # None: not measured
    tolerance: float = 0.0
    note: str = ""  # how the interval was computed when it is not the paired window bootstrap
    units: str = "windows"

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].better != "lower" if self.metric in METRICS else True

    @property
    def verdict(self) -> Verdict:
        if self.interval is None or not math.isfinite(self.interval.estimate):
            return "not measured"
        sign = 1.0 if self.higher_is_better else -1.0
        lo, hi = sorted((sign * self.interval.lo, sign * self.interval.hi))  # the gain's interval
        ok = {"better": lo > 0, "within": lo > -self.tolerance, "not_worse": hi >= 0}[self.rule]
        return "holds" if ok else "does not hold"

    def rule_text(self) -> str:
        up = self.higher_is_better
        if self.rule == "better":
            return "CI > 0" if up else "CI < 0"
        if self.rule == "within":
            return f"CI lower bound > −{self.tolerance:g}" if up else f"CI upper bound < +{self.tolerance:g}"
        return "CI upper bound ≥ 0 (not worse beyond noise)" if up else "CI lower bound ≤ 0 (not worse beyond noise)"

    def as_dict(self) -> dict:
        out = {"compared": self.label, "metric": self.metric, "rule": self.rule_text(), "verdict": self.verdict}
        if self.verdict != "not measured":
            out |= self.interval.as_dict() | {"holds": int(self.verdict == "holds")}
        return out | ({"note": self.note} if self.note else {})


@dataclass
class ClaimResult:
    key: str
    statement: str
    source: str
    checks: list[CheckResult]
    require: int | None = None  # how many checks must hold; None: all
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        need = len(self.checks) if self.require is None else self.require
        verdicts = [c.verdict for c in self.checks]
        holding, open_ = verdicts.count("holds"), verdicts.count("not measured")
        if not self.checks:
            return "not measured"
        if holding >= need:
            return "holds"
        return "does not hold" if holding + open_ < need else "not measured"

    def as_dict(self) -> dict:
        checks = {f"{c.label.replace(' − ', '_vs_')}_{c.metric}": c.as_dict() for c in self.checks}
        out = {"statement": self.statement, "source": self.source, "verdict": self.verdict, "checks": checks}
        return out | ({"holds": int(self.verdict == "holds")} if self.verdict != "not measured" else {})


def _check(per_window: PerWindow, variant: str, baseline: str, metric: str, rule: Rule,
           tolerance: float = 0.0) -> CheckResult:
    return CheckResult(f"{variant} − {baseline}", metric, rule, per_window.compare(variant, baseline, metric), tolerance)


def hallo4_table6(per_window: PerWindow) -> ClaimResult:
    checks = [_check(per_window, a, b, m, "better")
              for m in LIP_MEASURES for a, b in (("phase1_reshape", "phase1_half"), ("phase1_half", "phase1_downsample"))]
    return ClaimResult("hallo4_table6_order", "Audio modulation: reshape > half > downsample on every lip measure",
                       "Hallo4, Table 6 (temporal reshape of audio features vs audio/2 and audio/4)", checks)


def dpo_beats_sft(per_window: PerWindow, psnr_tolerance: float) -> ClaimResult:
    checks = [_check(per_window, "dpo", "phase2", "lip_corr", "better"),
              _check(per_window, "dpo", "phase2", "sync_c", "better"),
              _check(per_window, "dpo", "phase2", "psnr", "within", psnr_tolerance)]
    return ClaimResult("dpo_beats_sft", f"Flow-DPO lifts lip sync over its SFT base (phase 2), PSNR within "
                       f"{psnr_tolerance:g} dB", "Hallo4, Sec. 4 (Sync-C 5.689 vs 5.387 after DPO)", checks)


def _single_dimension_variant(per_window: PerWindow, dimension: str) -> str:
    """The run's model tuned on `dimension` alone: dpo_<d> when evaluated, else TLPO's expert tlpo_expert_<d>."""
    variants = SINGLE_DIMENSION_VARIANTS[dimension]
    return next((v for v in variants if v in per_window.runs), variants[0])


def single_dimension_dpo(per_window: PerWindow) -> ClaimResult:
    checks = [_check(per_window, _single_dimension_variant(per_window, d), "phase2", m, "better")
              for d, m in DIMENSION_MEASURES.items()]
    return ClaimResult("single_dimension_dpo", "DPO on one dimension's pairs improves that dimension over phase 2",
                       "FantasyTalking2 (single-objective tuning), talkalign issue 12", checks)


def _best_expert(results: dict[str, dict[str, float]], dimension: str, metric: str) -> str | None:
    """The single-dimension variant with the best value on `metric` (any dimension's expert may be best)."""
    present = [v for variants in SINGLE_DIMENSION_VARIANTS.values() for v in variants
               if math.isfinite(results.get(v, {}).get(metric, math.nan))]
    if not present:
        return None
    sign = -1.0 if METRICS[metric].better == "lower" else 1.0
    return max(present, key=lambda v: sign * results[v][metric])


def tlpo_vs_experts(per_window: PerWindow, results: dict[str, dict[str, float]]) -> ClaimResult:
    checks = []
    for dimension, metric in DIMENSION_MEASURES.items():
        expert = _best_expert(results, dimension, metric)
        checks.append(_check(per_window, "tlpo", expert, metric, "not_worse") if expert else
                      CheckResult(f"tlpo − best {dimension} expert", metric, "not_worse", None))
    return ClaimResult("tlpo_vs_single_dimension_experts", "TLPO is as good as the best single-dimension expert on "
                       "every dimension at once (no trade-off)", "FantasyTalking2, TLPO", checks)


def tlpo_vs_composite(per_window: PerWindow, dpo_pair_set: str = "composite") -> ClaimResult:
    """Against the `dpo` variant only when it was trained on the composite pairs; otherwise not measured (the
    ablation row with dpo.pair_set=composite measures composite DPO)."""
    if dpo_pair_set == "composite":
        checks = [_check(per_window, "tlpo", "dpo", m, "better") for m in DIMENSION_MEASURES.values()]
    else:
        checks = [CheckResult("tlpo − composite dpo", m, "better", None) for m in DIMENSION_MEASURES.values()]
    claim = ClaimResult("tlpo_beats_composite_dpo", "TLPO beats composite-reward DPO on at least 2 of 3 dimensions",
                        "FantasyTalking2, TLPO vs multi-objective DPO", checks, require=2)
    if dpo_pair_set != "composite":
        claim.notes.append(f"this run's dpo trains on {dpo_pair_set} pairs (dpo.pair_set), not the composite ones: "
                           "`talkalign ablations --only dim-composite` measures composite DPO")
    return claim


def online_rounds(per_window: PerWindow, rounds: list[str], start: str, psnr_tolerance: float) -> ClaimResult:
    """Each round against the policy it started from: the composite reward better beyond CI, PSNR within tolerance."""
    checks = []
    for previous, current in zip([start, *rounds], rounds):
        checks += [_check(per_window, current, previous, "critic_composite", "better"),
                   _check(per_window, current, previous, "psnr", "within", psnr_tolerance)]
    return ClaimResult("online_rounds_improve", f"Each online preference round beats the policy it started from on "
                       f"the composite reward, PSNR within {psnr_tolerance:g} dB",
                       "talkalign (beyond both papers), issue 12", checks)


def _accuracy_difference(m: dict) -> tuple[Interval, str]:
    """critic - baseline held-out pair accuracy. Per-pair outcomes (critic_pair_correct / baseline_pair_correct,
    same pairs) give a paired bootstrap; without them, a conservative normal interval whose standard error assumes
    the worst correlation of the two (sd_a + sd_b) / sqrt(n), which is never narrower than the paired one."""
    if "critic_pair_correct" in m and "baseline_pair_correct" in m:
        return paired_bootstrap(np.asarray(m["critic_pair_correct"]), np.asarray(m["baseline_pair_correct"])), ""
    a, b, n = float(m["critic_pair_acc"]), float(m["baseline_pair_acc"]), int(m["n_pairs"])
    se = (math.sqrt(a * (1 - a)) + math.sqrt(b * (1 - b))) / math.sqrt(max(n, 1))
    diff = a - b
    return (Interval(diff, diff - Z95 * se, diff + Z95 * se, n, 1),
            "conservative normal interval (critic.json has no per-pair outcomes to pair)")


def critic_beats_baselines(critic_path: str | Path | None) -> ClaimResult:
    claim = ClaimResult("critic_beats_baselines", "The critic orders held-out pairs like the raters better than its "
                        "baseline does, on every dimension", "FantasyTalking2, Talking-Critic", [])
    metrics = {}
    if critic_path is not None and Path(critic_path).is_file():
        metrics = json.loads(Path(critic_path).read_text())
    else:
        claim.notes.append(f"no critic metrics at {critic_path}: run the critic stage")
    for dimension in DIMENSION_MEASURES:
        m = metrics.get(dimension)
        if not m or not all(isinstance(m.get(k), (int, float)) for k in ("critic_pair_acc", "baseline_pair_acc", "n_pairs")):
            claim.checks.append(CheckResult(f"critic − baseline ({dimension})", "pair_acc", "better", None, units="pairs"))
            continue
        interval, note = _accuracy_difference(m)
        claim.checks.append(CheckResult(f"critic − baseline ({dimension})", "pair_acc", "better", interval, note=note,
                                        units="held-out pairs"))
        claim.notes.append(f"{dimension} baseline: {m.get('baseline', 'not named')}")
    return claim


def judge_claims(per_window: PerWindow, results: dict[str, dict[str, float]], critic_path: str | Path | None,
                 psnr_tolerance: float = 0.3, rounds: list[str] = (), dpo_pair_set: str = "composite") -> list[ClaimResult]:
    """Every claim, in the order of the papers' sections, then the online rounds (`rounds`, in order, the first
    started from dpo) when the run has any; `dpo_pair_set`: the pairs the `dpo` variant trained on. See the
    module docstring."""
    claims = [hallo4_table6(per_window), dpo_beats_sft(per_window, psnr_tolerance), single_dimension_dpo(per_window),
              tlpo_vs_experts(per_window, results), tlpo_vs_composite(per_window, dpo_pair_set),
              critic_beats_baselines(critic_path)]
    return claims + ([online_rounds(per_window, list(rounds), "dpo", psnr_tolerance)] if rounds else [])


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _check_row(c: CheckResult) -> str:
    label = METRICS[c.metric].label if c.metric in METRICS else c.metric.replace("_", " ")
    arrow = "" if c.metric not in METRICS else {"higher": " ↑", "lower": " ↓"}.get(METRICS[c.metric].better, "")
    if c.verdict == "not measured":
        return f"| {c.label} | {label}{arrow} | – | – | – | {c.rule_text()} | not measured |"
    i = c.interval
    n = f"{i.n_windows} {c.units}" + (f" × {i.n_seeds} seeds" if i.n_seeds > 1 else "")
    verdict = f"**{c.verdict}**" if c.verdict == "holds" else c.verdict
    return (f"| {c.label} | {label}{arrow} | {_signed(i.estimate)} | [{_signed(i.lo)}, {_signed(i.hi)}] | {n} | "
            f"{c.rule_text()} | {verdict} |")


def render_claims(claims: list[ClaimResult], n_windows: int, resamples: int) -> str:
    out = [
        "# Claims of the papers, checked by this run",
        "",
        f"Written by the evaluate stage on the {n_windows} held-out test windows. Each check is a paired difference "
        "(variant − baseline) over the same windows generated from the same noise, with a 95 % percentile bootstrap "
        f"CI ({resamples} resamples of the windows, and of the sampling seeds both variants were drawn with); a "
        "difference is *beyond noise* when its CI excludes 0. Lip corr is a pooled correlation: each resample "
        "recomputes it over the resampled windows. Quote or link this file; do not copy its figures by hand.",
        "",
        "| claim | source | verdict |",
        "|---|---|---|",
        *[f"| [{c.statement}](#{c.key.replace('_', '-')}) | {c.source} | **{c.verdict}** |" for c in claims],
        "",
    ]
    for c in claims:
        need = "every check must hold" if c.require is None else f"{c.require} of {len(c.checks)} checks must hold"
        out += [f"<a id=\"{c.key.replace('_', '-')}\"></a>", f"## {c.statement}", "",
                f"{c.source}. Verdict: **{c.verdict}** ({need}).", "",
                "| compared | measure | difference | 95 % CI | n | rule | verdict |", "|---|---|---:|---|---|---|---|",
                *[_check_row(k) for k in c.checks], ""]
        notes = [*c.notes, *sorted({f"{k.label}: {k.note}" for k in c.checks if k.note})]
        out += [f"- {n}" for n in notes] + ([""] if notes else [])
    out += ["Measures per dimension: " + ", ".join(f"{d} → `{m}`" for d, m in DIMENSION_MEASURES.items())
            + " (the synthetic world's truth where it has one, the critic for motion). Single-dimension variants "
            "are the evaluation.models entries named " + ", ".join(f"`{a}` / `{b}`" for a, b in
                                                                    SINGLE_DIMENSION_VARIANTS.values()) + ".", ""]
    return "\n".join(out)


def write_claims(md_path: str | Path, json_path: str | Path, claims: list[ClaimResult], n_windows: int,
                 resamples: int, comparisons: dict[str, dict] | None = None) -> tuple[Path, Path]:
    """claims.md and the DVC metric file ({claim: {verdict, holds, checks: {...}}}, plus every report comparison)."""
    md_path, json_path = Path(md_path), Path(json_path)
    with atomic_file(md_path) as tmp:
        tmp.write_text(render_claims(claims, n_windows, resamples))
    write_json(json_path, {"claims": {c.key: c.as_dict() for c in claims}, "comparisons": comparisons or {}})
    return md_path, json_path
