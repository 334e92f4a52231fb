"""Ingest any folder of talking videos into frame-aligned training clips.

For each video (recursive; .mp4 .mov .mkv .webm .avi .m4v): decode, check it is usable, resample to the
ingest fps and sample rate, crop to a square and resize, compute frame-aligned audio features
(wav2vec2 tokens and log-mel), skeleton keypoints and, when the synthetic world left one, ground truth.
The crop is the centre square for sidecar keypoints, and one smoothed face-tracked square per clip when
mediapipe measured the clip (components/data/face_crop.py); mediapipe's lips then give the mouth opening
and box, written to truth.json with the synthetic world's keys (marked "measured_by") when the clip has no
ground truth, and to landmarks.json (hands, lips, joints) always.
Output layout (rebuilt from scratch each run, swapped in at the end):

    out_dir/clips/{clip_id}/video.mp4 audio.wav wav2vec.npy mel.npy pose.npy [truth.json] [landmarks.json] meta.json
    out_dir/manifest.jsonl   one row per good clip

A clip that cannot be used goes to the quarantine list with a one-line reason; every other clip still
gets through. Too many refusals raise QuarantineThresholdExceeded, after the outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from components.config import IngestConfig, KeypointConfig
from components.data.extractor_client import ExtractorUnavailable
from components.data.face_crop import FaceCropParams, FaceTrackError, face_crop
from components.data.keypoints import (
    CentreCrop,
    KeypointError,
    KeypointExtractor,
    make_extractor,
    sidecar_path,
    transform_keypoints,
)
from components.data.landmarks import measured_truth
from components.data.quarantine import Quarantine
from components.io.audio import log_mel, resample_audio, rms_db, save_wav
from components.io.video import MediaError, decode_video, resample_frames, write_video
from components.data.audio_features import SAMPLE_RATE as WAV2VEC_RATE
from components.data.audio_features import AudioEncoder

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
TRUTH_SUFFIX = ".truth.json"
MANIFEST_NAME = "manifest.jsonl"
CLIPS_DIR = "clips"


class ClipRejected(ValueError):
    """A clip that decodes but is not usable (no audio, too short, silent, ...)."""


class QuarantineThresholdExceeded(RuntimeError):
    """More of the input was quarantined than params allow; outputs were still written."""


@dataclass(frozen=True)
class IngestSummary:
    n_seen: int
    n_ok: int
    n_quarantined: int
    quarantined_fraction: float
    seconds: float
    clips_per_s: float
    out_dir: str
    manifest_path: str
    quarantine_path: str


# ---------------------------------------------------------------- naming


def find_videos(input_dir: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Every video file under input_dir, sorted; hidden files/dirs and the excluded trees are skipped."""
    exclude = tuple(p.resolve() for p in exclude)
    found = []
    for path in sorted(input_dir.rglob("*")):
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(ex) for ex in exclude):
            continue
        found.append(path)
    return found


def _ascii_slug(text: str) -> str:
    # NFKD splits "é" into "e" + a combining accent, which the ASCII encode then drops.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9_-]", "_", ascii_text)


def clip_id_for(rel: PurePosixPath) -> str:
    """ASCII id from the path relative to the input root, without extension; folders joined by "__".

    Anything that had to change (spaces, dots, non-ASCII letters) gets an 8-hex hash of the original path
    appended, so two different source names can't silently land on one id.
    """
    parts = list(rel.with_suffix("").parts)
    slugs = [_ascii_slug(p) for p in parts]
    clip_id = "__".join(s or "_" for s in slugs)
    if slugs != parts:
        clip_id += "-" + hashlib.sha1(rel.as_posix().encode("utf-8")).hexdigest()[:8]
    return clip_id


def identity_for(rel: PurePosixPath, truth: dict[str, Any] | None, clip_id: str) -> str:
    if truth and isinstance(truth.get("identity"), str) and truth["identity"]:
        return truth["identity"]
    parent = rel.parent.as_posix()
    return parent if parent not in ("", ".") else clip_id


