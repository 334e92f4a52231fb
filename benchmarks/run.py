"""`make bench`: print throughput figures and ratios as a table.

    python -m benchmarks.run [data] [extractor] [model] [preference]

Every timed row is the median of >= 5 repeats after a warm-up, with the min and max (benchmarks/timing.py); ratios
compare two sides timed interleaved in one process. A row whose spread (max - min) / median exceeds 30 % says it is
too noisy to read: rerun on an idle machine before quoting it.

Threads: BENCH_THREADS (default 1) for torch and every worker process. On a box shared with other jobs, two
OpenMP threads wait at every parallel region for a thread the scheduler has parked, which made single steps up to
100x slower than on an idle box (measured 2026-12-04): one thread gives figures that can be compared.
"""

from __future__ import annotations

import math
import os
import sys

from rich.console import Console
from rich.table import Table

from benchmarks.data import bench_data
from benchmarks.extractor import bench_extractor
from benchmarks.model import bench_model
from benchmarks.preference import bench_preference
from benchmarks.timing import MAX_SPREAD, Row, value_row

BENCHMARKS = {"data": bench_data, "extractor": bench_extractor, "model": bench_model, "preference": bench_preference}


def _number(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def as_row(row: Row | tuple[str, float, str]) -> Row:
    """Rows of modules that time themselves (figure, value, note) are shown as single values."""
    return row if isinstance(row, Row) else value_row(*row)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}: choose from {list(BENCHMARKS)}")
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # worker processes (benchmarks/preference.py) inherit it
    import torch

    torch.set_num_threads(threads)
    table = Table(title=f"talkalign benchmarks (this machine): median of repeats [min, max]; spread > {MAX_SPREAD:.0%} "
                        f"= too noisy to read; {threads} thread(s)")
    for column in ("group", "figure", "median", "min", "max", "n", "readable", "note"):
        table.add_column(column)
    noisy = 0
    for name in names:
        for row in map(as_row, BENCHMARKS[name]()):
            s = row.samples
            cells = (_number(s.lo), _number(s.hi), str(len(s.values))) if s else ("", "", "1")
            noisy += bool(s and not s.readable)
            table.add_row(name, row.figure, _number(row.value), *cells, row.verdict, row.note)
    console = Console(width=200)
    console.print(table)
    if noisy:
        console.print(f"{noisy} row(s) too noisy to read: the machine was busy; rerun on an idle one before quoting them.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
