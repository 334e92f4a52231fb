"""The evaluate stage's pieces that need no trained model: seed-noise summaries, the sync-expert paragraph, the
critic scorer, and every file `write_evaluation` writes from an Evaluation (real mp4, png, csv, json, markdown)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import CriticConfig, EvaluationConfig, Params, RoundsConfig, SyncExpertConfig, TrainingDataConfig
from components.data.windows import ClipSample, Window
from components.evaluation.evaluate_models import (
    Evaluation,
    HeldOutWindows,
    critic_scorer,
    critic_window_scorer,
    summarise_seeds,
    sync_expert_paragraph,
)
from components.evaluation.evaluation_outputs import write_evaluation
from components.evaluation.sync_expert_training import toy_spec
from components.evaluation.syncnet import SyncExpert, SyncNet
from components.io.video import decode_video

T, SIZE, RATE, FPS = 9, 32, 16000, 25.0


def _expert(source: str = "talkalign") -> SyncExpert:
    meta = ({"weights": "/weights/syncnet_v2.model"} if source == "official" else
            {"val_offset_acc": 0.75, "val_chance_offset_acc": 0.1, "val_sync_auc": 0.9, "segment_frames": T})
    return SyncExpert(model=SyncNet(toy_spec(SyncExpertConfig())).eval(), source=source, meta=meta)


def test_summarise_seeds_keeps_finite_metrics_every_seed_has():
    runs = [{"sync_c": 1.0, "psnr": 20.0, "fid": 3.0}, {"sync_c": 3.0, "psnr": float("nan"), "fid": 4.0},
            {"sync_c": 2.0, "psnr": 21.0}]
    out = summarise_seeds(runs, [0, 1, 2])
    assert set(out) == {"sync_c"}  # psnr has a NaN, fid is missing in one run
    assert out["sync_c"]["values"] == {"0": 1.0, "1": 3.0, "2": 2.0}
    assert out["sync_c"]["mean"] == pytest.approx(2.0) and out["sync_c"]["std"] == pytest.approx(1.0)
    assert summarise_seeds([{"psnr": 5.0}], [0])["psnr"]["std"] == 0.0  # one seed: no spread


def test_sync_expert_paragraph_says_which_expert_scored():
    ours = sync_expert_paragraph(_expert(), Params())
    assert "not the official SyncNet weights" in ours and "75%" in ours and "AUC 0.90" in ours and f"{T}-frame" in ours
    official = sync_expert_paragraph(_expert("official"), Params())
    assert "official SyncNet weights" in official and "/weights/syncnet_v2.model" in official


def test_critic_scorer_without_and_with_a_critic(tmp_path: Path, capsys):
    from components.preference.critic import TalkingCritic, save_critic, score_videos

    params = Params(critic=CriticConfig(out_dir=str(tmp_path / "critic")))
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 255, (2, T, 64, 64, 3), dtype=np.uint8)
    boxes = np.tile(np.array([24.0, 40.0, 40.0, 50.0], np.float32), (2, T, 1))
    mel = rng.normal(size=(2, T, 4, 40)).astype(np.float32)
    assert critic_scorer(params, boxes, mel) is None
    assert "critic scores left out" in capsys.readouterr().out

    torch.manual_seed(0)  # the critic's random weights: not whatever the tests before left in the global RNG
    critic = TalkingCritic(width=4)
    save_critic(tmp_path / "critic", critic, {})
    scores = critic_scorer(params, boxes, mel)(videos)
    expected = score_videos(critic.eval(), videos, boxes, mel)
    assert set(scores) == {"critic_lip_sync", "critic_motion", "critic_quality", "critic_composite"}
    assert scores["critic_motion"] == pytest.approx(float(expected["motion"].mean()), abs=1e-6)
    composite = np.mean([expected[d] for d in ("lip_sync", "motion", "quality")], axis=0)  # pairs.weights: all 1
    assert scores["critic_composite"] == pytest.approx(float(composite.mean()), abs=1e-6)
    # with the true frames given, each dimension is divided by its spread on them before the weighted mean
    truth = videos[::-1].copy()
    on_truth = score_videos(critic.eval(), truth, boxes, mel)
    scaled = critic_window_scorer(params, boxes, mel, truth)(videos)["critic_composite"]
    dims = ("lip_sync", "motion", "quality")
    want = np.mean([expected[d] / np.std(on_truth[d]) for d in dims], axis=0)
    assert all(np.std(on_truth[d]) > 1e-4 for d in dims)  # a spread to divide by
    np.testing.assert_allclose(scaled, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _held_out_windows(n: int = 2) -> HeldOutWindows:
    """Two back-to-back windows of one clip: a moving square on grey, a tone as audio."""
    frames = np.full((n * T, SIZE, SIZE, 3), 90, np.uint8)
    for t in range(len(frames)):
        frames[t, 10:18, 4 + t % 20 : 12 + t % 20] = 230
    audio = (0.2 * np.sin(np.arange(int(len(frames) / FPS * RATE)) * 0.05)).astype(np.float32)
    clip = ClipSample("clip0", "id0", frames, audio, RATE, FPS, np.zeros((len(frames), 2, 4), np.float32),
                      np.zeros((len(frames), 4, 40), np.float32), np.zeros((len(frames), 3, 3), np.float32), None)
    windows = [Window("clip0", "id0", i * T, frames[i * T : (i + 1) * T], clip.wav2vec[:T], clip.mel[:T], clip.pose[:T],
                      np.zeros(T, np.float32), np.tile([8.0, 8.0, 24.0, 24.0], (T, 1)).astype(np.float32))
               for i in range(n)]
    truth = np.stack([w.frames for w in windows])
    return HeldOutWindows(cache=None, clips={"clip0": clip}, windows=windows, truth=truth,
                       mouth_open=np.zeros((n, T), np.float32), mouth_box=np.stack([w.mouth_box for w in windows]))


def test_write_evaluation_writes_every_output(tmp_path: Path):
    reports = tmp_path / "reports"
    cfg = EvaluationConfig(models={"phase2": "models/phase2"}, grid_windows=1, metrics_path=str(reports / "metrics.json"),
                           report_path=str(reports / "report.md"), plots_dir=str(reports / "plots"),
                           figures_dir=str(reports / "figures"), videos_dir=str(reports / "videos"),
                           seed_noise_path=str(reports / "seed_noise.json"), comparisons=[],
                           claims_path=str(reports / "claims.md"), claims_metrics_path=str(reports / "claims.json"))
    params = Params(evaluation=cfg, data=TrainingDataConfig(frames=T), critic=CriticConfig(metrics_path=str(reports / "critic.json")),
                    rounds=RoundsConfig(figure_path=str(reports / "rounds.png")))
    test = _held_out_windows()
    (reports / "videos").mkdir(parents=True)
    (reports / "videos" / "old_0000.mp4").write_bytes(b"a grid of an earlier run")
    results = {"ground_truth": {"sync_c": 5.0, "lip_corr": 0.99},
               "phase2": {"sync_c": 3.0, "lip_corr": 0.5, "psnr": 21.0, "ssim": 0.7, "fid": math.nan}}
    noise = {"phase2": summarise_seeds([results["phase2"], {**results["phase2"], "sync_c": 3.5}], [0, 1])}
    evaluation = Evaluation(results=results, seed_noise=noise, reader_scores={"r_val_true_frames": 0.9},
                            expert=_expert(), unavailable={"fvd": "no extractor given"}, test=test,
                            shown={"phase2": test.truth[:1][:, ::-1]})

    files = write_evaluation(params, evaluation)
    assert json.loads(files.metrics.read_text())["phase2"]["sync_c"] == 3.0
    assert json.loads(files.seed_noise.read_text())["phase2"]["sync_c"]["values"] == {"0": 3.0, "1": 3.5}
    assert {p.stem for p in files.plots} >= {"sync_c", "psnr"} and all(p.exists() for p in files.plots)
    assert files.chart.stat().st_size > 0 and files.rounds_figure.stat().st_size > 0  # phase 2 alone: no rounds run
    (video,) = files.videos
    assert video.name == "clip0_0000.mp4" and not (reports / "videos" / "old_0000.mp4").exists()
    decoded = decode_video(video)
    assert len(decoded.frames) == T and decoded.audio is not None
    report = files.report.read_text()
    assert "not the official SyncNet weights" in report and "| `fvd` | no extractor given |" in report
    assert "videos/clip0_0000.mp4" in report


def test_write_evaluation_without_seed_noise_writes_no_seed_file(tmp_path: Path):
    cfg = EvaluationConfig(models={"phase2": "m"}, grid_windows=0, metrics_path=str(tmp_path / "m.json"),
                           report_path=str(tmp_path / "r.md"), plots_dir=str(tmp_path / "plots"),
                           figures_dir=str(tmp_path / "fig"), videos_dir=str(tmp_path / "videos"),
                           seed_noise_path=str(tmp_path / "noise.json"), claims_path=str(tmp_path / "claims.md"),
                           claims_metrics_path=str(tmp_path / "claims.json"))
    evaluation = Evaluation(results={"phase2": {"sync_c": 1.0}}, seed_noise={}, reader_scores={}, expert=_expert("official"),
                            unavailable={}, test=_held_out_windows(1))
    files = write_evaluation(Params(evaluation=cfg, data=TrainingDataConfig(frames=T),
                                    critic=CriticConfig(metrics_path=str(tmp_path / "critic.json")),
                                    rounds=RoundsConfig(figure_path=str(tmp_path / "rounds.png"))), evaluation)
    assert files.seed_noise is None and not (tmp_path / "noise.json").exists() and files.videos == []
    assert "official SyncNet weights" in files.report.read_text()


def test_video_scorer_keeps_per_window_values_behind_its_table(tmp_path: Path):
    """The table's numbers are the per-window values' means (lip corr pooled), and the same Sync-C / Sync-D as the
    SyncNet protocol's mean over videos (sync_metrics.mean_sync_scores)."""
    from types import SimpleNamespace

    import torch

    from components.config import CriticConfig
    from components.evaluation.evaluate_models import VideoScorer
    from components.evaluation.sync_metrics import SyncVideo, mean_sync_scores

    test = _held_out_windows(3)
    test.mouth_open = np.random.default_rng(0).uniform(0, 1, (3, T)).astype(np.float32)
    test.cache = SimpleNamespace(audio_mel=torch.zeros(3, T, 4, 40))
    params = Params(evaluation=EvaluationConfig(landmark_metrics="off"), data=TrainingDataConfig(frames=T),
                    critic=CriticConfig(out_dir=str(tmp_path / "no_critic")))
    expert = _expert()
    scorer = VideoScorer(params, test, expert, reader=None)
    video = test.truth[:, ::-1].copy()  # frames reversed in time: not the truth
    table, windows = scorer.score(video)
    assert set(windows.values) >= {"sync_c", "sync_d", "lip_err", "psnr", "ssim"} and "sync_offset" not in windows.values
    for metric in ("sync_c", "sync_d", "lip_err", "psnr", "ssim"):
        assert windows.values[metric].shape == (3,) and table[metric] == pytest.approx(windows.values[metric].mean())
    protocol = mean_sync_scores(expert.model, [SyncVideo(video[i, 1:], test.mouth_box[i, 1:], scorer.audio_emb["clip0"],
                                                         w.start + 1) for i, w in enumerate(test.windows)])
    assert {k: table[k] for k in protocol} == pytest.approx(protocol)
    assert windows.lip_opening.shape == (3, T - 1) and table["lip_corr"] == pytest.approx(scorer.lips(video)["lip_corr"])
    assert list(table)[:5] == ["sync_c", "sync_d", "sync_offset", "sync_abs_offset", "lip_corr"]  # metrics.json order
