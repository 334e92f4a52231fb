"""The deployable model: everything `talkalign animate` needs, in one directory of safetensors + json.

    bundle/
      bundle.json               format "talkalign-bundle-v1": fps, resolution, window frames, audio features,
                                sample rate, sampling defaults, lineage, variant
      portrait_config.json      PortraitModel.save_pretrained: the model's config ...
      transformer/              ... the Wan backbone (diffusers format) ...
      modulation.safetensors    ... and the motion modulation weights
      vae/                      AutoencoderKLWan (diffusers format, latent statistics in its config)
      text_encoder/             umT5 encoder (transformers format); tokenizer/ beside it when it has one
      audio_encoder/            wav2vec2 + preprocessor, only when the audio features are "wav2vec"
      image_encoder/            CLIP vision model and image_processor/ its CLIPImageProcessor (the Wan checkpoint's
      image_processor/          layout), exactly when the transformer has image_dim (takes CLIP image tokens)

Frozen parts (VAE, text and audio encoders) are copied in even when they could be rebuilt from a seed: a
bundle must give the same video on another machine and another library version. Only safetensors weights
are accepted on load; a pickle-format weight file anywhere in the bundle is refused.

`resolve_model_uri` finds a bundle from a local path or an MLflow URI (models:/name@alias, models:/name/N,
runs:/id/path); the registry logs a bundle as the artifact directory `bundle` of a pyfunc model, so both a
bundle directory and an MLflow model directory holding `artifacts/bundle/` are accepted.

Parts that other modules add (TLPO's experts and gate, tlpo_bundle.py) reach the bundle as `save_bundle`'s
`extra_files`; this module knows nothing of them. `load_plain_bundle` loads what this module writes;
components/model/loading.py `load_bundle` loads any bundle, a TLPO one included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKLWan
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.config import AudioEncoderConfig, Params, SamplingConfig, TextEncoderConfig
from components.data.audio_features import AudioEncoder
from components.io.atomic import atomic_directory
from components.io.audio import MEL_FRAMES_PER_VIDEO_FRAME
from components.model.i2v_conditioning import IMAGE_ENCODER_DIR, IMAGE_PROCESSOR_DIR, ImageEncoder, load_image_encoder
from components.model.portrait import CONFIG_FILE, MODULATION_FILE, PortraitModel
from components.model.pretrained_refs import PretrainedRefError, part_root, referenceable, write_refs
from components.model.text_encoder import TextEncoder
from components.model.vae import load_vae, spatial_ratio, temporal_ratio

BUNDLE_FORMAT = "talkalign-bundle-v1"
BUNDLE_FILE = "bundle.json"
VAE_DIR = "vae"
TRANSFORMER_DIR = "transformer"
TEXT_DIR = "text_encoder"
TOKENIZER_DIR = "tokenizer"
AUDIO_DIR = "audio_encoder"
# Where a bundle may sit inside what a path or an MLflow URI points at (pyfunc model dir, run artifact dir).
BUNDLE_LOCATIONS = (".", "artifacts/bundle", "bundle")
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})


class BundleError(ValueError):
    """A path or URI is not a usable model bundle; the message starts with the path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleAudio(_Strict):
    """How audio becomes the model's audio condition (the same features the model was trained on)."""

    features: Literal["mel", "wav2vec"]
    n_mels: int = Field(ge=1)
    tokens_per_frame: int = Field(ge=1)  # tokens per video frame of the chosen features
    wav2vec: AudioEncoderConfig | None = None  # the ingest's encoder config (provenance; weights are in audio_encoder/)

    @model_validator(mode="after")
    def _consistent(self) -> "BundleAudio":
        if self.features == "mel" and self.tokens_per_frame != MEL_FRAMES_PER_VIDEO_FRAME:
            raise ValueError(
                f"mel features have {MEL_FRAMES_PER_VIDEO_FRAME} tokens per frame, got {self.tokens_per_frame}"
            )
        if self.features == "wav2vec":
            if self.wav2vec is None:
                raise ValueError("wav2vec features need the wav2vec encoder config")
            if self.tokens_per_frame != self.wav2vec.tokens_per_frame:
                raise ValueError(
                    f"tokens_per_frame {self.tokens_per_frame} differs from the encoder's "
                    f"{self.wav2vec.tokens_per_frame}"
                )
        return self


