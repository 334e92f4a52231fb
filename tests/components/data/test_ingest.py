"""Ingest on real mp4 files written by PyAV: good clips, every kind of bad input, and the output contract."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

from components.config import IngestConfig, KeypointConfig, ValidationConfig
from components.data import ingest as ingest_module
from components.data.audio_features import AudioEncoder
from components.data.ingest import (
    QuarantineThresholdExceeded,
    clip_id_for,
    find_videos,
    identity_for,
    ingest_folder,
)
from components.data.quarantine import Quarantine, read_quarantine
from components.data.validate import validate_manifest
from components.io.video import decode_video, write_video

J = 10
UNICODE_CLIP = "ünï cödé/clip with space.mp4"


def make_clip(
    path: Path,
    seconds: float = 1.6,
    fps: int = 25,
    size: tuple[int, int] = (48, 48),  # width, height
    audio: str | None = "tone",  # "tone", "silent", "long" (1 s longer than the video) or None
    keypoints: str | None = "good",  # "good", "broken", "wrong_joints" or None
    truth: bool = False,
    sample_rate: int = 16000,
) -> Path:
    """A real h264/AAC clip whose frame i has grey level 4*i and whose joints sit at x = x0 + i / 2 (x0: crop edge)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    n = int(round(seconds * fps))
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:] = np.minimum(4 * np.arange(n), 255)[:, None, None, None]
    samples = None
    if audio is not None:
        audio_s = seconds + (1.0 if audio == "long" else 0.0)
        t = np.arange(int(audio_s * sample_rate)) / sample_rate
        samples = np.zeros_like(t) if audio == "silent" else 0.3 * np.sin(2 * np.pi * 440 * t) * (t >= 1.0)
        samples = (samples + (0.0 if audio == "silent" else 0.01 * np.sin(2 * np.pi * 150 * t))).astype(np.float32)
    write_video(path, frames, fps, samples, sample_rate if samples is not None else None)

    x0 = (width - min(width, height)) / 2
    y0 = (height - min(width, height)) / 2
    points = [[[x0 + i / 2, y0 + 2.0 + j, 1.0] for j in range(J)] for i in range(n)]
    joints = list(KeypointConfig().joints)[: J if keypoints != "wrong_joints" else J - 3]  # the layout in params
    if keypoints == "wrong_joints":
        points = [p[: J - 3] for p in points]
    sidecar = {"format": "talkalign-keypoints-v1", "fps": fps, "width": width, "height": height,
               "joints": joints, "frames": points}  # fmt: skip
    kp_path = path.with_name(path.stem + ".keypoints.json")
    if keypoints == "broken":
        kp_path.write_text(json.dumps(sidecar)[:200])
    elif keypoints is not None:
        kp_path.write_text(json.dumps(sidecar))
    if truth:
        path.with_name(path.stem + ".truth.json").write_text(json.dumps({
            "clip_id": path.stem, "identity": "person_a", "fps": fps, "sample_rate": sample_rate, "n_frames": n,
            "lag_frames": 0, "mouth_open": [i / n for i in range(n)],
            "mouth_center_px": [[x0 + i, y0 + 10.0] for i in range(n)], "mouth_size_px": [12.0, 6.0],
            "keypoints_px": [[p[:2] for p in frame] for frame in points], "speech": {"kind": "test"},
        }))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def encoder() -> AudioEncoder:
    return AudioEncoder(IngestConfig().audio)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, encoder):
    """One folder holding good clips and one of every bad case, ingested once."""
    root = tmp_path_factory.mktemp("corpus")
    raw = root / "raw"
    make_clip(raw / "spk1" / "good_a.mp4")
    make_clip(raw / "spk1" / "good_b.mp4", seconds=2.0, fps=30, size=(64, 48), truth=True, sample_rate=22050)
    make_clip(raw / UNICODE_CLIP)
    make_clip(raw / "dup.mp4")
    make_clip(raw / "dup.mov")  # same id "dup" as dup.mp4
    truncated = make_clip(raw / "bad" / "truncated.mp4")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    if shutil.which("ffmpeg"):  # moov atom first: the header survives the cut, the frames don't
        faststart = raw / "bad" / "truncated_faststart.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(raw / "spk1" / "good_a.mp4"), "-c", "copy",
                        "-movflags", "+faststart", str(faststart)], check=True)  # fmt: skip
        faststart.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    (raw / "bad" / "not_a_video.mp4").write_text("this is a text file, not a video\n")
    make_clip(raw / "bad" / "no_audio.mp4", audio=None)
    make_clip(raw / "bad" / "silent.mp4", audio="silent")
    make_clip(raw / "bad" / "short.mp4", seconds=0.5)
    make_clip(raw / "bad" / "av_mismatch.mp4", audio="long")
    make_clip(raw / "bad" / "broken_kp.mp4", keypoints="broken")
    make_clip(raw / "bad" / "wrong_joints.mp4", keypoints="wrong_joints")
    make_clip(raw / "bad" / "no_kp.mp4", keypoints=None)
    mismatched = make_clip(raw / "bad" / "truth_mismatch.mp4", truth=True).with_suffix(".truth.json")
    mismatched.write_text(json.dumps({**json.loads(mismatched.read_text()), "n_frames": 99}))
    (raw / "notes.txt").write_text("not a video suffix: ignored")

    cfg = IngestConfig(resolution=32, max_quarantine_fraction=1.0, keypoints=KeypointConfig(extractor="json_sidecar"))
    out, quarantine = root / "ingested", root / "quarantine.jsonl"
    summary = ingest_folder(cfg, raw, out, quarantine, progress=False, encoder=encoder)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    reasons = {row.clip: row.reason for row in read_quarantine(quarantine)}
    return dict(cfg=cfg, raw=raw, out=out, quarantine=quarantine, summary=summary, manifest=manifest, reasons=reasons)


