"""Decoding a shard sample: arrays through numpy without pickle, errors naming the shard and sample."""

from __future__ import annotations

import io

import numpy as np
import pytest

from components.data.shards.sample import decode_sample


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_decode_refuses_pickled_arrays():
    raw = {"__key__": "x", "__url__": "shard.tar", "mp4": b"", "wav": b"", "json": b"{}"}
    raw |= {k: _npy(np.zeros(2)) for k in ("wav2vec.npy", "mel.npy")}
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    raw["pose.npy"] = buf.getvalue()
    with pytest.raises(ValueError, match=r"shard\.tar sample x: cannot decode field 'pose\.npy'.*allow_pickle"):
        decode_sample(raw)


def test_a_missing_field_is_named():
    with pytest.raises(ValueError, match=r"a\.tar sample y: missing fields \['mp4', 'wav2vec\.npy'"):
        decode_sample({"__key__": "y", "__url__": "a.tar", "wav": b"", "json": b"{}"})