class BundleMeta(_Strict):
    """bundle.json."""

    format: Literal["talkalign-bundle-v1"] = BUNDLE_FORMAT
    variant: str
    fps: int = Field(ge=1)
    resolution: int = Field(ge=8)
    frames: int = Field(ge=5)  # window length T = 4k+1 the model was trained on
    sample_rate: int = Field(ge=8000)  # rate of the audio that mel features are computed at (and muxed)
    audio: BundleAudio
    sampling: SamplingConfig = SamplingConfig()
    default_prompt: str = ""  # the prompt the model was trained with; used when the caller gives none
    lineage: dict[str, Any] = {}
    joints: list[str] = []  # the skeleton's joint layout (ingest.keypoints.joints); [] in bundles made before it

    @model_validator(mode="after")
    def _window(self) -> "BundleMeta":
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1, got {self.frames}")
        return self

    @classmethod
    def from_params(cls, params: Params, variant: str, lineage: dict[str, Any] | None = None) -> "BundleMeta":
        """The meta of a model trained with these params (ingest fps/size/features, window, sampling)."""
        audio_cfg = params.ingest.audio
        features = params.data.audio_features
        return cls(
            variant=variant,
            fps=params.ingest.fps,
            resolution=params.ingest.resolution,
            frames=params.data.frames,
            sample_rate=params.ingest.sample_rate,
            audio=BundleAudio(
                features=features,
                n_mels=audio_cfg.n_mels,
                tokens_per_frame=MEL_FRAMES_PER_VIDEO_FRAME if features == "mel" else audio_cfg.tokens_per_frame,
                wav2vec=audio_cfg if features == "wav2vec" else None,
            ),
            sampling=params.sampling,
            default_prompt=params.data.prompt,
            lineage=dict(lineage or {}),
            joints=list(params.ingest.keypoints.joints),
        )


@dataclass
class ModelBundle:
    meta: BundleMeta
    model: PortraitModel
    vae: AutoencoderKLWan
    text_encoder: TextEncoder
    audio_encoder: AudioEncoder | None = None  # required when meta.audio.features == "wav2vec"
    path: Path | None = None  # where it was loaded from
    image_encoder: ImageEncoder | None = None  # CLIP image tokens: required exactly when model.image_dim is set
    # part directory name (vae, text_encoder, tokenizer, image_encoder, image_processor) -> the checkpoint root it
    # was loaded from unchanged; the transformer's is model.backbone_source (cleared when its weights change)
    sources: dict[str, Path] = field(default_factory=dict)

    def eval(self) -> "ModelBundle":
        self.model.eval()
        self.vae.eval()
        return self

    def to(self, device: torch.device | str) -> "ModelBundle":
        """Every part on `device` (accelerate's device of a stage: stage_device()); inputs follow the parts."""
        for part in (self.model, self.vae, self.text_encoder, self.image_encoder):  # wav2vec features: CPU, at ingest
            if part is not None:
                part.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# ---------------------------------------------------------------- consistency


