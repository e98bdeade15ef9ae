"""The paper's study in one command: ``python ablations/study.py``.

Runs, one after the other, the sweeps behind the README's results and then builds the report:

- ``ablations`` (paper Table 6, with its extra rows), 5 seeds;
- ``methods`` (paper Table 1, with its controls), 5 seeds;
- ``experts`` (the expert-count curve, paper Fig. 2), 3 seeds;
- ``headline`` on the "overlap" class plan (COMET vs DCID when stages see different digits),
  5 seeds (the full plan's comparison is inside ``methods``).

Every sweep is an ordinary ``ablations/run.py`` sweep (same storage, names ``<grid>-<preset>``),
so running the command again resumes where it stopped; the report is ``reports/build.py`` over
the storage folder. Prints the wall time of each sweep and of the whole study, and keeps them in
``<storage>/study.json``, summed over the invocations of a resumed study.
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
    p.add_argument("--no-reuse", action="store_true",
                   help="train every run (by default a run an earlier sweep of the study "
                   "finished with the same config and seed is copied)")  # fmt: skip
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
    return argv + (["--no-reuse"] if args.no_reuse else [])


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
    record = _StudyRecord(args.storage / "study.json", args.preset) if not only else None
    for grid, seeds, sets, suffix in STUDY:
        if only and grid not in only:
            continue
        tick = time.perf_counter()
        status = run.main(sweep_args(args, grid, seeds, sets, suffix))
        walls.append((f"{grid}{suffix}", time.perf_counter() - tick))
        print(f"study: {grid}{suffix} finished in {walls[-1][1] / 60:.1f} min (exit {status})",
              file=sys.stderr)  # fmt: skip
        if record is not None:
            record.add(*walls[-1])
        if status != 0:
            return status
    if not args.no_report:
        tick = time.perf_counter()
        status = build.main(["--results", str(args.storage), "--out", str(args.out)])
        if status != 0:
            return status
        if record is not None:
            record.add("report", time.perf_counter() - tick)
    total = time.perf_counter() - t0
    print("study wall times: " + ", ".join(f"{n} {w / 60:.1f} min" for n, w in walls)
          + f"; total {total / 60:.1f} min")  # fmt: skip
    if record is not None and record.invocations > 1:
        print(f"study: {record.total_s / 60:.1f} min over {record.invocations} invocations "
              f"(in {record.path})")  # fmt: skip
    return 0


class _StudyRecord:
    """``study.json``: the wall seconds of every step of the whole study, summed over the
    invocations that ran it (a resume adds its time to the earlier runs'), written after every
    step, for ``ablations/bench.py --sections study``. A step killed mid-way is not counted
    (its runs' time is lost to the record, not to the results)."""

    def __init__(self, path: Path, preset: str) -> None:
        self.path = path
        old = json.loads(path.read_text()) if path.is_file() else {}
        same = old.get("preset") == preset and isinstance(old.get("sweeps_s"), dict)
        self.steps: dict[str, float] = dict(old["sweeps_s"]) if same else {}
        self.calls: dict[str, int] = dict(old.get("invocations_per_step", {})) if same else {}
        self.preset = preset

    @property
    def total_s(self) -> float:
        return sum(self.steps.values())

    @property
    def invocations(self) -> int:
        return max(self.calls.values(), default=0)

    def add(self, step: str, seconds: float) -> None:
        self.steps[step] = self.steps.get(step, 0.0) + seconds
        self.calls[step] = self.calls.get(step, 0) + 1
        done = {"when": time.strftime("%Y-%m-%d %H:%M"), "preset": self.preset,
                "total_s": self.total_s, "sweeps_s": self.steps,
                "invocations_per_step": self.calls}  # fmt: skip
        atomic_write_text(self.path, json.dumps(done, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
