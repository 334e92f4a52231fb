"""tlpo end to end on a tiny world: candidates from two generators, hand-written pairs for the four sets, three
experts and a gate trained for 2 steps each, then both exports load and animate."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from components.config import (
    AudioModulationConfig,
    CandidatesConfig,
    GeneratorSpec,
    Params,
    PortraitModelConfig,
    SamplingConfig,
    TrainingDataConfig,
    VaeConfig,
)

SETS = ("composite", "lip_sync", "motion", "quality")


def _tiny_base(directory: Path) -> None:
    """A tiny mel bundle (random weights, non-zero motion outputs so audio matters) saved as the base model."""
    from components.model.bundle import BundleMeta, ModelBundle, save_bundle
    from components.model.portrait import PortraitModel
    from components.model.text_encoder import TextEncoder
    from components.model.vae import build_vae

    torch.manual_seed(0)
    cfg = PortraitModelConfig.tiny(audio=AudioModulationConfig(in_dim=40, tokens_per_frame=4))
    model = PortraitModel.from_config(cfg).eval()
    with torch.no_grad():
        for block in model.modulated_blocks():
            for attn in block.motion_attn.values():
                attn.attn.to_out[0].weight.normal_(0, 0.2)
    params = Params(data=TrainingDataConfig(audio_features="mel"), model=cfg, sampling=SamplingConfig(steps=2))
    meta = BundleMeta.from_params(params, variant="phase2", lineage={"stage": "phase2"})
    save_bundle(directory, ModelBundle(meta, model, build_vae(VaeConfig()), TextEncoder(cfg.text)))


def _candidates(base: Path, out_dir: Path, n_windows: int = 2) -> list[str]:
    """write_candidates on fabricated LatentCache-like windows; returns the window ids."""
    from components.model.loading import load_bundle
    from components.model.vae import spatial_ratio
    from components.preference.candidates import write_candidates

    bundle = load_bundle(base)
    meta = bundle.meta
    z, size, t_lat = bundle.vae.config.z_dim, meta.resolution // spatial_ratio(bundle.vae), (meta.frames - 1) // 4 + 1
    g = torch.Generator().manual_seed(1)
    w, t = n_windows, meta.frames
    cond = {
        "latents": torch.randn(w, z, t_lat, size, size, generator=g).numpy(),
        "cond_latents": torch.randn(w, z, t_lat, size, size, generator=g).numpy(),  # I2V: VAE of [reference, zeros]
        "audio_mel": torch.randn(w, t, 4, meta.audio.n_mels, generator=g).numpy(),
        "audio_wav2vec": np.zeros((w, t, 2, 32), np.float32),
        "pose": np.zeros((w, t, 10, 3), np.float32),
        "mouth_open": np.zeros((w, t), np.float32),
        "mouth_box": np.zeros((w, t, 4), np.float32),
        "frames": np.zeros((w, t, meta.resolution, meta.resolution, 3), np.uint8),
        "audio": np.zeros((w, int(t / meta.fps * meta.sample_rate)), np.float32),
    }
    ids = [f"clip{i}.w0" for i in range(w)]
    pool = [GeneratorSpec(name="g2", model=str(base), guidance=2.0), GeneratorSpec(name="g1", model=str(base), guidance=1.0)]
    cfg = CandidatesConfig(out_dir=str(out_dir), windows=w, sampling_steps=1, batch_size=w, pool=pool)
    write_candidates(cfg, meta.sampling, cond, {"window_ids": ids, "clip_ids": [f"clip{i}" for i in range(w)],
                                                 "starts": [0] * w, "fps": meta.fps, "sample_rate": meta.sample_rate},
                     load_bundle, progress=False)
    return ids


@pytest.mark.slow
def test_tlpo_flow_trains_exports_and_animates(tmp_path, monkeypatch, prefect_api_url):
    from components.inference.animate import animate
    from components.model.loading import load_bundle
    from flows.alignment import tlpo_flow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    Path("params.yaml").write_text(yaml.safe_dump({}))
    _tiny_base(Path("models/phase2"))
    ids = _candidates(Path("models/phase2"), Path("data/candidates"))
    Path("data/pairs").mkdir(parents=True)
    for n, name in enumerate(SETS):
        rows = [{"window_id": wid, "winner": f"{wid}.{a}.s0", "loser": f"{wid}.{b}.s0", "reward_winner": 1.0,
                 "reward_loser": 0.0} for wid in ids for a, b in [("g2", "g1") if n % 2 else ("g1", "g2")]]
        Path(f"data/pairs/{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    overrides = {"tlpo.expert_steps": 2, "tlpo.steps": 2, "tlpo.batch_size": 2, "tlpo.log_every": 1,
                 "tlpo.lora_rank": 2, "tlpo.lora_alpha": 2.0,
                 "tlpo.sft_weight": 1.0, "tlpo.sft_target": "real"}  # the experts' SFT term on the real clips
    summary = tlpo_flow(overrides=overrides)
    assert set(summary["experts"]) == {"lip_sync", "motion", "quality"} and np.isfinite(summary["final_loss"])

    report = json.loads(Path("reports/tlpo.json").read_text())
    weights = np.array(report["weights"])
    assert weights.shape == (len(report["timesteps"]), report["n_layers"] + 1, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert Path("reports/tlpo_gate.png").stat().st_size > 0
    assert np.abs(weights - 1 / 3).max() > 0, "the gate moved off the uniform start"
    from safetensors.torch import load_file

    experts = load_file("models/tlpo/gated/experts.safetensors")
    for name in ("lip_sync", "motion", "quality"):  # every expert trained (LoRA B starts at zero)
        assert any(v.abs().sum() > 0 for k, v in experts.items() if k.startswith(f"{name}/") and "lora_B" in k)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.1, 16000 // 5).astype(np.float32)  # 0.2 s: one window
    for name, variant in (("gated", "tlpo"), ("uniform", "tlpo_uniform")):
        bundle = load_bundle(Path("models/tlpo") / name)
        assert bundle.meta.variant == variant and bundle.meta.lineage["stage"] == "tlpo"
        video = animate(bundle, image, audio, 16000, steps=2)
        assert video.shape == (5, 64, 64, 3)

    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("talkalign").experiment_id])
    run = next(r for r in runs if r.data.tags.get("talkalign.stage") == "tlpo")
    assert {"loss", "implicit_acc", "reward_margin", "lip_sync/loss", "quality/implicit_acc"} <= set(run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"tlpo.json", "figures/tlpo_gate.png"} <= logged


def test_pair_tensors_carry_each_windows_real_clip_only_when_asked(tmp_path):
    """dpo.sft_target=real: each pair's `real` is its window's true clip latents, as the candidates stage stored
    them (the windows differ, so a mix-up would show)."""
    from components.preference.candidates import load_windows
    from components.preference.pair_data import load_pair_tensors

    _tiny_base(tmp_path / "base")
    ids = _candidates(tmp_path / "base", tmp_path / "candidates")
    rows = [{"window_id": wid, "winner": f"{wid}.g1.s0", "loser": f"{wid}.g2.s0"} for wid in reversed(ids)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = load_pair_tensors(tmp_path / "candidates", tmp_path / "pairs.jsonl", "mel")
    assert "real" not in plain
    data = load_pair_tensors(tmp_path / "candidates", tmp_path / "pairs.jsonl", "mel", real=True)
    windows = load_windows(tmp_path / "candidates")
    expected = torch.from_numpy(np.stack([windows[wid].latents for wid in reversed(ids)]))
    torch.testing.assert_close(data["real"], expected)
    assert not torch.equal(data["real"][0], data["real"][1]) and data["real"].shape == data["winner"].shape
