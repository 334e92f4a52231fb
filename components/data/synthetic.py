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

import colorsys
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from components.config import WorldConfig
from components.io.audio import frame_envelope, load_audio
from components.io.video import write_video

__all__ = [
    "JOINTS",
    "KEYPOINT_FORMAT",
    "Clip",
    "FaceGeometry",
    "Identity",
    "Speech",
    "WorldSummary",
    "animate_body",
    "clip_id_for",
    "draw_identity",
    "espeak_available",
    "espeak_speech",
    "face_geometry",
    "make_clip",
    "make_speech",
    "mouth_opening_from_envelope",
    "render_frames",
    "syllable_speech",
    "synthesize_world",
    "write_clip",
]

JOINTS = ("head", "neck", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hand", "r_hand")
KEYPOINT_FORMAT = "talkalign-keypoints-v1"
SILENCE_DBFS = -60.0  # frame loudness at or below this never opens the mouth
SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges at 64 px
_CLIP_FILE = re.compile(r"^id\d{3,}_clip\d{2,}\.(mp4|keypoints\.json|truth\.json)$")

WORDS = (
    "the a we you they it this that here there now then today never always maybe really very good bad "
    "big small new old long short happy quiet loud bright dark warm cold fast slow open close begin end "
    "find give take make bring carry follow listen look speak talk tell answer question story river "
    "mountain garden window table paper music morning evening summer winter coffee water letter friend "
    "people city country market station bridge forest ocean island machine picture number minute moment "
    "simple careful gentle clever honest strange famous yellow purple orange silver golden seven twelve "
    "hundred thousand remember believe understand explain discover imagine consider"
).split()
_ESPEAK_LANGS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029")
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
# (F1, F2) formants in Hz of a few vowels: gives each syllable a different timbre.
_VOWELS = ((730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870), (660, 1720), (490, 1350))


# ---------------------------------------------------------------------------------------------- identities
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


# ------------------------------------------------------------------------------------------------- speech
@dataclass
class Speech:
    audio: np.ndarray  # float32 mono [duration_s * sample_rate]
    kind: str  # espeak | syllables
    text: str | None = None
    voice: str | None = None


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    return audio[:n] if len(audio) >= n else np.concatenate([audio, np.zeros(n - len(audio), np.float32)])


def _peak_normalise(audio: np.ndarray, peak: float = 0.8) -> np.ndarray:
    top = float(np.abs(audio).max())
    return (audio * (peak / top)).astype(np.float32) if top > 0 else audio.astype(np.float32)


def syllable_speech(
    rng: np.random.Generator, duration_s: float, sample_rate: int, rate_hz: tuple[float, float]
) -> np.ndarray:
    """Speech-like audio: voiced harmonic bursts (one per syllable) grouped into words with pauses.

    Syllables come at a clip-specific rate drawn from rate_hz, fast enough that keeping every 4th video frame
    misses mouth closures. Each syllable has its own loudness and vowel (formant) colour; f0 has a contour.
    """
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    rate = rng.uniform(*rate_hz)
    loudness = np.zeros(n)
    f1 = np.full(n, 500.0)
    f2 = np.full(n, 1500.0)
    onset_noise = np.zeros(n)

    cursor = rng.uniform(0.05, 0.3)
    while cursor < duration_s:
        for _ in range(int(rng.integers(1, 4))):  # one word
            length = rng.uniform(0.75, 1.25) / rate
            voiced = length * rng.uniform(0.55, 0.8)
            a, b = int(cursor * sample_rate), min(n, int((cursor + voiced) * sample_rate))
            if a >= n:
                break
            u = np.linspace(0.0, 1.0, b - a, endpoint=False)
            loudness[a:b] += rng.uniform(0.3, 1.0) * np.sin(np.pi * u) ** 0.6
            f1[a:b], f2[a:b] = _VOWELS[rng.integers(len(_VOWELS))]
            burst = min(n, a + int(0.025 * sample_rate))
            onset_noise[a:burst] += rng.uniform(0.05, 0.2)  # a consonant before the vowel
            cursor += length
        cursor += rng.uniform(0.08, 0.3) if rng.random() > 0.15 else rng.uniform(0.4, 0.7)

    f0_base = rng.uniform(95.0, 240.0)
    f0 = f0_base * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 2 * np.pi)))
    f0 *= 1 - 0.1 * t / duration_s  # declination over the utterance
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    n_harmonics = int(min(30, 0.45 * sample_rate / f0.max()))
    k = np.arange(1, n_harmonics + 1)[:, None]
    freq = k * f0[None, :]
    bandwidth = 120.0
    weight = (np.exp(-(((freq - f1) / bandwidth) ** 2)) + 0.6 * np.exp(-(((freq - f2) / bandwidth) ** 2)) + 0.05) / k
    voiced = (weight * np.sin(k * phase[None, :])).sum(axis=0)
    noise = np.diff(rng.standard_normal(n + 1))  # high-passed: fricative-like
    audio = voiced * loudness + 0.5 * noise * onset_noise
    audio = _peak_normalise(audio)
    return (audio + 5e-4 * rng.standard_normal(n)).astype(np.float32)  # a faint room-noise floor


