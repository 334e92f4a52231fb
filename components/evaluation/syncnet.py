"""The SyncNet architecture (Chung & Zisserman 2016, "Out of time"), its input spec and its weights.

Two streams, each to one embedding: an audio conv stack over 13 MFCC x 20 steps (0.2 s at 100 Hz) and a lip
conv stack over 5 video frames (a Conv3d whose first kernel spans the 5 frames). The layer sequence is the one
of the public syncnet_python `SyncNetModel.S` (the weights behind the published Sync-C / Sync-D numbers); every
channel count is scaled by `width`, so the toy expert is the same class at 1/8 of the channels.

`SyncNetSpec` holds what the weights expect besides the layers: the crop geometry, colour, pixel scale and MFCC
front end. `OFFICIAL_SPEC` is syncnet_python's (224 px BGR face crops on the 0-255 scale, python_speech_features
MFCC on int16-scale audio); the toy expert uses grey mouth crops and the DCT of our log-mel.

Weights: `load_official_syncnet(path)` reads the official `syncnet_v2.model` (a plain PyTorch state dict) with
`torch.load(weights_only=True)` only, and maps its keys onto this class; our own expert is a safetensors file with
its spec in json (`save_expert` / `load_expert`).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

__all__ = [
    "EXPERT_FORMAT",
    "OFFICIAL_SPEC",
    "SyncExpert",
    "SyncNet",
    "SyncNetSpec",
    "load_expert",
    "load_official_syncnet",
    "load_sync_expert",
    "map_official_keys",
    "save_expert",
]

EXPERT_FORMAT = "talkalign-sync-expert/1"
N_MFCC = 13
AUDIO_STEPS = 20  # 0.2 s of MFCC at 100 Hz = 5 video frames at 25 fps
VIDEO_FRAMES = 5


@dataclass(frozen=True)
class SyncNetSpec:
    """Architecture width plus everything the weights assume about their inputs."""

    width: float = 1.0  # channel multiplier of every layer (1.0 = syncnet_python)
    lip_channels: Literal[1, 3] = 3  # 1: grey, 3: colour (BGR order for the official weights)
    crop_size: int = 224  # pixels of the square lip-stream input
    # The crop: a square of side crop_scale * mouth-box width around the mouth, with the mouth centre at
    # crop_mouth_y of the crop's height (0.5 = centred).
    crop_scale: float = 3.0
    crop_mouth_y: float = 0.55
    pixels: Literal["unit", "raw255"] = "raw255"  # unit: [-1, 1]; raw255: 0-255 floats (syncnet_python)
    mfcc: Literal["log_mel", "psf"] = "psf"  # log_mel: DCT of our log-mel; psf: python_speech_features' MFCC

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"SyncNetSpec.width must be > 0, got {self.width}")
        if self.lip_channels not in (1, 3):
            raise ValueError(f"SyncNetSpec.lip_channels must be 1 or 3, got {self.lip_channels}")
        if _lip_output_size(self.crop_size) < 1:
            raise ValueError(f"SyncNetSpec.crop_size {self.crop_size} is too small for the lip stack (min 51)")

    @property
    def embed_dim(self) -> int:
        return _scaled(1024, self.width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyncNetSpec":
        return cls(**data)




def _scaled(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _lip_output_size(size: int) -> int:
    """Spatial size left by the lip stack before its last conv (6 for 224 px, as in syncnet_python)."""
    size = (size - 7) // 2 + 1  # conv 7x7 stride 2
    size = (size - 3) // 2 + 1  # max pool 3 stride 2
    size = (size + 2 - 5) // 2 + 1  # conv 5x5 stride 2 pad 1
    size = (size + 2 - 3) // 2 + 1  # max pool 3 stride 2 pad 1
    return (size - 3) // 2 + 1  # three 3x3 convs keep the size; max pool 3 stride 2


# syncnet_v2.model through syncnet_python's pipeline: S3FD face tracks cropped with 40% margin (the mouth a little
# below the middle of the crop, which spans ~3.5 mouth widths on a real face = 3 of our mouth boxes, 1.2 mouth widths
# each), 224 px, cv2's BGR, raw 0-255 values; python_speech_features.mfcc on int16 audio at 16 kHz.
OFFICIAL_SPEC = SyncNetSpec(width=1.0, lip_channels=3, crop_size=224, crop_scale=3.0, crop_mouth_y=0.55,
                            pixels="raw255", mfcc="psf")


class SyncNet(nn.Module):
    """audio [B,1,13,20] -> [B,E]; lips [B,C,5,S,S] -> [B,E]; E = 1024 * width. Layer order = syncnet_python."""

    def __init__(self, spec: SyncNetSpec):
        super().__init__()
        self.spec = spec
        c = lambda n: _scaled(n, spec.width)  # noqa: E731
        a1, a2, a3, a4, feat = c(64), c(192), c(384), c(256), c(512)
        self.audio_cnn = nn.Sequential(
            nn.Conv2d(1, a1, 3, padding=1), nn.BatchNorm2d(a1), nn.ReLU(inplace=True),
            nn.MaxPool2d(1, 1),  # a no-op kept so layer indices (and official keys) line up
            nn.Conv2d(a1, a2, 3, padding=1), nn.BatchNorm2d(a2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=(1, 2)),
            nn.Conv2d(a2, a3, 3, padding=1), nn.BatchNorm2d(a3), nn.ReLU(inplace=True),
            nn.Conv2d(a3, a4, 3, padding=1), nn.BatchNorm2d(a4), nn.ReLU(inplace=True),
            nn.Conv2d(a4, a4, 3, padding=1), nn.BatchNorm2d(a4), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(a4, feat, (5, 4)), nn.BatchNorm2d(feat), nn.ReLU(),
        )
        l1, l2 = c(96), c(256)
        last = _lip_output_size(spec.crop_size)
        self.lip_cnn = nn.Sequential(
            nn.Conv3d(spec.lip_channels, l1, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(l1), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(l1, l2, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(l2), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(l2, l2, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l2), nn.ReLU(inplace=True),
            nn.Conv3d(l2, l2, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l2), nn.ReLU(inplace=True),
            nn.Conv3d(l2, l2, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(l2), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(l2, feat, (1, last, last)), nn.BatchNorm3d(feat), nn.ReLU(inplace=True),
        )
        self.audio_fc = nn.Sequential(nn.Linear(feat, feat), nn.BatchNorm1d(feat), nn.ReLU(), nn.Linear(feat, spec.embed_dim))
        self.lip_fc = nn.Sequential(nn.Linear(feat, feat), nn.BatchNorm1d(feat), nn.ReLU(), nn.Linear(feat, spec.embed_dim))

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        if mfcc.shape[1:] != (1, N_MFCC, AUDIO_STEPS):
            raise ValueError(f"audio input must be [B,1,{N_MFCC},{AUDIO_STEPS}], got {tuple(mfcc.shape)}")
        return self.audio_fc(self.audio_cnn(mfcc).flatten(1))

    def forward_lip(self, crops: torch.Tensor) -> torch.Tensor:
        s = self.spec
        expected = (s.lip_channels, VIDEO_FRAMES, s.crop_size, s.crop_size)
        if crops.shape[1:] != expected:
            raise ValueError(f"lip input must be [B,{','.join(map(str, expected))}], got {tuple(crops.shape)}")
        return self.lip_fc(self.lip_cnn(crops).flatten(1))

    def forward(self, mfcc: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between the audio and lip embeddings of each pair, [B]."""
        return torch.pairwise_distance(self.forward_lip(crops), self.forward_audio(mfcc))


