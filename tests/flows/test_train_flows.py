"""The training stages end to end on a tiny world, in-process: data -> VAE -> latents -> base DiT ->
phase 1 (every variant) -> phase 2 -> sync expert -> candidates -> annotate -> pairs -> dpo -> evaluate ->
`talkalign animate` with the phase-2 and the DPO bundles."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from components.config import Params
from components.io.video import decode_video
from flows import data, train
from flows.cli import main as cli_main
from flows.dvc_deps import REPO, ReadRecorder, load_stages, undeclared_reads

TINY = {
    "world": {"n_identities": 5, "clips_per_identity": 2, "duration_s": 1.2, "speech": "syllables"},
    "shard": {"maxcount": 4},
    "data": {"frames": 9, "window_stride": 8},
    "pretrain_vae": {"image_steps": 2, "image_batch_size": 2, "image_corpus": {"identities": 3, "frames_per_identity": 2},
                     "steps": 2, "batch_size": 2, "checkpoint_every": 1, "log_every": 1},
    "pretrain_dit": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
    "phase1": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1, "sample_every": 2},
    "phase2": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
    "sampling": {"steps": 2},
    "sync_expert": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
    "candidates": {"windows": 3, "sampling_steps": 2, "batch_size": 2},
    "critic": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
    "dpo": {"steps": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1},
    "tlpo": {"expert_steps": 2, "steps": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "lora_rank": 2},
    "rounds": {"windows": 3, "seeds": [0, 1], "guidances": [1.0, 2.0], "steps": 2},
    "evaluation": {"max_windows": 2, "grid_windows": 1, "landmark_metrics": "off"},
}
REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _tiny_params() -> dict:
    """The repository's params.yaml with tiny sizes and step counts: the same keys a user runs."""
    params = yaml.safe_load(REPO_PARAMS.read_text())
    for section, values in TINY.items():
        params[section].update(values)
    return params


