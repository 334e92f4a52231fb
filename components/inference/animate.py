"""Animate a portrait: reference image + speech (+ optional pose) -> talking video, any audio length.

Long audio: the model generates windows of T = 4k+1 frames (the length it was trained on). Window 0 is
conditioned (Wan I2V first frame) on the reference image. Window i > 0 starts on the last frame of window i-1:
that generated frame becomes its conditioning first frame, and the stitched video keeps it once, so the seam
frame is shared and motion continues through it instead of jumping back to the reference pose at every seam.
The trade-off is identity drift: each window inherits the previous window's small errors (and one more VAE
round trip), so over long audio the face can slowly wander from the reference; conditioning every window on
the reference instead keeps identity fixed but shows a visible jump every T-1 frames. With the single-frame
I2V conditioning the model has, a one-frame overlap is the only overlap that needs no blending.

Windows cover frames [i(T-1), i(T-1)+T); the last is padded (audio features past the end of the audio are
what each feature gives for silence / the last token, the pose holds its last frame) and the video is trimmed
to n_frames = round(duration * fps). Sampling is deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from components.data.audio_features import torch_threads
from components.data.ingest import crop_resize
from components.data.keypoints import CentreCrop, KeypointError, read_keypoints_json, transform_keypoints
from components.inference.features import AudioFeaturizer
from components.inference.portrait_crop import crop_portrait
from components.io.audio import load_audio
from components.io.errors import MediaError
from components.io.video import resample_frames, write_video
from components.model.bundle import BundleError, ModelBundle
from components.model.device import stage_device
from components.model.flow import sample
from components.model.i2v_conditioning import encode_condition
from components.model.loading import load_bundle
from components.model.vae import decode_latents, latent_frames, spatial_ratio, to_uint8_frames

MIN_SAMPLE_RATE = 4_000  # below this there is no speech band left to resample from
MAX_SAMPLE_RATE = 768_000
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")

Progress = Callable[[int, int], None]  # (windows done, windows in all)


class AnimateInputError(ValueError):
    """An input to animate cannot be used; the message names the file (or argument) and the problem."""


@dataclass
class AnimateInputs:
    """Everything per frame, already padded to whole windows."""

    reference: np.ndarray  # uint8 [res, res, 3]
    audio_feats: np.ndarray  # float32 [n_padded, tokens, dim]
    pose: np.ndarray | None  # float32 [n_padded, J, 3], x/y in [0, 1] of the square; None -> learned null
    n_frames: int  # frames of the output video


@dataclass
class GeneratedWindow:
    start: int  # index of its first frame in the stitched video
    condition: np.ndarray  # uint8 [res, res, 3]: the first frame it was conditioned on
    frames: np.ndarray  # uint8 [T, res, res, 3] as decoded


# ---------------------------------------------------------------- windows


def window_starts(n_frames: int, window: int) -> list[int]:
    """Start frames of the windows covering n_frames, each overlapping the previous by one frame."""
    if window < 2:
        raise ValueError(f"a window needs at least 2 frames, got {window}")
    n_windows = max(1, math.ceil((n_frames - 1) / (window - 1)))
    return [i * (window - 1) for i in range(n_windows)]


def padded_length(n_frames: int, window: int) -> int:
    return window_starts(n_frames, window)[-1] + window


def stitch(windows: list[GeneratedWindow], n_frames: int) -> np.ndarray:
    """One video: window 0 whole, then each later window without its first frame (the shared seam frame)."""
    parts = [windows[0].frames] + [w.frames[1:] for w in windows[1:]]
    return np.concatenate(parts)[:n_frames]


# ---------------------------------------------------------------- inputs


def fit_reference(image: np.ndarray, resolution: int) -> np.ndarray:
    """Centre square, resized to the model's resolution exactly as ingest crops the training frames."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise AnimateInputError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    return crop_resize(image[None], CentreCrop.of(width, height), resolution)[0]