# ----------------------------------------------------------------------------- weights


@dataclass
class SyncExpert:
    """A sync expert ready to score: the network (eval mode), its input spec and where it came from."""

    model: SyncNet
    source: Literal["official", "talkalign"]
    meta: dict[str, Any] = field(default_factory=dict)  # training summary (ours) or the weights path (official)

    @property
    def spec(self) -> SyncNetSpec:
        return self.model.spec


# syncnet_python module name -> ours; layer indices inside each Sequential are the same.
_OFFICIAL_PREFIXES = {"netcnnaud.": "audio_cnn.", "netfcaud.": "audio_fc.", "netcnnlip.": "lip_cnn.", "netfclip.": "lip_fc."}


def map_official_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """syncnet_python state-dict keys -> SyncNet keys. Accepts the `__S__.` (SyncNetInstance) and `module.`
    (DataParallel) prefixes; an unknown key raises (a different network, not silently half-loaded)."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key
        for prefix in ("module.", "__S__."):
            name = name.removeprefix(prefix)
        for theirs, ours in _OFFICIAL_PREFIXES.items():
            if name.startswith(theirs):
                mapped[ours + name[len(theirs):]] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r}: not a syncnet_python SyncNet state dict")
    return mapped


def _load_into(model: SyncNet, state: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    # BatchNorm's num_batches_tracked is absent from old checkpoints and unused in eval mode.
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not fit SyncNet(width={model.spec.width}): "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{where}: tensor shapes do not fit the SyncNet spec: {wrong[:5]}")
    model.load_state_dict(state, strict=False)


def load_official_syncnet(path: str | Path, spec: SyncNetSpec = OFFICIAL_SPEC) -> SyncExpert:
    """The official syncnet_v2.model (a state dict) -> SyncExpert. Only torch.load(weights_only=True): a file
    that needs arbitrary unpickling is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SyncNet weights not found (evaluation.syncnet_weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path}: not a plain PyTorch state dict of tensors (refused to unpickle: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    model = SyncNet(spec)
    _load_into(model, map_official_keys(state), str(path))
    return SyncExpert(model=model.eval(), source="official", meta={"weights": str(path)})


def save_expert(directory: str | Path, model: SyncNet, meta: dict[str, Any]) -> None:
    """Our expert: `model.safetensors` + `config.json` (format, spec, meta), written atomically as a directory."""
    from components.io.atomic import atomic_directory

    with atomic_directory(Path(directory)) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(Path(tmp) / "model.safetensors"))
        config = {"format": EXPERT_FORMAT, "spec": model.spec.to_dict(), "meta": meta}
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=2, default=float))


def load_expert(directory: str | Path) -> SyncExpert:
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no sync expert (run the sync_expert stage)")
    config = json.loads(config_path.read_text())
    if config.get("format") != EXPERT_FORMAT:
        raise ValueError(f"{config_path}: not a sync expert (format {config.get('format')!r})")
    model = SyncNet(SyncNetSpec.from_dict(config["spec"]))
    _load_into(model, load_file(str(directory / "model.safetensors")), str(directory))
    return SyncExpert(model=model.eval(), source="talkalign", meta=config.get("meta", {}))


def load_sync_expert(official_weights: str | None, expert_dir: str | Path) -> SyncExpert:
    """The official weights when given, else the expert the sync_expert stage trained."""
    if official_weights:
        return load_official_syncnet(official_weights)
    return load_expert(expert_dir)