# ---------------------------------------------------------------- per-clip work


def crop_resize(frames: np.ndarray, crop: CentreCrop, resolution: int) -> np.ndarray:
    """uint8 [T, res, res, 3]: centre square, then an antialiased bicubic resize (PIL filters over the
    whole source footprint when shrinking)."""
    out = np.empty((len(frames), resolution, resolution, 3), np.uint8)
    box = frames[:, crop.y0 : crop.y0 + crop.size, crop.x0 : crop.x0 + crop.size]
    for i, frame in enumerate(box):
        image = Image.fromarray(np.ascontiguousarray(frame))
        if crop.size != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
        out[i] = np.asarray(image)
    return out


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    return audio[:n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))


def load_truth(video_path: Path) -> dict[str, Any] | None:
    path = sidecar_path(video_path, TRUTH_SUFFIX)
    if not path.is_file():
        return None
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipRejected(f"{path}: ground truth is not valid JSON ({exc})") from exc
    if not isinstance(truth, dict):
        raise ClipRejected(f"{path}: ground truth must be a JSON object")
    return truth


def transform_truth(
    truth: dict[str, Any],
    clip_id: str,
    n_source: int,
    source_index: np.ndarray,
    crop: CentreCrop,
    resolution: int,
    fps: int,
    sample_rate: int,
) -> dict[str, Any]:
    """Put the ground truth in the output clip's frame and pixel space.

    Per-frame arrays (first axis = source frame count) are resampled with the frames' own source indices.
    `*_px` values are pixels: per-frame [..., x, y] positions go through the crop and resize; per-clip
    pairs (sizes such as mouth_size_px) only scale. Everything else is copied unchanged.
    """
    scale = resolution / crop.size
    out: dict[str, Any] = {}
    for key, value in truth.items():
        arr = np.asarray(value) if isinstance(value, list) else None
        per_frame = arr is not None and arr.dtype.kind in "iufb" and arr.ndim >= 1 and len(arr) == n_source
        if per_frame:
            arr = arr[source_index]
        if key.endswith("_px") and arr is not None and arr.dtype.kind in "iuf":
            arr = arr.astype(np.float64)
            if per_frame and arr.ndim >= 2 and arr.shape[-1] >= 2:
                arr[..., :2] = (arr[..., :2] - (crop.x0, crop.y0)) * scale
            else:
                arr = arr * scale
        out[key] = arr.tolist() if arr is not None and arr.dtype.kind in "iufb" else value
    src_fps = truth.get("fps")
    if isinstance(truth.get("lag_frames"), (int, float)) and src_fps:
        out["lag_frames"] = int(round(truth["lag_frames"] * fps / float(src_fps)))
    out.update(clip_id=clip_id, fps=fps, n_frames=int(len(source_index)), width=resolution, height=resolution)
    out["sample_rate"] = sample_rate
    out["pixel_space"] = "output"  # *_px values refer to the ingested res x res frames
    return out


@dataclass
class _Clip:
    """One ingested clip before it is written."""

    frames: np.ndarray
    audio: np.ndarray
    wav2vec: np.ndarray
    mel: np.ndarray
    pose: np.ndarray
    truth: dict[str, Any] | None
    landmarks: dict[str, Any] | None  # mediapipe's measures in output space, when it ran
    meta: dict[str, Any]
    row: dict[str, Any]


def face_crop_params(cfg: KeypointConfig) -> FaceCropParams:
    return FaceCropParams(
        scale=cfg.crop_scale,
        smooth_frames=cfg.smooth_frames,
        max_missing_frac=cfg.max_missing_face_frac,
        max_multi_face_frac=cfg.max_multi_face_frac,
        min_face_frac=cfg.min_face_frac,
    )