def espeak_speech(rng: np.random.Generator, duration_s: float, sample_rate: int) -> Speech:
    """A random sentence spoken by espeak-ng with a random voice, rate and pitch, fitted to duration_s."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed; install it or set world.speech=syllables")
    wpm = int(rng.integers(140, 211))
    pitch = int(rng.integers(25, 76))
    voice = f"{rng.choice(_ESPEAK_LANGS)}+{rng.choice(_ESPEAK_VARIANTS)}"
    n_words = int(np.ceil(duration_s * wpm / 60)) + 2  # a little more than fits; the tail is cut
    text = " ".join(rng.choice(WORDS, size=n_words))
    with tempfile.TemporaryDirectory(prefix="espeak") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(wav), text]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not wav.exists():
            raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
        audio, _ = load_audio(wav, sample_rate)
    # espeak starts with its own silence: replace it with a random short lead-in.
    loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
    audio = audio[loud[0] :] if len(loud) else audio
    lead = np.zeros(int(rng.uniform(0.05, 0.25) * sample_rate), np.float32)
    audio = _fit_length(np.concatenate([lead, audio]), int(round(duration_s * sample_rate)))
    audio = _peak_normalise(audio) + (5e-4 * rng.standard_normal(len(audio))).astype(np.float32)
    return Speech(audio.astype(np.float32), "espeak", text, f"{voice} -s {wpm} -p {pitch}")


def make_speech(rng: np.random.Generator, cfg: WorldConfig) -> Speech:
    use_espeak = cfg.speech == "espeak" or (cfg.speech == "auto" and espeak_available())
    if use_espeak:
        return espeak_speech(rng, cfg.duration_s, cfg.sample_rate)
    return Speech(syllable_speech(rng, cfg.duration_s, cfg.sample_rate, cfg.syllable_rate_hz), "syllables")


def mouth_opening_from_envelope(envelope: np.ndarray, range_db: float = 30.0) -> np.ndarray:
    """Map a loudness envelope to mouth opening in [0, 1]: clip peak -> 1, range_db below it (or quieter) -> 0.

    Per-clip normalisation, so metrics can apply the same map to any clip's audio. Anything below
    SILENCE_DBFS stays closed, so a silent clip does not open its mouth on the noise floor.
    """
    db = 20 * np.log10(np.maximum(np.asarray(envelope, np.float64), 1e-8))
    top = max(float(db.max()), SILENCE_DBFS + range_db)
    return np.clip((db - (top - range_db)) / range_db, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------- body
def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance low-pass noise (filtered on a longer stretch, so the ends are not special)."""
    pad = int(4 * sigma_frames) + 1
    x = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma_frames)[pad : pad + n]
    return x * np.sqrt(2 * np.sqrt(np.pi) * sigma_frames)  # the filter's output std is 1/sqrt(2 sqrt(pi) sigma)


