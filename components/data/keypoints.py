"""Skeleton keypoints for a clip: where they come from, and how they follow the frames through ingest.

An extractor returns source-pixel keypoints for every decoded frame. The toy profile reads the synthetic
world's `<stem>.keypoints.json` sidecar; `MediapipeExtractor` runs pose, hand, face-detection and face-mesh
models in the extractor env (components/data/extractor_client.py) and also returns the measured landmarks
(faces for the crop, hands, lips); `auto` takes the sidecar when there is one. Either way the joints are the
layout named in params (ingest.keypoints.joints): a sidecar must list the same names in the same order. `transform_keypoints` then
applies exactly what ingest does to the frames: the same time resampling (source index per output frame)
and the same square crop + resize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from components.config import KeypointConfig
from components.io.video import DecodedVideo

SIDECAR_FORMAT = "talkalign-keypoints-v1"
SIDECAR_SUFFIX = ".keypoints.json"


class KeypointError(ValueError):
    """Keypoints for a clip are missing or malformed; the message starts with the offending file."""


@dataclass(frozen=True)
class Keypoints:
    points: np.ndarray  # float32 [T, J, 3]: x_px, y_px in source pixels (pixel i spans [i, i+1)), confidence
    joints: tuple[str, ...]
    width: int  # source frame size the pixel coordinates refer to
    height: int
    landmarks: Any = None  # components.data.landmarks.Landmarks when a model measured the clip


class KeypointExtractor(Protocol):
    def extract(self, video_path: Path, decoded: DecodedVideo) -> Keypoints: ...


@dataclass(frozen=True)
class CentreCrop:
    """The largest centred square of a width x height frame, in source pixels."""

    x0: int
    y0: int
    size: int

    @classmethod
    def of(cls, width: int, height: int) -> "CentreCrop":
        size = min(width, height)
        return cls(x0=(width - size) // 2, y0=(height - size) // 2, size=size)

    def to_unit(self, xy_px: np.ndarray) -> np.ndarray:
        """Source pixel coordinates -> [0, 1] across the crop (values outside mean outside the crop)."""
        return (np.asarray(xy_px, dtype=np.float64) - (self.x0, self.y0)) / self.size


def sidecar_path(video_path: Path, suffix: str = SIDECAR_SUFFIX) -> Path:
    return video_path.with_name(video_path.stem + suffix)


class JsonSidecarExtractor:
    """Reads `<stem>.keypoints.json` beside the clip and checks it strictly against the decoded video and the
    skeleton layout in params (the same joint names, in the same order)."""

    def __init__(self, joints: tuple[str, ...]):
        self.joints = tuple(joints)

    def extract(self, video_path: Path, decoded: DecodedVideo) -> Keypoints:
        path = sidecar_path(Path(video_path))
        if not path.is_file():
            raise KeypointError(f"{path}: keypoint sidecar missing")
        keypoints, fps = read_keypoints_json(path, joints=self.joints)
        n_frames, height, width = decoded.frames.shape[:3]
        if (keypoints.width, keypoints.height) != (width, height):
            raise KeypointError(
                f"{path}: keypoints are for {keypoints.width}x{keypoints.height} frames, video is {width}x{height}"
            )
        if abs(fps - decoded.fps) > 0.01 * decoded.fps:
            raise KeypointError(f"{path}: keypoints at {fps:g} fps, video at {decoded.fps:g} fps")
        if len(keypoints.points) != n_frames:
            raise KeypointError(f"{path}: {len(keypoints.points)} keypoint frames, video has {n_frames}")
        return keypoints


def _layout_error(path: Path, found: list[str], expected: tuple[str, ...]) -> KeypointError:
    hint = ""
    if path.with_name(path.name.removesuffix(SIDECAR_SUFFIX) + ".truth.json").is_file():
        hint = " (a synthetic-world clip: the world writes its own fixed layout, the default of ingest.keypoints.joints)"
    return KeypointError(
        f"{path}: the sidecar's joints are [{', '.join(found)}], but ingest.keypoints.joints is "
        f"[{', '.join(expected)}]: a sidecar must list the same joints in the same order{hint}"
    )


def _is_pixel_count(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and float(value).is_integer()


def read_keypoints_json(
    path: Path, n_joints: int | None = None, joints: tuple[str, ...] | None = None
) -> tuple[Keypoints, float]:
    """A talkalign-keypoints-v1 file checked on its own (format, fields, joints, values): (keypoints, fps).

    `joints`: the file must list exactly these names in this order; `n_joints`: only this many (animate knows
    the model's joint count, not its names). Checks against a video (frame size, rate, count) are the caller's:
    ingest and animate compare with different things.
    """
    if joints is not None:
        n_joints = len(joints)
    if n_joints is None:
        raise ValueError("read_keypoints_json needs n_joints or joints")
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeypointError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise KeypointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise KeypointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != SIDECAR_FORMAT:
        raise KeypointError(f"{path}: format is {data.get('format')!r}, expected {SIDECAR_FORMAT!r}")
    missing = [k for k in ("fps", "width", "height", "joints", "frames") if k not in data]
    if missing:
        raise KeypointError(f"{path}: missing field(s) {', '.join(missing)}")

    names = data["joints"]
    if not isinstance(names, list) or not all(isinstance(j, str) for j in names):
        raise KeypointError(f"{path}: 'joints' must be a list of names")
    if joints is not None and tuple(names) != tuple(joints):
        raise _layout_error(path, names, joints)
    if len(names) != n_joints:
        raise KeypointError(f"{path}: {len(names)} joints, expected {n_joints}")
    width, height = data["width"], data["height"]
    if not (_is_pixel_count(width) and _is_pixel_count(height)):
        raise KeypointError(f"{path}: width and height must be positive integers, got {width!r} x {height!r}")
    width, height = int(width), int(height)
    try:
        fps = float(data["fps"])
    except (TypeError, ValueError):
        raise KeypointError(f"{path}: fps {data['fps']!r} is not a number") from None
    if not fps > 0:
        raise KeypointError(f"{path}: fps must be positive, got {fps:g}")

    try:
        points = np.asarray(data["frames"], dtype=np.float64)
    except (TypeError, ValueError):  # ragged nesting or non-numbers
        raise KeypointError(f"{path}: 'frames' is not a [T][J][3] array of numbers") from None
    if points.ndim != 3 or points.shape[1:] != (n_joints, 3) or points.shape[0] == 0:
        raise KeypointError(f"{path}: 'frames' has shape {points.shape}, expected [T, {n_joints}, 3] with T >= 1")
    if not np.isfinite(points).all():
        bad = np.argwhere(~np.isfinite(points))[0]
        raise KeypointError(f"{path}: non-finite value at frame {bad[0]}, joint {bad[1]}")
    conf = points[..., 2]
    if conf.min() < 0 or conf.max() > 1:
        raise KeypointError(f"{path}: confidence outside [0, 1] (min {conf.min():g}, max {conf.max():g})")
    return Keypoints(points.astype(np.float32), tuple(names), width, height), fps


class MediapipeExtractor:
    """Pose and hand joints (with per-joint confidence), hands, lips and face boxes from the mediapipe worker."""

    def __init__(self, cfg: KeypointConfig):
        from components.data.extractor_client import extractor_python
        from components.data.landmarks import KNOWN_JOINTS, unknown_joints

        unknown = unknown_joints(cfg.joints)
        if unknown:  # before the env check: a params problem, whatever the machine has
            raise ValueError(
                f"ingest.keypoints.joints: mediapipe measures no joint named {', '.join(unknown)}; "
                f"it knows {', '.join(KNOWN_JOINTS)}"
            )
        self.cfg = cfg
        self.joints = tuple(cfg.joints)
        self.python = extractor_python(cfg.extractor_python)  # fails here, once, naming `make setup`

    def extract(self, video_path: Path, decoded: DecodedVideo) -> Keypoints:
        from components.data.extractor_client import ExtractorFailed, extract_landmarks
        from components.data.landmarks import landmarks_from_reply, pose_joints

        height, width = decoded.frames.shape[1:3]
        options = {"face_model": self.cfg.face_model, "pose_every": self.cfg.pose_every}
        cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else None
        try:
            reply = extract_landmarks(Path(video_path), decoded.frames, options, self.python, cache,
                                      self.cfg.max_side, self.cfg.timeout_s)
        except ExtractorFailed as exc:
            raise KeypointError(str(exc)) from exc
        points = pose_joints(reply, self.joints, width, height)
        return Keypoints(points, self.joints, width, height, landmarks_from_reply(reply, width, height))


class AutoExtractor:
    """The clip's sidecar when it has one; otherwise mediapipe (its env is checked only when first needed)."""

    def __init__(self, cfg: KeypointConfig):
        self.cfg = cfg
        self.sidecar = JsonSidecarExtractor(cfg.joints)
        self._mediapipe: MediapipeExtractor | None = None

    def extract(self, video_path: Path, decoded: DecodedVideo) -> Keypoints:
        if sidecar_path(Path(video_path)).is_file():
            return self.sidecar.extract(video_path, decoded)
        if self._mediapipe is None:
            from components.data.extractor_client import ExtractorUnavailable

            try:
                self._mediapipe = MediapipeExtractor(self.cfg)
            except (ExtractorUnavailable, ValueError) as exc:  # this clip only: clips with sidecars still go through
                raise KeypointError(f"{sidecar_path(Path(video_path))}: keypoint sidecar missing, and {exc}") from exc
        return self._mediapipe.extract(video_path, decoded)


def make_extractor(cfg: KeypointConfig) -> KeypointExtractor:
    """The keypoint source named in params."""
    if cfg.extractor == "json_sidecar":
        return JsonSidecarExtractor(cfg.joints)
    if cfg.extractor == "mediapipe":
        return MediapipeExtractor(cfg)
    if cfg.extractor == "auto":
        return AutoExtractor(cfg)
    raise ValueError(f"unknown keypoint extractor {cfg.extractor!r}")


def transform_keypoints(keypoints: Keypoints, source_index: np.ndarray, crop: CentreCrop | None = None) -> np.ndarray:
    """float32 [T_out, J, 3] of (x, y) in [0, 1] across the output square and confidence.

    `source_index[k]` is the decoded frame shown at output frame k (the same indices ingest uses for the
    frames). The output image is the crop (default: the centre square) scaled to any resolution, so [0, 1] coordinates are
    resolution free. Joints outside the crop are clamped to its border with confidence 0: a pose model
    would not see them either.
    """
    crop = crop or CentreCrop.of(keypoints.width, keypoints.height)
    picked = keypoints.points[np.asarray(source_index)]
    unit = crop.to_unit(picked[..., :2])
    outside = ((unit < 0) | (unit > 1)).any(axis=-1)
    conf = np.where(outside, 0.0, picked[..., 2])
    return np.concatenate([np.clip(unit, 0.0, 1.0), conf[..., None]], axis=-1).astype(np.float32)
