"""`talkalign serve`, `talkalign pipeline` and `talkalign repro`: the orchestration sub-commands of the CLI.

    talkalign serve                 # from the repository root: every flow as a deployment of this process
    talkalign repro [DVC ARGS ...]  # `dvc repro` with a local Prefect server and UI for the run (`make run`)
    talkalign pipeline [STAGE ...] [--profile params.yaml] [--set key=value ...] [--force] [--pull] [--push]

`serve` registers the `pipeline` flow and every stage flow of `flows.stages.STAGES` as deployments named
`talkalign` (`pipeline/talkalign`, `shard/talkalign`, ...) and runs what is scheduled for them, in subprocesses
started in the current directory: no work pool, no worker. prefect.yaml holds the same flows for work pools.
flows/cli.py adds these parsers and dispatches here; this module imports the stage registry, never the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

COMMANDS = ("serve", "pipeline", "repro")
DEPLOYMENT_NAME = "talkalign"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run the DAG (or some stages) through DVC as one Prefect flow run")
    p.add_argument("stages", nargs="*", metavar="STAGE", help="DVC targets (default: the whole DAG)")
    p.add_argument("--profile", default="params.yaml", help="params file of the profile (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="params override; any override makes the run a DVC experiment (dvc exp run -S)")
    p.add_argument("--force", action="store_true", help="rerun stages even when DVC finds them up to date")
    p.add_argument("--pull", action="store_true", help="dvc pull --allow-missing before running")
    p.add_argument("--push", action="store_true", help="dvc push the outputs afterwards")
    p.add_argument("--name", dest="experiment_name", help="DVC experiment name (with --set or --profile)")

    r = sub.add_parser("repro", help="dvc repro with a local Prefect server (UI) for the run; what `make run` runs",
                       description="Arguments after `repro` go to `dvc repro` unchanged (e.g. `talkalign repro -s evaluate`).")
    r.add_argument("dvc_args", nargs=argparse.REMAINDER, metavar="DVC_ARGS", help="passed to dvc repro")

    s = sub.add_parser("serve", help="serve the pipeline and every stage flow as Prefect deployments (run from the repo root)")
    s.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    s.add_argument("--limit", type=int, default=1,
                   help="flow runs at once (default 1: DVC locks the workspace, and stages share the CPUs)")
    s.add_argument("--only", nargs="+", metavar="FLOW", help="serve only these flows (e.g. pipeline shard)")


def build_deployments(name: str = DEPLOYMENT_NAME, only: list[str] | None = None) -> list[Any]:
    """RunnerDeployments: the pipeline flow, then each stage flow once (phase1's variants share one flow)."""
    from flows.pipeline import pipeline_flow
    from flows.stages import STAGES, load_flow

    flows = [(pipeline_flow, "the DAG through DVC: dvc repro, or dvc exp run -S key=value with overrides", "pipeline")]
    for command, (target, help_text) in STAGES.items():
        flows.append((load_flow(target), f"`talkalign {command}` alone (not versioned by DVC: use pipeline)", "stage"))
    deployments, seen = [], set()
    for flow_obj, description, kind in flows:
        if flow_obj.name in seen or (only and flow_obj.name not in only):
            continue
        seen.add(flow_obj.name)
        deployments.append(flow_obj.to_deployment(name=name, description=description, tags=["talkalign", kind]))
    if only and seen != set(only):
        raise ValueError(f"unknown flow(s): {', '.join(sorted(set(only) - seen))}")
    return deployments


def repro_command(dvc_args: list[str]) -> int:
    from pathlib import Path

    from flows.local_server import repro

    return repro(dvc_args, Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser())


def run_command(args: argparse.Namespace) -> int:
    """Run `serve`, `pipeline` or `repro`; failures raise (flows/cli.py turns them into one line on stderr)."""
    from components.config import load_params, parse_overrides

    if args.command == "repro":
        return repro_command(args.dvc_args)

    if args.command == "serve":
        from prefect import serve
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # the environment or the active Prefect profile
            print(
                "talkalign serve: PREFECT_API_URL is not set, so the deployments would live in a temporary server that "
                "nobody else can reach. Start one (`prefect server start`) and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api (README: Running from the Prefect UI).",
                file=sys.stderr,
            )
            return 2
        serve(*build_deployments(args.name, args.only), limit=args.limit)
        return 0

    # Without PREFECT_API_URL the flow starts Prefect's temporary server; on a busy 2-core box its default 20 s
    # start-up budget is not always enough (the stages then report to that server: flows/pipeline.py).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    overrides = parse_overrides(args.overrides)
    load_params(args.profile, overrides)  # a bad profile, key or value: one line, before any flow or server starts
    from components.pipeline.parameters import PipelineParameters
    from flows.pipeline import pipeline_flow
    from flows.stages import StageFailed, console_without_tracebacks

    debug = getattr(args, "debug", False)
    if not debug:
        console_without_tracebacks()

    parameters = PipelineParameters(
        profile=args.profile, overrides=overrides, stages=args.stages or None,
        force=args.force, pull=args.pull, push=args.push, experiment_name=args.experiment_name,
    )
    try:
        pipeline_flow(parameters)
    except Exception as exc:  # the flow run is already marked failed in Prefect; the CLI says why in one line
        if debug:
            raise
        raise StageFailed(f"failed: {' '.join(str(exc).split())}") from exc
    return 0
