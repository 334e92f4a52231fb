"""`talkalign ablations`: the spec's rows as `dvc exp run --temp` experiments of the committed params, and their table.

    talkalign ablations [--spec infra/ablations/preference.yaml] [--output reports/ablations.md] [--only NAME ...]
                        [--table-only]
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from pathlib import Path

COMMANDS = ("ablations",)
DEFAULT_SPEC = "infra/ablations/preference.yaml"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablations", help="run the preference ablations as DVC experiments and write their table")
    p.add_argument("--spec", default=DEFAULT_SPEC, help=f"ablation spec (default: {DEFAULT_SPEC})")
    p.add_argument("--output", help="markdown table (default: the spec's output, reports/ablations.md)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these rows (the table still shows every row)")
    p.add_argument("--table-only", action="store_true", help="run nothing: rebuild the table from the experiments there are")


def run_command(args: argparse.Namespace) -> int:
    from components.config import load_params
    from components.pipeline.ablations import absolute_tracking_uri, load_spec, run_ablations
    from components.tracking import resolve_tracking_uri
    from flows.local_server import local_prefect_server

    repo = Path.cwd()
    spec = load_spec(args.spec)
    extra: dict[str, str] = {}
    if not args.table_only:
        # The stages run in temporary clones: their MLflow runs go to the workspace's database, not the clone's.
        extra["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(resolve_tracking_uri(load_params(spec.params_files[0])), repo)
    # One local Prefect server for every row's stages, as `talkalign repro` (else each stage starts its own).
    serve = not args.table_only and not os.environ.get("PREFECT_API_URL")
    prefect_home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    with local_prefect_server(prefect_home / "server.log") if serve else nullcontext(None) as api_url:
        if api_url:
            extra["PREFECT_API_URL"] = api_url
        rows = run_ablations(spec, repo, output=args.output, only=args.only, table_only=args.table_only,
                             extra_env=extra, log=lambda line: print(line, flush=True))
    print(f"{len(rows) - 1} ablation rows and the baseline in {args.output or spec.output}")
    return 0
