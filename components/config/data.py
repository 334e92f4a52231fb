"""Params of the data stages: the synthetic world, ingest, validation, shards, and shards -> training windows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from components.config.base import Strict


class WorldConfig(Strict):
    """The synthetic talking-portrait world (toy profile only)."""

    out_dir: str = "data/raw"
    n_identities: int = Field(24, ge=1)
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
    def _check_world(self) -> WorldConfig:
        if self.resolution % 2:
            raise ValueError(f"world.resolution must be even (h264 yuv420p), got {self.resolution}")
        lo, hi = self.syllable_rate_hz
        if not 0 < lo <= hi:
            raise ValueError(f"world.syllable_rate_hz must satisfy 0 < low <= high, got {self.syllable_rate_hz}")
        return self


class Wav2Vec2Tiny(Strict):
    """A randomly initialised transformers.Wav2Vec2Config for the toy profile."""

    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64
    conv_dim: int = 32
    conv_pos_kernel: int = Field(16, ge=2)  # positional conv (the base model uses 128 / 16 groups)
    conv_pos_groups: int = Field(4, ge=1)
    seed: int = 0


class AudioEncoderConfig(Strict):
    # Local directory of a wav2vec2 checkpoint (wan profile); None -> tiny random config (toy).
    pretrained_path: str | None = None
    tiny: Wav2Vec2Tiny = Wav2Vec2Tiny()
    tokens_per_frame: int = Field(2, ge=1)  # wav2vec2 runs at ~50 Hz: 2 tokens per 25 fps frame
    n_mels: int = Field(40, ge=8)  # log-mel front end, 4 mel frames per video frame at 25 fps
    chunk_s: float = Field(30.0, gt=0)  # long audio runs through wav2vec2 in chunks of this length...
    chunk_context_s: float = Field(2.0, ge=0)  # ...with this much context on each side
    device: str = "cpu"
    # torch intra-op threads while encoding (0 = torch's default). 1 on a shared 2-core box: with PyAV's
    # codec threads alongside, 2 OpenMP threads made the tiny model 20x slower (measured 200 ms vs 8 ms).
    threads: int = Field(1, ge=0)


class KeypointConfig(Strict):
    # json_sidecar: <clip>.keypoints.json; mediapipe: the extractor env (.venv-extract, `make setup`);
    # auto: the sidecar when present, else mediapipe.
    extractor: Literal["json_sidecar", "mediapipe", "auto"] = "auto"
    # The skeleton's joints, in order (pose.npy's joint axis). A json sidecar must list exactly these; mediapipe
    # measures the names in components/data/landmarks.py (POSE_JOINTS: BlazePose points such as l_eye, l_hip;
    # HAND_JOINTS: hand-landmarker points such as l_palm, l_index_tip). model.modulation.skeleton.n_joints must
    # be its length. The default is the synthetic world's layout.
    joints: tuple[str, ...] = ("head", "neck", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
                               "r_wrist", "l_hand", "r_hand")  # fmt: skip
    # mediapipe: extractor env interpreter (None -> .venv-extract/bin/python), reply cache per clip digest
    # (None -> no cache), frames sent downscaled to this long side, worker timeout per clip.
    extractor_python: str | None = None
    cache_dir: str | None = "data/.extract_cache"
    max_side: int = Field(512, ge=64)
    timeout_s: float = Field(600.0, gt=0)
    # face crop (mediapipe): square side = crop_scale x the largest face, median-smoothed over smooth_frames;
    # refuse a clip whose face is missing / doubled in more than these fractions of frames, or is too small.
    crop_scale: float = Field(2.0, ge=1.0)
    smooth_frames: int = Field(9, ge=1)
    max_missing_face_frac: float = Field(0.2, ge=0, le=1)
    max_multi_face_frac: float = Field(0.1, ge=0, le=1)
    min_face_frac: float = Field(0.08, ge=0, le=1)
    face_model: Literal[0, 1] = 1  # mediapipe face detection: 0 short range (< 2 m), 1 full range
    # Pose + hands (~75% of the extractor's time) run every pose_every frames and the frames between are
    # interpolated: at 2, 512 px extraction costs ~36 ms of CPU per frame (benchmarks/extractor.py), > 25 frames/s
    # from one free core.
    pose_every: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check_joints(self) -> KeypointConfig:
        if not self.joints or not all(j.strip() for j in self.joints):
            raise ValueError(f"ingest.keypoints.joints: expected a list of joint names, got {list(self.joints)}")
        repeated = sorted({j for j in self.joints if self.joints.count(j) > 1})
        if repeated:
            raise ValueError(f"ingest.keypoints.joints: {', '.join(repeated)} listed more than once")
        return self

    @property
    def n_joints(self) -> int:
        return len(self.joints)


class IngestConfig(Strict):
    input_dir: str = "data/raw"
    out_dir: str = "data/ingested"
    quarantine_path: str = "data/quarantine.jsonl"
    fps: int = Field(25, ge=1)
    sample_rate: int = Field(16000, ge=8000)
    resolution: int = Field(64, ge=16, multiple_of=2)  # square centre crop, then resize (h264 yuv420p: even)
    min_duration_s: float = 1.0
    max_av_mismatch_s: float = 0.2
    min_audio_rms_db: float = -50.0
    max_quarantine_fraction: float = Field(0.5, ge=0, le=1)
    crf: int = Field(15, ge=0, le=51)  # x264 quality of the ingested video.mp4 (lower = closer to lossless)
    audio: AudioEncoderConfig = AudioEncoderConfig()
    keypoints: KeypointConfig = KeypointConfig()


class ValidationConfig(Strict):
    """The great-expectations suite over the clip manifest.

    It checks what ingest promised, by ingest's own numbers: fps, resolution, n_joints, min_duration_s,
    max_av_mismatch_s and min_audio_rms_db are read from the ingest section (Params wires it in; a bare
    ValidationConfig() checks against IngestConfig()'s defaults). Only what ingest does not decide is set here.
    """

    manifest: str = "data/ingested/manifest.jsonl"
    report_path: str = "reports/data_report.md"
    result_path: str = "reports/data_validation.json"
    max_duration_s: float = 600.0
    _ingest: IngestConfig = PrivateAttr(default_factory=IngestConfig)

    def checking(self, ingest: IngestConfig) -> ValidationConfig:
        """This suite checking the clips of `ingest`."""
        wired = self.model_copy()
        wired._ingest = ingest
        return wired

    @property
    def min_duration_s(self) -> float:
        return self._ingest.min_duration_s

    @property
    def max_av_mismatch_s(self) -> float:
        return self._ingest.max_av_mismatch_s

    @property
    def min_audio_rms_db(self) -> float:
        return self._ingest.min_audio_rms_db

    @property
    def fps(self) -> int:
        return self._ingest.fps

    @property
    def resolution(self) -> int:
        return self._ingest.resolution

    @property
    def n_joints(self) -> int:
        return self._ingest.keypoints.n_joints


class ShardConfig(Strict):
    input_dir: str = "data/ingested"
    # A local directory or s3://bucket/prefix (S3_ENDPOINT_URL / AWS_* env vars for the endpoint and keys).
    output: str = "data/shards"
    maxcount: int = Field(16, ge=1)
    splits: dict[str, float] = {"train": 0.625, "val": 0.125, "test": 0.25}
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> ShardConfig:
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


class TrainingDataConfig(Strict):
    """How shards become training windows. The shards are the shard stage's output: `shards` is shard.output
    (Params wires it in; a bare TrainingDataConfig() reads ShardConfig()'s default output)."""

    frames: int = Field(17, ge=1)  # T = 4k+1 video frames per window -> k+1 latent frames
    window_stride: int = Field(8, ge=1)  # frames between window starts inside a clip
    audio_features: Literal["mel", "wav2vec"] = "mel"  # which ingest feature drives the audio modulation
    latents_dir: str = "data/latents"  # VAE latents, encoded once per VAE and shared by every DiT stage
    # The text condition the DiT stages train with; bundles keep it as their default prompt, so sampling sees
    # the embedding training saw (the toy world has one scene; the wan profile would caption its clips).
    prompt: str = "a person talking to the camera"
    _shards: str = PrivateAttr(default_factory=lambda: ShardConfig().output)

    def reading(self, shard: ShardConfig) -> TrainingDataConfig:
        """These windows cut from the shards `shard` writes."""
        wired = self.model_copy()
        wired._shards = shard.output
        return wired

    @property
    def shards(self) -> str:
        """The shard stage's output (a local directory or s3://): shard.output."""
        return self._shards

    @model_validator(mode="after")
    def _four_k_plus_one(self) -> TrainingDataConfig:
        if (self.frames - 1) % 4:
            raise ValueError(f"data.frames must be 4k+1 (the causal VAE's 1 + 4 frames per latent), got {self.frames}")
        return self