@pytest.mark.slow
def test_training_stages_then_animate(tmp_path, monkeypatch, prefect_api_url):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    Path("params.yaml").write_text(yaml.safe_dump(_tiny_params()))
    reads = ReadRecorder(tmp_path)  # what each stage opens, checked against its dvc.yaml deps at the end

    for name, stage in (("synthesize", data.synthesize_flow), ("ingest", data.ingest_flow),
                        ("validate", data.validate_flow), ("shard", data.shard_flow)):
        with reads.stage(name):
            stage()
    with reads.stage("pretrain_vae"):
        vae_report = train.pretrain_vae_flow()
    assert {"psnr", "train_windows"} <= set(vae_report)
    assert json.loads(Path("reports/pretrain_vae.json").read_text())["psnr"] == pytest.approx(vae_report["psnr"])
    with reads.stage("latents"):
        train.latents_flow()
    assert all((Path("data/latents") / split / "index.json").is_file() for split in ("train", "val", "test"))
    with reads.stage("pretrain_dit"):
        train.pretrain_dit_flow()
    for variant in ("reshape", "half", "downsample"):
        with reads.stage(f"phase1@{variant}"):
            train.phase1_flow(variant=variant)
        assert (Path("models/phase1") / variant / "bundle.json").exists()
    with reads.stage("phase2"):
        phase2 = train.phase2_flow()
    assert phase2["trained_tensors"] > 0

    # Phase 2 trains only the skeleton layers: the audio modulation equals phase 1's.
    from safetensors.torch import load_file

    p1 = load_file("models/phase1/reshape/modulation.safetensors")
    p2 = load_file("models/phase2/modulation.safetensors")
    shared = [k for k in p1 if k in p2]
    assert shared and all(np.array_equal(p1[k].numpy(), p2[k].numpy()) for k in shared)
    assert set(p2) - set(p1), "phase 2 adds skeleton tensors"

    from flows.evaluate import evaluate_flow
    from flows.experts import sync_expert_flow

    with reads.stage("sync_expert"):
        expert = sync_expert_flow()
    assert 0 <= expert["val_offset_acc"] <= 1 and Path("models/sync_expert/model.safetensors").exists()
    assert json.loads(Path("reports/sync_expert.json").read_text())["val_clips"] > 0

    preference_stages_then_dpo(reads)
    online_rounds(reads)

    with reads.stage("evaluate"):
        evaluate_flow()
    # dvc.yaml's data deps are true: no stage read a file that is not its dep, output or params file.
    assert undeclared_reads(reads, load_stages(REPO / "dvc.yaml", params=_tiny_params())) == {}
    metrics = json.loads(Path("reports/metrics.json").read_text())
    assert {"ground_truth", "vae_reconstruction", "phase1_reshape", "phase1_half", "phase1_downsample", "phase2", "dpo", "tlpo",
            "tlpo_uniform", "tlpo_expert_lip_sync", "tlpo_expert_motion", "tlpo_expert_quality", "round1", "round2"} <= set(metrics)
    assert "lip_corr_audio_zeroed" in metrics["phase2"] and "lip_corr_audio_zeroed" not in metrics["round1"]  # audio_zeroed_variants
    assert metrics["ground_truth"]["lip_corr"] > 0.9  # the pixel measure itself reads true frames correctly
    for name in ("phase1_reshape", "phase2", "dpo", "tlpo", "round2"):
        assert {"sync_c", "sync_d", "sync_offset", "lip_corr", "lip_err", "psnr", "ssim"} <= set(metrics[name])
        assert all(np.isfinite(v) for v in metrics[name].values())
        assert {"critic_lip_sync", "critic_motion", "critic_quality", "critic_composite"} <= set(metrics[name])
        assert "fid" not in metrics[name]  # no extractor given: unavailable, never computed with random weights
    assert {"lip_corr_audio_zeroed", "sync_c_audio_zeroed"} <= set(metrics["phase1_reshape"])
    report = Path("reports/report.md").read_text()
    noise = json.loads(Path("reports/seed_noise.json").read_text())
    seeds = {str(s) for s in [Params().sampling.seed, *Params().evaluation.extra_seeds]}  # the profile's seeds
    assert set(noise) == {"phase2", "dpo", "tlpo"} and set(noise["dpo"]["sync_c"]["values"]) == seeds and len(seeds) > 1
    assert noise["dpo"]["psnr"]["values"]["0"] == pytest.approx(metrics["dpo"]["psnr"])
    assert "### Seed noise" in report and "### dpo − phase2" in report and "95 % CI" in report
    claims = json.loads(Path("reports/claims.json").read_text())["claims"]
    assert {"dpo_beats_sft", "hallo4_table6_order", "online_rounds_improve"} <= set(claims)
    rounds_checks = claims["online_rounds_improve"]["checks"]  # each round against the policy it started from
    assert set(rounds_checks) == {"round1_vs_dpo_critic_composite", "round1_vs_dpo_psnr", "round2_vs_round1_critic_composite",
                                  "round2_vs_round1_psnr"}
    assert all(c["verdict"] != "not measured" for c in rounds_checks.values())
    single = claims["single_dimension_dpo"]["checks"]  # measured on TLPO's experts, each merged alone
    assert {c["compared"] for c in single.values()} == {f"tlpo_expert_{d} − phase2" for d in ("lip_sync", "motion", "quality")}
    assert all(c["verdict"] != "not measured" for c in claims["tlpo_vs_single_dimension_experts"]["checks"].values())
    assert Path("reports/rounds.png").stat().st_size > 0
    assert all(c["verdict"] in ("holds", "does not hold", "not measured") for c in claims.values())
    assert "Claims of the papers" in Path("reports/claims.md").read_text()
    assert "not the official SyncNet weights" in report and "| `fid` |" in report and "| `hkc_mediapipe` |" in report
    assert {p.stem for p in Path("reports/plots").glob("*.csv")} >= {"sync_c", "sync_d", "lip_corr", "psnr", "ssim"}
    assert Path("reports/figures/metrics.png").stat().st_size > 0
    (grid,) = Path("reports/videos").glob("*.mp4")  # grid_windows=1
    grid_video = decode_video(grid)
    assert len(grid_video.frames) == 9 and grid_video.audio is not None  # data.frames, the window's audio muxed

    image = tmp_path / "ref.png"
    frame = decode_video(next(Path("data/raw").glob("*.mp4"))).frames[0]
    Image.fromarray(frame).save(image)
    audio = next(Path("data/raw").glob("*.mp4"))
    out = tmp_path / "out.mp4"
    code = cli_main(["animate", "--image", str(image), "--audio", str(audio), "--model", "models/phase2", "-o", str(out), "--steps", "2",
                     "--crop", "none"])
    assert code == 0
    video = decode_video(out)
    assert len(video.frames) == 30 and video.audio is not None  # 1.2 s at 25 fps, audio muxed

    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("talkalign").experiment_id])
    stages = {r.data.tags.get("talkalign.stage") for r in runs}
    assert {"pretrain_vae", "latents", "pretrain_dit", "phase1", "phase2", "sync_expert", "candidates", "annotate",
            "pairs", "critic", "dpo", "tlpo", "round", "evaluate"} <= stages
    evaluate_run = next(r for r in runs if r.data.tags.get("talkalign.stage") == "evaluate")
    logged = {a.path for a in client.list_artifacts(evaluate_run.info.run_id)}
    assert {"metrics.json", "report.md", "evaluation.json", "figures", "plots", "videos"} <= logged
    assert evaluate_run.data.tags["talkalign.sync_expert"] == "talkalign"
    assert "phase2.sync_c" in evaluate_run.data.metrics
    nested = {r.data.tags["talkalign.round"]: r for r in runs if r.data.tags.get("talkalign.stage") == "evaluate_round"}
    assert set(nested) == {"round1", "round2"}  # each round's model evaluated as a nested run of evaluate
    assert all(r.data.tags["mlflow.parentRunId"] == evaluate_run.info.run_id for r in nested.values())
    assert nested["round2"].data.metrics["psnr"] == pytest.approx(metrics["round2"]["psnr"])
    phase1_runs = [r for r in runs if r.data.tags.get("talkalign.stage") == "phase1"]
    assert {r.data.tags["talkalign.variant"] for r in phase1_runs} == {"reshape", "half", "downsample"}
    assert all("loss" in r.data.metrics for r in phase1_runs)
    samples = [a.path for a in client.list_artifacts(phase1_runs[0].info.run_id, "samples")]
    assert samples == ["samples/sample-step-000002.mp4"]  # sample_every=2 over 2 steps


