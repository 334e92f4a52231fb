"""The `talkalign` command: one sub-command per pipeline stage (each runs that stage's Prefect flow).

    talkalign synthesize [--params params.yaml] [--set world.n_identities=4 ...]
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
}.items():
    os.environ.setdefault(_key, _value)


# sub-command -> (flow as "module:function", help). Flows are imported lazily: `talkalign --help` stays instant.
STAGES: dict[str, tuple[str, str]] = {
    "synthesize": ("flows.data:synthesize_flow", "generate the synthetic talking-portrait world (toy profile)"),
    "ingest": ("flows.data:ingest_flow", "decode a folder of talking videos into samples; quarantine bad clips"),
    "validate": ("flows.data:validate_flow", "great-expectations checks over the clip manifest"),
    "shard": ("flows.data:shard_flow", "write WebDataset shards split by identity (local or s3://)"),
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
    for name, (_, help_text) in STAGES.items():
        stage = sub.add_parser(name, help=help_text)
        stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flow_fn = load_flow(STAGES[args.command][0])
    try:
        flow_fn(params_path=args.params, overrides=parse_overrides(args.overrides))
    except Exception as exc:  # the flow run is already marked failed in Prefect; say why in one place
        print(f"talkalign {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
