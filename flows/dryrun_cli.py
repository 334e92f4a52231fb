"""`talkalign dryrun`: every stage's step of a profile at full size on the meta device (seconds, no memory).

    talkalign dryrun --params params.wan.yaml [--stages phase1 dpo ...] [--gpus 8] [--write-capacity infra/README.md]
"""

from __future__ import annotations

import argparse

COMMANDS = ("dryrun",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dryrun", help="run each stage's step at the profile's real shapes on the meta device")
    p.add_argument("--params", default="params.wan.yaml", help="profile (default: params.wan.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stages", nargs="+", help="phase1 phase2 dpo tlpo_gate sample vae critic sync_expert (default: all)")
    p.add_argument("--gpus", type=int, default=8, help="FSDP world size the memory and time are for (default 8)")
    p.add_argument("--mfu", type=float, default=0.40, help="model FLOPs utilisation for step times (default 0.40)")
    p.add_argument("--write-capacity", metavar="README", help="also write the capacity table between its markers")


def run_command(args: argparse.Namespace) -> int:
    from components.config import load_params, parse_overrides
    from components.dryrun.report import Hardware
    from components.dryrun.run import capacity_section, describe, dry_run, write_capacity

    params = load_params(args.params, parse_overrides(args.overrides))
    run = dry_run(params, args.stages, gpus=args.gpus, profile=args.params)
    print(describe(run))
    if args.write_capacity:
        hw = Hardware(gpus=args.gpus, mfu=args.mfu)
        write_capacity(args.write_capacity, capacity_section([(args.params, params, run)], hw))
        print(f"wrote {args.write_capacity}")
    return 1 if run.failures else 0
