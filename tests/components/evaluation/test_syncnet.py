"""The SyncNet architecture, loading official-format weights (key mapping, weights_only) and our expert's files."""

from __future__ import annotations

import json

import pytest
import torch

from components.evaluation.syncnet import (
    OFFICIAL_SPEC,
    SyncNet,
    SyncNetSpec,
    load_expert,
    load_official_syncnet,
    map_official_keys,
    save_expert,
)

TOY = SyncNetSpec(width=1 / 16, lip_channels=1, crop_size=56, crop_scale=1.0, crop_mouth_y=0.5, pixels="unit", mfcc="log_mel")
SMALL_OFFICIAL_LAYOUT = SyncNetSpec(width=1 / 16, lip_channels=3, crop_size=224)  # official input, fewer channels


def _inputs(spec: SyncNetSpec, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 1, 13, 20, generator=g),
            torch.randn(batch, spec.lip_channels, 5, spec.crop_size, spec.crop_size, generator=g))


def _as_official(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our keys -> syncnet_python's, written out independently of the module under test."""
    names = {"audio_cnn.": "netcnnaud.", "audio_fc.": "netfcaud.", "lip_cnn.": "netcnnlip.", "lip_fc.": "netfclip."}
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # 2017-era checkpoints have no such buffers
        ours = next(p for p in names if key.startswith(p))
        out[prefix + names[ours] + key[len(ours):]] = value.clone()
    return out


def test_streams_embed_to_the_same_space():
    model = SyncNet(TOY).eval()
    audio, lips = _inputs(TOY)
    assert model.forward_audio(audio).shape == (3, TOY.embed_dim) == model.forward_lip(lips).shape
    distance = model(audio, lips)
    assert distance.shape == (3,) and (distance >= 0).all()
    with pytest.raises(ValueError, match="lip input"):
        model.forward_lip(lips[:, :, :4])  # 4 frames, not 5


def test_full_width_model_has_syncnet_python_layer_shapes():
    """Shapes of syncnet_v2.model's tensors (from the public SyncNetModel.S), under their official names."""
    state = _as_official(SyncNet(OFFICIAL_SPEC).state_dict())
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.3.weight"].shape == (1024, 512) == state["netfclip.3.weight"].shape
    assert OFFICIAL_SPEC.embed_dim == 1024


def test_crop_too_small_for_the_lip_stack_is_refused():
    with pytest.raises(ValueError, match="too small"):
        SyncNetSpec(crop_size=48)


@pytest.mark.parametrize("prefix", ["", "__S__.", "module."])
def test_official_state_dict_loads_through_the_key_mapping(tmp_path, prefix):
    source = SyncNet(SMALL_OFFICIAL_LAYOUT).eval()
    with torch.no_grad():  # non-default BatchNorm statistics, so a missed buffer would show in the output
        for module in source.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "syncnet_v2.model"
    torch.save(_as_official(source.state_dict(), prefix), path)

    expert = load_official_syncnet(path, SMALL_OFFICIAL_LAYOUT)
    assert expert.source == "official" and expert.meta["weights"] == str(path)
    audio, lips = _inputs(SMALL_OFFICIAL_LAYOUT, batch=2)
    with torch.no_grad():
        assert torch.equal(expert.model(audio, lips), source(audio, lips))


def test_mapping_rejects_a_foreign_network():
    with pytest.raises(ValueError, match="unexpected key 'encoder.0.weight'"):
        map_official_keys({"encoder.0.weight": torch.zeros(1)})


def test_weights_of_another_width_do_not_half_load(tmp_path):
    path = tmp_path / "small.model"
    torch.save(_as_official(SyncNet(SMALL_OFFICIAL_LAYOUT).state_dict()), path)
    with pytest.raises(ValueError, match="shapes do not fit"):
        load_official_syncnet(path)  # the full-width spec


class _Payload:
    """Anything that is not a tensor: unpickling it would run arbitrary code paths."""


def test_a_pickle_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "evil.model"
    torch.save({"netcnnaud.0.weight": torch.zeros(1), "extra": _Payload()}, path)
    with pytest.raises(ValueError, match="refused to unpickle"):
        load_official_syncnet(path, SMALL_OFFICIAL_LAYOUT)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_official_syncnet(tmp_path / "missing.model")


def test_our_expert_round_trips_through_safetensors(tmp_path):
    model = SyncNet(TOY).eval()
    save_expert(tmp_path / "expert", model, {"val_offset_acc": 0.75})
    assert sorted(p.name for p in (tmp_path / "expert").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "expert" / "config.json").read_text())["spec"]["width"] == TOY.width
    loaded = load_expert(tmp_path / "expert")
    assert loaded.source == "talkalign" and loaded.spec == TOY and loaded.meta == {"val_offset_acc": 0.75}
    audio, lips = _inputs(TOY)
    with torch.no_grad():
        assert torch.equal(loaded.model(audio, lips), model(audio, lips))
    with pytest.raises(FileNotFoundError, match="sync_expert stage"):
        load_expert(tmp_path / "nowhere")