def _beats(opening: np.ndarray, fps: float, min_gap_s: float = 0.25) -> list[int]:
    """Speech beats: frames where the mouth opening rises through 0.5, at least min_gap_s apart."""
    beats: list[int] = []
    for i in np.flatnonzero((opening[1:] >= 0.5) & (opening[:-1] < 0.5)) + 1:
        if not beats or i - beats[-1] >= min_gap_s * fps:
            beats.append(int(i))
    return beats


def _elbow(shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float, outward: np.ndarray) -> np.ndarray:
    """Two-link inverse kinematics [T,2]: the elbow bends towards `outward` (a unit vector per side)."""
    d_vec = wrist - shoulder
    d = np.clip(np.linalg.norm(d_vec, axis=1, keepdims=True), 1e-6, upper + fore - 1e-6)
    along = d_vec / d
    a = (upper**2 - fore**2 + d**2) / (2 * d)
    h = np.sqrt(np.maximum(upper**2 - a**2, 0.0))
    perp = np.stack([-along[:, 1], along[:, 0]], axis=1)
    perp *= np.sign((perp * outward).sum(axis=1, keepdims=True) + 1e-9)
    return shoulder + a * along + h * perp


def animate_body(
    rng: np.random.Generator, opening: np.ndarray, fps: float, resolution: int, gesture_prob: float = 0.4
) -> np.ndarray:
    """Keypoints [T, 10, 2] in JOINTS order. l_* is the person's left, i.e. the image's right side."""
    n, r = len(opening), float(resolution)
    t = np.arange(n) / fps
    beats = _beats(opening, fps)

    nod = np.zeros(n)
    gesture = np.zeros((2, n))  # [left, right] amount in [0, 1]
    for b in beats:
        dt = np.maximum(t - t[b], 0.0) / 0.1
        nod += np.where(t >= t[b], dt * np.exp(1 - dt), 0.0)  # a quick dip of the head, peak after 0.1 s
        if rng.random() < gesture_prob:
            sides = [[0], [1], [0, 1]][rng.integers(3)]
            length = rng.uniform(0.4, 0.9)
            u = (t - t[b]) / length
            hump = np.where((u >= 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0)
            gesture[sides] += rng.uniform(0.5, 1.0) * hump
    gesture = np.clip(gesture, 0.0, 1.0)

    sway = 0.6 * fps
    head = np.stack([0.5 * r + 0.03 * r * _smooth_noise(rng, n, sway),
                     0.40 * r + 0.012 * r * _smooth_noise(rng, n, sway) + 0.02 * r * nod], axis=1)
    neck = np.stack([0.5 * r + 0.4 * (head[:, 0] - 0.5 * r), 0.80 * r + 0.005 * r * _smooth_noise(rng, n, sway)],
                    axis=1)
    joints = {"head": head, "neck": neck}
    for side, sign in (("l", 1.0), ("r", -1.0)):
        g = gesture[0 if side == "l" else 1][:, None]
        shrug = 0.008 * r * _smooth_noise(rng, n, sway)
        shoulder = neck + np.stack([np.full(n, sign * 0.32 * r), 0.06 * r - shrug], axis=1)
        rest = np.array([0.5 * r + sign * 0.22 * r, 0.93 * r])
        raised = np.array([0.5 * r + sign * 0.40 * r, 0.72 * r])
        drift = 0.02 * r * np.stack([_smooth_noise(rng, n, sway), _smooth_noise(rng, n, sway)], axis=1)
        wrist = rest + g * (raised - rest) + drift
        outward = np.array([sign, 0.6]) / np.hypot(1.0, 0.6)  # elbows bend out and down
        elbow = _elbow(shoulder, wrist, 0.13 * r, 0.13 * r, outward)
        forearm = (wrist - elbow) / (np.linalg.norm(wrist - elbow, axis=1, keepdims=True) + 1e-6)
        joints |= {f"{side}_shoulder": shoulder, f"{side}_elbow": elbow, f"{side}_wrist": wrist,
                   f"{side}_hand": wrist + 0.06 * r * forearm}
    keypoints = np.stack([joints[name] for name in JOINTS], axis=1)
    return np.clip(keypoints, 0.5, r - 1.5)  # every joint stays visible; the renderer draws what is stored


# -------------------------------------------------------------------------------------------------- render
def _background(identity: Identity, size: int) -> Image.Image:
    ramp = np.linspace(0.0, 1.0, size)[:, None] * np.ones((1, size))
    if not identity.background_vertical:
        ramp = ramp.T
    a, b = np.array(identity.background_a, float), np.array(identity.background_b, float)
    return Image.fromarray((a + ramp[..., None] * (b - a)).astype(np.uint8))


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill) -> None:
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _draw_frame(
    canvas: Image.Image, ident: Identity, geo: FaceGeometry, kp: np.ndarray, opening: float, s: float, r: float
) -> None:
    """Draw one frame at supersampled scale s (pixels per output pixel). kp: [10, 2] output pixels."""
    d = ImageDraw.Draw(canvas)
    p = {name: kp[i] * s for i, name in enumerate(JOINTS)}
    fw, fh = geo.face_w * s, geo.face_h * s
    hx, hy = p["head"]
    skin_dark, cloth_dark = _shade(ident.skin, 0.85), _shade(ident.clothes, 0.8)

    if ident.hair_style == "long":  # hair behind the head, down to the shoulders
        d.rounded_rectangle([hx - 0.58 * fw, hy - 0.45 * fh, hx + 0.58 * fw, p["neck"][1] + 0.04 * r * s],
                            radius=0.3 * fw, fill=ident.hair)
    # torso and neck
    ls, rs = p["l_shoulder"], p["r_shoulder"]
    bottom = r * s + 4 * s
    d.polygon([tuple(rs), tuple(ls), (ls[0] + 0.03 * r * s, bottom), (rs[0] - 0.03 * r * s, bottom)],
              fill=ident.clothes)
    limb = 0.09 * r * s
    for sh in (ls, rs):
        _ellipse(d, sh[0], sh[1] + limb * 0.1, limb * 0.6, limb * 0.6, ident.clothes)
    d.line([tuple(p["neck"]), (hx, hy)], fill=skin_dark, width=int(0.16 * r * s))
    _ellipse(d, p["neck"][0], p["neck"][1], 0.09 * r * s, 0.04 * r * s, skin_dark)
    # head: ears, face, hair, eyes, brows, nose, mouth
    for side in (-1, 1):
        _ellipse(d, hx + side * 0.5 * fw, hy, 0.07 * fw, 0.11 * fh, skin_dark)
    _ellipse(d, hx, hy, fw / 2, fh / 2, ident.skin)
    _draw_hair(d, ident, hx, hy, fw, fh)
    eye_y = hy - 0.05 * fh
    for side in (-1, 1):
        ex = hx + side * ident.eye_spacing * fw / 2
        ew, eh = 0.085 * fw * ident.eye_size, 0.055 * fh * ident.eye_size
        _ellipse(d, ex, eye_y, ew, eh, (245, 245, 240))
        _ellipse(d, ex, eye_y, eh * 0.95, eh * 0.95, ident.iris)
        _ellipse(d, ex, eye_y, eh * 0.45, eh * 0.45, (10, 10, 10))
        d.line([(ex - ew, eye_y - 2.2 * eh), (ex + ew, eye_y - 2.4 * eh)], fill=_shade(ident.hair, 0.8),
               width=max(1, int(0.03 * fh)))
    d.line([(hx, hy + 0.02 * fh), (hx - 0.02 * fw, hy + 0.12 * fh)], fill=_shade(ident.skin, 0.7),
           width=max(1, int(0.025 * fw)))
    _draw_mouth(d, ident, geo, hx, hy + geo.mouth_dy * s, opening, s)
    # arms in front of the torso: sleeves to the wrist, then skin
    for side in ("l", "r"):
        sh, el, wr, ha = p[f"{side}_shoulder"], p[f"{side}_elbow"], p[f"{side}_wrist"], p[f"{side}_hand"]
        d.line([tuple(sh), tuple(el), tuple(wr)], fill=cloth_dark, width=int(limb), joint="curve")
        _ellipse(d, el[0], el[1], limb / 2, limb / 2, cloth_dark)
        d.line([tuple(wr), tuple(ha)], fill=ident.skin, width=int(0.6 * limb))
        _ellipse(d, ha[0], ha[1], 0.5 * limb, 0.5 * limb, ident.skin)