def check_bundle(
    meta: BundleMeta,
    model: PortraitModel,
    vae: AutoencoderKLWan,
    text_encoder: TextEncoder,
    audio_encoder: AudioEncoder | None,
    where: str | Path,
    image_encoder: ImageEncoder | None = None,
) -> None:
    """Every shape the parts must agree on; raises BundleError naming `where` and the mismatch."""
    problems: list[str] = []
    image_dim = model.image_dim
    if image_dim is not None and image_encoder is None:
        problems.append(f"the transformer has image_dim = {image_dim} but there is no image encoder ({IMAGE_ENCODER_DIR}/)")
    if image_dim is None and image_encoder is not None:
        problems.append("an image encoder, but the transformer has no image_dim (it takes no image tokens)")
    if image_dim is not None and image_encoder is not None and image_encoder.hidden_size != image_dim:
        problems.append(f"image encoder width {image_encoder.hidden_size} differs from the transformer's image_dim {image_dim}")
    bcfg = model.transformer.config
    z = vae.config.z_dim
    if model.cfg.backbone.latent_channels != z:
        problems.append(f"VAE has {z} latent channels, the model expects {model.cfg.backbone.latent_channels}")
    rho = temporal_ratio(vae)
    if model.cfg.modulation.rho != rho:
        problems.append(f"VAE compresses time {rho}x, the model's modulation assumes rho={model.cfg.modulation.rho}")
    if (meta.frames - 1) % rho:
        problems.append(f"window of {meta.frames} frames is not {rho}k+1")
    grid = spatial_ratio(vae) * bcfg.patch_size[1]
    if meta.resolution % grid:
        problems.append(f"resolution {meta.resolution} is not a multiple of {grid} (VAE x patch)")
    text_width = text_encoder.model.config.d_model
    if text_width != bcfg.text_dim:
        problems.append(f"text encoder width {text_width} differs from the backbone's text_dim {bcfg.text_dim}")
    acfg = model.cfg.modulation.audio
    if acfg.enabled:
        if meta.audio.features == "mel":
            dim = meta.audio.n_mels
        elif audio_encoder is None:
            problems.append("wav2vec features but no audio encoder")
            dim = acfg.in_dim
        else:
            dim = audio_encoder.hidden_size
            if audio_encoder.cfg.tokens_per_frame != meta.audio.tokens_per_frame:
                problems.append(
                    f"audio encoder gives {audio_encoder.cfg.tokens_per_frame} tokens per frame, "
                    f"bundle.json says {meta.audio.tokens_per_frame}"
                )
        if (meta.audio.tokens_per_frame, dim) != (acfg.tokens_per_frame, acfg.in_dim):
            problems.append(
                f"{meta.audio.features} features are {meta.audio.tokens_per_frame} x {dim} per frame, the audio "
                f"modulation expects {acfg.tokens_per_frame} x {acfg.in_dim}"
            )
    if problems:
        raise BundleError(f"{where}: parts do not fit together: " + "; ".join(problems))


# ---------------------------------------------------------------- save


