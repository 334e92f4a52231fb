"""Still frames of many synthetic people for the toy VAE's image phase: its stand-in for the large image corpus a
real video VAE is pretrained on.

Why (a single-frame probe of session 8, not kept): trained on the train identities' frames alone, the VAE
memorises their palettes (seen people 29 dB, unseen val people 20 dB); on corpus stills alone it generalised better
(val 21 dB). The pipeline mixes both (pretrain_vae.image_corpus.share); what the mix gives is reports/pretrain_vae.json.

The corpus people are drawn from the world's distribution but from their own random streams
(SeedSequence(seed, spawn_key=(CORPUS_KEY, i))), which no world identity, clip or split uses, so no held-out person
of the dataset appears in it whatever the seeds are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.data.synthetic.identity import draw_identity, face_geometry
from components.data.synthetic.motion import animate_body
from components.data.synthetic.render import render_frames
from components.data.windows import mouth_boxes

__all__ = ["CORPUS_KEY", "ImageCorpus", "render_image_corpus"]

CORPUS_KEY = 2**20  # world streams are keyed (identity,) or (identity, clip, purpose) with identity < 2**20
_POSES_PER_IDENTITY = 50  # frames of body motion each identity's stills are picked from


@dataclass
class ImageCorpus:
    frames: np.ndarray  # uint8 [N, R, R, 3]
    mouth_box: np.ndarray  # float32 [N, 4] x0, y0, x1, y1 pixels (windows.mouth_boxes' convention)


def render_image_corpus(
    n_identities: int,
    frames_per_identity: int,
    resolution: int,
    seed: int,
    mouth_width_frac: float = 0.4,
    fps: float = 25.0,
    gesture_prob: float = 0.4,
) -> ImageCorpus:
    """`frames_per_identity` stills of each of `n_identities` people, each at a random pose and mouth opening."""
    if n_identities < 1 or not 1 <= frames_per_identity <= _POSES_PER_IDENTITY:
        raise ValueError(f"render_image_corpus needs >= 1 identity and 1..{_POSES_PER_IDENTITY} frames per identity, "
                         f"got {n_identities} and {frames_per_identity}")
    frames, boxes = [], []
    for i in range(n_identities):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(CORPUS_KEY, i)))
        identity = draw_identity(rng, f"corpus{i:05d}")
        geometry = face_geometry(resolution, mouth_width_frac, identity)
        opening = rng.uniform(0.0, 1.0, _POSES_PER_IDENTITY)  # stills: every opening equally often
        keypoints = animate_body(rng, opening, fps, resolution, gesture_prob)
        pick = np.sort(rng.choice(_POSES_PER_IDENTITY, frames_per_identity, replace=False))
        frames.append(render_frames(identity, geometry, keypoints[pick], opening[pick], resolution))
        truth = {
            "mouth_center_px": (keypoints[pick, 0] + np.array([0.0, geometry.mouth_dy])).tolist(),
            "mouth_size_px": [geometry.mouth_w, geometry.mouth_h_max],
        }
        boxes.append(mouth_boxes(truth, frames_per_identity))
    return ImageCorpus(np.concatenate(frames), np.concatenate(boxes))
