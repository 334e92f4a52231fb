"""Params of the training stages: the loop every stage shares, then one class per stage with its toy defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict


class OptimConfig(Strict):
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


class TrainLoopConfig(Strict):
    """What every training stage shares: steps, batch, accumulation, precision, checkpoints, logging.
    Each stage's subclass sets its own defaults where its toy recipe differs."""

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
    # How N > 1 processes share the model: "ddp" replicates it (accelerate's DDP); "fsdp" shards parameters,
    # gradients and optimizer state with torch's FSDP2 fully_shard (components/train/fsdp.py) and writes sharded
    # checkpoints. A launch with accelerate's FSDP config (infra/accelerate/fsdp_*.yaml) shards the same way
    # whatever this says. One process: no effect.
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    optim: OptimConfig = OptimConfig()


class ImageCorpusConfig(Strict):
    """Synthetic people rendered as stills for the toy VAE's image phase (components/data/synthetic/image_corpus.py):
    its stand-in for a real VAE's large image corpus, so it learns faces rather than the train split's palettes."""

    identities: int = Field(500, ge=1)
    frames_per_identity: int = Field(8, ge=1, le=50)
    share: float = Field(0.5, gt=0, le=1)  # chance that an image-phase row is a corpus still (else a train frame)
    seed: int = Field(1, ge=0)


class VaePretrainConfig(TrainLoopConfig):
    """pretrain_vae: the toy video VAE (skipped when vae.pretrained_path is set)."""

    steps: int = Field(80, ge=1)
    batch_size: int = Field(2, ge=1)
    checkpoint_every: int = Field(300, ge=1)
    log_every: int = Field(20, ge=1)
    optim: OptimConfig = OptimConfig(lr=3e-4, warmup_steps=30, schedule="cosine", min_lr_ratio=0.1)
    mouth_weight: float = Field(8.0, ge=0)  # extra reconstruction weight inside the ground-truth mouth box
    kl_weight: float = Field(1e-6, ge=0)
    recon_loss: Literal["l1", "l2"] = "l2"  # per-pixel error in [-1, 1] space
    # Image-to-video recipe (components/model/vae.py `per_frame_init`): start as a per-frame image autoencoder,
    # train it on single frames first (cheap, and what fixes the spatial detail), then on full windows.
    init: Literal["default", "per_frame"] = "per_frame"
    image_steps: int = Field(1200, ge=0)  # single-frame steps before the `steps` window steps
    image_batch_size: int = Field(4, ge=1)
    image_lr: float | None = Field(1e-3, gt=0)  # peak lr of the image phase (None: optim.lr, as the window phase)
    # Stills of other synthetic people mixed into the image phase; null = the train split's frames only (set null
    # when the toy profile ingests your own videos and you do not want cartoon faces in its VAE).
    image_corpus: ImageCorpusConfig | None = ImageCorpusConfig()
    output: str = "models/vae"
    metrics_path: str = "reports/pretrain_vae.json"


class FlowTrainConfig(TrainLoopConfig):
    """A rectified-flow stage of the portrait DiT."""

    timestep_shift: float = Field(3.0, gt=0)  # Wan's shifted sampler: sigma' = s*sigma / (1 + (s-1)*sigma)
    audio_dropout: float = Field(0.1, ge=0, lt=1)  # classifier-free guidance on audio
    pose_dropout: float = Field(0.1, ge=0, lt=1)


