"""Params of sampling, evaluation, the model registry and experiment tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict


class SamplingConfig(Strict):
    steps: int = Field(20, ge=1)
    shift: float = Field(3.0, gt=0)
    audio_guidance: float = Field(2.0, ge=0)
    seed: int = 0


class EvaluationConfig(Strict):
    # Model bundles to evaluate, as name -> directory; every one sees the same test windows and seeds.
    models: dict[str, str] = {
        "phase1_reshape": "models/phase1/reshape",
        "phase1_half": "models/phase1/half",
        "phase1_downsample": "models/phase1/downsample",
        "phase2": "models/phase2",
        "dpo": "models/dpo",
        "tlpo": "models/tlpo/gated",
        "tlpo_uniform": "models/tlpo/uniform",
        "tlpo_expert_lip_sync": "models/tlpo/expert_lip_sync",  # each TLPO expert alone: single-dimension DPO
        "tlpo_expert_motion": "models/tlpo/expert_motion",
        "tlpo_expert_quality": "models/tlpo/expert_quality",
    }
    # Variants also generated with the audio zeroed (lip_corr / sync_c_audio_zeroed: with no audio the lips must
    # fail); the others skip that second generation.
    audio_zeroed_variants: list[str] = ["phase1_reshape", "phase1_half", "phase1_downsample", "phase2"]
    # Evaluate only these variants (names of evaluation.models or rounds.schedule); None: every one. The ablation
    # experiments (infra/ablations/) set [phase2, dpo]: their table compares those two only.
    variants: list[str] | None = None
    max_windows: int | None = None  # None: every test window
    sample_batch_size: int = Field(16, ge=1)  # test windows sampled together (one model call per step)
    metrics_path: str = "reports/metrics.json"
    # The official SyncNet weights (syncnet_python's syncnet_v2.model, a local file); None: the expert the
    # sync_expert stage trained on the training split (the report says which one scored Sync-C / Sync-D).
    syncnet_weights: str | None = None
    # Local TorchScript feature extractors; None: FID / FVD are reported as unavailable (never random weights).
    fid_extractor: str | None = None  # StyleGAN3's inception-2015-12-05.pt
    fvd_extractor: str | None = None  # StyleGAN-V's i3d_torchscript.pt
    # lip_corr / lmd / hkc / hkv measured with mediapipe (components/evaluation/landmark_metrics.py): auto = when
    # the extractor env (.venv-extract, `make setup`) exists, else listed as not measured; on = fail without it.
    landmark_metrics: Literal["auto", "on", "off"] = "auto"
    # ... on the first N test windows (mediapipe costs ~36 ms a frame on this box); null = every window
    landmark_windows: int | None = Field(12, ge=1)
    grid_windows: int = Field(3, ge=0)  # test windows shown side by side (reference | truth | variants) as mp4
    report_path: str = "reports/report.md"
    plots_dir: str = "reports/plots"  # <metric>.csv per metric, for `dvc plots`
    figures_dir: str = "reports/figures"  # PNG charts
    videos_dir: str = "reports/videos"  # the side-by-side mp4s
    # Seed noise: these variants are generated again with each extra sampling seed, so the report can say whether
    # a difference between two variants is larger than what another seed alone changes.
    seed_noise_variants: list[str] = ["phase2", "dpo", "tlpo"]
    extra_seeds: list[int] = [1]
    # (variant, baseline) pairs the report compares: paired differences over the same windows and seeds, with a
    # bootstrap CI over windows (and over the sampling seeds both were drawn with); beyond noise = CI excludes 0.
    comparisons: list[tuple[str, str]] = [("dpo", "phase2"), ("tlpo", "dpo"), ("phase1_reshape", "phase1_downsample")]
    seed_noise_path: str = "reports/seed_noise.json"
    bootstrap_resamples: int = Field(2000, ge=100)  # resamples of every bootstrap CI (95 %, percentile)
    bootstrap_seed: int = 0  # of the resampling, so the report and claims are reproducible
    # The papers' claims the run tests (components/evaluation/claims.py): markdown, and a DVC metric file.
    claims_path: str = "reports/claims.md"
    claims_metrics_path: str = "reports/claims.json"
    claims_psnr_tolerance_db: float = Field(0.3, ge=0)  # "DPO beats SFT at PSNR within": CI lower bound > -tolerance


class PromotionGate(Strict):
    """One promotion gate: the candidate may be worse than the champion on `metric` by at most max_regression."""

    metric: str = Field(min_length=1)  # a key of the variant's entry in evaluation.metrics_path
    direction: Literal["higher", "lower"] = "higher"  # which way is better
    max_regression: float = Field(0.0, ge=0)  # absolute, in the metric's units


class RegistryConfig(Strict):
    model_name: str = Field("talkalign", min_length=1)  # the MLflow registered model
    # Which evaluated model to register: a key of evaluation.models and of the metrics file (the toy profile
    # registers the preference-aligned model).
    variant: str = "dpo"
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
    def _gates(self) -> RegistryConfig:
        if not self.gates:
            raise ValueError("registry.gates: at least one gate is needed (no gates would promote anything)")
        names = [gate.metric for gate in self.gates]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"registry.gates: metric(s) {duplicated} gated more than once")
        return self


class TrackingConfig(Strict):
    # MLFLOW_TRACKING_URI in the environment wins over this.
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "talkalign"