@pytest.mark.parametrize(
    "clip, reason",
    [
        ("bad/truncated.mp4", "cannot decode|truncated"),
        ("bad/truncated_faststart.mp4", "cannot decode|truncated"),
        ("bad/not_a_video.mp4", "cannot decode"),
        ("bad/no_audio.mp4", "no audio stream"),
        ("bad/silent.mp4", "silent audio"),
        ("bad/short.mp4", r"too short \(0.48 s < min_duration_s 1 s\)"),
        ("bad/av_mismatch.mp4", r"audio 2.6\d s vs video 1.60 s differ by 1.0\d s"),
        ("bad/broken_kp.mp4", "broken_kp.keypoints.json: not valid JSON"),
        ("bad/wrong_joints.mp4", r"wrong_joints.keypoints.json: the sidecar's joints are \[head, .*, l_wrist\], but "
                                 r"ingest.keypoints.joints is \[head, .*, r_hand\]"),
        ("bad/no_kp.mp4", "no_kp.keypoints.json: keypoint sidecar missing"),
        ("bad/truth_mismatch.mp4", "truth_mismatch.truth.json: ground truth is for 99 frames of 48x48, video has 40"),
        ("dup.mp4", "duplicate clip id 'dup', already taken by dup.mov"),
    ],
)
def test_bad_input_is_quarantined_with_a_reason(corpus, clip, reason):
    if clip == "bad/truncated_faststart.mp4" and not shutil.which("ffmpeg"):
        pytest.skip("needs the ffmpeg CLI to move the moov atom first")
    assert clip in corpus["reasons"], f"{clip} not quarantined; quarantine: {corpus['reasons']}"
    text = corpus["reasons"][clip]
    assert re.search(reason, text), text
    assert "\n" not in text
    assert clip.split("/")[-1].split(".")[0] in text  # names the file


def test_good_clips_reach_the_manifest(corpus):
    summary, manifest = corpus["summary"], corpus["manifest"]
    sources = sorted(row["source"] for row in manifest)
    assert sources == sorted(["spk1/good_a.mp4", "spk1/good_b.mp4", UNICODE_CLIP, "dup.mov"])
    n_bad = len(corpus["reasons"])
    assert n_bad == (12 if shutil.which("ffmpeg") else 11)
    assert (summary.n_seen, summary.n_ok, summary.n_quarantined) == (4 + n_bad, 4, n_bad)
    assert summary.quarantined_fraction == pytest.approx(n_bad / (4 + n_bad))
    assert summary.clips_per_s > 0
    assert sorted(p.name for p in (corpus["out"] / "clips").iterdir()) == sorted(r["clip_id"] for r in manifest)
    for row in manifest:
        assert row["fps"] == 25 and row["width"] == row["height"] == 32 and row["n_joints"] == J
        assert 0 <= row["kp_min"] <= row["kp_max"] <= 1 and row["kp_nan"] == 0
        assert row["av_mismatch_s"] <= corpus["cfg"].max_av_mismatch_s
        assert row["audio_rms_db"] > corpus["cfg"].min_audio_rms_db


def test_unicode_path_with_spaces_gets_a_safe_id(corpus):
    row = next(r for r in corpus["manifest"] if r["source"] == UNICODE_CLIP)
    assert row["clip_id"].startswith("uni_code__clip_with_space-") and row["clip_id"].isascii()
    assert row["identity"] == "ünï cödé"
    assert (corpus["out"] / "clips" / row["clip_id"] / "video.mp4").is_file()