def save_bundle(directory: str | Path, bundle: ModelBundle, extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the bundle atomically: assembled under a temporary name beside `directory`, then renamed in place.

    A wav2vec bundle without an audio encoder gets the ingest's (built from meta.audio.wav2vec) and keeps it.
    `extra_files` (name -> bytes) are written inside the same atomic swap (TLPO's experts and gate).
    """
    directory = Path(directory)
    meta = bundle.meta
    extra_files = dict(extra_files or {})
    ours = {BUNDLE_FILE, CONFIG_FILE, MODULATION_FILE, TRANSFORMER_DIR, VAE_DIR, TEXT_DIR, TOKENIZER_DIR, AUDIO_DIR,
            IMAGE_ENCODER_DIR, IMAGE_PROCESSOR_DIR}
    clashing = sorted(name for name in extra_files if name in ours or Path(name).name != name or name.startswith("."))
    if clashing:
        raise BundleError(f"{directory}: extra files {clashing} would overwrite the bundle's own parts or leave it")
    if meta.audio.features == "wav2vec" and bundle.audio_encoder is None:
        bundle.audio_encoder = AudioEncoder(meta.audio.wav2vec)
    check_bundle(meta, bundle.model, bundle.vae, bundle.text_encoder, bundle.audio_encoder, directory, bundle.image_encoder)
    refs = referenced_parts(bundle)
    with atomic_directory(directory) as tmp:
        bundle.model.save_pretrained(tmp, backbone=TRANSFORMER_DIR not in refs)  # (transformer/), modulation, config
        if VAE_DIR not in refs:
            bundle.vae.save_pretrained(tmp / VAE_DIR, safe_serialization=True)
        if TEXT_DIR not in refs:
            bundle.text_encoder.model.save_pretrained(tmp / TEXT_DIR)
            if bundle.text_encoder.tokenizer is not None:
                bundle.text_encoder.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        if meta.audio.features == "wav2vec":
            bundle.audio_encoder.save_pretrained(tmp / AUDIO_DIR)
        if bundle.image_encoder is not None and IMAGE_ENCODER_DIR not in refs:
            bundle.image_encoder.save_pretrained(tmp)  # image_encoder/ + image_processor/
        if refs:
            write_refs(tmp, refs)
        for name, data in extra_files.items():
            (tmp / name).write_bytes(data)
        (tmp / BUNDLE_FILE).write_text(meta.model_dump_json(indent=2) + "\n")  # last: its presence marks a whole bundle
    return directory


def referenced_parts(bundle: ModelBundle) -> dict[str, Path]:
    """Part name -> checkpoint root for the parts this bundle references instead of copying (none in copy mode)."""
    if bundle.model.cfg.pretrained_in_bundles != "reference":
        return {}
    sources = {k: v for k, v in bundle.sources.items() if k != TRANSFORMER_DIR}
    if bundle.model.backbone_source is not None:
        sources[TRANSFORMER_DIR] = bundle.model.backbone_source
    if bundle.image_encoder is None:
        sources = {k: v for k, v in sources.items() if k not in (IMAGE_ENCODER_DIR, IMAGE_PROCESSOR_DIR)}
    if bundle.text_encoder.tokenizer is None:
        sources = {k: v for k, v in sources.items() if k not in (TEXT_DIR, TOKENIZER_DIR)}
    return referenceable(sources)


# ---------------------------------------------------------------- find and load


def find_bundle_dir(path: str | Path, shown_as: str | None = None) -> Path:
    """The bundle directory at `path`: the path itself, or its artifacts/bundle/ or bundle/ (MLflow layouts)."""
    path = Path(path)
    name = shown_as or str(path)
    if not path.exists():
        raise BundleError(f"{name}: no such file or directory")
    for location in BUNDLE_LOCATIONS:
        candidate = path / location
        if (candidate / BUNDLE_FILE).is_file():
            return candidate.resolve()
    raise BundleError(
        f"{name}: not a talkalign model (no {BUNDLE_FILE} in it, nor in artifacts/bundle/ or bundle/)"
    )


@contextmanager
def mlflow_default_uris(tracking_uri: str | None) -> Iterator[None]:
    """MLflow's models:/ download looks the version up in the *default* registry whatever registry_uri it is given
    (ModelsArtifactRepository._get_model_uri_infos, mlflow 3.17), so point the default at tracking_uri meanwhile."""
    if tracking_uri is None:
        yield
        return
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    # what was *set* (None when unset), not what get_*_uri() resolves: restoring a resolved value would pin it
    before_tracking, before_registry = tracking_state._tracking_uri, registry_state._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_tracking)
        mlflow.set_registry_uri(before_registry)


def resolve_model_uri(uri: str | Path, tracking_uri: str | None = None, dst_path: str | Path | None = None) -> Path:
    """A local bundle directory for a path or an MLflow URI (downloaded to dst_path or a temporary directory)."""
    text = str(uri)
    if not text.startswith(MLFLOW_SCHEMES):
        return find_bundle_dir(Path(text).expanduser(), shown_as=text)
    import mlflow.artifacts  # slow to import; only MLflow URIs need it
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=text,
            dst_path=None if dst_path is None else str(dst_path),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except (MlflowException, OSError) as exc:
        where = tracking_uri or mlflow.get_tracking_uri()
        raise BundleError(f"{text}: cannot fetch from MLflow at {where}: {exc}") from exc
    return find_bundle_dir(Path(local), shown_as=f"{text} (downloaded to {local})")


def read_meta(directory: Path) -> BundleMeta:
    file = directory / BUNDLE_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BundleError(f"{file}: not a talkalign bundle (format {found!r}, expected {BUNDLE_FORMAT!r})")
    try:
        return BundleMeta.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{file}: invalid bundle description: {exc}") from exc


PART_DIRS = (TRANSFORMER_DIR, VAE_DIR, TEXT_DIR, TOKENIZER_DIR, IMAGE_ENCODER_DIR, IMAGE_PROCESSOR_DIR)


def part_roots(directory: Path) -> dict[str, Path]:
    """Where each part directory lives: the bundle itself or the checkpoint root pretrained_refs.json names (checked
    against its digest)."""
    try:
        return {name: part_root(directory, name) for name in PART_DIRS}
    except PretrainedRefError as exc:
        raise BundleError(str(exc)) from exc


def transformer_image_dim(directory: Path, roots: dict[str, Path] | None = None) -> int | None:
    """image_dim of the bundle's transformer/config.json (None: it takes no image tokens)."""
    file = (roots or {}).get(TRANSFORMER_DIR, directory) / TRANSFORMER_DIR / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("image_dim")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise BundleError(f"{file}: unreadable transformer config ({exc})") from exc


def _check_files(directory: Path, meta: BundleMeta, roots: dict[str, Path]) -> None:
    def where(name: str) -> Path:  # a file of the bundle, or of the checkpoint it references
        return roots.get(name.split("/")[0], directory) / name

    required = [
        CONFIG_FILE,
        MODULATION_FILE,
        f"{TRANSFORMER_DIR}/config.json",
        f"{VAE_DIR}/config.json",
        f"{TEXT_DIR}/config.json",
    ]
    if meta.audio.features == "wav2vec":
        required.append(f"{AUDIO_DIR}/config.json")
    missing = [name for name in required if not where(name).is_file()]
    if not missing and transformer_image_dim(directory, roots) is not None:
        image_dim = transformer_image_dim(directory, roots)
        for name in (f"{IMAGE_ENCODER_DIR}/config.json", f"{IMAGE_PROCESSOR_DIR}/preprocessor_config.json"):
            if not where(name).is_file():
                missing.append(f"{name} (transformer/config.json has image_dim = {image_dim})")
    for part in (TRANSFORMER_DIR, VAE_DIR, TEXT_DIR) + ((AUDIO_DIR,) if meta.audio.features == "wav2vec" else ()):
        if where(part).is_dir() and not any(where(part).glob("*.safetensors")):
            missing.append(f"{part}/*.safetensors")
    if missing:
        raise BundleError(f"{directory}: incomplete bundle, missing {', '.join(missing)}")
    searched = [directory, *{roots[name] / name for name in PART_DIRS if roots[name] != directory}]
    pickled = sorted(str(p.relative_to(directory)) if p.is_relative_to(directory) else str(p)
                     for d in searched for p in d.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise BundleError(
            f"{directory}: refusing pickle-format weight files {pickled[:3]} (bundles are safetensors only)"
        )


def _load_text_encoder(directory: Path, cfg: TextEncoderConfig) -> TextEncoder:
    if (directory / TOKENIZER_DIR).is_dir():  # a pretrained umT5 with its tokenizer: the standard loader
        return TextEncoder(cfg.model_copy(update={"pretrained_path": str(directory)}))
    from transformers import UMT5EncoderModel

    # The byte-level toy encoder has no tokenizer files: build it from its config, then take the saved weights.
    encoder = TextEncoder(cfg.model_copy(update={"pretrained_path": None}))
    encoder.model = UMT5EncoderModel.from_pretrained(directory / TEXT_DIR, local_files_only=True)
    encoder.model.requires_grad_(False).eval()
    return encoder


def load_plain_bundle(path: str | Path, tracking_uri: str | None = None) -> ModelBundle:
    """Load the parts this module writes from a directory or an MLflow URI; BundleError says which part is missing
    or wrong. Extra files are left alone: a TLPO bundle loads as its base model (loading.load_bundle fuses it)."""
    directory = resolve_model_uri(path, tracking_uri=tracking_uri)
    meta = read_meta(directory)
    roots = part_roots(directory)
    _check_files(directory, meta, roots)
    if roots[TEXT_DIR] != roots[TOKENIZER_DIR] and (roots[TOKENIZER_DIR] / TOKENIZER_DIR).is_dir():
        raise BundleError(f"{directory}: text_encoder/ and tokenizer/ come from different roots "
                          f"({roots[TEXT_DIR]}, {roots[TOKENIZER_DIR]})")
    try:
        model = PortraitModel.from_pretrained(directory, backbone_root=roots[TRANSFORMER_DIR])
        vae = load_vae(roots[VAE_DIR] / VAE_DIR)
        text_encoder = _load_text_encoder(roots[TEXT_DIR], model.cfg.text)
        audio_encoder = None
        if meta.audio.features == "wav2vec":
            audio_cfg = meta.audio.wav2vec.model_copy(update={"pretrained_path": str(directory / AUDIO_DIR)})
            audio_encoder = AudioEncoder(audio_cfg)
        image_encoder = None
        if model.image_dim is not None:
            dtype = model.cfg.image_encoder.dtype if model.cfg.image_encoder is not None else "float32"
            image_encoder = load_image_encoder(roots[IMAGE_ENCODER_DIR], dtype, model.image_dim)
    except BundleError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BundleError(f"{directory}: cannot load bundle: {exc}") from exc
    check_bundle(meta, model, vae, text_encoder, audio_encoder, directory, image_encoder)
    sources = {name: roots[name] for name in PART_DIRS[1:] if (roots[name] / name).is_dir()}  # loaded unchanged
    return ModelBundle(meta, model, vae, text_encoder, audio_encoder, path=directory, image_encoder=image_encoder,
                       sources=sources).eval()
