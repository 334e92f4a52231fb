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
    device: str = "cpu"
    # torch intra-op threads while encoding (0 = torch's default). 1 on a shared 2-core box: with PyAV's
    # codec threads alongside, 2 OpenMP threads made the tiny model 20x slower (measured 200 ms vs 8 ms).
    threads: int = Field(1, ge=0)


class KeypointConfig(_Strict):
    extractor: Literal["json_sidecar"] = "json_sidecar"
    n_joints: int = Field(10, ge=1)


class IngestConfig(_Strict):
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


# ---- model (components/model) ----

TemporalVariant = Literal["reshape", "half", "downsample"]
NullMode = Literal["zero", "learned"]


class AudioModulationConfig(_Strict):
    enabled: bool = True
    in_dim: int = Field(32, ge=1)  # wav2vec2 hidden size
    tokens_per_frame: int = Field(2, ge=1)  # N_a: wav2vec2 tokens per video frame
    # Neighbouring frames on each side appended to each frame's tokens. Keep 0 for the temporal ablation:
    # a window lets "downsample" see the frames it is meant to drop.
    window: int = Field(0, ge=0)
    temporal: TemporalVariant = "reshape"
    slot_embedding: bool = True
    null: NullMode = "learned"  # what replaces dropped audio (classifier-free guidance)


class SkeletonModulationConfig(_Strict):
    enabled: bool = False  # phase 2 turns it on
    n_joints: int = Field(10, ge=1)
    # Tokens per frame = grid_h * grid_w. The paper reduces to the latent grid H' x W'; the default is the
    # transformer's patch grid at 64 px (latent 8x8, patch 2), which is ~10x cheaper on CPU.
    grid: tuple[int, int] = (4, 4)
    n_down: int = Field(2, ge=0)  # heatmaps are rendered at grid * 2**n_down and convolved down to grid
    sigma: float = Field(1.0, gt=0)  # Gaussian radius in heatmap pixels
    channels: int = Field(32, ge=1)
    feat_dim: int = Field(32, ge=1)  # d_k
    temporal: TemporalVariant = "reshape"
    slot_embedding: bool = True
    null: NullMode = "learned"


class ModulationConfig(_Strict):
    rho: int = Field(4, ge=1)  # VAE temporal compression
    heads: int | None = None  # None -> as many heads as the backbone
    # joint: one cross-attention over [H_audio || H_skel] (eq. 8). separate: one zero-initialised
    # cross-attention per modality, so phase 2 adds its own "skeletal cross-attention" (section 3.5) and
    # starts from exactly the phase-1 model.
    fusion: Literal["joint", "separate"] = "joint"
    audio: AudioModulationConfig = AudioModulationConfig()
    skeleton: SkeletonModulationConfig = SkeletonModulationConfig()


class BackboneConfig(_Strict):
    # Local Wan checkpoint root (with `transformer/`) or transformer directory; None -> tiny random backbone.
    pretrained_path: str | None = None
    latent_channels: int = Field(16, ge=1)  # VAE z_dim; the backbone takes 2*z + 4 input channels
    num_attention_heads: int = Field(2, ge=1)
    attention_head_dim: int = Field(16, ge=2)
    num_layers: int = Field(2, ge=1)
    ffn_dim: int = Field(64, ge=1)
    text_dim: int = Field(32, ge=1)
    freq_dim: int = Field(32, ge=2)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    seed: int = 0


class TextEncoderConfig(_Strict):
    # Local Wan checkpoint root with `text_encoder/` (umT5) and `tokenizer/`; None -> tiny random umT5 over bytes.
    pretrained_path: str | None = None
    max_length: int = Field(16, ge=2)  # Wan uses 512
    d_model: int = Field(32, ge=2)  # must equal backbone.text_dim
    num_layers: int = Field(1, ge=1)
    num_heads: int = Field(2, ge=1)
    d_ff: int = Field(64, ge=1)
    seed: int = 0


class PortraitModelConfig(_Strict):
    backbone: BackboneConfig = BackboneConfig()
    text: TextEncoderConfig = TextEncoderConfig()
    modulation: ModulationConfig = ModulationConfig()
    seed: int = 0  # initialisation of the modulation layers

    @model_validator(mode="after")
    def _text_width_matches(self) -> "PortraitModelConfig":
        tiny = self.backbone.pretrained_path is None and self.text.pretrained_path is None
        if tiny and self.text.d_model != self.backbone.text_dim:
            raise ValueError(
                f"text.d_model ({self.text.d_model}) must equal backbone.text_dim ({self.backbone.text_dim})"
            )
        return self

    @classmethod
    def tiny(cls, **modulation: object) -> "PortraitModelConfig":
        """The toy-profile model; keyword arguments override ModulationConfig fields."""
        return cls(modulation=ModulationConfig(**modulation))


