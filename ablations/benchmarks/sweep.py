"""Section ``sweep``: the same 4-trial sweep through ``ablations/run.py`` at --max-concurrent 1
and 2, and the speed-up (ideal 2). :func:`run_sweep_command` also serves the GPU packing runs."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.benchmarks.common import BenchError, progress, stat, table

__all__ = ["SWEEP_ARGS", "SWEEP_TRIALS", "SweepRun", "run_sweep_command", "section_sweep",
           "sweep_rows"]  # fmt: skip

SWEEP_ARGS = ("--grid", "smoke", "--seeds", "2")  # 2 arms x 2 seeds = 4 trials
SWEEP_TRIALS = 4
RUN_PY = Path(__file__).resolve().parents[1] / "run.py"


@dataclass
class SweepRun:
    """One ``ablations/run.py`` command."""

    wall_s: float  # the whole command (Ray start and shutdown included)
    trial_s: list[float]  # wall_s of each complete run in the Parquet runs table


def run_sweep_command(
    preset_name: str,
    overrides: Sequence[str],
    concurrency: int,
    *,
    gpus: float = 0.0,
    cpus: float = 1.0,
    code_root: Path | None = None,
) -> SweepRun:
    """Run the 4-trial sweep in fresh temporary storage (and a private Ray temp folder), with
    this checkout's code or, with ``code_root``, the code of another checkout."""
    from reports.load import load_results

    storage = Path(tempfile.mkdtemp(prefix="comet-bench-"))
    ray_tmp = tempfile.mkdtemp(prefix="rb")  # short: Ray's socket paths have a length limit
    name = f"bench-c{concurrency}"
    run_py = RUN_PY if code_root is None else code_root / "ablations" / "run.py"
    cmd = [sys.executable, str(run_py), *SWEEP_ARGS, "--preset", preset_name,
           "--max-concurrent", str(concurrency), "--cpus-per-trial", f"{cpus:g}",
           "--gpus-per-trial", f"{gpus:g}", "--storage", str(storage), "--name", name,
           "--fresh", "--set", "train.threads=1"]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"RAY_TMPDIR": ray_tmp}
    if code_root is not None:  # the other checkout's packages come first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(code_root), env.get("PYTHONPATH", "")])
    try:
        with open(storage / "sweep.log", "w") as log:
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
            wall = time.perf_counter() - t0
        if rc != 0:
            lines = (storage / "sweep.log").read_text().strip().splitlines() or ["no output"]
            raise BenchError(
                f"sweep at --max-concurrent {concurrency} failed (exit {rc}): {lines[-1]}"
            )
        _, runs = load_results(storage / name)
        done = runs[runs["status"] == "complete"]
        if len(done) != SWEEP_TRIALS:
            raise BenchError(f"sweep finished {len(done)} of {SWEEP_TRIALS} trials")
        return SweepRun(wall, [float(x) for x in done["wall_s"]])
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def sweep_rows(runs: dict[Any, list[SweepRun]], label: Callable[[Any], str]) -> list[list[object]]:
    rows = []
    for key, rs in runs.items():
        walls = [r.wall_s for r in rs]
        trials = [t for r in rs for t in r.trial_s]
        rows.append([
            label(key), stat(walls), stat(trials), stat([sum(r.trial_s) for r in rs]),
            stat([SWEEP_TRIALS * 3600.0 / w for w in walls]),
        ])  # fmt: skip
    return rows


def section_sweep(args: argparse.Namespace, repeats: int) -> None:
    """The same 4-trial sweep at --max-concurrent 1 and 2; the speed-up (ideal 2)."""
    name = args.sweep_preset or args.preset
    runs: dict[int, list[SweepRun]] = {1: [], 2: []}
    for i in range(repeats):
        for c in runs:
            progress(f"sweep: {SWEEP_TRIALS} trials at --max-concurrent {c} ({i + 1}/{repeats})")
            runs[c].append(run_sweep_command(name, args.overrides, c))
            progress(f"sweep: --max-concurrent {c}: {runs[c][-1].wall_s:.0f} s")
    print(
        f"ablations/run.py {' '.join(SWEEP_ARGS)} --preset {name} --fresh: {SWEEP_TRIALS} "
        f"trials, 1 CPU and train.threads=1 each, fresh storage; n={repeats} (trial wall s: "
        f"wall_s of the Parquet runs table, n={repeats * SWEEP_TRIALS})"
    )
    table(
        ["max-concurrent", "command wall s", "trial wall s", "sum of trial s", "trials/hour"],
        sweep_rows(runs, str),
    )
    w1, w2 = (statistics.median([r.wall_s for r in runs[c]]) for c in (1, 2))
    t1, t2 = (statistics.median([t for r in runs[c] for t in r.trial_s]) for c in (1, 2))
    print(
        f"speed-up wall(1)/wall(2) = {w1 / w2:.2f} (ideal 2.00); per-trial slowdown "
        f"trial(2)/trial(1) = {t2 / t1:.2f} (ideal 1.00)"
    )
