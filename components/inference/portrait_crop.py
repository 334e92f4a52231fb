"""The reference portrait's square around head and shoulders, found the way ingest finds it in a clip.

mediapipe's face detection (in the extractor env, components/data/extractor_client.py) on the one image, then
components/data/face_crop.py's square with ingest's defaults (ingest.keypoints.crop_scale ...), so a photo of
any size and aspect ratio gives the model what its training frames looked like. No face, or several faces of
similar size, is refused with the reason: animate would otherwise condition on the wrong region.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from components.config import KeypointConfig
from components.data.extractor_client import ExtractorUnavailable, extractor_python, run_worker
from components.data.face_crop import FaceTrackError, face_crop
from components.data.ingest import face_crop_params
from components.data.keypoints import CentreCrop

DETECT_MIN_SIDE = 256  # small images are upscaled for the detector (a 64 px face is below its range)
DETECT_MAX_SIDE = 512  # large ones downscaled: boxes come back normalised, so the size is free


class PortraitCropError(ValueError):
    """The portrait has no usable face; the message names the file and what was found."""


@dataclass(frozen=True)
class PortraitCrop:
    image: np.ndarray  # uint8 [S, S, 3]: the square of the source image (not resized)
    crop: CentreCrop  # where it lies in the source image, in pixels
    face: tuple[float, float, float, float, float]  # the face box x0, y0, w, h (source pixels), score


def _detector_copy(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(max(1.0, DETECT_MIN_SIDE / min(height, width)), DETECT_MAX_SIDE / max(height, width))
    if abs(scale - 1) < 1e-6:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def detect_faces(image: np.ndarray, where: str, cfg: KeypointConfig) -> np.ndarray:
    """float [n, 5] face boxes x0, y0, w, h, score in the image's pixels (mediapipe face detection)."""
    try:
        python = extractor_python(cfg.extractor_python)
    except ExtractorUnavailable:
        raise ExtractorUnavailable(
            f"{where}: finding the face needs the mediapipe extractor env ({cfg.extractor_python or '.venv-extract'} "
            "is missing): run `make setup`, or pass --crop none to use the centre square"
        ) from None
    reply = run_worker(_detector_copy(image)[None], {"face_model": cfg.face_model}, python, cfg.timeout_s, where)
    height, width = image.shape[:2]
    return np.asarray(reply["faces"][0], np.float64).reshape(-1, 5) * (width, height, width, height, 1.0)


def crop_portrait(image: np.ndarray, where: str | Path, cfg: KeypointConfig | None = None) -> PortraitCrop:
    """image uint8 [H, W, 3] -> its head-and-shoulders square; PortraitCropError when no face / several faces."""
    cfg = cfg or KeypointConfig()
    params = face_crop_params(cfg)
    height, width = image.shape[:2]
    faces = detect_faces(image, str(where), cfg)
    if len(faces) == 0:
        raise PortraitCropError(
            f"{where}: no face found (mediapipe face detection on the {width}x{height} image): use a photo with one "
            "visible face, or --crop none to use the centre square as it is"
        )
    sides = np.maximum(faces[:, 2], faces[:, 3])
    similar = faces[sides >= params.second_face_ratio * sides.max()]  # a face in a poster behind does not count
    if len(similar) > 1:
        boxes = ", ".join(f"{w:.0f} px at ({x:.0f}, {y:.0f})" for x, y, w, _, _ in similar[:4])
        raise PortraitCropError(
            f"{where}: {len(similar)} faces found ({boxes}): crop the photo to one person, or --crop none"
        )
    try:
        crop = face_crop([similar], width, height, params)
    except FaceTrackError as exc:  # the face is too small for the model's training crops
        raise PortraitCropError(f"{where}: {str(exc).split(': frames')[0]}; use a closer photo or --crop none") from None
    square = image[crop.y0 : crop.y0 + crop.size, crop.x0 : crop.x0 + crop.size]
    return PortraitCrop(np.ascontiguousarray(square), crop, tuple(float(v) for v in similar[0]))