def fit_pose(pose: np.ndarray, n_joints: int, n_out: int) -> np.ndarray:
    """Pose [T, J, 3] in model coordinates -> [n_out, J, 3]: trimmed, or padded by holding the last pose."""
    pose = np.asarray(pose, np.float32)
    if pose.ndim != 3 or pose.shape[1:] != (n_joints, 3) or len(pose) == 0:
        raise AnimateInputError(f"pose must be [T, {n_joints}, 3] with T >= 1, got {pose.shape}")
    if not np.isfinite(pose).all():
        raise AnimateInputError("pose has non-finite values")
    if len(pose) < n_out:
        pose = np.concatenate([pose, np.repeat(pose[-1:], n_out - len(pose), axis=0)])
    return pose[:n_out]


def check_sample_rate(sample_rate: int, where: str = "audio") -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AnimateInputError(
            f"{where}: cannot resample from {sample_rate} Hz (supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)"
        )


def featurizer_for(bundle: ModelBundle) -> AudioFeaturizer:
    meta = bundle.meta
    return AudioFeaturizer(meta.audio.features, meta.fps, meta.sample_rate, meta.audio.n_mels, bundle.audio_encoder)


def n_frames_for(n_samples: int, sample_rate: int, fps: int) -> int:
    return int(round(n_samples / sample_rate * fps))


def prepare_inputs(
    bundle: ModelBundle, image: np.ndarray, audio: np.ndarray, sample_rate: int, pose: np.ndarray | None = None
) -> AnimateInputs:
    meta, mcfg = bundle.meta, bundle.model.cfg.modulation
    audio = np.asarray(audio, np.float32).reshape(-1)
    check_sample_rate(int(sample_rate))
    if not np.isfinite(audio).all():
        raise AnimateInputError("audio has non-finite samples")
    n_frames = n_frames_for(audio.size, sample_rate, meta.fps)
    if n_frames < 1:
        raise AnimateInputError(f"audio: {audio.size / sample_rate:.3f} s is shorter than one frame at {meta.fps} fps")
    n_padded = padded_length(n_frames, meta.frames)
    feats = featurizer_for(bundle)(audio, int(sample_rate), n_frames, n_padded)
    if pose is not None:
        if not mcfg.skeleton.enabled:
            raise AnimateInputError(f"{bundle.path or bundle.meta.variant}: this model has no skeleton conditioning")
        pose = fit_pose(pose, mcfg.skeleton.n_joints, n_padded)
    return AnimateInputs(fit_reference(image, meta.resolution), feats, pose, n_frames)


# ---------------------------------------------------------------- sampling


@torch.no_grad()
def generate_windows(
    bundle: ModelBundle,
    inputs: AnimateInputs,
    prompt: str = "",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    threads: int = 1,
) -> list[GeneratedWindow]:
    """Sample every window in turn; window i > 0 is conditioned on the last frame of window i-1.

    threads: torch intra-op threads while sampling (0 = torch's default). 1 by default because on a busy 2-core
    CPU box OpenMP threads waiting for each other made the VAE decode 10x slower (measured 7 s vs 0.6 s per
    window). Results are bit-identical only for the same thread count.
    """
    with torch_threads(threads):
        return _generate_windows(bundle, inputs, prompt, steps, guidance, seed, progress)


