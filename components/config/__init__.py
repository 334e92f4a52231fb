"""Typed pipeline parameters, loaded from params.yaml.

The profile (toy on a laptop, wan on a GPU cluster) is data: the same classes hold both. Their defaults are the toy
profile (params.yaml lists the keys a user tunes, with the same values); params.wan.yaml sets the cluster's values.

    base.py        Strict: unknown keys fail, values frozen, a partial nested mapping keeps the field's default
    data.py        world, ingest, validation, shard, data (shards -> training windows)
    model.py       the portrait DiT (backbone, text, modulation) and the VAE
    train.py       the training loop and one class per training stage (pretrain_vae ... dpo, tlpo, sync_expert)
    preference.py  candidates, annotate, critic, pairs
    evaluation.py  sampling, evaluation, registry, tracking
    params.py      Params and load_params
    errors.py      ParamsError: one line naming the file, the key and the problem
"""

from components.config.base import Strict
from components.config.data import (
    AudioEncoderConfig,
    IngestConfig,
    KeypointConfig,
    ShardConfig,
    TrainingDataConfig,
    ValidationConfig,
    Wav2Vec2Tiny,
    WorldConfig,
)
from components.config.errors import ParamsError, valid_keys
from components.config.evaluation import (
    EvaluationConfig,
    PromotionGate,
    RegistryConfig,
    SamplingConfig,
    TrackingConfig,
)
from components.config.model import (
    AudioModulationConfig,
    BackboneConfig,
    ImageEncoderConfig,
    ModulationConfig,
    NullMode,
    PortraitModelConfig,
    SkeletonModulationConfig,
    TemporalVariant,
    TextEncoderConfig,
    VaeConfig,
)
from components.config.params import FOLLOWS, Params, load_params, parse_overrides
from components.config.preference import (
    DIMENSIONS,
    AnnotateConfig,
    CandidatesConfig,
    CriticConfig,
    GeneratorSpec,
    PairsConfig,
    RoundsConfig,
)
from components.config.train import (
    DpoConfig,
    FlowTrainConfig,
    GateActivation,
    ImageCorpusConfig,
    LoraTarget,
    OptimConfig,
    PairWeighting,
    Phase1Config,
    Phase2Config,
    PreferenceTrainConfig,
    PretrainDitConfig,
    SftTarget,
    SyncExpertConfig,
    TimestepSampling,
    TlpoConfig,
    TrainLoopConfig,
    VaePretrainConfig,
)

__all__ = [
    "DIMENSIONS", "FOLLOWS", "AnnotateConfig", "AudioEncoderConfig", "AudioModulationConfig", "BackboneConfig",
    "CandidatesConfig", "CriticConfig", "DpoConfig", "EvaluationConfig", "FlowTrainConfig", "GateActivation", "GeneratorSpec",
    "ImageCorpusConfig", "ImageEncoderConfig",
    "IngestConfig", "KeypointConfig", "LoraTarget", "ModulationConfig", "NullMode", "OptimConfig", "PairWeighting", "PairsConfig",
    "Params", "ParamsError", "Phase1Config", "Phase2Config", "PortraitModelConfig", "PreferenceTrainConfig",
    "PretrainDitConfig", "PromotionGate", "RegistryConfig", "RoundsConfig", "SamplingConfig", "SftTarget", "ShardConfig",
    "SkeletonModulationConfig", "Strict", "SyncExpertConfig", "TemporalVariant", "TextEncoderConfig", "TimestepSampling", "TlpoConfig",
    "TrackingConfig", "TrainLoopConfig", "TrainingDataConfig", "VaeConfig", "VaePretrainConfig", "ValidationConfig",
    "Wav2Vec2Tiny", "WorldConfig", "load_params", "parse_overrides", "valid_keys",
]
