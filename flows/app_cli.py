"""`talkalign app` (the Gradio app) and `talkalign label-studio export|import` (the Label Studio round trip).

    talkalign app [--candidates data/candidates] [--db data/ratings/human.sqlite] [--host 127.0.0.1] [--port 7860]
                  [--model models:/talkalign@champion] [--share] [--export-ratings ratings.jsonl]
                  [--compare DIR [--compare-models A B (--compare-inputs DIR | --compare-test-windows N)]]
                  [--log-compare]
    talkalign label-studio export --candidates data/candidates --base-url URL -o ls/
    talkalign label-studio import EXPORT.json -o data/ratings/human.jsonl [--candidates data/candidates]

The ratings (the app's database itself, its `--export-ratings`, or label-studio import) are what
`talkalign annotate --set annotate.source=human --set annotate.human_ratings=FILE` reads.

Compare: `--compare DIR --compare-models models:/talkalign@champion models:/talkalign@candidate` builds the compare
set (both models animate the same inputs) when DIR has none, then serves it; `--log-compare` logs the human win
rate from the database into the newer version's MLflow run and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COMMANDS = ("app", "label-studio")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="serve the browser app: animate, rate candidates (sqlite), rater agreement")
    p.add_argument("--candidates", help="candidates stage directory (or a rating pool directory) to rate")
    p.add_argument("--pool-dir", help="where to unpack the candidates' videos (default: CANDIDATES-pool)")
    p.add_argument("--db", default="data/ratings/human.sqlite", help="sqlite ratings database (WAL)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a public Gradio share link (off by default)")
    p.add_argument("--model", default="", help="default model for the Animate tab (bundle dir or models:/...)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ URIs")
    p.add_argument("--out-dir", help="where animated videos go (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-rater shuffles")
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--export-ratings", metavar="FILE", help="write the database's ratings to FILE (.jsonl/.csv) and exit")
    p.add_argument("--compare", metavar="DIR", help="compare set to serve in the Compare tab (built when missing)")
    p.add_argument("--compare-models", nargs=2, metavar=("A", "B"), help="the two models to build the compare set from")
    p.add_argument("--compare-inputs", metavar="DIR", help="portrait + audio pairs sharing a name (a.png + a.wav)")
    p.add_argument("--compare-test-windows", type=int, metavar="N", help="or the first N clips of the test split")
    p.add_argument("--shards", default="data/shards", help="shards of --compare-test-windows (default data/shards)")
    p.add_argument("--compare-seconds", type=float, default=2.0, help="cut each input's audio to this (default 2 s)")
    p.add_argument("--compare-steps", type=int, help="sampling steps (default: each model's own)")
    p.add_argument("--log-compare", action="store_true",
                   help="log the compare set's human win rate into the newer version's MLflow run and exit")

    ls = sub.add_parser("label-studio", help="Label Studio round trip: export tasks + config, import its JSON export")
    ls_sub = ls.add_subparsers(dest="ls_command", required=True)
    e = ls_sub.add_parser("export", help="tasks.json + labeling_config.xml for the candidates")
    e.add_argument("--candidates", required=True, help="candidates stage directory (or a rating pool directory)")
    e.add_argument("--pool-dir", help="where to unpack the candidates' videos (default: CANDIDATES-pool)")
    e.add_argument("--base-url", required=True, help="URL the pool directory is served at")
    e.add_argument("-o", "--output", required=True, help="output directory")
    i = ls_sub.add_parser("import", help="Label Studio JSON export -> human ratings file (checked by the ratings suite)")
    i.add_argument("export", help="Label Studio export (JSON format)")
    i.add_argument("-o", "--output", required=True, help="ratings file (.jsonl or .csv)")
    i.add_argument("--candidates", help="candidates stage directory (or a rating pool) the ids must belong to")


def _known_candidates(candidates: str | None) -> list[str] | None:
    if candidates is None:
        return None
    from components.preference.candidates import read_index

    return [c for ids in read_index(candidates)["windows"].values() for c in ids]


def run_command(args: argparse.Namespace) -> int:
    from components.app.compare import CompareError
    from components.app.label_studio import LabelStudioError
    from components.app.pool import PoolError
    from components.app.rating_store import RatingStoreError
    from components.preference.ratings import RatingsError

    try:
        if args.command == "app":
            return _run_app(args)
        if args.ls_command == "export":
            from components.app.label_studio import export_tasks
            from components.app.server import open_pool

            paths = export_tasks(open_pool(args.candidates, args.pool_dir), args.base_url, args.output)
            print(f"{paths['tasks']}\n{paths['config']}")
            return 0
        from components.app.label_studio import import_export, read_export

        known = _known_candidates(args.candidates)
        if known is None:
            known = sorted(set(read_export(args.export)[0]["candidate_id"]))
        out, counts = import_export(args.export, args.output, known)
        print(f"{out}: {counts.ratings} ratings from {counts.annotations} annotations of {counts.tasks} tasks "
              f"({counts.cancelled} cancelled)")
        return 0
    except (LabelStudioError, PoolError, RatingStoreError, RatingsError, CompareError, FileNotFoundError) as exc:
        print(f"talkalign {args.command}: {exc}", file=sys.stderr)
        return 1


def _use_tracking(uri: str | None) -> None:
    """A server that does not answer fails in seconds, not after MLflow's minutes of retries; --tracking-uri also
    becomes the default registry (MLflow's models:/ download reads the default one, see model.bundle.mlflow_default_uris)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    if uri:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)


def _open_compare(args: argparse.Namespace):
    from components.app.compare import (
        INDEX_FILE,
        CompareError,
        build_compare_set,
        inputs_from_dir,
        inputs_from_test_split,
        load_compare_set,
        resolve_model_ref,
    )

    if args.compare is None:
        if args.compare_models or args.log_compare:
            raise CompareError("--compare-models and --log-compare need --compare DIR")
        return None
    if (Path(args.compare) / INDEX_FILE).is_file() or not args.compare_models:
        return load_compare_set(args.compare)
    first, second = (resolve_model_ref(uri, args.tracking_uri) for uri in args.compare_models)
    if args.compare_inputs:
        inputs = inputs_from_dir(args.compare_inputs, args.compare_seconds)
    elif args.compare_test_windows:
        inputs = inputs_from_test_split(args.shards, args.compare_test_windows, args.compare_seconds)
    else:
        raise CompareError("building a compare set needs --compare-inputs DIR or --compare-test-windows N")
    print(f"animating {len(inputs)} inputs with {first.label} and {second.label} -> {args.compare}")
    return build_compare_set(args.compare, first, second, inputs, tracking_uri=args.tracking_uri,
                             steps=args.compare_steps, progress=lambda done, total: print(f"  {done}/{total} videos"))


def _run_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _use_tracking(args.tracking_uri)
    compare = _open_compare(args)
    if args.log_compare:
        from components.app.compare import CompareStore, log_win_rate

        result = CompareStore(args.db, compare, args.seed).result()
        run_id = log_win_rate(result, args.tracking_uri)
        print(f"{result.line()}\nlogged into MLflow run {run_id}")
        return 0
    from components.app.server import default_out_dir, launch, open_pool
    from components.app.ui import AppConfig

    pool = open_pool(args.candidates, args.pool_dir)
    if args.export_ratings:
        if pool is None:
            raise FileNotFoundError("--export-ratings needs --candidates (the windows the database rates)")
        from components.app.rating_store import RatingStore

        out = RatingStore(args.db, pool.window_ids, pool.windows, args.seed).export(args.export_ratings)
        print(out)
        return 0
    cfg = AppConfig(pool=pool, db_path=Path(args.db), out_dir=Path(args.out_dir) if args.out_dir else default_out_dir(),
                    default_model=args.model, tracking_uri=args.tracking_uri, seed=args.seed,
                    max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), compare=compare)
    launch(cfg, args.host, args.port, share=args.share, block=True)
    return 0
