"""The `talkalign` command: one sub-command per pipeline stage (each runs that stage's Prefect flow).

    talkalign pipeline [STAGE ...] [--set key=value ...]  |  talkalign serve  |  talkalign repro   (flows/deployments.py)
    talkalign synthesize [--params params.yaml] [--set world.n_identities=4 ...]
    talkalign animate --image ref.png --audio speech.wav --model models:/talkalign@champion -o out.mp4
    talkalign promote VERSION --reason TEXT  |  talkalign rollback [--reason TEXT]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import yaml

# Quiet, offline defaults; the user's environment wins.
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's temporary API server needs more than its default 20 s to start on a busy 2-core box.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)


# sub-command -> (flow as "module:function", help). Flows are imported lazily: `talkalign --help` stays instant.
STAGES: dict[str, tuple[str, str]] = {
    "synthesize": ("flows.data:synthesize_flow", "generate the synthetic talking-portrait world (toy profile)"),
    "ingest": ("flows.data:ingest_flow", "decode a folder of talking videos into samples; quarantine bad clips"),
    "validate": ("flows.data:validate_flow", "great-expectations checks over the clip manifest"),
    "shard": ("flows.data:shard_flow", "write WebDataset shards split by identity (local or s3://)"),
    "pretrain-vae": ("flows.train:pretrain_vae_flow", "train the toy video VAE (skipped with vae.pretrained_path)"),
    "latents": ("flows.train:latents_flow", "encode every training window once with the stage VAE"),
    "pretrain-dit": ("flows.train:pretrain_dit_flow", "train the base image-to-video DiT (toy profile)"),
    "phase1": ("flows.train:phase1_flow", "train the audio modulation, backbone frozen (--variant for the ablation)"),
    "phase2": ("flows.train:phase2_flow", "train the skeleton modulation, everything else frozen"),
    "sync-expert": ("flows.experts:sync_expert_flow", "train the SyncNet-architecture sync expert (skipped with official weights)"),
    "candidates": ("flows.preference:candidates_flow", "K candidate videos per preference window from the generator pool"),
    "annotate": ("flows.preference:annotate_flow", "Likert ratings per candidate: simulated rater, human file, or the critic"),
    "critic": ("flows.critic:critic_flow", "train the Talking-Critic reward model on the ratings; held-out vs baselines"),
    "pairs": ("flows.preference:pairs_flow", "preference pairs (composite and per dimension) from the ratings"),
    "dpo": ("flows.alignment:dpo_flow", "Flow-DPO of the phase-2 model on curated pairs (LoRA; reference = adapters off)"),
    "tlpo": ("flows.alignment:tlpo_flow", "TLPO: a LoRA expert per preference dimension, fused by a (timestep, layer) gate"),
    "evaluate": ("flows.evaluate:evaluate_flow", "every model variant on the same held-out test windows"),
    "register": ("flows.register:register_flow", "register the evaluated model in MLflow; champion if the gates pass"),
}
# Stage options beyond --params/--set: sub-command -> {flag: (flow keyword, help)}.
STAGE_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "phase1": {"--variant": ("variant", "temporal motion modulation: reshape (ours), half (audio/2), downsample (audio/4)")},
}


def load_flow(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set a.b=value` pairs; values are parsed as YAML so numbers and booleans keep their types."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(raw)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkalign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    importlib.import_module("flows.deployments").add_parsers(sub)  # pipeline, serve, repro
    for name, (_, help_text) in STAGES.items():
        stage = sub.add_parser(name, help=help_text)
        stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        for flag, (dest, option_help) in STAGE_OPTIONS.get(name, {}).items():
            stage.add_argument(flag, dest=dest, help=option_help)
    add_animate_parser(sub)
    add_registry_parsers(sub)
    return parser


def add_animate_parser(sub: argparse._SubParsersAction) -> None:
    """`animate` is inference, not a pipeline stage: no flow, no params file."""
    p = sub.add_parser("animate", help="make a talking video from a portrait image and speech with a trained model")
    p.add_argument("--image", required=True, help="reference portrait (any image format; centre-cropped)")
    p.add_argument("--audio", required=True, help="speech: a sound file, or a video/audio file with an audio stream")
    p.add_argument("--pose", help="talkalign-keypoints-v1 json in the image's pixels (skeleton models)")
    p.add_argument("--prompt", default="", help="text prompt (default: the prompt the model was trained with)")
    p.add_argument("--model", required=True, help="bundle directory or MLflow URI (models:/name@alias, runs:/...)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov or .mkv)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="audio classifier-free guidance (default: the model's)")
    p.add_argument("--seed", type=int, help="sampling seed (default: the model's)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")


def add_registry_parsers(sub: argparse._SubParsersAction) -> None:
    """`promote` and `rollback` move the champion alias by hand (the registry named in params)."""
    p = sub.add_parser("promote", help="make a registered model version the champion, whatever the gates say")
    p.add_argument("version", help="model version number")
    p.add_argument("--reason", required=True, help="why (recorded on the version)")
    r = sub.add_parser("rollback", help="move the champion alias back to the previous champion")
    r.add_argument("--reason", default="", help="why (recorded on the demoted version)")
    for parser in (p, r):
        parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run_registry_command(args: argparse.Namespace) -> int:
    from components.registry.registry import RegistryError
    from components.tracking import TrackingUnavailable
    from flows.register import promote_by_hand, rollback_by_hand

    overrides = parse_overrides(args.overrides)
    try:
        if args.command == "promote":
            message = promote_by_hand(args.version, args.reason, args.params, overrides)
        else:
            message = rollback_by_hand(args.reason, args.params, overrides)
    except (RegistryError, TrackingUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"talkalign {args.command}: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


def run_animate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from components.inference.animate import AnimateInputError, animate_files

    with tqdm(desc="windows", unit="window", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            out = animate_files(
                args.image, args.audio, args.output, args.model, pose_path=args.pose, prompt=args.prompt,
                steps=args.steps, guidance=args.guidance, seed=args.seed, progress=progress,
                tracking_uri=args.tracking_uri, threads=args.threads,
            )
        except AnimateInputError as exc:
            bar.close()
            print(f"talkalign animate: {exc}", file=sys.stderr)
            return 1
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["repro"] and not {"-h", "--help"} & set(argv[1:2]):
        # everything after `repro` belongs to `dvc repro` (argparse would claim its options, e.g. -s)
        return importlib.import_module("flows.deployments").repro_command(argv[1:])
    args = build_parser().parse_args(argv)
    deployments = importlib.import_module("flows.deployments")
    if args.command in deployments.COMMANDS:
        return deployments.run_command(args)
    if args.command == "animate":
        return run_animate(args)
    if args.command in ("promote", "rollback"):
        return run_registry_command(args)
    flow_fn = load_flow(STAGES[args.command][0])
    options = {dest: getattr(args, dest) for dest, _ in STAGE_OPTIONS.get(args.command, {}).values()}
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        # `accelerate launch ... talkalign phase1`: one Prefect flow run (rank 0's); the other ranks run the
        # same stage function undecorated and only join its collectives.
        flow_fn = flow_fn.fn
    try:
        flow_fn(
            params_path=args.params,
            overrides=parse_overrides(args.overrides),
            **{key: value for key, value in options.items() if value is not None},
        )
    except Exception as exc:  # the flow run is already marked failed in Prefect; say why in one place
        print(f"talkalign {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if distributed:
            from components.train.loop import end_distributed

            end_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