# ---------------------------------------------------------------- backbone


class VaeConfig(_Strict):
    # Local directory of a Wan checkpoint (with a `vae/` subfolder) or of the VAE itself; None -> tiny random VAE.
    pretrained_path: str | None = None
    base_dim: int = Field(16, ge=8)
    z_dim: int = Field(16, ge=1)
    dim_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = Field(1, ge=1)
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # upstream spelling
    seed: int = 0


# ---- training (components/train) ----


class TrainingDataConfig(_Strict):
    """How shards become training windows."""

    shards: str = "data/shards"  # the shard stage's output (local dir or s3://)
    frames: int = Field(17, ge=1)  # T = 4k+1 video frames per window -> k+1 latent frames
    window_stride: int = Field(8, ge=1)  # frames between window starts inside a clip
    audio_features: Literal["mel", "wav2vec"] = "wav2vec"  # which ingest feature drives the audio modulation
    latents_dir: str = "data/latents"  # VAE latents, encoded once per VAE and shared by every DiT stage
    # The text condition the DiT stages train with; bundles keep it as their default prompt, so sampling sees
    # the embedding training saw (the toy world has one scene; the wan profile would caption its clips).
    prompt: str = "a person talking to the camera"

    @model_validator(mode="after")
    def _four_k_plus_one(self) -> "TrainingDataConfig":
        if (self.frames - 1) % 4:
            raise ValueError(f"data.frames must be 4k+1 (the causal VAE's 1 + 4 frames per latent), got {self.frames}")
        return self