def process_clip(
    path: Path,
    rel: PurePosixPath,
    clip_id: str,
    cfg: IngestConfig,
    encoder: AudioEncoder,
    extractor: KeypointExtractor,
) -> _Clip:
    """Decode, check and convert one video; raises MediaError / ClipRejected / KeypointError / FaceTrackError
    when unusable."""
    decoded = decode_video(path, with_audio=True)
    if decoded.audio is None or decoded.sample_rate is None or decoded.audio.size == 0:
        raise ClipRejected(f"{path}: no audio stream")
    video_s = decoded.duration_s
    audio_s = decoded.audio.size / decoded.sample_rate
    if video_s < cfg.min_duration_s:
        raise ClipRejected(f"{path}: too short ({video_s:.2f} s < min_duration_s {cfg.min_duration_s:g} s)")
    mismatch = abs(audio_s - video_s)
    if mismatch > cfg.max_av_mismatch_s:
        raise ClipRejected(
            f"{path}: audio {audio_s:.2f} s vs video {video_s:.2f} s differ by {mismatch:.2f} s "
            f"(> max_av_mismatch_s {cfg.max_av_mismatch_s:g})"
        )
    level = rms_db(decoded.audio)
    if level < cfg.min_audio_rms_db:
        raise ClipRejected(f"{path}: silent audio ({level:.1f} dBFS < min_audio_rms_db {cfg.min_audio_rms_db:g})")
    keypoints = extractor.extract(path, decoded)
    n_source, height, width = decoded.frames.shape[:3]
    truth = load_truth(path)
    if truth is not None:
        # Truth made for another frame count or frame size would be resampled or mapped wrongly: refuse it.
        declared = (truth.get("n_frames", n_source), truth.get("width", width), truth.get("height", height))
        if declared != (n_source, width, height):
            raise ClipRejected(
                f"{sidecar_path(path, TRUTH_SUFFIX)}: ground truth is for {declared[0]} frames of "
                f"{declared[1]}x{declared[2]}, video has {n_source} frames of {width}x{height}"
            )

    # Time: output frame k shows the source frame on screen at k / fps; keypoints and truth follow the same indices.
    source_index = resample_frames(np.arange(n_source), decoded.timestamps, cfg.fps, duration_s=video_s)
    n_frames = len(source_index)
    measured = keypoints.landmarks
    if measured is not None:
        try:
            crop = face_crop(measured.faces, width, height, face_crop_params(cfg.keypoints))
        except FaceTrackError as exc:
            raise FaceTrackError(f"{path}: {exc}") from None
    else:
        crop = CentreCrop.of(width, height)
    frames = crop_resize(decoded.frames[source_index], crop, cfg.resolution)

    audio = resample_audio(decoded.audio, decoded.sample_rate, cfg.sample_rate)
    audio = _fit_length(audio, int(round(n_frames / cfg.fps * cfg.sample_rate)))
    audio_16k = audio if cfg.sample_rate == WAV2VEC_RATE else resample_audio(audio, cfg.sample_rate, WAV2VEC_RATE)
    wav2vec = encoder.encode(audio_16k, n_frames, cfg.fps).astype(np.float16)
    mel = log_mel(audio, cfg.sample_rate, cfg.audio.n_mels, cfg.fps, n_frames).astype(np.float16)
    if not (np.isfinite(wav2vec).all() and np.isfinite(mel).all()):
        raise ClipRejected(f"{path}: audio features overflow float16")
    pose = transform_keypoints(keypoints, source_index, crop)

    if truth is not None:
        truth = transform_truth(truth, clip_id, n_source, source_index, crop, cfg.resolution, cfg.fps, cfg.sample_rate)
    landmarks = None
    if measured is not None:
        source_space = measured_truth(measured, keypoints.points, decoded.fps, width, height)
        landmarks = transform_truth(source_space, clip_id, n_source, source_index, crop, cfg.resolution, cfg.fps,
                                    cfg.sample_rate)
        truth = truth if truth is not None else landmarks  # evaluate / critic / sync expert read truth.json
    identity = identity_for(rel, truth, clip_id)
    xy = pose[..., :2]
    row = {
        "clip_id": clip_id,
        "identity": identity,
        "source": rel.as_posix(),
        "n_frames": n_frames,
        "fps": cfg.fps,
        "width": cfg.resolution,
        "height": cfg.resolution,
        "duration_s": round(video_s, 4),
        "audio_duration_s": round(audio_s, 4),
        "av_mismatch_s": round(mismatch, 4),
        "audio_rms_db": round(level, 2),
        "n_joints": int(pose.shape[1]),
        "kp_min": round(float(np.nanmin(xy)), 6) if np.isfinite(xy).any() else float("nan"),
        "kp_max": round(float(np.nanmax(xy)), 6) if np.isfinite(xy).any() else float("nan"),
        "kp_nan": int(np.isnan(pose).sum()),
        "has_truth": truth is not None,
    }
    meta = {
        **row,
        "source_fps": decoded.fps,
        "source_width": width,
        "source_height": height,
        "source_frames": n_source,
        "source_sample_rate": decoded.sample_rate,
        "crop": asdict(crop),
        "crop_kind": "face" if measured is not None else "centre",
        "keypoint_extractor": measured.extractor if measured is not None else "json_sidecar",
        "truth_source": None if truth is None else truth.get("measured_by", "ground_truth"),
        "sample_rate": cfg.sample_rate,
        "joints": list(keypoints.joints),
        "kp_out_of_crop": int(((keypoints.points[source_index][..., 2] > 0) & (pose[..., 2] == 0)).sum()),
        "wav2vec": {
            "shape": list(wav2vec.shape),
            "tokens_per_frame": cfg.audio.tokens_per_frame,
            "model": cfg.audio.pretrained_path or f"tiny-random(seed={cfg.audio.tiny.seed})",
        },
        "mel": {"shape": list(mel.shape), "n_mels": cfg.audio.n_mels},
        "pose": {"shape": list(pose.shape), "coords": "x, y in [0, 1] across the output square; confidence"},
    }
    return _Clip(frames, audio, wav2vec, mel, pose, truth, landmarks, meta, row)


