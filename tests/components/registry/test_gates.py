import math

import pytest

from components.config import Params, PromotionGate, RegistryConfig
from components.registry.gates import decide

GATES = (
    PromotionGate(metric="sync_c", direction="higher", max_regression=0.5),
    PromotionGate(metric="psnr", direction="higher", max_regression=0.5),
    PromotionGate(metric="lip_err", direction="lower", max_regression=0.01),
)
CHAMPION = {"sync_c": 5.0, "psnr": 20.0, "lip_err": 0.10}


def test_candidate_within_every_margin_is_promoted():
    # Worse by exactly the allowance (float noise included) still passes; better passes trivially.
    candidate = {"sync_c": 4.5, "psnr": 19.7, "lip_err": 0.11, "extra": 1.0}
    decision = decide(candidate, CHAMPION, GATES)
    assert decision.promote
    assert decision.reasons[0] == "promoted: all 3 gate(s) passed against the champion"
    assert [c.passed for c in decision.checks] == [True, True, True]
    assert decision.checks[0].regression == pytest.approx(0.5)
    assert decision.checks[2].regression == pytest.approx(0.01)  # lower is better: candidate - champion


def test_one_regression_beyond_its_margin_refuses_naming_the_metric():
    candidate = {"sync_c": 4.4, "psnr": 25.0, "lip_err": 0.05}
    decision = decide(candidate, CHAMPION, GATES)
    assert not decision.promote
    assert decision.reasons[0] == "refused: 1 of 3 gate(s) failed (sync_c)"
    assert "sync_c (higher is better): candidate 4.4 vs champion 5" in decision.reasons[1]
    assert "exceeds the allowed 0.5" in decision.reasons[1]
    assert len(decision.reasons) == 2  # only the failing gate is explained after the summary


def test_lower_is_better_direction():
    worse = decide({"sync_c": 5.0, "psnr": 20.0, "lip_err": 0.2}, CHAMPION, GATES)
    better = decide({"sync_c": 5.0, "psnr": 20.0, "lip_err": 0.0}, CHAMPION, GATES)
    assert not worse.promote and "lip_err" in worse.reasons[0]
    assert better.promote and better.checks[2].regression == pytest.approx(-0.1)


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "4.9", True])
def test_missing_or_non_finite_candidate_metric_refuses(bad):
    candidate = {"sync_c": 6.0, "psnr": 21.0, "lip_err": 0.0}
    if bad is None:
        del candidate["psnr"]
    else:
        candidate["psnr"] = bad
    for champion in (CHAMPION, None):  # also when there is no champion yet
        decision = decide(candidate, champion, GATES)
        assert not decision.promote
        assert "psnr: candidate value is" in decision.reasons[1]


def test_no_champion_promotes_when_every_gated_metric_is_present_and_finite():
    decision = decide({"sync_c": 0.1, "psnr": 3.0, "lip_err": 9.0}, None, GATES)
    assert decision.promote  # nothing to compare with: values themselves are not judged
    assert decision.reasons[0] == (
        "promoted: no champion yet, and every gated metric of the candidate is present and finite"
    )
    assert all(c.champion is None and c.regression is None for c in decision.checks)


def test_champion_without_the_metric_refuses():
    decision = decide({"sync_c": 9.0, "psnr": 30.0, "lip_err": 0.0}, {"psnr": 20.0, "lip_err": 0.1}, GATES)
    assert not decision.promote
    assert "sync_c: champion value is missing" in decision.reasons[1]


def test_no_gates_never_promotes():
    assert not decide({"sync_c": 1.0}, None, ()).promote


def test_registry_config_defaults_and_validation():
    gates = {g.metric: (g.direction, g.max_regression) for g in Params().registry.gates}
    assert gates == {"sync_c": ("higher", 0.5), "psnr": ("higher", 0.5), "lip_corr": ("higher", 0.05)}
    with pytest.raises(ValueError, match="at least one gate"):
        RegistryConfig(gates=())
    with pytest.raises(ValueError, match="gated more than once"):
        RegistryConfig(gates=(GATES[0], GATES[0]))
    with pytest.raises(ValueError):
        PromotionGate(metric="psnr", max_regression=-1)
