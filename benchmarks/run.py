"""`make bench`: print throughput figures and ratios as a table.

    python -m benchmarks.run [data] [model] [preference]
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from benchmarks.data import bench_data
from benchmarks.model import bench_model
from benchmarks.preference import bench_preference

BENCHMARKS = {"data": bench_data, "model": bench_model, "preference": bench_preference}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    table = Table(title="talkalign benchmarks (this machine)")
    for column in ("group", "figure", "value", "ratio"):
        table.add_column(column)
    for name in names:
        for figure, value, ratio in BENCHMARKS[name]():
            table.add_row(name, figure, f"{value:,.2f}", ratio)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
