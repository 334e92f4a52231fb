"""FID / FVD with standard feature extractors given as local TorchScript files, and the metrics we cannot compute.

The Fréchet distance between Gaussians fitted to two feature sets:
    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
FID uses StyleGAN3's Inception TorchScript (`inception-2015-12-05.pt`: uint8 [N,3,H,W] in, 2048-d pool features
out with return_features=True; it resizes to 299 itself); FVD uses StyleGAN-V's I3D TorchScript
(`i3d_torchscript.pt`: uint8 [N,3,T,H,W] in, called with rescale=False, resize=True, return_features=True).
Nothing is ever downloaded, and a metric is never computed with random weights: without a path the metric is
listed as unavailable with the reason (`unavailable_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "UNSUPPORTED_METRICS",
    "FrechetScorer",
    "frechet_distance",
    "gaussian_stats",
    "i3d_features",
    "inception_features",
    "load_torchscript_extractor",
    "unavailable_metrics",
]

# Metrics of the Hallo4 / FantasyTalking2 tables with no supported extractor in this pipeline yet (HKC / HKV:
# hkc_mediapipe / hkv_mediapipe in components/evaluation/landmark_metrics.py, reported there when not measured).
UNSUPPORTED_METRICS = {
    "e_fid": "E-FID needs the expression coefficients of a 3D face reconstruction network (Deep3DFaceRecon); no "
             "supported extractor is wired in yet",
    "keypoint_err": "keypoint tracking error of the rendered body needs a body keypoint detector trained on the "
                    "training split (ours, to be named as such); not built yet",
}


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, as pytorch-fid) of features [N, D], N >= 2."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A singular product (fewer samples than dimensions): offset the diagonals, as pytorch-fid does.
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def load_torchscript_extractor(path: str | Path, what: str) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} extractor not found")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a TorchScript {what} extractor ({exc})") from exc


@torch.no_grad()
def inception_features(extractor: torch.nn.Module, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> features [N, D] (StyleGAN3's Inception: uint8 NCHW in)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return torch.cat([extractor(x[i : i + batch_size], return_features=True).float()
                      for i in range(0, len(x), batch_size)]).numpy()


@torch.no_grad()
def i3d_features(extractor: torch.nn.Module, videos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """uint8 videos [N, T, H, W, 3] -> features [N, D] (StyleGAN-V's I3D: uint8 [N,3,T,H,W] in)."""
    x = torch.from_numpy(np.ascontiguousarray(videos)).permute(0, 4, 1, 2, 3)
    return torch.cat([extractor(x[i : i + batch_size], rescale=False, resize=True, return_features=True).float()
                      for i in range(0, len(x), batch_size)]).numpy()


@dataclass
class FrechetScorer:
    """FID or FVD against one fixed real set: the extractor and the Gaussian of the real features, computed once."""

    extractor: torch.nn.Module
    features: Callable[[torch.nn.Module, np.ndarray], np.ndarray]
    real_mu: np.ndarray
    real_sigma: np.ndarray

    @classmethod
    def build(cls, kind: Literal["fid", "fvd"], path: str | Path, real: np.ndarray) -> "FrechetScorer":
        """kind "fid": real frames [N,H,W,3]; "fvd": real videos [N,T,H,W,3] (uint8)."""
        what, features = {"fid": ("Inception (FID)", inception_features), "fvd": ("I3D (FVD)", i3d_features)}[kind]
        extractor = load_torchscript_extractor(path, what)
        return cls(extractor, features, *gaussian_stats(features(extractor, real)))

    def __call__(self, fake: np.ndarray) -> float:
        return frechet_distance(self.real_mu, self.real_sigma, *gaussian_stats(self.features(self.extractor, fake)))


def unavailable_metrics(fid_extractor: str | None, fvd_extractor: str | None) -> dict[str, str]:
    """metric -> why it is not in the report (no extractor configured, or none supported)."""
    out: dict[str, str] = {}
    if not fid_extractor:
        out["fid"] = ("no Inception extractor given (evaluation.fid_extractor: a local TorchScript file such as "
                      "StyleGAN3's inception-2015-12-05.pt); never computed with random weights")
    if not fvd_extractor:
        out["fvd"] = ("no I3D extractor given (evaluation.fvd_extractor: a local TorchScript file such as "
                      "StyleGAN-V's i3d_torchscript.pt); never computed with random weights")
    return {**out, **UNSUPPORTED_METRICS}