def preference_stages_then_dpo(reads: ReadRecorder) -> None:
    """candidates -> annotate (simulated rater) -> pairs -> dpo, on the tiny pipeline's phase-1/2 models."""
    import pandas as pd

    from flows import alignment, preference

    with reads.stage("candidates"):
        preference.candidates_flow()
    index = json.loads(Path("data/candidates/index.json").read_text())
    assert len(index["windows"]) == 3 and all(len(ids) == 6 for ids in index["windows"].values())  # 5 generators, 2 seeds of one

    with reads.stage("annotate"):
        preference.annotate_flow()
    scores = pd.read_csv("data/ratings/scores.csv")
    assert len(scores) == 18 and (scores["n_raters"] == 3).all()
    assert scores[["lip_sync", "motion", "quality"]].stack().between(1, 5).all()
    assert set(pd.read_csv("data/ratings/errors.csv").columns) == {"candidate_id", "lip_sync", "motion", "quality"}
    assert "Mean score per generator" in Path("reports/annotate.md").read_text()

    from flows.critic import critic_flow

    with reads.stage("critic"):
        critic_flow()
    critic = json.loads(Path("reports/critic.json").read_text())
    for dim in ("lip_sync", "motion", "quality"):
        assert {"critic_pair_acc", "baseline_pair_acc", "raters_pair_acc", "critic_spearman", "baseline_spearman"} <= set(critic[dim])
    assert {"critic_pairs_agreeing_with_raters", "rater_pairs_agreeing_with_critic"} <= set(critic["summary"])
    assert Path("models/critic/critic.safetensors").exists() and "held-out" in Path("reports/critic.md").read_text()
    # The critic rates at scale: annotate from it, as one more rater.
    preference.annotate_flow(overrides={"annotate.source": "critic", "annotate.out_dir": "data/ratings_critic",
                                        "annotate.report_path": "reports/annotate_critic.md"})
    by_critic = pd.read_csv("data/ratings_critic/scores.csv")
    assert len(by_critic) == 18 and (by_critic["n_raters"] == 1).all()

    with reads.stage("pairs"):
        preference.pairs_flow()
    sets = {name: [json.loads(line) for line in Path(f"data/pairs/{name}.jsonl").read_text().splitlines()]
            for name in ("composite", "lip_sync", "motion", "quality")}
    assert 1 <= len(sets["composite"]) <= 3  # best_vs_worst: at most one pair per window
    for pair in sets["composite"]:
        assert pair["reward_winner"] - pair["reward_loser"] >= 0.5  # min_margin
    assert json.loads(Path("reports/pairs.json").read_text())["composite"]["pairs"] == len(sets["composite"])

    with reads.stage("dpo"):
        summary = alignment.dpo_flow()
    assert summary["n_pairs"] == len(sets[Params().dpo.pair_set])  # the profile's pair set (lip_sync in the toy one)
    assert Path("models/dpo/bundle.json").exists() and Path("models/dpo/lora.safetensors").exists()
    assert json.loads(Path("models/dpo/bundle.json").read_text())["variant"] == "dpo"

    with reads.stage("tlpo"):
        alignment.tlpo_flow()
    for fusion in ("gated", "uniform"):
        assert {"tlpo.json", "experts.safetensors"} <= {p.name for p in Path("models/tlpo", fusion).iterdir()}
    assert Path("reports/tlpo.json").exists() and Path("reports/tlpo_gate.png").exists()