def _write_json(path: Path, data: Any, compact: bool = False) -> None:
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=1, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_clip(clip: _Clip, clips_dir: Path, cfg: IngestConfig) -> Path:
    """Write every file into a temp dir, then rename it to clips/{clip_id}: a clip dir is complete or absent."""
    final = clips_dir / clip.row["clip_id"]
    tmp = clips_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_video(tmp / "video.mp4", clip.frames, cfg.fps, crf=cfg.crf)
        save_wav(tmp / "audio.wav", clip.audio, cfg.sample_rate)
        np.save(tmp / "wav2vec.npy", clip.wav2vec, allow_pickle=False)
        np.save(tmp / "mel.npy", clip.mel, allow_pickle=False)
        np.save(tmp / "pose.npy", clip.pose, allow_pickle=False)
        if clip.truth is not None:
            _write_json(tmp / "truth.json", clip.truth, compact=True)  # long per-frame arrays
        if clip.landmarks is not None:
            _write_json(tmp / "landmarks.json", clip.landmarks, compact=True)
        _write_json(tmp / "meta.json", clip.meta)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ---------------------------------------------------------------- the folder


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by staging with two renames; the old tree is deleted only after the new one is in place."""
    old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _quarantine_in_staging(quarantine_path: Path, out_dir: Path, staging: Path) -> Path:
    """Where the quarantine list is written: inside the staging tree when it belongs under out_dir, so
    the swap carries it in (writing it beside the old out_dir would lose it when that tree is replaced)."""
    q, out = quarantine_path.resolve(), out_dir.resolve()
    if not q.is_relative_to(out):
        return quarantine_path
    rel = q.relative_to(out)
    if rel == Path() or rel.parts[0] in (CLIPS_DIR, MANIFEST_NAME):
        raise ValueError(
            f"ingest.quarantine_path {quarantine_path} collides with ingest's own outputs in {out_dir} "
            f"({CLIPS_DIR}/, {MANIFEST_NAME}): put it elsewhere, e.g. {out_dir / 'quarantine.jsonl'}"
        )
    return staging / rel


def ingest_folder(
    cfg: IngestConfig,
    input_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    quarantine_path: str | Path | None = None,
    progress: bool = True,
    encoder: AudioEncoder | None = None,
) -> IngestSummary:
    """Ingest every video under input_dir (default cfg.input_dir) into a fresh out_dir; see the module doc."""
    input_dir = Path(input_dir if input_dir is not None else cfg.input_dir)
    out_dir = Path(out_dir if out_dir is not None else cfg.out_dir)
    quarantine_path = Path(quarantine_path if quarantine_path is not None else cfg.quarantine_path)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder not found")

    start = time.perf_counter()
    extractor = make_extractor(cfg.keypoints)  # first: a missing extractor env fails before any work
    encoder = encoder or AudioEncoder(cfg.audio)
    videos = find_videos(input_dir, exclude=(out_dir,))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.staging*"):  # from a run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = out_dir.with_name(f".{out_dir.name}.staging{os.getpid()}")
    quarantine_target = _quarantine_in_staging(quarantine_path, out_dir, staging)
    clips_dir = staging / CLIPS_DIR
    clips_dir.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    # clip_id -> the source that claimed it. Only a good clip claims an id, so a broken a.mp4 never
    # pushes a good a.mov into quarantine.
    first_source: dict[str, str] = {}
    try:
        with Quarantine(quarantine_target, stage="ingest") as quarantine:
            for path in tqdm(videos, desc="ingest", unit="clip", disable=not progress):
                rel = PurePosixPath(path.relative_to(input_dir).as_posix())
                clip_id = clip_id_for(rel)
                if clip_id in first_source:
                    taken = f"duplicate clip id {clip_id!r}, already taken by {first_source[clip_id]}"
                    quarantine.add(rel.as_posix(), f"{path}: {taken}")
                    continue
                try:
                    clip = process_clip(path, rel, clip_id, cfg, encoder, extractor)
                except (MediaError, ClipRejected, KeypointError, FaceTrackError) as exc:
                    quarantine.add(rel.as_posix(), str(exc))
                    continue
                except ExtractorUnavailable:
                    raise  # a setup problem, not this clip's: every later clip would fail the same way
                except Exception as exc:  # one odd file must not stop a long ingest; the threshold catches bugs
                    log.warning("ingest: unexpected error on %s", path, exc_info=True)
                    quarantine.add(rel.as_posix(), f"{path}: unexpected {type(exc).__name__}: {exc}")
                    continue
                first_source[clip_id] = rel.as_posix()
                write_clip(clip, clips_dir, cfg)
                rows.append(clip.row)
            manifest = staging / MANIFEST_NAME
            manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            quarantine.commit()  # before the swap: a list inside out_dir must be in the staging tree when it moves
            _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    n_seen, n_ok = len(videos), len(rows)
    n_bad = len(quarantine.rows)
    seconds = time.perf_counter() - start
    summary = IngestSummary(
        n_seen=n_seen,
        n_ok=n_ok,
        n_quarantined=n_bad,
        quarantined_fraction=n_bad / n_seen if n_seen else 0.0,
        seconds=round(seconds, 3),
        clips_per_s=round(n_seen / seconds, 3) if seconds > 0 else 0.0,
        out_dir=str(out_dir),
        manifest_path=str(out_dir / MANIFEST_NAME),
        quarantine_path=str(quarantine_path),
    )
    if summary.quarantined_fraction > cfg.max_quarantine_fraction:
        raise QuarantineThresholdExceeded(
            f"{n_bad} of {n_seen} clips quarantined ({summary.quarantined_fraction:.0%} > "
            f"max_quarantine_fraction {cfg.max_quarantine_fraction:.0%}); reasons in {quarantine_path}"
        )
    return summary
