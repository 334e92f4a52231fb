"""Params: every section, and load_params (params.yaml + `--set` overrides -> validated Params, or one-line errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError, model_validator

from components.config.base import Strict
from components.config.data import IngestConfig, ShardConfig, TrainingDataConfig, ValidationConfig, WorldConfig
from components.config.dotted import set_dotted
from components.config.errors import ParamsError, describe
from components.config.evaluation import EvaluationConfig, RegistryConfig, SamplingConfig, TrackingConfig
from components.config.model import PortraitModelConfig, VaeConfig
from components.config.preference import AnnotateConfig, CandidatesConfig, CriticConfig, PairsConfig, RoundsConfig
from components.config.train import (
    DpoConfig,
    Phase1Config,
    Phase2Config,
    PretrainDitConfig,
    SyncExpertConfig,
    TlpoConfig,
    VaePretrainConfig,
)

# Facts kept in one place: these keys are not set themselves, they follow another section's key.
FOLLOWS: dict[str, str] = {
    "data.shards": "shard.output",
    "validation.min_duration_s": "ingest.min_duration_s",
    "validation.max_av_mismatch_s": "ingest.max_av_mismatch_s",
    "validation.min_audio_rms_db": "ingest.min_audio_rms_db",
    "validation.fps": "ingest.fps",
    "validation.resolution": "ingest.resolution",
    "validation.n_joints": "ingest.keypoints.joints",
    "ingest.keypoints.n_joints": "ingest.keypoints.joints",
}


class Params(Strict):
    """The whole pipeline's params. The class defaults ARE the toy profile: Params() == load_params("params.yaml")
    (tests/components/test_config.py holds them to it); params.wan.yaml changes what the cluster needs."""

    profile: Literal["toy", "wan"] = "toy"
    seed: int = 0
    world: WorldConfig = WorldConfig()
    ingest: IngestConfig = IngestConfig()
    validation: ValidationConfig = ValidationConfig()
    shard: ShardConfig = ShardConfig()
    data: TrainingDataConfig = TrainingDataConfig()
    vae: VaeConfig = VaeConfig()
    model: PortraitModelConfig = PortraitModelConfig()
    pretrain_vae: VaePretrainConfig = VaePretrainConfig()
    pretrain_dit: PretrainDitConfig = PretrainDitConfig()
    phase1: Phase1Config = Phase1Config()
    phase2: Phase2Config = Phase2Config()
    sampling: SamplingConfig = SamplingConfig()
    sync_expert: SyncExpertConfig = SyncExpertConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    annotate: AnnotateConfig = AnnotateConfig()
    critic: CriticConfig = CriticConfig()
    pairs: PairsConfig = PairsConfig()
    dpo: DpoConfig = DpoConfig()
    tlpo: TlpoConfig = TlpoConfig()
    rounds: RoundsConfig = RoundsConfig()
    tracking: TrackingConfig = TrackingConfig()

    def evaluated_models(self) -> dict[str, str]:
        """Every variant the evaluate stage scores, name -> bundle directory: evaluation.models, then each online
        round's model under the round's name (the registry can register any of them)."""
        rounds = {name: self.rounds.model_dir(name) for name in self.rounds.schedule}
        clash = sorted(set(rounds) & set(self.evaluation.models))
        if clash:
            raise ValueError(f"rounds.schedule names {clash} are evaluation.models keys too: rename the rounds")
        return {**self.evaluation.models, **rounds}

    @model_validator(mode="after")
    def _rounds_chain(self) -> Params:
        """Each online round starts from the policy the previous one made (the first from dpo.output)."""
        previous = self.dpo.output
        for name, start in self.rounds.schedule.items():
            if start.rstrip("/") != previous.rstrip("/"):
                raise ValueError(f"rounds.schedule.{name} starts from {start!r}, but the policy before it is "
                                 f"{previous!r}: set rounds.schedule.{name}: {previous}")
            previous = self.rounds.model_dir(name)
        return self

    @model_validator(mode="after")
    def _wire_followed_keys(self) -> Params:
        """data.shards is shard.output; validation checks ingest's own thresholds (FOLLOWS). Validated once here:
        a Params changed with model_copy(update=...) keeps the old wiring."""
        # object.__setattr__: the model is frozen; the wired copies leave the caller's section objects untouched
        object.__setattr__(self, "data", self.data.reading(self.shard))
        object.__setattr__(self, "validation", self.validation.checking(self.ingest))
        return self

    @model_validator(mode="after")
    def _skeleton_matches_joints(self) -> Params:
        """The skeleton encoder's input channels are ingest's joints. Both stay keys: the model config travels alone
        in checkpoints and bundles, so it must say its own n_joints."""
        n_joints, joints = self.model.modulation.skeleton.n_joints, self.ingest.keypoints.joints
        if n_joints != len(joints):
            raise ValueError(
                f"model.modulation.skeleton.n_joints is {n_joints}, but ingest.keypoints.joints lists {len(joints)} "
                f"joints ({', '.join(joints)}): make them agree"
            )
        return self

    @model_validator(mode="after")
    def _audio_modulation_matches_features(self) -> Params:
        """The audio modulation's input must be the feature the training data hands it."""
        audio = self.model.modulation.audio
        if self.data.audio_features == "mel":
            expected = (self.ingest.audio.n_mels, 4)  # log-mel: 4 mel frames per 25 fps video frame
        elif self.ingest.audio.pretrained_path is None:
            expected = (self.ingest.audio.tiny.hidden_size, self.ingest.audio.tokens_per_frame)
        else:
            expected = (audio.in_dim, self.ingest.audio.tokens_per_frame)  # hidden size known only from the checkpoint
        if (audio.in_dim, audio.tokens_per_frame) != expected:
            raise ValueError(
                f"model.modulation.audio (in_dim={audio.in_dim}, tokens_per_frame={audio.tokens_per_frame}) does not "
                f"match data.audio_features={self.data.audio_features!r}, which gives in_dim={expected[0]}, "
                f"tokens_per_frame={expected[1]}"
            )
        return self


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set a.b=value` pairs; values are parsed as YAML so numbers and booleans keep their types."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set expects key=value, got {pair!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {pair}: the value is not valid YAML ({_one_line(exc)})") from exc
    return overrides


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Load params.yaml, apply `{"a.b": value}` overrides, and validate.

    Raises FileNotFoundError for a missing file and ParamsError (a ValueError) for anything that does not validate,
    with a one-line message: the file, the key, and what is wrong (an unknown key names the nearest valid one).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (world:, ingest:, ...), got {type(tree).__name__}")
    for dotted, value in (overrides or {}).items():
        try:
            set_dotted(tree, dotted, value)
        except ValueError as exc:
            raise ParamsError(f"{path}: --set {dotted}: {exc}") from exc
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise ParamsError(describe(exc, str(path), Params, FOLLOWS)) from exc
