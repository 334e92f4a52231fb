"""mediapipe against the synthetic world's ground truth: how well the real-video extractor reads our cartoon faces.

    python -m benchmarks.extractor_agreement [--identities 4] [--sizes 64 128 256]

Clips of the toy world (64 px, one per identity) are sent to the mediapipe worker upscaled to each size; the
figures are in the world's 64 px units: how often a face / the lips / each joint was found, the mouth centre
error, the correlation of the measured mouth opening with the true one, and the joints' median error where
the pose model is confident (visibility > 0.5). Head: the world's joint is the head centre, mediapipe's the nose,
so a few px of its error are the definition.
"""

from __future__ import annotations

import argparse

import numpy as np

from components.config import KeypointConfig, WorldConfig
from components.data.extractor_client import DEFAULT_PYTHON, run_worker
from components.data.landmarks import landmarks_from_reply, pose_joints
from components.data.mouth_pixels import pearson
from components.data.synthetic.motion import JOINTS
from components.data.synthetic.world import make_clip
from components.evaluation.landmark_metrics import upscale


def agreement(n_identities: int, size: int, seed: int = 0) -> dict[str, float]:
    cfg = WorldConfig(n_identities=n_identities, clips_per_identity=1, speech="syllables", seed=seed)
    clips = [make_clip(cfg, i, 0) for i in range(n_identities)]
    frames = np.concatenate([c.frames for c in clips])
    res = cfg.resolution
    reply = run_worker(upscale(frames, size), {"pose_every": 1}, DEFAULT_PYTHON, 600, f"world at {size} px")
    marks = landmarks_from_reply(reply, res, res)
    found = marks.lips_found
    truth_open = np.concatenate([c.truth["mouth_open"] for c in clips])
    truth_mouth = np.concatenate([c.truth["mouth_center_px"] for c in clips])
    mouth = marks.mouth()
    # Per clip: the opening's scale depends on the cartoon's lip shape, so correlate within clips, then average.
    corrs, start = [], 0
    for c in clips:
        sl = slice(start, start + len(c.frames))
        ok = found[sl]
        if ok.sum() > 2 and np.ptp(mouth["opening"][sl][ok]) > 0:
            corrs.append(pearson(mouth["opening"][sl][ok], truth_open[sl][ok]))
        start += len(c.frames)
    out = {
        "face found": float(np.mean([len(f) > 0 for f in marks.faces])),
        "lips found": float(found.mean()),
        "mouth centre err px": float(np.median(np.linalg.norm(mouth["center"][found] - truth_mouth[found], axis=1)))
        if found.any() else float("nan"),
        "mouth open corr": float(np.mean(corrs)) if corrs else float("nan"),
    }
    layout = KeypointConfig().joints  # the world's own layout
    joints = pose_joints(reply, layout, res, res)
    truth_kp = np.concatenate([np.asarray(c.truth["keypoints_px"]) for c in clips])
    for name in ("head", "neck", "l_shoulder", "l_wrist", "l_hand"):
        j, k = layout.index(name), JOINTS.index(name)
        confident = joints[:, j, 2] > 0.5
        err = np.linalg.norm(joints[confident, j, :2] - truth_kp[confident, k], axis=1)
        out[f"{name} found"] = float(confident.mean())
        out[f"{name} err px"] = float(np.median(err)) if confident.any() else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args(argv)
    if not DEFAULT_PYTHON.is_file():
        print(f"{DEFAULT_PYTHON} missing: `make setup` builds the mediapipe extractor env")
        return 1
    rows = {size: agreement(args.identities, size) for size in args.sizes}
    names = list(next(iter(rows.values())))
    print(f"mediapipe vs the synthetic world's truth ({args.identities} clips of 64 px, errors in 64 px units)")
    print(f"{'measure':<22}" + "".join(f"{f'at {s} px':>12}" for s in rows))
    for name in names:
        print(f"{name:<22}" + "".join(f"{rows[s][name]:>12.3f}" for s in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
