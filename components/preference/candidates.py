"""Candidate videos for preference data: K per conditioning window, from a pool of generators.

Like the papers, which rate the outputs of several methods, each conditioning window of the preference split
(reference frame + audio + pose) is rendered by every generator of the pool (model bundles at guidance scales
and seeds, and a "still" that repeats the reference). On disk (one directory, replaced atomically):

    windows.safetensors        the conditioning windows: the latent cache's tensors (latents, cond_latents and
                               image_emb when cached, audio_mel, audio_wav2vec, pose, mouth_open, mouth_box) for W
                               windows, plus their true frames
                               (uint8) and audio; metadata: window_ids, clip_ids, starts, fps, sample_rate
    candidates-NNNNNN.tar      WebDataset shards, one sample per candidate: <id>.mp4 (h264 + AAC, what a rater
                               watches), <id>.json (candidate_id, window_id, clip_id, generator, kind, seed,
                               guidance, model), <id>.latents.safetensors (the sampled latents, what DPO trains on)
    index.json                 candidate ids per window, generators, shard names

Nothing is unpickled on the way back: json, safetensors and mp4 only.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from safetensors.torch import save_file
from tqdm import tqdm

from components.config import CandidatesConfig, GeneratorSpec, SamplingConfig
from components.io.atomic import atomic_directory
from components.io.video import decode_video_bytes, write_video
from components.model.device import stage_device

WINDOWS_FILE = "windows.safetensors"
INDEX_FILE = "index.json"
FORMAT = "talkalign-candidates/2"  # 2: the windows carry their I2V condition


@dataclass
class ConditioningWindow:
    window_id: str
    clip_id: str
    start: int
    latents: np.ndarray  # float32 [z, T', h, w], normalised: the true clip (latent frame 0 = the reference)
    mel: np.ndarray  # float32 [T, 4, n_mels], normalised (what the model sees)
    wav2vec: np.ndarray  # float32 [T, tokens, d]
    pose: np.ndarray  # float32 [T, J, 3]
    mouth_open: np.ndarray  # float32 [T], ground truth
    mouth_box: np.ndarray  # float32 [T, 4]
    frames: np.ndarray  # uint8 [T, H, W, 3], ground truth
    audio: np.ndarray  # float32 [samples] of the window's frames
    cond_latents: np.ndarray  # float32 [z, T', h, w]: the I2V condition latents ([reference, zeros] encoded)
    image_emb: np.ndarray | None = None  # float32 [tokens, d]: the reference's CLIP tokens (image encoder only)


@dataclass
class Candidate:
    candidate_id: str
    window_id: str
    generator: str
    kind: str
    seed: int
    guidance: float
    latents: np.ndarray  # float32 [z, T', h, w]
    frames: np.ndarray | None  # uint8 [T, H, W, 3] decoded from the mp4 (None when decode=False)
    meta: dict


def candidate_id(window_id: str, generator: str, seed: int) -> str:
    return f"{window_id}.{generator}.s{seed}"


# ----------------------------------------------------------------------------- reading


def load_windows(directory: str | Path) -> dict[str, ConditioningWindow]:
    path = Path(directory) / WINDOWS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no conditioning windows (run the candidates stage first)")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format={meta.get('format')!r})")
        arrays = {key: f.get_tensor(key) for key in f.keys()}
    ids, clips, starts = (json.loads(meta[k]) for k in ("window_ids", "clip_ids", "starts"))
    return {
        wid: ConditioningWindow(
            window_id=wid, clip_id=clips[i], start=starts[i], latents=arrays["latents"][i], mel=arrays["audio_mel"][i],
            wav2vec=arrays["audio_wav2vec"][i], pose=arrays["pose"][i], mouth_open=arrays["mouth_open"][i],
            mouth_box=arrays["mouth_box"][i], frames=arrays["frames"][i], audio=arrays["audio"][i],
            cond_latents=arrays["cond_latents"][i],
            image_emb=arrays["image_emb"][i] if "image_emb" in arrays else None,
        )
        for i, wid in enumerate(ids)
    }


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no candidates index (run the candidates stage first)")
    return json.loads(path.read_text())


def load_candidates(directory: str | Path, decode: bool = True) -> list[Candidate]:
    """Every candidate of the directory, in index order; `decode=True` also decodes each mp4's frames."""
    directory = Path(directory)
    index = read_index(directory)
    urls = [str(directory / name) for name in index["shards"]]
    out: list[Candidate] = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        latents = load_safetensors_bytes(sample["latents.safetensors"])["latents"].numpy()
        name = f"{sample['__url__']}:{sample['__key__']}"
        frames = decode_video_bytes(sample["mp4"], with_audio=False, name=name).frames if decode else None
        out.append(Candidate(
            candidate_id=meta["candidate_id"], window_id=meta["window_id"], generator=meta["generator"],
            kind=meta["kind"], seed=meta["seed"], guidance=meta["guidance"], latents=latents, frames=frames, meta=meta,
        ))
    expected = [cid for ids in index["windows"].values() for cid in ids]
    if sorted(c.candidate_id for c in out) != sorted(expected):
        raise ValueError(f"{directory}: the shards hold {len(out)} candidates but {INDEX_FILE} names {len(expected)}")
    return out


