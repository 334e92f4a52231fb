"""What one shard sample holds (one ingested clip), and how a reader decodes it."""

from __future__ import annotations

import re
from typing import Any

import webdataset as wds

__all__ = ["CLIP_ID", "DECODED_FIELDS", "OPTIONAL_FIELDS", "REQUIRED_FIELDS", "decode_sample"]

CLIP_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # webdataset splits a member name at its first dot

# Sample field -> file in data/ingested/clips/{clip_id}/.
REQUIRED_FIELDS = {
    "mp4": "video.mp4",
    "wav": "audio.wav",
    "wav2vec.npy": "wav2vec.npy",
    "mel.npy": "mel.npy",
    "pose.npy": "pose.npy",
}
OPTIONAL_FIELDS = {"truth.json": "truth.json"}
# Fields decode_sample turns into arrays / dicts; mp4 and wav stay bytes (decoded with PyAV / soundfile).
DECODED_FIELDS = ["wav2vec.npy", "mel.npy", "pose.npy", "json", "truth.json"]

_DECODER = wds.autodecode.Decoder([], only=DECODED_FIELDS)


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """npy fields -> arrays (numpy's reader, allow_pickle=False), json fields -> dicts, mp4/wav stay bytes.

    Keys are unchanged ("wav2vec.npy", "json", ...). A missing or undecodable field raises an
    error naming the shard and the sample.
    """
    where = f"{sample.get('__url__', '?')} sample {sample.get('__key__', '?')}"
    missing = [k for k in [*REQUIRED_FIELDS, "json"] if k not in sample]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    try:
        return _DECODER(sample)
    except wds.autodecode.DecodingError as exc:
        raise ValueError(f"{where}: cannot decode field {exc.k!r}: {exc.__cause__}") from exc
