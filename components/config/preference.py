"""Params of the preference data stages: candidates, ratings, the critic, pairs (issue 5)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict
from components.config.train import OptimConfig, TrainLoopConfig

DIMENSIONS: tuple[str, ...] = ("lip_sync", "motion", "quality")


class GeneratorSpec(Strict):
    """One source of candidate videos. kind=model samples a model bundle at a guidance scale with some seeds;
    kind=still repeats the reference frame (a talking head that never talks: the floor of lip sync and motion)."""

    name: str
    kind: Literal["model", "still"] = "model"
    model: str | None = None  # bundle directory (kind=model)
    guidance: float = Field(2.0, ge=0)
    seeds: list[int] = [0]

    @model_validator(mode="after")
    def _model_given(self) -> GeneratorSpec:
        if self.kind == "model" and not self.model:
            raise ValueError(f"generator {self.name!r}: kind=model needs `model` (a bundle directory)")
        return self


class CandidatesConfig(Strict):
    """K candidate videos per conditioning window of the preference split."""

    out_dir: str = "data/candidates"
    split: str = "train"  # the preference split: conditioning windows come from here, never from val/test
    windows: int = Field(64, ge=1)  # evenly spaced windows of the split's latent cache
    # where in the gap between two evenly spaced windows to take each one (0 = at the left end): online round k of
    # R takes phase k / (R + 1), so every round rates windows no earlier round has seen
    window_phase: float = Field(0.0, ge=0, lt=1)
    sampling_steps: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    shard_maxcount: int = Field(64, ge=1)
    pool: list[GeneratorSpec] = [
        GeneratorSpec(name="phase2_g2", model="models/phase2", guidance=2.0, seeds=[0, 1]),
        GeneratorSpec(name="phase2_g1", model="models/phase2", guidance=1.0),
        GeneratorSpec(name="phase1_reshape", model="models/phase1/reshape", guidance=2.0),
        GeneratorSpec(name="phase1_downsample", model="models/phase1/downsample", guidance=2.0),
        GeneratorSpec(name="still", kind="still"),
    ]


class AnnotateConfig(Strict):
    """Likert 1-5 ratings per candidate and dimension, from people, the simulated rater, or the critic."""

    source: Literal["simulated", "human", "critic"] = "simulated"
    out_dir: str = "data/ratings"
    report_path: str = "reports/annotate.md"
    human_ratings: str | None = None  # CSV or JSONL: candidate_id, rater_id, dimension, score
    normalise_raters: bool = False  # z-score each rater's scores before the mean (human source)
    simulated_raters: int = Field(3, ge=1)
    rater_noise: float = Field(0.5, ge=0)  # std of each rating's noise, in Likert points
    rater_bias: float = Field(0.3, ge=0)  # std of each rater's constant offset, in Likert points
    critic_dir: str = "models/critic"  # source=critic: the critic stage's model
    seed: int = 0


class CriticConfig(TrainLoopConfig):
    """The Talking-Critic analogue: video + audio -> a score per dimension, trained with a Bradley-Terry loss."""

    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)
    checkpoint_every: int = Field(150, ge=1)
    log_every: int = Field(25, ge=1)
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=20)
    ratings: str = "data/ratings"
    out_dir: str = "models/critic"
    metrics_path: str = "reports/critic.json"
    held_out_raters: int = Field(1, ge=1)  # evaluation uses only these raters' ratings ...
    held_out_share: float = Field(0.5, gt=0, lt=1)  # ... of this share of the windows (never trained on)
    width: int = Field(16, ge=4)


class PairsConfig(Strict):
    """Preference pairs per window from the (aggregated) ratings."""

    ratings: str = "data/ratings"
    out_dir: str = "data/pairs"
    report_path: str = "reports/pairs.md"
    summary_path: str = "reports/pairs.json"  # pair counts per set (a DVC metric)
    figure_path: str = "reports/pairs_margins.png"
    strategy: Literal["best_vs_worst", "best_vs_worse", "better_vs_worst", "better_vs_worse"] = "best_vs_worst"
    # composite reward = weighted mean of the dimensions (Hallo4: plain mean of alignment and fidelity)
    weights: dict[str, float] = {"lip_sync": 1.0, "motion": 1.0, "quality": 1.0}
    min_margin: float = Field(0.5, ge=0)  # reward difference below which a pair is a tie and skipped
    seed: int = 0

    @model_validator(mode="after")
    def _known_dimensions(self) -> PairsConfig:
        unknown = set(self.weights) - set(DIMENSIONS)
        if unknown or not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"pairs.weights: dimensions must be among {DIMENSIONS} with one positive, got {self.weights}")
        return self


class RoundsConfig(Strict):
    """Online preference rounds after dpo (beyond both papers). Round k samples candidates from the current policy
    (the model it starts from), rates them (annotate.source), curates composite pairs (pairs.*) and fine-tunes that
    policy with Flow-DPO (dpo.*, `steps` here): the reference is the policy the round started from, so each round
    refreshes it. dvc.yaml runs one `round@<name>` stage per entry of `schedule`, in order."""

    # round -> the policy it starts from: the first round from dpo.output, each next one from the last one's model
    # (`<out_dir>/<previous round>`; Params checks the chain). {} = no rounds.
    schedule: dict[str, str] = {"round1": "models/dpo", "round2": "models/rounds/round1"}
    out_dir: str = "models/rounds"  # round <name>'s model: <out_dir>/<name>
    data_dir: str = "data/rounds"  # its candidates/, ratings/ and pairs/: <data_dir>/<name>/
    reports_dir: str = "reports/rounds"  # its annotate and pairs reports: <reports_dir>/<name>/
    seeds: list[int] = [0, 1, 2]  # candidates per window: the current policy at every seed x guidance
    guidances: list[float] = [1.0, 2.0]
    windows: int = Field(32, ge=1)  # conditioning windows per round (round k of R: candidates.window_phase k / (R + 1))
    steps: int = Field(100, ge=1)  # DPO steps per round
    # who rates a round's candidates: `annotate` = annotate.source (simulated or critic; human ratings cannot
    # exist for videos the round has just made), or `critic` / `simulated` whatever annotate.source says
    rater: Literal["annotate", "critic", "simulated"] = "annotate"
    figure_path: str = "reports/rounds.png"  # each measure per round (the evaluate stage)

    def model_dir(self, name: str) -> str:
        return f"{self.out_dir}/{name}"
