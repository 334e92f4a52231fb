"""round_params: each online round's sections point at its own files, its policy, and windows no other round rates."""

from __future__ import annotations

import pytest

from components.config import AnnotateConfig, Params, RoundsConfig
from components.preference.candidates import select_rows
from components.preference.online_round import round_params


def test_round_params_point_every_section_at_the_round():
    params = Params()
    first, second = round_params(params, "round1"), round_params(params, "round2")
    assert first.dpo.base_model == "models/dpo" and second.dpo.base_model == "models/rounds/round1"  # the reference
    assert second.dpo.output == "models/rounds/round2" and second.dpo.steps == params.rounds.steps
    assert second.dpo.candidates == "data/rounds/round2/candidates" == second.candidates.out_dir
    assert second.dpo.pairs == second.pairs.out_dir == "data/rounds/round2/pairs"
    assert second.pairs.ratings == second.annotate.out_dir == "data/rounds/round2/ratings"
    assert second.pairs.summary_path == "reports/rounds/round2/pairs.json"
    assert {g.model for g in second.candidates.pool} == {"models/rounds/round1"}
    assert sorted(g.guidance for g in second.candidates.pool) == params.rounds.guidances
    assert all(g.seeds == params.rounds.seeds for g in second.candidates.pool)
    assert (first.candidates.window_phase, second.candidates.window_phase) == pytest.approx((1 / 3, 2 / 3))
    # the stages' own sections are untouched
    assert params.dpo.base_model == "models/phase2" and params.candidates.out_dir == "data/candidates"


def test_each_phase_picks_other_windows_as_spread_out():
    n, wanted = 300, 32
    picks = [set(select_rows(n, wanted, phase).tolist()) for phase in (0.0, 1 / 3, 2 / 3)]
    assert all(len(p) == wanted for p in picks)
    assert not (picks[0] & picks[1]) and not (picks[1] & picks[2]) and not (picks[0] & picks[2])
    assert min(picks[0]) == 0 and max(picks[2]) < n and select_rows(5, 32).tolist() == [0, 1, 2, 3, 4]


def test_round_refuses_human_ratings_and_unknown_rounds():
    human = Params(annotate=AnnotateConfig(source="human", human_ratings="ratings.csv"))
    with pytest.raises(ValueError, match="no one has rated the videos this round makes; set rounds.rater: critic"):
        round_params(human, "round1")
    assert round_params(human.model_copy(update={"rounds": RoundsConfig(rater="critic")}), "round1").annotate.source == "critic"
    with pytest.raises(ValueError, match="rounds.schedule has no round 'round3'"):
        round_params(Params(), "round3")


def test_the_schedule_must_chain_from_dpo():
    with pytest.raises(ValueError, match=r"rounds.schedule.round2 starts from 'models/dpo', but the policy before it is "
                                         r"'models/rounds/round1'"):
        Params(rounds=RoundsConfig(schedule={"round1": "models/dpo", "round2": "models/dpo"}))
    with pytest.raises(ValueError, match="are evaluation.models keys too"):
        Params(rounds=RoundsConfig(schedule={"dpo": "models/dpo"})).evaluated_models()
    assert list(Params(rounds=RoundsConfig(schedule={})).evaluated_models())[-1] == "tlpo_expert_quality"
