"""Promotion gates: may a candidate replace the champion? A pure function of the two sets of metrics.

A gate (components.config.PromotionGate) names a metric, which way is better, and by how much (absolute) the
candidate may be worse than the champion. The candidate is promoted only when every gate passes:

- a metric missing from the candidate, or not a finite number, fails its gate (an evaluation that did not
  produce a metric never promotes);
- a metric missing from the champion, or not finite, also fails its gate: there is nothing to compare with,
  so the decision is left to a human (`talkalign promote VERSION --reason ...`);
- with no champion at all, the candidate is promoted when every gated metric is present and finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.config import PromotionGate

# Float noise must not decide a gate whose regression equals the allowance exactly.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class GateCheck:
    metric: str
    direction: str
    max_regression: float
    candidate: float | None
    champion: float | None
    regression: float | None  # how much worse the candidate is (negative: better); None when not comparable
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str]
    checks: list[GateCheck] = field(default_factory=list)


def finite_number(value: Any) -> float | None:
    """value as a float when it is a finite real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def check_gate(
    gate: PromotionGate, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None
) -> GateCheck:
    name = gate.metric
    better = "higher" if gate.direction == "higher" else "lower"
    cand = finite_number(candidate.get(name))
    champ = None if champion is None else finite_number(champion.get(name))

    def result(passed: bool, reason: str, regression: float | None = None) -> GateCheck:
        return GateCheck(name, gate.direction, gate.max_regression, cand, champ, regression, passed, reason)

    if cand is None:
        shown = "missing" if name not in candidate else f"not a finite number ({candidate[name]!r})"
        return result(False, f"{name}: candidate value is {shown}")
    if champion is None:
        return result(True, f"{name}: candidate {_fmt(cand)} is present and finite (no champion to compare with)")
    if champ is None:
        shown = "missing" if name not in champion else f"not a finite number ({champion[name]!r})"
        return result(
            False, f"{name}: champion value is {shown}, so the candidate cannot be compared (promote by hand)"
        )
    regression = champ - cand if gate.direction == "higher" else cand - champ
    passed = regression <= gate.max_regression + TOLERANCE
    verdict = "within" if passed else "exceeds"
    return result(
        passed,
        f"{name} ({better} is better): candidate {_fmt(cand)} vs champion {_fmt(champ)}, regression "
        f"{regression:.4g} {verdict} the allowed {gate.max_regression:g}",
        regression,
    )


def decide(
    candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, gates: Sequence[PromotionGate]
) -> Decision:
    """Decision(promote, reasons, checks). champion None: there is no champion yet."""
    if not gates:
        return Decision(False, ["no gates configured: nothing may be promoted automatically"])
    checks = [check_gate(gate, candidate, champion) for gate in gates]
    failed = [c for c in checks if not c.passed]
    if failed:
        summary = f"refused: {len(failed)} of {len(checks)} gate(s) failed ({', '.join(c.metric for c in failed)})"
        return Decision(False, [summary] + [c.reason for c in failed], checks)
    if champion is None:
        summary = "promoted: no champion yet, and every gated metric of the candidate is present and finite"
    else:
        summary = f"promoted: all {len(checks)} gate(s) passed against the champion"
    return Decision(True, [summary] + [c.reason for c in checks], checks)
