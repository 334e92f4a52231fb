"""The `talkalign` command: one sub-command per pipeline stage (each runs that stage's Prefect flow).

    talkalign pipeline [STAGE ...] [--set key=value ...]  |  talkalign serve  |  talkalign repro   (flows/deployments.py)
    talkalign synthesize [--params params.yaml] [--set world.n_identities=4 ...]
    talkalign animate --image ref.png --audio speech.wav --model models:/talkalign@champion -o out.mp4
    talkalign promote VERSION --reason TEXT  |  talkalign rollback [--reason TEXT]
    talkalign ablations [--only NAME ...] [--table-only]   (infra/ablations/preference.yaml -> reports/ablations.md)

A failure ends in one line on stderr and exit code 1; `talkalign --debug ...` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from components.config import load_params, parse_overrides
from flows import stages

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkalign", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="on failure, show the Python traceback (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True)
    importlib.import_module("flows.deployments").add_parsers(sub)  # pipeline, serve, repro
    importlib.import_module("flows.app_cli").add_parsers(sub)  # app, label-studio
    importlib.import_module("flows.dryrun_cli").add_parsers(sub)  # dryrun
    importlib.import_module("flows.ablations_cli").add_parsers(sub)  # ablations
    for name, (_, help_text) in stages.STAGES.items():
        stage = sub.add_parser(name, help=help_text)
        stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        for flag, (dest, option_help) in stages.STAGE_OPTIONS.get(name, {}).items():
            stage.add_argument(flag, dest=dest, help=option_help)
    add_animate_parser(sub)
    add_registry_parsers(sub)
    for command in sub.choices.values():  # `talkalign shard --debug` as well as `talkalign --debug shard`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def add_animate_parser(sub: argparse._SubParsersAction) -> None:
    """`animate` is inference, not a pipeline stage: no flow, no params file."""
    p = sub.add_parser("animate", help="make a talking video from a portrait image and speech with a trained model")
    p.add_argument("--image", required=True, help="reference portrait (any image format, any aspect ratio)")
    p.add_argument("--crop", choices=("face", "none"), default="face",
                   help="face: the head-and-shoulders square around the one face (mediapipe, as ingest); none: the centre square")
    p.add_argument("--audio", required=True, help="speech: a sound file, or a video/audio file with an audio stream")
    p.add_argument("--pose", help="talkalign-keypoints-v1 json in the image's pixels (skeleton models); "
                                  "it goes through the same crop as the image")
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


def failure_line(exc: BaseException) -> str:
    """One readable line for a failure. Our own errors and the standard bad-input / OS errors (a missing file, an
    unreachable service) carry messages written for users; anything else is likely a bug and says its type."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if type(exc).__module__.split(".")[0] in ("components", "flows") or isinstance(exc, (ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text} (--debug shows the traceback)"


def run_stage(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    load_params(args.params, overrides)  # a bad file, key or value: one line, before any flow or Prefect server starts
    flow_fn = stages.load_flow(stages.STAGES[args.command][0])
    debug = getattr(args, "debug", False)
    if not debug:
        stages.console_without_tracebacks()
    options = {dest: getattr(args, dest) for dest, _ in stages.STAGE_OPTIONS.get(args.command, {}).values()}
    stages.deterministic_torch()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        # `accelerate launch ... talkalign phase1`: one Prefect flow run (rank 0's); the other ranks run the
        # same stage function undecorated and only join its collectives.
        flow_fn = flow_fn.fn
    try:
        flow_fn(params_path=args.params, overrides=overrides,
                **{key: value for key, value in options.items() if value is not None})
    except Exception as exc:
        if debug:
            raise
        raise stages.StageFailed(f"failed: {failure_line(exc)}") from exc
    finally:
        if distributed:
            from components.train.loop import end_distributed

            end_distributed()
    return 0


def run_registry_command(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    load_params(args.params, overrides)
    from flows.register import promote_by_hand, rollback_by_hand

    if args.command == "promote":
        print(promote_by_hand(args.version, args.reason, args.params, overrides))
    else:
        print(rollback_by_hand(args.reason, args.params, overrides))
    return 0


def run_animate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from components.inference.animate import animate_files

    with tqdm(desc="windows", unit="window", disable=None, file=sys.stderr) as bar:  # closed before an error prints

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        out = animate_files(
            args.image, args.audio, args.output, args.model, pose_path=args.pose, prompt=args.prompt,
            steps=args.steps, guidance=args.guidance, seed=args.seed, progress=progress,
            tracking_uri=args.tracking_uri, threads=args.threads, crop=args.crop,
        )
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    deployments = importlib.import_module("flows.deployments")
    if args.command in deployments.COMMANDS:
        return deployments.run_command(args)
    if args.command == "animate":
        return run_animate(args)
    if args.command in ("promote", "rollback"):
        return run_registry_command(args)
    if args.command == "dryrun":
        return importlib.import_module("flows.dryrun_cli").run_command(args)
    if args.command in ("app", "label-studio"):
        return importlib.import_module("flows.app_cli").run_command(args)
    if args.command == "ablations":
        return importlib.import_module("flows.ablations_cli").run_command(args)
    return run_stage(args)


def _guarded(command: str, debug: bool, body: Callable[[], int]) -> int:
    """Run a sub-command; a failure ends in one line on stderr and exit code 1 (with --debug: the traceback)."""
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"talkalign {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"talkalign {command}: {failure_line(exc)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    rest = argv[1:] if debug else argv
    if rest[:1] == ["repro"] and not {"-h", "--help"} & set(rest[1:2]):
        # everything after `repro` belongs to `dvc repro` (argparse would claim its options, e.g. -s)
        deployments = importlib.import_module("flows.deployments")
        return _guarded("repro", debug, lambda: deployments.repro_command(rest[1:]))
    args = build_parser().parse_args(argv)
    return _guarded(args.command, args.debug, lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
