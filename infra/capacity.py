"""Capacity of the cluster profiles, measured by the meta-device dry run (components/dryrun/), not estimated.

    python -m infra.capacity [--write] [--gpus 8] [--mfu 0.40]

Runs `talkalign dryrun` for params.wan.yaml (Wan2.1-I2V-14B) and params.wan13b.yaml (I2V-layout 1.3B) and prints
the capacity section; --write puts it between the capacity markers of infra/README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.config import load_params
from components.dryrun.report import Hardware
from components.dryrun.run import capacity_section, dry_run, write_capacity

REPO = Path(__file__).resolve().parents[1]
PROFILES = (("params.wan.yaml", "Wan2.1-I2V-14B-480P (params.wan.yaml)"),
            ("params.wan13b.yaml", "I2V-layout Wan2.1 1.3B, e.g. Wan2.1-Fun-1.3B-InP (params.wan13b.yaml)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the section into infra/README.md")
    parser.add_argument("--gpus", type=int, default=Hardware.gpus)
    parser.add_argument("--mfu", type=float, default=Hardware.mfu)
    args = parser.parse_args()
    hw = Hardware(gpus=args.gpus, mfu=args.mfu)
    runs = []
    for file, title in PROFILES:
        params = load_params(REPO / file)
        runs.append((title, params, dry_run(params, gpus=args.gpus, profile=file)))
    section = capacity_section(runs, hw)
    print(section)
    if args.write:
        write_capacity(REPO / "infra" / "README.md", section)


if __name__ == "__main__":
    main()