def test_identity_comes_from_truth_then_folder_then_id(corpus):
    by_source = {r["source"]: r for r in corpus["manifest"]}
    assert by_source["spk1/good_b.mp4"]["identity"] == "person_a"  # truth.json
    assert by_source["spk1/good_a.mp4"]["identity"] == "spk1"  # parent folder
    assert by_source["dup.mov"]["identity"] == "dup"  # at the root: the clip id
    assert by_source["spk1/good_b.mp4"]["has_truth"] and not by_source["spk1/good_a.mp4"]["has_truth"]


def test_clip_files_shapes_and_alignment(corpus):
    """good_b: 30 fps, 64x48, 22.05 kHz, 2 s -> 50 frames at 25 fps, 32x32, 16 kHz."""
    row = next(r for r in corpus["manifest"] if r["source"] == "spk1/good_b.mp4")
    clip = corpus["out"] / "clips" / row["clip_id"]
    assert sorted(p.name for p in clip.iterdir()) == sorted(
        ["video.mp4", "audio.wav", "wav2vec.npy", "mel.npy", "pose.npy", "truth.json", "meta.json"]
    )
    n = row["n_frames"]
    assert n == 50
    video = decode_video(clip / "video.mp4")
    assert video.frames.shape == (n, 32, 32, 3) and video.fps == 25 and video.audio is None
    audio, sr = sf.read(clip / "audio.wav", dtype="float32")
    assert sr == 16000 and audio.shape == (n * 16000 // 25,)
    wav2vec = np.load(clip / "wav2vec.npy", allow_pickle=False)
    mel = np.load(clip / "mel.npy", allow_pickle=False)
    pose = np.load(clip / "pose.npy", allow_pickle=False)
    assert wav2vec.shape == (n, 2, 32) and wav2vec.dtype == np.float16
    assert mel.shape == (n, 4, 40) and mel.dtype == np.float16
    assert pose.shape == (n, J, 3) and pose.dtype == np.float32

    # Frames and keypoints come from the same source frame: grey level 4*i and joint 0 at x0 + i / 2.
    expected = np.floor(np.arange(n) * 30 / 25 + 1e-6)  # the frame on screen at k / 25 s
    from_pose = pose[:, 0, 0] * 48 * 2  # the crop is 48 px wide
    from_pixels = video.frames[:, 8:24, 8:24].mean(axis=(1, 2, 3)) / 4
    np.testing.assert_allclose(from_pose, expected, atol=1e-3)
    np.testing.assert_allclose(from_pixels[5:], expected[5:], atol=0.5)  # very dark frames clip in yuv
    # The tone starts at 1.0 s: mel energy jumps into video frame 25.
    loudness = mel.astype(np.float32).mean(axis=(1, 2))
    assert int(np.argmax(np.diff(loudness))) == 24

    truth = json.loads((clip / "truth.json").read_text())
    assert truth["fps"] == 25 and truth["n_frames"] == n and truth["width"] == 32 and truth["sample_rate"] == 16000
    np.testing.assert_allclose(np.array(truth["mouth_open"]) * 60, expected, atol=1e-6)
    # Pixels in output space: crop starts at x=8, then 48 -> 32 px scales by 2/3.
    np.testing.assert_allclose(np.array(truth["mouth_center_px"])[:, 0], expected * 2 / 3, atol=1e-6)
    np.testing.assert_allclose(np.array(truth["mouth_center_px"])[:, 1], 10 * 2 / 3, atol=1e-6)
    assert truth["mouth_size_px"] == pytest.approx([8.0, 4.0])
    assert np.array(truth["keypoints_px"]).shape == (n, J, 2)
    meta = json.loads((clip / "meta.json").read_text())
    assert meta["crop"] == {"x0": 8, "y0": 0, "size": 48} and meta["source_fps"] == 30


def test_gx_suite_passes_on_the_ingested_manifest(corpus, tmp_path):
    cfg = corpus["cfg"]
    result = validate_manifest(
        ValidationConfig(), corpus["out"] / "manifest.jsonl", expected_fps=cfg.fps, expected_resolution=cfg.resolution,
        expected_n_joints=J, report_path=tmp_path / "report.md", result_path=tmp_path / "result.json",
        quarantine_path=corpus["quarantine"],
    )  # fmt: skip
    assert result.success and result.n_rows == 4
    report = (tmp_path / "report.md").read_text()
    assert "PASSED" in report and f"quarantined at ingest: {len(corpus['reasons'])}" in report
    assert "| bad/silent.mp4 |" in report


def test_threshold_raises_after_writing_outputs(tmp_path, encoder):
    raw = tmp_path / "raw"
    make_clip(raw / "ok.mp4")
    (raw / "junk1.mp4").write_text("junk")
    make_clip(raw / "junk2.mp4", audio=None)
    out, quarantine = tmp_path / "out", tmp_path / "q.jsonl"
    with pytest.raises(QuarantineThresholdExceeded, match=r"2 of 3 clips quarantined .*q.jsonl"):
        ingest_folder(IngestConfig(max_quarantine_fraction=0.5), raw, out, quarantine, progress=False, encoder=encoder)
    assert [json.loads(x)["clip_id"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["ok"]
    assert {r.clip for r in read_quarantine(quarantine)} == {"junk1.mp4", "junk2.mp4"}


def test_output_is_rebuilt_fresh_and_swapped_atomically(tmp_path, encoder, monkeypatch):
    raw, out, quarantine = tmp_path / "raw", tmp_path / "out", tmp_path / "q.jsonl"
    make_clip(raw / "a.mp4")
    make_clip(raw / "b.mp4")
    (out / "clips" / "stale_clip").mkdir(parents=True)
    (out / "stale.txt").write_text("from an older run")
    cfg = IngestConfig(resolution=32)
    ingest_folder(cfg, raw, out, quarantine, progress=False, encoder=encoder)
    assert sorted(p.name for p in out.iterdir()) == ["clips", "manifest.jsonl"]
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["a", "b"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    quarantine_before = quarantine.read_bytes()

    # A run that dies on its second clip leaves the previous output and quarantine list untouched.
    calls = {"n": 0}
    real = ingest_module.process_clip

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "process_clip", dies_on_second)
    make_clip(raw / "c.mp4")
    with pytest.raises(KeyboardInterrupt):
        ingest_folder(cfg, raw, out, quarantine, progress=False, encoder=encoder)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert quarantine.read_bytes() == quarantine_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "q.jsonl", "raw"]  # no staging/tmp left behind


def test_clip_ids_and_identities():
    assert clip_id_for(PurePosixPath("id000_clip01.mp4")) == "id000_clip01"  # unchanged: no hash
    assert clip_id_for(PurePosixPath("spk-1/take_2.mkv")) == "spk-1__take_2"
    safe = clip_id_for(PurePosixPath("Vidéo 1.mp4"))
    assert safe.startswith("Video_1-") and len(safe) == len("Video_1-") + 8
    assert clip_id_for(PurePosixPath("a.b.mp4")) != clip_id_for(PurePosixPath("a_b.mp4"))  # dot changed: hashed
    assert identity_for(PurePosixPath("x/y/z.mp4"), None, "x__y__z") == "x/y"
    assert identity_for(PurePosixPath("z.mp4"), {"identity": "bob"}, "z") == "bob"


def test_find_videos_is_recursive_and_skips_hidden_and_output(tmp_path):
    for name in ["a.MP4", "d/b.mov", "d/e/c.webm", "x.m4v", "y.avi", "z.mkv", ".hidden/h.mp4", "d/.k.mp4", "t.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "out" / "clips").mkdir(parents=True)
    (tmp_path / "out" / "clips" / "video.mp4").write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path, exclude=(tmp_path / "out",))]
    assert found == ["a.MP4", "d/b.mov", "d/e/c.webm", "x.m4v", "y.avi", "z.mkv"]


def test_quarantine_writer_commits_or_discards(tmp_path):
    path = tmp_path / "q.jsonl"
    with Quarantine(path) as q:
        q.add("a/b.mp4", "line one\nline two")
    rows = read_quarantine(path)
    assert [(r.clip, r.reason, r.stage) for r in rows] == [("a/b.mp4", "line one line two", "ingest")]
    with pytest.raises(RuntimeError):
        with Quarantine(path) as q:
            q.add("c.mp4", "x")
            raise RuntimeError
    assert read_quarantine(path) == rows  # the failed run did not replace the list
    assert os.listdir(tmp_path) == ["q.jsonl"]
    assert read_quarantine(tmp_path / "missing.jsonl") == []


def test_quarantine_path_inside_out_dir_is_carried_by_the_swap(tmp_path, encoder):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_clip(raw / "ok.mp4")
    make_clip(raw / "mute.mp4", audio=None)
    cfg = IngestConfig(max_quarantine_fraction=1.0)
    for _ in range(2):  # the second run replaces an out_dir that already holds the list
        summary = ingest_folder(cfg, raw, out, out / "quarantine.jsonl", progress=False, encoder=encoder)
        assert summary.n_ok == 1
        (row,) = read_quarantine(out / "quarantine.jsonl")
        assert row.clip == "mute.mp4" and "no audio stream" in row.reason
    assert sorted(p.name for p in out.iterdir()) == ["clips", "manifest.jsonl", "quarantine.jsonl"]


@pytest.mark.parametrize("name", ["manifest.jsonl", "clips/q.jsonl"])
def test_quarantine_path_on_ingest_outputs_is_refused_up_front(tmp_path, encoder, name):
    make_clip(tmp_path / "raw" / "ok.mp4")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="collides with ingest's own outputs"):
        ingest_folder(IngestConfig(), tmp_path / "raw", out, out / name, progress=False, encoder=encoder)
    assert not out.exists()