# ----------------------------------------------------------------------------- writing


def select_rows(n_available: int, n_wanted: int, phase: float = 0.0) -> np.ndarray:
    """Evenly spaced rows of a latent cache (deterministic, covers every clip of the split), each moved `phase`
    (in [0, 1)) of the way to the next one: other phases give other windows, as spread out."""
    n = min(n_wanted, n_available)
    rows = np.floor((np.arange(n) + phase) * (n_available / n)).astype(int)  # one row in each of n equal strata
    return np.unique(np.clip(rows, 0, n_available - 1))


def conditioning_windows(
    cache, windows, rows: np.ndarray, fps: float, sample_rate: int, clip_audio: dict
) -> dict[str, np.ndarray]:
    """The tensors of windows.safetensors for `rows` of the latent cache and their `windows` (same order)."""
    samples = int(round(len(windows[0].frames) / fps * sample_rate))
    audio = np.zeros((len(rows), samples), np.float32)
    for i, w in enumerate(windows):
        a = int(round(w.start / fps * sample_rate))
        piece = clip_audio[w.clip_id][a : a + samples]
        audio[i, : len(piece)] = piece
    index = torch.as_tensor(rows)
    condition = {f"{k}_latents" if k == "cond" else k: v.numpy() for k, v in cache.condition(index).items()}
    return {
        "latents": cache.latents[index].numpy(), **condition, "audio_mel": cache.audio_mel[index].numpy(),
        "audio_wav2vec": cache.audio_wav2vec[index].numpy(), "pose": cache.pose[index].numpy(),
        "mouth_open": cache.mouth_open[index].numpy(), "mouth_box": cache.mouth_box[index].numpy(),
        "frames": np.stack([w.frames for w in windows]), "audio": audio,
    }


@torch.no_grad()
def sample_model_candidates(bundle, cond: dict[str, np.ndarray], spec: GeneratorSpec, seed: int,
                            steps: int, shift: float, batch_size: int) -> torch.Tensor:
    """Latents [W, z, T', h, w] of one model generator for every conditioning window, batched. The noise of
    each batch comes from a generator seeded by (seed, batch): reruns reproduce every candidate."""
    from components.model.flow import sample

    model = bundle.model.eval()
    latents = torch.from_numpy(cond["latents"])
    cond_all = torch.from_numpy(cond["cond_latents"])
    image_all = torch.from_numpy(cond["image_emb"]) if "image_emb" in cond else None
    feats_all = torch.from_numpy(cond["audio_mel"] if bundle.meta.audio.features == "mel" else cond["audio_wav2vec"])
    pose_all = torch.from_numpy(cond["pose"])
    has_audio, has_pose = "audio" in model.motion, "skeleton" in model.motion
    guidance = spec.guidance if has_audio else 1.0
    device = bundle.device  # inputs go where the bundle is (the GPU under a GPU launch); latents come back to the CPU
    text = bundle.text_encoder([bundle.meta.default_prompt]).to(device)
    out = []
    for start in range(0, len(latents), batch_size):
        sl = slice(start, start + batch_size)
        cond_latents = cond_all[sl].to(device)
        image_emb = None if image_all is None else image_all[sl].to(device)
        n = len(cond_latents)
        feats = feats_all[sl].to(device) if has_audio else None
        pose = pose_all[sl].to(device) if has_pose else None
        text_emb = text.expand(n, *text.shape[1:])

        def velocity(x, t, audio_dropped):
            drop = torch.full((n,), audio_dropped, device=device) if has_audio else None
            return model(x, t, cond_latents, feats, pose, text_emb, drop_audio=drop, image_emb=image_emb)

        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        noise = torch.randn((n, *latents.shape[1:]), generator=generator)  # CPU draw: the same candidates on any device
        out.append(sample(velocity, tuple(noise.shape), steps, shift, guidance, noise=noise, device=device).cpu())
    return torch.cat(out)