class OptimConfig(_Strict):
    """AdamW over the trainable parameters; the learning rate follows a per-optimizer-step schedule."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)  # decoupled (AdamW), applied to every trainable parameter
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warmup: optimizer step s (0-based) uses lr * min(1, (s + 1) / warmup_steps); 0 = no warmup.
    warmup_steps: int = Field(0, ge=0)
    # After warmup: "constant" keeps lr; "cosine" decays from lr to lr * min_lr_ratio at the last step.
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)  # max global L2 norm of the gradients; None = no clipping


class TrainLoopConfig(_Strict):
    """What every training stage shares: steps, batch, accumulation, precision, checkpoints, logging."""

    steps: int = Field(100, ge=1)  # optimizer steps
    # batch_size = samples in one forward/backward summed over ALL processes (the global micro-batch); each of
    # the N processes computes batch_size / N of them (must divide). One optimizer step averages the gradient
    # over batch_size * grad_accum samples, whatever N is: 8 x 1 on 1 process == 4 x 2 == 8 x 1 on 2 processes.
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    mixed_precision: Literal["no", "bf16"] = "no"  # bf16 autocast on GPU; the toy profile runs fp32 on CPU
    gradient_checkpointing: bool = False  # calls model.enable_gradient_checkpointing()
    checkpoint_every: int = Field(50, ge=1)  # optimizer steps; the last step is always checkpointed
    keep_checkpoints: int = Field(2, ge=1)  # the newest K complete checkpoints are kept
    log_every: int = Field(10, ge=1)
    sample_every: int = Field(0, ge=0)  # 0: no sample videos during training
    seed: int = Field(0, ge=0)  # data order and per-step noise, and the initial RNG of each process
    # DDP: let parameters go without a gradient in a step (e.g. the learned null-audio embedding when no
    # sample of the step drops audio). Costs one graph walk per step; without it DDP raises on such steps.
    find_unused_parameters: bool = True
    optim: OptimConfig = OptimConfig()


class VaePretrainConfig(TrainLoopConfig):
    mouth_weight: float = Field(4.0, ge=0)  # extra reconstruction weight inside the ground-truth mouth box
    kl_weight: float = Field(1e-6, ge=0)
    recon_loss: Literal["l1", "l2"] = "l1"  # per-pixel error in [-1, 1] space
    # Image-to-video recipe (components/model/vae.py `per_frame_init`): start as a per-frame image autoencoder,
    # train it on single frames first (cheap, and what fixes the spatial detail), then on full windows.
    init: Literal["default", "per_frame"] = "per_frame"
    image_steps: int = Field(0, ge=0)  # single-frame steps before the `steps` window steps
    image_batch_size: int = Field(8, ge=1)
    image_lr: float | None = Field(None, gt=0)  # peak lr of the image phase (None: optim.lr, as the window phase)


class FlowTrainConfig(TrainLoopConfig):
    timestep_shift: float = Field(3.0, gt=0)  # Wan's shifted sampler: sigma' = s*sigma / (1 + (s-1)*sigma)
    audio_dropout: float = Field(0.1, ge=0, lt=1)  # classifier-free guidance on audio
    pose_dropout: float = Field(0.1, ge=0, lt=1)


class DpoConfig(FlowTrainConfig):
    """Flow-DPO of the phase-2 model on curated pairs (components/train/dpo.py states the beta convention)."""

    base_model: str = "models/phase2"
    candidates: str = "data/candidates"  # the candidates stage's output (sampled latents + conditioning)
    pairs: str = "data/pairs"  # the pairs stage's output: <pair_set>.jsonl
    pair_set: str = "composite"  # composite | lip_sync | motion | quality
    beta: float = Field(2500.0, gt=0)  # Hallo4's value, without the 0.5 factor of Diffusion-DPO's code
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    lora_targets: list[Literal["attention", "mlp", "modulation"]] = ["attention", "mlp", "modulation"]
    output: str = "models/dpo"

# ----------------------------------------------------------------------------- preference data (issue 5)

DIMENSIONS: tuple[str, ...] = ("lip_sync", "motion", "quality")


class GeneratorSpec(_Strict):
    """One source of candidate videos. kind=model samples a model bundle at a guidance scale with some seeds;
    kind=still repeats the reference frame (a talking head that never talks: the floor of lip sync and motion)."""

    name: str
    kind: Literal["model", "still"] = "model"
    model: str | None = None  # bundle directory (kind=model)
    guidance: float = Field(2.0, ge=0)
    seeds: list[int] = [0]

    @model_validator(mode="after")
    def _model_given(self) -> "GeneratorSpec":
        if self.kind == "model" and not self.model:
            raise ValueError(f"generator {self.name!r}: kind=model needs `model` (a bundle directory)")
        return self


class CandidatesConfig(_Strict):
    """K candidate videos per conditioning window of the preference split."""

    out_dir: str = "data/candidates"
    split: str = "train"  # the preference split: conditioning windows come from here, never from val/test
    windows: int = Field(32, ge=1)  # evenly spaced windows of the split's latent cache
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


class AnnotateConfig(_Strict):
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

    ratings: str = "data/ratings"
    out_dir: str = "models/critic"
    metrics_path: str = "reports/critic.json"
    held_out_raters: int = Field(1, ge=1)  # evaluation uses only these raters' ratings ...
    held_out_share: float = Field(0.25, gt=0, lt=1)  # ... of this share of the windows (never trained on)
    width: int = Field(16, ge=4)


class PairsConfig(_Strict):
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
    def _known_dimensions(self) -> "PairsConfig":
        unknown = set(self.weights) - set(DIMENSIONS)
        if unknown or not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"pairs.weights: dimensions must be among {DIMENSIONS} with one positive, got {self.weights}")
        return self


class TlpoConfig(FlowTrainConfig):
    """TLPO: one LoRA expert per dimension (Flow-DPO on its pair set), then a (timestep, layer) gate over them."""

    base_model: str = "models/phase2"
    candidates: str = "data/candidates"
    pairs: str = "data/pairs"
    beta: float = Field(2500.0, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    lora_targets: list[Literal["attention", "mlp", "modulation"]] = ["attention", "mlp", "modulation"]
    expert_steps: int = Field(200, ge=1)  # per expert; `steps` is the gate's budget
    gate_lr: float = Field(3e-3, gt=0)  # the gate is a small MLP starting at uniform: it needs a larger lr than LoRA
    output: str = "models/tlpo"


class SamplingConfig(_Strict):
    steps: int = Field(20, ge=1)
    shift: float = Field(3.0, gt=0)
    audio_guidance: float = Field(2.0, ge=0)
    seed: int = 0


class EvaluationConfig(_Strict):
    # Model bundles to evaluate, as name -> directory; every one sees the same test windows and seeds.
    models: dict[str, str] = {
        "phase1_reshape": "models/phase1/reshape",
        "phase1_half": "models/phase1/half",
        "phase1_downsample": "models/phase1/downsample",
        "phase2": "models/phase2",
    }
    max_windows: int | None = None  # None: every test window
    metrics_path: str = "reports/metrics.json"
    # The official SyncNet weights (syncnet_python's syncnet_v2.model, a local file); None: the expert the
    # sync_expert stage trained on the training split (the report says which one scored Sync-C / Sync-D).
    syncnet_weights: str | None = None
    # Local TorchScript feature extractors; None: FID / FVD are reported as unavailable (never random weights).
    fid_extractor: str | None = None  # StyleGAN3's inception-2015-12-05.pt
    fvd_extractor: str | None = None  # StyleGAN-V's i3d_torchscript.pt
    grid_windows: int = Field(3, ge=0)  # test windows shown side by side (reference | truth | variants) as mp4
    report_path: str = "reports/report.md"
    plots_dir: str = "reports/plots"  # <metric>.csv per metric, for `dvc plots`
    figures_dir: str = "reports/figures"  # PNG charts
    videos_dir: str = "reports/videos"  # the side-by-side mp4s
    # Seed noise: these variants are generated again with each extra sampling seed, so the report can say whether
    # a difference between two variants is larger than what another seed alone changes.
    seed_noise_variants: list[str] = []
    extra_seeds: list[int] = [1, 2]
    comparisons: list[tuple[str, str]] = [("dpo", "phase2")]  # (variant, baseline) rows of the seed-noise table
    seed_noise_path: str = "reports/seed_noise.json"


class SyncExpertConfig(TrainLoopConfig):
    """Our sync expert: the SyncNet architecture at `width`, trained contrastively on the training split (in-sync
    vs shifted pairs). Used for Sync-C / Sync-D unless evaluation.syncnet_weights names the official weights."""

    out_dir: str = "models/sync_expert"
    metrics_path: str = "reports/sync_expert.json"
    width: float = Field(0.125, gt=0)  # channel multiplier of every SyncNet layer (1.0 = the official size)
    crop_size: int = Field(56, ge=51)  # px of the grey mouth crop the lip stream sees (51 = the stack's minimum)
    crop_scale: float = Field(1.0, gt=0)  # crop side in mouth-box widths (the box already pads the lips)
    margin: float = Field(1.0, gt=0)  # contrastive loss margin on the Euclidean embedding distance
    min_shift: int = Field(3, ge=1)  # shifted pairs: min_shift <= |audio offset| <= max_shift frames
    max_shift: int = Field(15, ge=1)

    @model_validator(mode="after")
    def _shift_range(self) -> "SyncExpertConfig":
        if self.min_shift > self.max_shift:
            raise ValueError(f"sync_expert.min_shift ({self.min_shift}) must be <= max_shift ({self.max_shift})")
        return self


# ---- model registry (components/registry) ----


class PromotionGate(_Strict):
    """One promotion gate: the candidate may be worse than the champion on `metric` by at most max_regression."""

    metric: str = Field(min_length=1)  # a key of the variant's entry in evaluation.metrics_path
    direction: Literal["higher", "lower"] = "higher"  # which way is better
    max_regression: float = Field(0.0, ge=0)  # absolute, in the metric's units


class RegistryConfig(_Strict):
    model_name: str = Field("talkalign", min_length=1)  # the MLflow registered model
    variant: str = "phase2"  # which evaluated model to register: a key of evaluation.models and of the metrics file
    # A candidate becomes champion only when every gate passes against the current champion (a missing or
    # non-finite metric fails its gate); with no champion yet, when every gated metric is present and finite.
    gates: tuple[PromotionGate, ...] = (
        PromotionGate(metric="sync_c", direction="higher", max_regression=0.5),
        PromotionGate(metric="psnr", direction="higher", max_regression=0.5),
        PromotionGate(metric="lip_corr", direction="higher", max_regression=0.05),
    )
    report_path: str = "reports/promotion.json"  # the decision and its reasons
    report_md_path: str = "reports/promotion.md"

    @model_validator(mode="after")
    def _gates(self) -> "RegistryConfig":
        if not self.gates:
            raise ValueError("registry.gates: at least one gate is needed (no gates would promote anything)")
        names = [gate.metric for gate in self.gates]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"registry.gates: metric(s) {duplicated} gated more than once")
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
    data: TrainingDataConfig = TrainingDataConfig()
    vae: VaeConfig = VaeConfig()
    model: PortraitModelConfig = PortraitModelConfig()
    pretrain_vae: VaePretrainConfig = VaePretrainConfig()
    pretrain_dit: FlowTrainConfig = FlowTrainConfig()
    phase1: FlowTrainConfig = FlowTrainConfig()
    phase2: FlowTrainConfig = FlowTrainConfig()
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
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _audio_modulation_matches_features(self) -> "Params":
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
