"""Typed pipeline parameters, loaded from params.yaml.

The profile (toy on a laptop, wan on a GPU cluster) is data: the same classes hold both,
only the values in params.yaml / params.wan.yaml differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    # A typo in params.yaml must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldConfig(_Strict):
    """The synthetic talking-portrait world (toy profile only)."""

    out_dir: str = "data/raw"
    n_identities: int = Field(12, ge=1)
    clips_per_identity: int = Field(4, ge=1)
    resolution: int = Field(64, ge=32)
    fps: int = Field(25, ge=1)
    duration_s: float = Field(2.0, gt=0)
    sample_rate: int = 16000
    speech: Literal["auto", "espeak", "syllables"] = "auto"
    syllable_rate_hz: tuple[float, float] = (3.0, 7.0)
    mouth_width_frac: float = Field(0.4, gt=0, lt=1)
    # Mouth opening = loudness in dB mapped linearly from (clip peak - mouth_range_db) -> 0 to clip peak -> 1.
    mouth_range_db: float = Field(30.0, gt=0)
    gesture_prob: float = Field(0.4, ge=0, le=1)  # chance that a speech beat triggers a hand gesture
    seed: int = 0

    @model_validator(mode="after")
    def _check_world(self) -> "WorldConfig":
        if self.resolution % 2:
            raise ValueError(f"world.resolution must be even (h264 yuv420p), got {self.resolution}")
        lo, hi = self.syllable_rate_hz
        if not 0 < lo <= hi:
            raise ValueError(f"world.syllable_rate_hz must satisfy 0 < low <= high, got {self.syllable_rate_hz}")
        return self


class Wav2Vec2Tiny(_Strict):
    """A randomly initialised transformers.Wav2Vec2Config for the toy profile."""

    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64
    conv_dim: int = 32
    conv_pos_kernel: int = Field(16, ge=2)  # positional conv (the base model uses 128 / 16 groups)
    conv_pos_groups: int = Field(4, ge=1)
    seed: int = 0


class AudioEncoderConfig(_Strict):
    # Local directory of a wav2vec2 checkpoint (wan profile); None -> tiny random config (toy).
    pretrained_path: str | None = None
    tiny: Wav2Vec2Tiny = Wav2Vec2Tiny()
    tokens_per_frame: int = Field(2, ge=1)  # wav2vec2 runs at ~50 Hz: 2 tokens per 25 fps frame
    n_mels: int = Field(40, ge=8)  # log-mel front end, 4 mel frames per video frame at 25 fps
    chunk_s: float = Field(30.0, gt=0)  # long audio runs through wav2vec2 in chunks of this length...
    chunk_context_s: float = Field(2.0, ge=0)  # ...with this much context on each side


class KeypointConfig(_Strict):
    extractor: Literal["json_sidecar"] = "json_sidecar"
    n_joints: int = Field(10, ge=1)


class IngestConfig(_Strict):
    input_dir: str = "data/raw"
    out_dir: str = "data/ingested"
    quarantine_path: str = "data/quarantine.jsonl"
    fps: int = 25
    sample_rate: int = 16000
    resolution: int = Field(64, ge=16)  # square centre crop, then resize
    min_duration_s: float = 1.0
    max_av_mismatch_s: float = 0.2
    min_audio_rms_db: float = -50.0
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)
    crf: int = Field(15, ge=0, le=51)  # x264 quality of the ingested video.mp4 (lower = closer to lossless)
    audio: AudioEncoderConfig = AudioEncoderConfig()
    keypoints: KeypointConfig = KeypointConfig()


class ValidationConfig(_Strict):
    manifest: str = "data/ingested/manifest.jsonl"
    report_path: str = "reports/data_report.md"
    result_path: str = "reports/data_validation.json"
    min_duration_s: float = 1.0
    max_duration_s: float = 600.0
    max_av_mismatch_s: float = 0.2
    min_audio_rms_db: float = -50.0


class ShardConfig(_Strict):
    input_dir: str = "data/ingested"
    # A local directory or s3://bucket/prefix (S3_ENDPOINT_URL / AWS_* env vars for the endpoint and keys).
    output: str = "data/shards"
    maxcount: int = Field(64, ge=1)
    splits: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "ShardConfig":
        total = sum(self.splits.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shard.splits fractions must sum to 1, got {total}")
        for name, fraction in self.splits.items():
            # Split names become shard file names ("train-000000.tar"): no dots, dashes or slashes.
            if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
                raise ValueError(f"shard.splits: split name {name!r} must be letters, digits or '_'")
            if fraction < 0:
                raise ValueError(f"shard.splits: fraction of {name!r} must be >= 0, got {fraction}")
        return self


class TrackingConfig(_Strict):
    # MLFLOW_TRACKING_URI in the environment wins over this.
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "talkalign"


class Params(_Strict):
    profile: Literal["toy", "wan"] = "toy"
    seed: int = 0
    world: WorldConfig = WorldConfig()
    ingest: IngestConfig = IngestConfig()
    validation: ValidationConfig = ValidationConfig()
    shard: ShardConfig = ShardConfig()
    tracking: TrackingConfig = TrackingConfig()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Load params.yaml, apply `{"a.b": value}` overrides, and validate."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found")
    tree = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    try:
        return Params.model_validate(tree)
    except Exception as exc:  # pydantic's message lists every bad field
        raise ValueError(f"{path}: invalid params:\n{exc}") from exc