def _draw_hair(d: ImageDraw.ImageDraw, ident: Identity, hx: float, hy: float, fw: float, fh: float) -> None:
    if ident.hair_style == "buzz":  # short stubble: hair colour blended into the skin, higher hairline
        hair = tuple((np.array(ident.hair) + np.array(ident.skin)) // 2)
        hairline = hy - 0.3 * fh
    else:
        hair, hairline = ident.hair, hy - 0.22 * fh
    top = hy - 0.56 * fh
    # upper half of an ellipse whose centre line is the hairline: a cap over the top of the head
    d.chord([hx - 0.54 * fw, top, hx + 0.54 * fw, 2 * hairline - top], 180, 360, fill=hair)
    if ident.hair_style == "bun":
        _ellipse(d, hx, hy - 0.58 * fh, 0.18 * fw, 0.14 * fh, hair)
    elif ident.hair_style == "curly":
        for angle in np.linspace(np.pi * 1.05, np.pi * 1.95, 7):
            _ellipse(d, hx + 0.5 * fw * np.cos(angle), hy + 0.5 * fh * np.sin(angle), 0.1 * fw, 0.1 * fw, hair)
    elif ident.hair_style == "long":  # side locks framing the face
        for side in (-1, 1):
            x0 = hx + side * 0.5 * fw
            d.rectangle([min(x0, x0 - side * 0.08 * fw), hy - 0.3 * fh, max(x0, x0 - side * 0.08 * fw), hy + 0.2 * fh],
                        fill=hair)


def _draw_mouth(d: ImageDraw.ImageDraw, ident: Identity, geo: FaceGeometry, mx: float, my: float, opening: float,
                s: float) -> None:
    rx = geo.mouth_w * s / 2
    ry = (geo.mouth_h_min + opening * (geo.mouth_h_max - geo.mouth_h_min)) * s / 2
    lip = 0.07 * geo.mouth_w * s
    _ellipse(d, mx, my, rx + lip * 0.3, ry + lip, ident.lips)
    _ellipse(d, mx, my, rx - lip * 0.3, ry, (45, 10, 20))  # dark interior: its area grows with the opening
    if ry > 3 * lip:  # upper teeth show once the mouth is well open
        d.chord([mx - rx * 0.8, my - ry, mx + rx * 0.8, my + ry], 205, 335, fill=(235, 232, 222))


def render_frames(
    identity: Identity, geometry: FaceGeometry, keypoints: np.ndarray, mouth_open: np.ndarray, resolution: int
) -> np.ndarray:
    """uint8 RGB frames [T, R, R, 3] drawn from keypoints [T,10,2] and mouth opening [T] alone."""
    s = SUPERSAMPLE
    background = _background(identity, resolution * s)
    frames = np.empty((len(keypoints), resolution, resolution, 3), np.uint8)
    for i, (kp, opening) in enumerate(zip(keypoints, mouth_open)):
        canvas = background.copy()
        _draw_frame(canvas, identity, geometry, kp, float(opening), s, resolution)
        frames[i] = np.asarray(canvas.reduce(s))  # box filter: exact area average of the 4x4 block
    return frames


# ---------------------------------------------------------------------------------------------------- clips
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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


# ---------------------------------------------------------------------------------------------------- world
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
