"""The claims file on hand-made per-window measurements whose verdicts are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from components.evaluation.bootstrap import Interval
from components.evaluation.claims import CheckResult, ClaimResult, judge_claims, write_claims
from components.evaluation.metrics import centred_truth
from components.evaluation.window_scores import PerWindow, WindowScores

W = 16


def _run(truth: np.ndarray, lip_noise: float, sync_c: float, lip_err: float, psnr: float,
         motion: float = 0.0, seed: int = 0) -> WindowScores:
    rng = np.random.default_rng(100 + seed)
    opening = truth + lip_noise * rng.normal(size=truth.shape) if lip_noise < 10 else np.zeros_like(truth)
    values = {"sync_c": np.full(W, sync_c), "lip_err": np.full(W, lip_err), "psnr": np.full(W, psnr),
              "critic_motion": np.full(W, motion)}
    return WindowScores(values, opening - opening.mean(1, keepdims=True))


def _world() -> tuple[PerWindow, dict]:
    truth = centred_truth(np.random.default_rng(0).uniform(0, 1, (W, 9)))
    per_window = PerWindow(lip_truth=truth, resamples=500)
    # Hallo4 Table 6 order on every lip measure: reshape reads the mouth best, downsample not at all
    per_window.add("phase1_reshape", 0, _run(truth, 0.0, 3.0, 0.10, 20.0))
    per_window.add("phase1_half", 0, _run(truth, 0.3, 2.0, 0.20, 20.0))
    per_window.add("phase1_downsample", 0, _run(truth, 99, 1.0, 0.30, 20.0))
    for seed in (0, 1):
        # DPO: better lips and Sync-C than phase 2, PSNR 0.1 dB lower (within 0.3 dB)
        per_window.add("phase2", seed, _run(truth, 0.4, 2.0, 0.2, 22.0, motion=0.0, seed=seed))
        per_window.add("dpo", seed, _run(truth, 0.1, 2.5, 0.15, 21.9, motion=0.2, seed=seed))
        # TLPO: as good as the motion expert on motion, better than DPO on lips and motion only
        per_window.add("tlpo", seed, _run(truth, 0.05, 2.5, 0.15, 21.5, motion=0.5, seed=seed))
        per_window.add("dpo_motion", seed, _run(truth, 0.4, 2.0, 0.2, 22.0, motion=0.5, seed=seed))
    results = {"dpo_motion": {"lip_corr": 0.3, "critic_motion": 0.5, "psnr": 22.0}}
    return per_window, results


def _critic(tmp_path, **dims) -> str:
    path = tmp_path / "critic.json"
    path.write_text(json.dumps({**dims, "summary": {"held_out_windows": 8}}))
    return str(path)


def test_verdicts_of_a_hand_made_run(tmp_path):
    per_window, results = _world()
    critic = _critic(tmp_path,
                     lip_sync={"critic_pair_acc": 0.9, "baseline_pair_acc": 0.5, "n_pairs": 100, "baseline": "Sync-C"},
                     motion={"critic_pair_acc": 0.6, "baseline_pair_acc": 0.55, "n_pairs": 40, "baseline": "jitter"})
    claims = {c.key: c for c in judge_claims(per_window, results, critic, psnr_tolerance=0.3)}

    table6 = claims["hallo4_table6_order"]
    assert table6.verdict == "holds" and all(c.verdict == "holds" for c in table6.checks) and len(table6.checks) == 6
    lip_err = next(c for c in table6.checks if c.metric == "lip_err" and c.label == "phase1_reshape − phase1_half")
    assert lip_err.interval.estimate == pytest.approx(-0.1)  # lower is better: a negative difference holds

    dpo = claims["dpo_beats_sft"]
    assert dpo.verdict == "holds"
    psnr = next(c for c in dpo.checks if c.metric == "psnr")
    assert psnr.interval.estimate == pytest.approx(-0.1) and psnr.interval.n_seeds == 2 and psnr.rule == "within"

    assert claims["single_dimension_dpo"].verdict == "not measured"  # only the motion expert exists here...
    motion_expert = next(c for c in claims["single_dimension_dpo"].checks if c.metric == "critic_motion")
    assert motion_expert.verdict == "holds"  # ...and it improves motion

    experts = claims["tlpo_vs_single_dimension_experts"]
    assert [c.label for c in experts.checks] == ["tlpo − dpo_motion"] * 3  # the only expert is the best on each
    assert {c.metric: c.verdict for c in experts.checks} == {"lip_corr": "holds", "critic_motion": "holds",
                                                             "psnr": "does not hold"}
    assert experts.verdict == "does not hold"

    composite = claims["tlpo_beats_composite_dpo"]  # better lips and motion, worse PSNR: 2 of 3 is enough
    assert composite.require == 2 and composite.verdict == "holds"

    critic_claim = claims["critic_beats_baselines"]
    lips, motion, quality = critic_claim.checks
    # conservative interval: se = (sqrt(.9*.1) + sqrt(.5*.5)) / sqrt(100) = 0.08
    assert lips.interval.estimate == pytest.approx(0.4) and lips.interval.lo == pytest.approx(0.4 - 1.959964 * 0.08)
    assert (lips.verdict, motion.verdict, quality.verdict) == ("holds", "does not hold", "not measured")
    assert "conservative" in lips.note and critic_claim.verdict == "does not hold"


def test_psnr_outside_the_tolerance_fails_the_dpo_claim():
    per_window, _ = _world()
    truth = per_window.lip_truth
    for seed in (0, 1):
        per_window.add("dpo", seed, _run(truth, 0.1, 2.5, 0.15, 21.5, seed=seed))  # 0.5 dB below phase 2
    (dpo,) = [c for c in judge_claims(per_window, {}, None) if c.key == "dpo_beats_sft"]
    assert [c.verdict for c in dpo.checks] == ["holds", "holds", "does not hold"] and dpo.verdict == "does not hold"


def test_per_pair_outcomes_give_a_paired_critic_interval(tmp_path):
    same = [1, 1, 0, 1, 0, 1, 1, 0]
    critic = _critic(tmp_path, quality={"critic_pair_acc": 0.625, "baseline_pair_acc": 0.625, "n_pairs": 8,
                                        "critic_pair_correct": same, "baseline_pair_correct": same})
    (claim,) = [c for c in judge_claims(PerWindow(), {}, critic) if c.key == "critic_beats_baselines"]
    quality = claim.checks[2]
    assert (quality.interval.lo, quality.interval.hi) == (0.0, 0.0) and quality.note == ""
    assert quality.verdict == "does not hold"


def test_an_empty_run_measures_nothing_and_says_so(tmp_path):
    claims = judge_claims(PerWindow(), {}, tmp_path / "missing.json")
    assert {c.verdict for c in claims} == {"not measured"}
    assert any("run the critic stage" in n for n in claims[-1].notes)


def test_claim_needs_its_required_count():
    def check(verdict_ci):
        return CheckResult("a − b", "psnr", "better", None if verdict_ci is None else Interval(*verdict_ci, 8, 1))

    holds, fails, missing = check((1.0, 0.5, 1.5)), check((-1.0, -1.5, -0.5)), check(None)
    assert ClaimResult("k", "s", "p", [holds, holds, fails], require=2).verdict == "holds"
    assert ClaimResult("k", "s", "p", [holds, fails, fails], require=2).verdict == "does not hold"
    assert ClaimResult("k", "s", "p", [holds, missing, fails], require=2).verdict == "not measured"
    assert ClaimResult("k", "s", "p", [holds, missing]).verdict == "not measured"
    assert ClaimResult("k", "s", "p", [holds, fails]).verdict == "does not hold"


def test_claims_files(tmp_path):
    per_window, results = _world()
    claims = judge_claims(per_window, results, None)
    md, js = write_claims(tmp_path / "reports" / "claims.md", tmp_path / "reports" / "claims.json", claims, W, 500,
                          {"dpo_vs_phase2": {"psnr": per_window.compare("dpo", "phase2", "psnr").as_dict()}})
    text = md.read_text()
    assert text.startswith("# Claims of the papers, checked by this run")
    assert "| [Audio modulation: reshape > half > downsample on every lip measure](#hallo4-table6-order) |" in text
    assert "| phase1_reshape − phase1_half | lip err ↓ | −0.100 | [−0.100, −0.100] | 16 windows | CI < 0 | **holds** |" in text
    assert "| dpo − phase2 | PSNR (dB) ↑ | −0.100 | [−0.100, −0.100] | 16 windows × 2 seeds | CI lower bound > −0.3 |" in text
    data = json.loads(js.read_text())
    table6 = data["claims"]["hallo4_table6_order"]
    assert table6["verdict"] == "holds" and table6["holds"] == 1
    check = table6["checks"]["phase1_half_vs_phase1_downsample_sync_c"]
    assert check["diff"] == pytest.approx(1.0) and check["holds"] == 1 and check["beyond_noise"] is True
    assert "holds" not in data["claims"]["critic_beats_baselines"]  # not measured: no number to track
    assert data["comparisons"]["dpo_vs_phase2"]["psnr"]["n_seeds"] == 2
    assert not any(math.isnan(v) for v in _numbers(data))
    assert not list(md.parent.glob(".*tmp*"))


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


def test_online_rounds_claim_checks_each_round_against_the_policy_it_started_from():
    """round1 beats dpo on the composite reward at -0.1 dB (holds); round2 gains nothing over round1 (does not)."""
    truth = centred_truth(np.random.default_rng(0).uniform(0, 1, (W, 9)))
    per_window = PerWindow(lip_truth=truth, resamples=500)
    noise = np.random.default_rng(1).normal(0, 0.01, W)
    for name, composite, psnr in (("dpo", 0.0, 22.0), ("round1", 0.3, 21.9), ("round2", 0.3, 21.9)):
        per_window.add(name, 0, WindowScores({"critic_composite": composite + noise, "psnr": np.full(W, psnr)}))
    (rounds,) = [c for c in judge_claims(per_window, {}, None, 0.3, rounds=["round1", "round2"])
                 if c.key == "online_rounds_improve"]
    verdicts = {(c.label, c.metric): c.verdict for c in rounds.checks}
    assert verdicts == {("round1 − dpo", "critic_composite"): "holds", ("round1 − dpo", "psnr"): "holds",
                        ("round2 − round1", "critic_composite"): "does not hold", ("round2 − round1", "psnr"): "holds"}
    assert rounds.verdict == "does not hold"
    assert all(c.key != "online_rounds_improve" for c in judge_claims(per_window, {}, None, 0.3))  # no rounds: no claim


def test_tlpo_vs_composite_dpo_is_not_measured_when_dpo_trains_on_other_pairs():
    per_window, results = _world()
    (claim,) = [c for c in judge_claims(per_window, results, None, 0.3, dpo_pair_set="lip_sync")
                if c.key == "tlpo_beats_composite_dpo"]
    assert claim.verdict == "not measured" and all(c.interval is None for c in claim.checks)
    assert any("dim-composite" in n for n in claim.notes)