def still_candidates(vae, cond: dict[str, np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    """The reference frame held for the whole window: latents (encoded by the VAE) and frames."""
    from components.model.vae import encode_video

    frames = np.repeat(cond["frames"][:, :1], cond["frames"].shape[1], axis=1)
    with torch.no_grad():
        latents = torch.cat([encode_video(vae, torch.from_numpy(frames[i : i + 8])) for i in range(0, len(frames), 8)])
    return latents, frames


def write_candidates(
    cfg: CandidatesConfig,
    sampling: SamplingConfig,
    cond: dict[str, np.ndarray],
    meta: dict,
    load_bundle,
    progress: bool = True,
) -> dict:
    """Render every generator of cfg.pool on the conditioning windows `cond` and publish cfg.out_dir atomically.
    `meta` holds window_ids, clip_ids, starts, fps, sample_rate. Returns the index."""
    from components.evaluation.generation import decode_to_frames

    window_ids: list[str] = meta["window_ids"]
    fps, sample_rate = meta["fps"], meta["sample_rate"]
    jobs = [(spec, seed) for spec in cfg.pool for seed in (spec.seeds if spec.kind == "model" else [0])]
    index = {"format": FORMAT, "windows": {wid: [] for wid in window_ids}, "generators": {}, "shards": []}
    names = [f"{spec.name}.s{seed}" for spec, seed in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"candidates.pool: generator names and seeds must be unique, got {names}")
    with atomic_directory(cfg.out_dir) as out, tempfile.TemporaryDirectory() as scratch:
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cond.items()}, str(out / WINDOWS_FILE),
                  metadata={"format": FORMAT, **{k: json.dumps(meta[k]) for k in ("window_ids", "clip_ids", "starts")},
                            "fps": str(fps), "sample_rate": str(sample_rate)})
        pattern = str(out / "candidates-%06d.tar")
        bundles: dict[str, object] = {}
        with wds.ShardWriter(pattern, maxcount=cfg.shard_maxcount, verbose=0) as sink, tqdm(
            total=len(jobs) * len(window_ids), desc="candidates", unit="video", disable=not progress
        ) as bar:
            for spec, seed in jobs:
                if spec.kind == "model":
                    if spec.model not in bundles:
                        bundles = {spec.model: load_bundle(spec.model, device=stage_device())}  # one at a time
                    bundle = bundles[spec.model]
                    latents = sample_model_candidates(
                        bundle, cond, spec, seed, cfg.sampling_steps, sampling.shift, cfg.batch_size
                    )
                    frames = decode_to_frames(bundle, latents)
                    frames[:, 0] = cond["frames"][:, 0]  # frame 0 is the given reference, as in animate
                else:
                    vae = next(iter(bundles.values())).vae if bundles else load_bundle(_first_model(cfg)).vae
                    latents, frames = still_candidates(vae, cond)
                index["generators"][f"{spec.name}.s{seed}"] = {**spec.model_dump(), "seed": seed}
                for i, wid in enumerate(window_ids):
                    cid = candidate_id(wid, spec.name, seed)
                    mp4 = Path(scratch) / "c.mp4"
                    write_video(mp4, frames[i], fps, cond["audio"][i], sample_rate)
                    record = {"candidate_id": cid, "window_id": wid, "clip_id": meta["clip_ids"][i],
                              "generator": spec.name, "kind": spec.kind, "seed": seed, "guidance": spec.guidance,
                              "model": spec.model}
                    sink.write({
                        "__key__": cid.replace(".", "_"),
                        "mp4": mp4.read_bytes(),
                        "json": json.dumps(record).encode(),
                        "latents.safetensors": save_safetensors_bytes({"latents": latents[i].contiguous()}),
                    })
                    index["windows"][wid].append(cid)
                    bar.update(1)
        index["shards"] = sorted(p.name for p in out.glob("candidates-*.tar"))
        (out / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return index


def _first_model(cfg: CandidatesConfig) -> str:
    for spec in cfg.pool:
        if spec.kind == "model":
            return spec.model
    raise ValueError("candidates.pool: a still generator needs a model generator too (its VAE encodes the still)")
