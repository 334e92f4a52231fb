"""Speech of the synthetic world: espeak-ng sentences, or a syllable-burst synthesiser when espeak is missing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.config import WorldConfig
from components.io.audio import load_audio

__all__ = ["WORDS", "Speech", "espeak_available", "espeak_speech", "make_speech", "syllable_speech"]

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