def _generate_windows(
    bundle: ModelBundle,
    inputs: AnimateInputs,
    prompt: str,
    steps: int | None,
    guidance: float | None,
    seed: int | None,
    progress: Progress | None,
) -> list[GeneratedWindow]:
    meta, model, vae = bundle.meta, bundle.model, bundle.vae
    steps = meta.sampling.steps if steps is None else steps
    guidance = meta.sampling.audio_guidance if guidance is None else guidance
    seed = meta.sampling.seed if seed is None else seed
    if steps < 1 or not guidance >= 0:
        raise AnimateInputError(f"steps must be >= 1 and guidance >= 0, got steps={steps}, guidance={guidance}")
    has_audio = "audio" in model.motion
    if not has_audio:
        guidance = 1.0  # nothing to guide on
    window = meta.frames
    latent_size = meta.resolution // spatial_ratio(vae)
    shape = (1, vae.config.z_dim, latent_frames(window, model.rho), latent_size, latent_size)
    device = bundle.device  # the bundle's parts are where the caller put them (bundle.to(stage_device()))
    text_emb = bundle.text_encoder([prompt or bundle.meta.default_prompt]).to(device)
    generator = torch.Generator().manual_seed(int(seed))

    starts = window_starts(inputs.n_frames, window)
    windows: list[GeneratedWindow] = []
    condition = inputs.reference
    for i, start in enumerate(starts):
        span = slice(start, start + window)
        # Wan I2V conditioning of this window's first frame, as the pipeline builds it (i2v_conditioning.py).
        cond_latents = encode_condition(vae, torch.from_numpy(condition)[None].to(device), window)
        image_emb = None if bundle.image_encoder is None else bundle.image_encoder(condition[None])
        audio = torch.from_numpy(inputs.audio_feats[span])[None].to(device) if has_audio else None
        pose = torch.from_numpy(inputs.pose[span])[None].to(device) if inputs.pose is not None else None

        def velocity(latents: torch.Tensor, timestep: torch.Tensor, audio_dropped: bool) -> torch.Tensor:
            drop = torch.tensor([audio_dropped], device=device) if has_audio else None
            return model(latents, timestep, cond_latents, audio, pose, text_emb, drop_audio=drop, image_emb=image_emb)

        noise = torch.randn(shape, generator=generator)  # drawn on the CPU: the same video on any device
        latents = sample(velocity, shape, steps, shift=meta.sampling.shift, guidance=guidance, device=device, noise=noise)
        frames = to_uint8_frames(decode_latents(vae, latents))[0].cpu().numpy()
        windows.append(GeneratedWindow(start, condition, frames))
        condition = frames[-1]
        if progress is not None:
            progress(i + 1, len(starts))
    return windows


def animate(
    bundle: ModelBundle,
    image: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    pose: np.ndarray | None = None,
    prompt: str = "",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    threads: int = 1,
) -> np.ndarray:
    """uint8 [round(duration * fps), res, res, 3].

    image: uint8 [H, W, 3] (centre-cropped and resized here); audio: mono float32 at sample_rate;
    pose: [T, J, 3] in model coordinates (x, y in [0, 1] of the square crop, confidence) at the bundle's fps,
    held at its last frame if shorter than the audio; None uses the learned null pose.
    steps / guidance (audio CFG) / seed default to the bundle's sampling settings; threads: see generate_windows.
    """
    inputs = prepare_inputs(bundle, image, audio, sample_rate, pose)
    windows = generate_windows(bundle, inputs, prompt, steps, guidance, seed, progress, threads)
    return stitch(windows, inputs.n_frames)


# ---------------------------------------------------------------- files


def load_image_file(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] from any image PIL reads (EXIF rotation applied, alpha dropped)."""
    if not path.is_file():
        raise AnimateInputError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AnimateInputError(f"{path}: cannot read image ({exc})") from exc


def _decode_audio_stream(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of any container PyAV opens (mp3, m4a, mp4, mkv, ...), downmixed to mono."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AnimateInputError(f"{path}: no audio stream in this file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono")
            decoded = (f for frame in container.decode(stream) for f in resampler.resample(frame))
            chunks = [f.to_ndarray().reshape(-1) for f in decoded]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
            rate = int(stream.rate or 0)
    except AnimateInputError:
        raise
    except (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise AnimateInputError(f"{path}: cannot read audio ({type(exc).__name__}: {exc})") from exc
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AnimateInputError(f"{path}: audio stream has no samples")
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32), rate


def load_audio_file(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 and its sample rate from anything soundfile reads, else any audio/video container PyAV decodes."""
    if not path.is_file():
        raise AnimateInputError(f"{path}: no such audio file")
    try:
        audio, rate = load_audio(path)
    except MediaError:
        audio, rate = _decode_audio_stream(path)
    check_sample_rate(rate, str(path))
    return audio, rate