def online_rounds(reads: ReadRecorder) -> None:
    """Two online rounds after dpo: each samples its own policy, rates, pairs and fine-tunes it; round 2's DPO
    reference (its base, adapters off) is round 1's policy, weight for weight."""
    from flows.rounds import round_flow

    for name in ("round1", "round2"):
        with reads.stage(f"round@{name}"):
            summary = round_flow(name=name)
        assert summary["candidates"] == 12 and summary["pairs_composite"] >= 1  # 3 windows x 2 seeds x 2 guidances
        index = json.loads(Path(f"data/rounds/{name}/candidates/index.json").read_text())
        assert {g["model"] for g in index["generators"].values()} == {Params().rounds.schedule[name]}
        assert json.loads(Path(f"models/rounds/{name}/bundle.json").read_text())["variant"] == name
        assert Path(f"reports/rounds/{name}/pairs.md").exists() and Path(f"reports/rounds/{name}/annotate.md").exists()
    windows = [set(json.loads(Path(f"data/rounds/{n}/candidates/index.json").read_text())["windows"]) for n in ("round1", "round2")]
    assert windows[0] != windows[1], "each round rates other windows of the preference split"

    assert_reference_is("models/rounds/round1", "models/rounds/round2")
    assert_reference_is("models/dpo", "models/rounds/round1")


def assert_reference_is(policy: str, trained: str) -> None:
    """`trained` = `policy` + its own LoRA delta, merged: every adapted weight minus (alpha / r) B A equals the
    policy's weight, every other tensor is the policy's exactly, and the delta is not zero."""
    import torch
    from safetensors.torch import load_file

    from components.model.loading import load_bundle

    cfg = Params().dpo
    before = load_bundle(policy).model.state_dict()
    after = load_bundle(trained).model.state_dict()
    lora = load_file(str(Path(trained) / "lora.safetensors"))
    adapted = {k.removesuffix(".lora_A.weight") for k in lora if k.endswith(".lora_A.weight")}
    assert adapted and set(after) == set(before)
    moved = 0.0
    for key, weight in after.items():
        module = key.rpartition(".")[0]
        if module in adapted and key.endswith(".weight"):
            delta = (cfg.lora_alpha / cfg.lora_rank) * lora[f"{module}.lora_B.weight"] @ lora[f"{module}.lora_A.weight"]
            torch.testing.assert_close(weight - delta.to(weight.dtype), before[key], atol=1e-5, rtol=1e-4)
            moved = max(moved, float(delta.abs().max()))
        else:
            assert torch.equal(weight, before[key]), key
    assert moved > 0, f"{trained}: its LoRA did not move"