class PretrainDitConfig(FlowTrainConfig):
    """pretrain_dit: the base image-to-video DiT (toy profile)."""

    steps: int = Field(1000, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(25, ge=1)
    optim: OptimConfig = OptimConfig(warmup_steps=20)
    output: str = "models/base"


class Phase1Config(FlowTrainConfig):
    """phase1: the audio modulation, backbone and VAE frozen; variant <v> goes to <output>/<v>."""

    steps: int = Field(600, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(25, ge=1)
    sample_every: int = Field(100, ge=0)
    optim: OptimConfig = OptimConfig(warmup_steps=20)
    output: str = "models/phase1"


class Phase2Config(FlowTrainConfig):
    """phase2: the skeleton modulation, everything else frozen."""

    steps: int = Field(300, ge=1)
    log_every: int = Field(25, ge=1)
    optim: OptimConfig = OptimConfig(warmup_steps=20)
    base_model: str = "models/phase1/reshape"  # the phase-1 variant phase 2 starts from
    output: str = "models/phase2"


LoraTarget = Literal["attention", "mlp", "modulation"]
TimestepSampling = Literal["uniform", "logit_normal"]  # train/flow_matching.py sample_timesteps
GateActivation = Literal["softmax", "sigmoid"]  # model/gate.py TimestepLayerGate
SftTarget = Literal["winners", "real"]  # train/dpo.py dpo_step_loss
PairWeighting = Literal["none", "reward_gap"]  # preference/pair_data.py reward_gap_weights


class PreferenceTrainConfig(FlowTrainConfig):
    """What DPO and TLPO share: LoRA on the base model, trained with Flow-DPO on curated pairs
    (components/train/dpo.py states the beta convention)."""

    base_model: str = "models/phase2"
    candidates: str = "data/candidates"  # the candidates stage's output (sampled latents + conditioning)
    pairs: str = "data/pairs"  # the pairs stage's output: <pair_set>.jsonl
    # Hallo4 uses 2500 (params.wan.yaml), without the 0.5 factor of Diffusion-DPO's code; at toy scale 2500
    # saturates the loss before the weights move (README "Preference ablations"), 250 keeps learning.
    beta: float = Field(250.0, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    lora_targets: list[LoraTarget] = ["attention", "mlp", "modulation"]
    # Noise levels of the pairs: uniform (Diffusion-DPO) or logit-normal (SD3, flow_grpo), both then shifted.
    timestep_sampling: TimestepSampling = "uniform"
    # Reg-DPO: + sft_weight x the policy's flow-matching error on the winners, or (real) on the window's real clip
    # under the pair's noise (train/dpo.py). TLPO applies it to its experts only, not to the gate.
    sft_weight: float = Field(0.0, ge=0)
    sft_target: SftTarget = "winners"
    batch_size: int = Field(4, ge=1)
    log_every: int = Field(20, ge=1)
    optim: OptimConfig = OptimConfig(lr=1e-4, warmup_steps=10)
    output: str = Field(min_length=1)  # the trained bundle(s); each stage's class sets its own default


class DpoConfig(PreferenceTrainConfig):
    """Flow-DPO of the phase-2 model on one pair set."""

    pair_set: str = "lip_sync"  # composite | lip_sync | motion | quality (the toy default: params.yaml says why)
    pair_weighting: PairWeighting = "none"  # reward_gap: each pair's loss x its gap / mean (VideoDPO)
    # The toy defaults (reports/ablations_dpo_sft.md): on real clips the DPO term, not the SFT term, makes the gains.
    sft_weight: float = Field(20.0, ge=0)
    sft_target: SftTarget = "real"
    steps: int = Field(200, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    output: str = "models/dpo"


class TlpoConfig(PreferenceTrainConfig):
    """TLPO: one LoRA expert per dimension (Flow-DPO on its pair set), then a (timestep, layer) gate over them."""

    expert_steps: int = Field(120, ge=1)  # per expert; `steps` is the gate's budget
    steps: int = Field(80, ge=1)
    gate_lr: float = Field(3e-3, gt=0)  # the gate is a small MLP starting at uniform: it needs a larger lr than LoRA
    # softmax: a convex mix of the experts, starting at their average; sigmoid: each expert scaled on its own in
    # (0, 2), starting at their sum (components/model/gate.py). The uniform variant is where the gate starts.
    gate_activation: GateActivation = "softmax"
    output: str = "models/tlpo"  # <output>/gated and <output>/uniform
    # Also each expert alone, merged into the base (<output>/expert_<dimension>): the single-dimension DPO
    # variants TLPO is compared with. Three more full copies of the model: false at Wan scale.
    export_experts: bool = True
    report_path: str = "reports/tlpo.json"
    figure_path: str = "reports/tlpo_gate.png"


class SyncExpertConfig(TrainLoopConfig):
    """Our sync expert: the SyncNet architecture at `width`, trained contrastively on the training split (in-sync
    vs shifted pairs). Used for Sync-C / Sync-D unless evaluation.syncnet_weights names the official weights."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=50, schedule="cosine", min_lr_ratio=0.05, grad_clip=None)
    out_dir: str = "models/sync_expert"
    metrics_path: str = "reports/sync_expert.json"
    width: float = Field(0.125, gt=0)  # channel multiplier of every SyncNet layer (1.0 = the official size)
    crop_size: int = Field(56, ge=51)  # px of the grey mouth crop the lip stream sees (51 = the stack's minimum)
    crop_scale: float = Field(1.0, gt=0)  # crop side in mouth-box widths (the box already pads the lips)
    margin: float = Field(1.0, gt=0)  # contrastive loss margin on the Euclidean embedding distance
    min_shift: int = Field(3, ge=1)  # shifted pairs: min_shift <= |audio offset| <= max_shift frames
    max_shift: int = Field(15, ge=1)

    @model_validator(mode="after")
    def _shift_range(self) -> SyncExpertConfig:
        if self.min_shift > self.max_shift:
            raise ValueError(f"sync_expert.min_shift ({self.min_shift}) must be <= max_shift ({self.max_shift})")
        return self
