"""Checks of a pretrained checkpoint directory against the profile, before anything loads or trains.

Each problem is one line naming the directory, the key and the value the profile expects: a path that does not
exist; a text-to-video transformer (16 input channels) for the image-to-video profile; transformer dims that
disagree with the profile (and so with its motion modulation); a transformer with an image context
(`image_dim`) but no `image_encoder/` beside it; a VAE config without `latents_mean` / `latents_std`.
Only config.json files are read: seconds for a 65 GB checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.config import BackboneConfig, ModulationConfig, Params, VaeConfig

MASK_CHANNELS = 4  # Wan I2V: [noisy z | mask 4 | condition z]


class CheckpointMismatch(ValueError):
    """A pretrained checkpoint that does not fit the profile; the message lists every problem, one per line."""


def expected_transformer_config(cfg: BackboneConfig) -> dict[str, Any]:
    """The WanTransformer3DModel config the profile describes (what a matching checkpoint's config.json holds)."""
    return {
        "patch_size": tuple(cfg.patch_size),
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "in_channels": 2 * cfg.latent_channels + MASK_CHANNELS,
        "out_channels": cfg.latent_channels,
        "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim,
        "ffn_dim": cfg.ffn_dim,
        "num_layers": cfg.num_layers,
        "image_dim": cfg.image_dim,
        "added_kv_proj_dim": cfg.added_kv_proj_dim,
    }


def _read_config(directory: Path) -> dict[str, Any] | str:
    file = directory / "config.json"
    if not file.is_file():
        return f"{directory}: no config.json (expected a diffusers-format component directory)"
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        return f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})"
    return config if isinstance(config, dict) else f"{file}: expected a JSON object"


def _component(path: str, subfolder: str, key: str) -> tuple[Path | None, Path | None, list[str]]:
    """(root, component dir, problems): `path` is a checkpoint root holding `subfolder/`, or the component itself."""
    root = Path(path)
    if not root.exists():
        return None, None, [f"{key}: {root} does not exist (expected a diffusers-format checkpoint root with {subfolder}/)"]
    if (root / subfolder / "config.json").is_file():
        return root, root / subfolder, []
    if (root / "config.json").is_file():
        return root.parent, root, []
    return None, None, [f"{key}: {root} has no {subfolder}/config.json (expected a diffusers-format checkpoint root)"]


def transformer_problems(path: str, cfg: BackboneConfig, modulation: ModulationConfig,
                         key: str = "model.backbone.pretrained_path") -> list[str]:
    root, directory, problems = _component(path, "transformer", key)
    if directory is None:
        return problems
    config = _read_config(directory)
    if isinstance(config, str):
        return [config]
    file = directory / "config.json"
    expected = expected_transformer_config(cfg)
    got_in = config.get("in_channels")
    if got_in == cfg.latent_channels:
        problems.append(f"{file}: in_channels = {got_in}: a text-to-video checkpoint; the image-to-video profile "
                        f"needs in_channels = {expected['in_channels']} ({cfg.latent_channels} noisy + {MASK_CHANNELS} "
                        f"mask + {cfg.latent_channels} condition latents): use an I2V checkpoint (e.g. Wan2.1-I2V-14B, "
                        "Wan2.1-Fun-1.3B-InP)")
    for name, want in expected.items():
        got = config.get(name)
        if name == "in_channels" and got_in == cfg.latent_channels:
            continue
        if isinstance(got, list):
            got = tuple(got)
        if got != want:
            where = "model.backbone." + {"in_channels": "latent_channels", "out_channels": "latent_channels"}.get(name, name)
            problems.append(f"{file}: {name} = {got!r}, the profile ({where}) expects {want!r}")
    width = config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0)
    heads = modulation.heads or config.get("num_attention_heads")
    if width and heads and width % heads:
        problems.append(f"{file}: model width {width} does not divide into model.modulation.heads = {heads}")
    if config.get("image_dim") and root is not None and not (root / "image_encoder" / "config.json").is_file():
        problems.append(f"{root}: no image_encoder/config.json, but {file} has image_dim = {config['image_dim']} "
                        "(image tokens expected): use the full I2V checkpoint root with image_encoder/ and image_processor/")
    return problems


def vae_problems(path: str, cfg: VaeConfig, key: str = "vae.pretrained_path") -> list[str]:
    _, directory, problems = _component(path, "vae", key)
    if directory is None:
        return problems
    config = _read_config(directory)
    if isinstance(config, str):
        return [config]
    file = directory / "config.json"
    z = config.get("z_dim")
    if z != cfg.z_dim:
        problems.append(f"{file}: z_dim = {z!r}, the profile (vae.z_dim) expects {cfg.z_dim}")
    for name in ("latents_mean", "latents_std"):
        values = config.get(name)
        if not isinstance(values, list) or len(values) != cfg.z_dim:
            problems.append(f"{file}: {name} = {values!r}; expected a list of {cfg.z_dim} per-channel statistics "
                            "(Wan's latents are normalised with them)")
    return problems


def params_problems(params: Params) -> list[str]:
    """Every problem of the profile's pretrained directories (none set: nothing to check)."""
    problems: list[str] = []
    backbone, vae = params.model.backbone, params.vae
    if backbone.pretrained_path is not None:
        problems += transformer_problems(backbone.pretrained_path, backbone, params.model.modulation)
    if vae.pretrained_path is not None:
        problems += vae_problems(vae.pretrained_path, vae)
    text = params.model.text.pretrained_path
    if text is not None and not Path(text).exists():
        problems.append(f"model.text.pretrained_path: {text} does not exist (expected a checkpoint root with "
                        "text_encoder/ and tokenizer/)")
    return problems


def check_params_checkpoints(params: Params) -> None:
    """Raise CheckpointMismatch listing every problem (the loaders and `talkalign dryrun` call this first)."""
    problems = params_problems(params)
    if problems:
        raise CheckpointMismatch("\n".join(problems))


def check_transformer(path: str, cfg: BackboneConfig, modulation: ModulationConfig) -> None:
    problems = transformer_problems(path, cfg, modulation)
    if problems:
        raise CheckpointMismatch("\n".join(problems))


def check_vae(path: str, cfg: VaeConfig) -> None:
    problems = vae_problems(path, cfg)
    if problems:
        raise CheckpointMismatch("\n".join(problems))
