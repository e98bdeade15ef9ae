"""The paper's study in one command: ``python ablations/study.py``.

Runs, one after the other, the sweeps behind the README's results and then builds the report:

- ``ablations`` (paper Table 6, with its extra rows), 5 seeds;
- ``methods`` (paper Table 1, with its controls), 5 seeds;
- ``experts`` (the expert-count curve, paper Fig. 2), 3 seeds;
- ``headline`` on the "overlap" class plan (COMET vs DCID when stages see different digits),
  5 seeds (the full plan's comparison is inside ``methods``).

Every sweep is an ordinary ``ablations/run.py`` sweep (same storage, names ``<grid>-<preset>``),
so running the command again resumes where it stopped; the report is ``reports/build.py`` over
the storage folder. Prints the wall time of each sweep and of the whole study.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from comet_model._cli import OneLineParser, positive_int
from comet_model._util import atomic_write_text

#: (grid, seeds, --set overrides, sweep name suffix) of the study, in order.
STUDY: tuple[tuple[str, int, tuple[str, ...], str], ...] = (
    ("ablations", 5, (), ""),
    ("methods", 5, (), ""),
    ("experts", 3, (), ""),
    ("headline", 5, ("data.class_plan=overlap",), "-overlap"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line (errors: one line, exit status 2)."""
    p = OneLineParser(prog="ablations/study.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--preset", choices=["smoke", "default", "paper"], default="default")
    p.add_argument("--storage", type=Path, default=Path("results"), help="results root")
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder")
    p.add_argument("--max-concurrent", type=positive_int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every sweep (repeatable)")  # fmt: skip
    p.add_argument("--only", default="", help="comma list of grids to run (default: all)")
    p.add_argument("--no-report", action="store_true", help="run the sweeps only")
    return p


def sweep_args(args: argparse.Namespace, grid: str, seeds: int, sets: Sequence[str],
               suffix: str) -> list[str]:  # fmt: skip
    """The ``ablations/run.py`` arguments of one sweep of the study."""
    argv = ["--grid", grid, "--seeds", str(seeds), "--preset", args.preset,
            "--storage", str(args.storage), "--name", f"{grid}-{args.preset}{suffix}"]  # fmt: skip
    if args.max_concurrent:
        argv += ["--max-concurrent", str(args.max_concurrent)]
    for item in (*sets, *args.set):
        argv += ["--set", item]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study's sweeps, then the report; the exit status of the first failure."""
    from ablations import run
    from reports import build

    args = build_parser().parse_args(argv)
    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - {grid for grid, *_ in STUDY}
    if unknown:
        print(f"error: --only: unknown grid {sorted(unknown)[0]!r}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    walls = []
    for grid, seeds, sets, suffix in STUDY:
        if only and grid not in only:
            continue
        tick = time.perf_counter()
        status = run.main(sweep_args(args, grid, seeds, sets, suffix))
        walls.append((f"{grid}{suffix}", time.perf_counter() - tick))
        print(f"study: {grid}{suffix} finished in {walls[-1][1] / 60:.1f} min (exit {status})",
              file=sys.stderr)  # fmt: skip
        if status != 0:
            return status
    if not args.no_report:
        status = build.main(["--results", str(args.storage), "--out", str(args.out)])
        if status != 0:
            return status
    total = time.perf_counter() - t0
    if not only:  # the whole study: its times for ablations/bench.py --sections study
        record = {"when": time.strftime("%Y-%m-%d %H:%M"), "preset": args.preset,
                  "total_s": total, "sweeps_s": dict(walls)}  # fmt: skip
        atomic_write_text(args.storage / "study.json", json.dumps(record, indent=2) + "\n")
    print("study wall times: " + ", ".join(f"{n} {w / 60:.1f} min" for n, w in walls)
          + f"; total {total / 60:.1f} min")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
