"""Identities of the synthetic world: a person's colours, hair and face proportions, drawn from a seeded rng."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

__all__ = ["FaceGeometry", "Identity", "draw_identity", "face_geometry"]


@dataclass(frozen=True)
class Identity:
    name: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str  # short | long | bun | buzz | curly
    lips: tuple[int, int, int]
    iris: tuple[int, int, int]
    clothes: tuple[int, int, int]
    background_a: tuple[int, int, int]
    background_b: tuple[int, int, int]
    background_vertical: bool  # gradient direction
    face_aspect: float  # face height / width
    eye_spacing: float  # distance between eye centres / face width
    eye_size: float


_SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 92), (161, 102, 64), (112, 70, 45))
_HAIR = ((20, 16, 14), (60, 40, 28), (110, 72, 40), (200, 160, 90), (170, 70, 30), (150, 150, 150), (60, 70, 160))
_IRIS = ((60, 40, 25), (70, 110, 160), (70, 120, 70), (100, 80, 50))
_HAIR_STYLES = ("short", "long", "bun", "buzz", "curly")


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore


def draw_identity(rng: np.random.Generator, name: str) -> Identity:
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    return Identity(
        name=name,
        skin=skin,
        hair=_jitter(rng, _HAIR[rng.integers(len(_HAIR))], 12),
        hair_style=str(rng.choice(_HAIR_STYLES)),
        lips=_jitter(rng, (int(skin[0] * 0.75), int(skin[1] * 0.45), int(skin[2] * 0.5)), 8),
        iris=_IRIS[rng.integers(len(_IRIS))],
        clothes=_hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.9)),
        background_a=_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.95)),
        background_b=_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.95)),
        background_vertical=bool(rng.random() < 0.7),
        face_aspect=float(rng.uniform(1.0, 1.12)),
        eye_spacing=float(rng.uniform(0.32, 0.44)),
        eye_size=float(rng.uniform(0.8, 1.2)),
    )


@dataclass(frozen=True)
class FaceGeometry:
    """Sizes in output pixels; the mouth is fixed by the config, the face is built around it."""

    face_w: float
    face_h: float
    mouth_w: float
    mouth_h_min: float  # closed: the lip seam
    mouth_h_max: float
    mouth_dy: float  # mouth centre below the head keypoint


def face_geometry(resolution: int, mouth_width_frac: float, identity: Identity) -> FaceGeometry:
    mouth_w = mouth_width_frac * resolution
    face_w = mouth_w / 0.6  # a cartoon mouth: 60% of the face width, so 8x-compressed latents still see it
    face_h = face_w * identity.face_aspect
    return FaceGeometry(face_w, face_h, mouth_w, max(1.0, 0.06 * mouth_w), 0.5 * mouth_w, 0.24 * face_h)
