"""The synthetic talking-portrait world (toy profile): clips whose ground truth is known.

Each clip is one identity (a procedurally drawn face and upper body) speaking one utterance:
- audio: espeak-ng speech (random words, voice, rate, pitch) or a syllable-burst synthesiser;
- lips: mouth opening per video frame = the audio loudness envelope (`frame_envelope`) in dB, lag 0;
- body: 10 keypoints moving smoothly, with hand gestures and head nods on speech beats; the renderer
  draws the body from the keypoints alone, so the skeleton fully determines the pose.

Everything is deterministic for (world seed, identity index, clip index); adding identities or clips does
not change the existing ones. Coordinates are pixels of the output frame, x right, y down.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from components.config import WorldConfig
from components.data.synthetic.identity import draw_identity, face_geometry
from components.data.synthetic.motion import JOINTS, animate_body, mouth_opening_from_envelope
from components.data.synthetic.render import render_frames
from components.data.synthetic.speech import espeak_available, make_speech
from components.io.atomic import atomic_file
from components.io.audio import frame_envelope
from components.io.video import write_video

__all__ = ["KEYPOINT_FORMAT", "Clip", "WorldSummary", "clip_id_for", "make_clip", "synthesize_world", "write_clip"]

KEYPOINT_FORMAT = "talkalign-keypoints-v1"
_CLIP_FILE = re.compile(r"^id\d{3,}_clip\d{2,}\.(mp4|keypoints\.json|truth\.json)$")


@dataclass
class Clip:
    clip_id: str
    frames: np.ndarray  # uint8 [T, R, R, 3]
    audio: np.ndarray  # float32 [N]
    keypoints: np.ndarray  # float [T, 10, 2] pixels
    truth: dict


def clip_id_for(identity_index: int, clip_index: int) -> str:
    return f"id{identity_index:03d}_clip{clip_index:02d}"


def _rng(cfg: WorldConfig, *key: int) -> np.random.Generator:
    # spawn_key makes every (identity, clip, purpose) stream independent of how many others exist.
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=key))


def make_clip(cfg: WorldConfig, identity_index: int, clip_index: int) -> Clip:
    identity = draw_identity(_rng(cfg, identity_index), f"id{identity_index:03d}")
    geometry = face_geometry(cfg.resolution, cfg.mouth_width_frac, identity)
    n_frames = int(round(cfg.duration_s * cfg.fps))

    speech = make_speech(_rng(cfg, identity_index, clip_index, 0), cfg)
    envelope = frame_envelope(speech.audio, cfg.sample_rate, cfg.fps, n_frames)
    mouth_open = mouth_opening_from_envelope(envelope, cfg.mouth_range_db)  # lag 0: same frame's window
    keypoints = animate_body(_rng(cfg, identity_index, clip_index, 1), mouth_open, cfg.fps, cfg.resolution,
                             cfg.gesture_prob)
    frames = render_frames(identity, geometry, keypoints, mouth_open, cfg.resolution)

    clip_id = clip_id_for(identity_index, clip_index)
    mouth_center = keypoints[:, 0] + np.array([0.0, geometry.mouth_dy])
    truth = {
        "clip_id": clip_id,
        "identity": identity.name,
        "fps": cfg.fps,
        "sample_rate": cfg.sample_rate,
        "n_frames": n_frames,
        "width": cfg.resolution,
        "height": cfg.resolution,
        "lag_frames": 0,
        "mouth_open": [round(float(v), 6) for v in mouth_open],
        "mouth_center_px": np.round(mouth_center, 3).tolist(),
        "mouth_size_px": [round(geometry.mouth_w, 3), round(geometry.mouth_h_max, 3)],
        "keypoints_px": np.round(keypoints, 3).tolist(),
        "speech": {"kind": speech.kind, "text": speech.text, "voice": speech.voice},
        "identity_params": asdict(identity),
        "world_seed": cfg.seed,
    }
    return Clip(clip_id, frames, speech.audio, keypoints, truth)


def _write_json(path: Path, obj: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def write_clip(clip: Clip, out_dir: Path, fps: int, sample_rate: int) -> None:
    """{clip_id}.mp4, {clip_id}.keypoints.json, {clip_id}.truth.json; each written atomically, truth last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = clip.frames.shape[1:3]
    write_video(out_dir / f"{clip.clip_id}.mp4", clip.frames, fps, clip.audio, sample_rate)
    conf = np.ones((*clip.keypoints.shape[:2], 1))
    _write_json(out_dir / f"{clip.clip_id}.keypoints.json", {
        "format": KEYPOINT_FORMAT,
        "fps": fps,
        "width": width,
        "height": height,
        "joints": list(JOINTS),
        "frames": np.round(np.concatenate([clip.keypoints, conf], axis=2), 3).tolist(),
    })
    _write_json(out_dir / f"{clip.clip_id}.truth.json", clip.truth)


@dataclass
class WorldSummary:
    out_dir: str
    n_identities: int
    n_clips: int
    clip_ids: list[str]
    speech_kinds: dict[str, int]
    seconds: float
    config: dict = field(default_factory=dict)


def synthesize_world(cfg: WorldConfig, out_dir: Path | None = None, progress: bool = True) -> WorldSummary:
    """Generate every clip of the world into out_dir (default cfg.out_dir) and write world.json.

    Clip files in out_dir that belong to no clip of this world (e.g. left over from a bigger world) are removed,
    so that a folder-globbing ingest never mixes two worlds. Only files named like our clips are touched.
    """
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.speech == "espeak" and not espeak_available():
        raise RuntimeError("world.speech=espeak but espeak-ng is not installed (use auto or syllables)")
    start = time.perf_counter()
    keys = [(i, j) for i in range(cfg.n_identities) for j in range(cfg.clips_per_identity)]
    kinds: Counter[str] = Counter()
    for i, j in tqdm(keys, desc="synthesize", unit="clip", disable=not progress):
        clip = make_clip(cfg, i, j)
        write_clip(clip, out, cfg.fps, cfg.sample_rate)
        kinds[clip.truth["speech"]["kind"]] += 1

    clip_ids = [clip_id_for(i, j) for i, j in keys]
    wanted = set(clip_ids)
    for stale in out.iterdir():
        if _CLIP_FILE.match(stale.name) and stale.name.split(".")[0] not in wanted:
            stale.unlink()
    summary = WorldSummary(str(out), cfg.n_identities, len(keys), clip_ids, dict(kinds),
                           round(time.perf_counter() - start, 3), cfg.model_dump(mode="json"))
    _write_json(out / "world.json", asdict(summary))
    return summary
