"""A fake ingested directory, what the ingest stage leaves behind, shared by the shard tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def make_ingested(root: Path, n_identities: int = 12, clips_per_identity: int = 4, seed: int = 0) -> Path:
    """What the ingest stage leaves behind, in miniature: tiny bytes and arrays per clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_identities):
        for j in range(clips_per_identity):
            clip_id = f"id{i:02d}_clip{j}"
            clip_dir = root / "clips" / clip_id
            clip_dir.mkdir(parents=True)
            (clip_dir / "video.mp4").write_bytes(rng.bytes(300))
            (clip_dir / "audio.wav").write_bytes(rng.bytes(200))
            (clip_dir / "wav2vec.npy").write_bytes(_npy(rng.normal(size=(10, 4)).astype(np.float32)))
            (clip_dir / "mel.npy").write_bytes(_npy(rng.normal(size=(20, 8)).astype(np.float32)))
            (clip_dir / "pose.npy").write_bytes(_npy(rng.normal(size=(5, 10, 2)).astype(np.float32)))
            if j % 2 == 0:
                (clip_dir / "truth.json").write_text(json.dumps({"mouth_open": [0.1, 0.5]}))
            meta = {"clip_id": clip_id, "identity": f"person{i:02d}", "fps": 25, "n_frames": 5}
            (clip_dir / "meta.json").write_text(json.dumps(meta))
            rows.append({**meta, "source": "fake", "has_truth": j % 2 == 0})
    # Manifest order is not clip_id order: shards must sort anyway.
    rng.shuffle(rows)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(name="make_ingested")
def make_ingested_fixture():
    """make_ingested(root, n_identities=12, clips_per_identity=4, seed=0) -> root."""
    return make_ingested


@pytest.fixture
def ingested(tmp_path) -> Path:
    return make_ingested(tmp_path / "ingested")