def load_pose_file(
    path: Path, n_joints: int, image_size: tuple[int, int], fps: int, n_frames: int, crop: CentreCrop | None = None,
    joints: tuple[str, ...] | None = None,
) -> np.ndarray:
    """talkalign-keypoints-v1 json in the reference image's pixels -> [n_frames, J, 3] as ingest transforms them.

    `crop` is the square of the image the model sees (default: the centre square); the pose goes through the same
    translate + scale, so it stays on the body it was drawn on (joints outside the square get confidence 0)."""
    if not path.is_file():
        raise AnimateInputError(f"{path}: no such keypoints file")
    try:
        keypoints, kp_fps = read_keypoints_json(path, n_joints)
    except KeypointError as exc:
        raise AnimateInputError(str(exc)) from exc
    if joints is not None and tuple(keypoints.joints) != tuple(joints):  # the bundle records its layout
        raise AnimateInputError(f"{path}: the pose lists joints [{', '.join(keypoints.joints)}], the model was trained "
                                f"on [{', '.join(joints)}] (its bundle.json 'joints'): give the pose in that layout")
    width, height = image_size
    if (keypoints.width, keypoints.height) != (width, height):
        raise AnimateInputError(
            f"{path}: keypoints are for {keypoints.width}x{keypoints.height} pixels, the image is {width}x{height}"
        )
    # Output frame k shows the pose current at k / fps (held after the last keypoint frame), as ingest resamples.
    times = np.arange(len(keypoints.points)) / kp_fps
    source_index = resample_frames(np.arange(len(keypoints.points)), times, fps, duration_s=n_frames / fps)
    source_index = np.pad(source_index[:n_frames], (0, max(0, n_frames - len(source_index))), mode="edge")
    return transform_keypoints(keypoints, source_index, crop)


def animate_files(
    image_path: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    model: str | Path | ModelBundle,
    pose_path: str | Path | None = None,
    prompt: str = "",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    tracking_uri: str | None = None,
    threads: int = 1,
    crop: str = "none",
) -> Path:
    """Read the inputs, animate, write an mp4 with the (resampled, trimmed) audio muxed; returns out_path.

    `model` is a bundle directory, an MLflow URI (models:/name@alias, models:/name/N, runs:/...) or a loaded bundle.
    """
    image_path, audio_path, out_path = Path(image_path), Path(audio_path), Path(out_path)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise AnimateInputError(f"{out_path}: output must end in one of {', '.join(VIDEO_SUFFIXES)}")
    image = load_image_file(image_path)
    source_size = (image.shape[1], image.shape[0])  # --pose is in these pixels
    if crop == "face":  # the head-and-shoulders square, found as ingest finds it (components/inference/portrait_crop.py)
        portrait = crop_portrait(image, image_path)
        image, square = portrait.image, portrait.crop
    elif crop == "none":
        square = CentreCrop.of(*source_size)
    else:
        raise AnimateInputError(f"crop must be 'face' or 'none', got {crop!r}")
    audio, rate = load_audio_file(audio_path)
    if not isinstance(model, ModelBundle):
        try:
            model = load_bundle(model, tracking_uri=tracking_uri).to(stage_device())  # a GPU when there is one
        except BundleError as exc:
            raise AnimateInputError(str(exc)) from exc
    bundle = model
    fps = bundle.meta.fps
    n_frames = n_frames_for(audio.size, rate, fps)
    if n_frames < 1:
        raise AnimateInputError(f"{audio_path}: {audio.size / rate:.3f} s of audio is shorter than one video frame")
    pose = None
    if pose_path is not None:
        skeleton = bundle.model.cfg.modulation.skeleton
        if not skeleton.enabled:
            where = bundle.path or bundle.meta.variant
            raise AnimateInputError(f"{pose_path}: the model {where} has no skeleton conditioning")
        pose = load_pose_file(Path(pose_path), skeleton.n_joints, source_size, fps, n_frames, square,
                              tuple(bundle.meta.joints) or None)

    frames = animate(bundle, image, audio, rate, pose, prompt, steps, guidance, seed, progress, threads)
    featurizer = featurizer_for(bundle)
    muxed = featurizer.prepare_audio(audio, rate, len(frames))
    write_video(out_path, frames, fps, audio=muxed, sample_rate=bundle.meta.sample_rate)
    return out_path
