"""Bundles in reference mode point at a checkpoint's unchanged parts (root + sha256) instead of copying them, load
and animate like a copying bundle, and refuse a checkpoint that moved or changed; changed weights are copied."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from components.model.adapters import add_lora, merge_lora
from components.model.bundle import BundleAudio, BundleError, BundleMeta, ModelBundle, load_plain_bundle, save_bundle
from components.model.i2v_conditioning import image_encoder_for
from components.model.portrait import PortraitModel
from components.model.pretrained_refs import REFS_FILE, checkpoint_sources, directory_digest
from components.model.text_encoder import TextEncoder
from components.model.vae import load_vae
from tests.components.model.conftest import FRAMES, PROMPT, RES, wan_portrait_config

PARTS = {"transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor"}


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKALIGN_CACHE_DIR", str(tmp_path / "cache"))


def make_bundle(root, mode: str) -> ModelBundle:
    cfg = wan_portrait_config(root, pretrained_in_bundles=mode)
    cfg = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"dtype": "bfloat16"})})
    meta = BundleMeta(variant="tiny-i2v", fps=25, resolution=RES, frames=FRAMES, sample_rate=16000,
                      audio=BundleAudio(features="mel", n_mels=40, tokens_per_frame=4), default_prompt=PROMPT)
    return ModelBundle(meta, PortraitModel.from_config(cfg), load_vae(root), TextEncoder(cfg.text),
                       image_encoder=image_encoder_for(cfg.backbone, cfg.image_encoder),
                       sources=checkpoint_sources(str(root), str(root), str(root)))


def size_of(directory) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_reference_bundle_holds_no_copies_and_loads_the_same_weights(wan_checkpoint, tmp_path):
    from components.inference.animate import animate

    bundle = make_bundle(wan_checkpoint, "reference")
    path = save_bundle(tmp_path / "ref", bundle)
    copied = save_bundle(tmp_path / "copy", make_bundle(wan_checkpoint, "copy"))

    assert not any((path / part).exists() for part in PARTS)
    assert PARTS <= {p.name for p in copied.iterdir()}
    assert not (copied / REFS_FILE).exists()
    refs = json.loads((path / REFS_FILE).read_text())["parts"]
    assert set(refs) == PARTS
    assert {r["root"] for r in refs.values()} == {str(wan_checkpoint.resolve())}
    assert refs["vae"]["digest"] == directory_digest(wan_checkpoint / "vae")
    assert size_of(path) * 5 < size_of(copied)

    loaded = load_plain_bundle(path)
    assert loaded.model.transformer.dtype == torch.bfloat16  # frozen backbone in the profile's dtype
    original = bundle.model.state_dict()
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, original[name], rtol=0, atol=0)
    assert loaded.sources["vae"] == wan_checkpoint.resolve()
    image = np.random.default_rng(0).integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    video = animate(loaded, image, np.zeros(16000 * FRAMES // 25, np.float32), 16000, steps=1)
    assert video.shape == (FRAMES, RES, RES, 3) and video.dtype == np.uint8

    # a variant saved from the loaded bundle references the same checkpoint, not the first bundle
    again = save_bundle(tmp_path / "again", loaded)
    assert json.loads((again / REFS_FILE).read_text())["parts"] == refs


def test_merged_weights_are_copied_the_unchanged_parts_still_referenced(wan_checkpoint, tmp_path):
    bundle = make_bundle(wan_checkpoint, "reference")
    add_lora(bundle.model, 2, 2, ["attention"])
    merge_lora(bundle.model)  # what the dpo stage does: the backbone is no longer the checkpoint's
    path = save_bundle(tmp_path / "dpo", bundle)
    assert (path / "transformer" / "config.json").is_file()
    assert set(json.loads((path / REFS_FILE).read_text())["parts"]) == PARTS - {"transformer"}
    assert load_plain_bundle(path).model.backbone_source == path


def test_a_moved_or_changed_checkpoint_is_refused_naming_the_part(wan_checkpoint, tmp_path):
    root = tmp_path / "ckpt"
    shutil.copytree(wan_checkpoint, root)
    path = save_bundle(tmp_path / "ref", make_bundle(root, "reference"))

    weights = next((root / "vae").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{path}: vae/ is referenced at {root / 'vae'} with digest sha256:.* "
                                          "the checkpoint changed since the bundle was made"):
        load_plain_bundle(path)

    shutil.move(root, tmp_path / "elsewhere")
    with pytest.raises(BundleError, match=rf"{path}: transformer/ is referenced at {root / 'transformer'}, which does "
                                          "not exist; mount the checkpoint there"):
        load_plain_bundle(path)
