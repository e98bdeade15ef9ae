"""Sections ``throughput`` and ``study``: trials per minute against earlier code, and the full
study's projected wall time.

``throughput``: the same 4-trial default-preset sweep (``sweep``'s) at --max-concurrent 2 (the
best concurrency on 2 cores, section ``sweep``), run alternately with this checkout's code and
with the code of ``--baseline`` (a git revision, checked out into a temporary worktree), in the
same run; trials per minute of each and their ratio (new / old).

``study``: the number of trials of ``ablations/study.py`` (Table 6 and Table 1 at 5 seeds with
their extra rows, the expert-count curve at 3 seeds, the overlap-plan headline at 5 seeds), the
projected wall time from a 4-trial sweep measured here (its trials' mean wall at 2 concurrent
per trained trial, plus its per-sweep cost once per sweep of the study: :func:`project_study`),
and the measured wall time of a study run whose storage ``--study-storage`` names
(``study.json``, written by the study).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from ablations.benchmarks.common import BenchError, progress, stat, table
from ablations.benchmarks.sweep import SWEEP_ARGS, SWEEP_TRIALS, SweepRun, run_sweep_command

__all__ = [
    "BASELINE_REF",
    "STUDY_CONCURRENCY",
    "project_study",
    "section_study",
    "section_throughput",
    "study_copies",
    "study_trials",
    "sweep_overhead",
    "trial_slot",
]

#: The code before the performance work of this round (the last commit before it).
BASELINE_REF = "6c70361"
ROOT = Path(__file__).resolve().parents[2]


def _checkout(ref: str) -> Path:
    """A temporary worktree of ``ref`` of this checkout's repository."""
    tmp = Path(tempfile.mkdtemp(prefix="comet-base-"))
    cmd = ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tmp), ref]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (out.stderr.strip().splitlines() or ["git failed"])[-1]
        raise BenchError(f"--baseline {ref}: cannot check it out ({last})")
    return tmp


def _remove(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                   capture_output=True, timeout=120)  # fmt: skip
    shutil.rmtree(tree, ignore_errors=True)


def section_throughput(args: argparse.Namespace, repeats: int) -> None:
    """Trials per minute of this code and of ``--baseline`` on the same sweep, alternating."""
    name = args.sweep_preset or args.preset
    base = _checkout(args.baseline)
    walls: dict[str, list[float]] = {"baseline": [], "this code": []}
    try:
        for i in range(repeats):
            for label, root in (("baseline", base), ("this code", None)):
                progress(f"throughput: {label}, {SWEEP_TRIALS} trials ({i + 1}/{repeats})")
                walls[label].append(
                    run_sweep_command(name, args.overrides, 2, code_root=root).wall_s
                )
                progress(f"throughput: {label}: {walls[label][-1]:.0f} s")
    finally:
        _remove(base)
    per_min = {k: [SWEEP_TRIALS * 60.0 / w for w in v] for k, v in walls.items()}
    ratios = [n / o for n, o in zip(per_min["this code"], per_min["baseline"], strict=True)]
    print(f"ablations/run.py {' '.join(SWEEP_ARGS)} --preset {name} --max-concurrent 2 "
          f"--fresh: {SWEEP_TRIALS} trials, 1 CPU and 1 thread each; baseline = git revision "
          f"{args.baseline}; alternating runs, n={repeats} each")  # fmt: skip
    table(["code", "command wall s", "trials/min"],
          [[k, stat(walls[k]), stat(per_min[k])] for k in walls])  # fmt: skip
    print(f"trials per minute, this code / baseline: {stat(ratios)}")


STUDY_CONCURRENCY = 2  # ablations/study.py's default on 2 cores


def sweep_overhead(run: SweepRun, concurrency: int = STUDY_CONCURRENCY) -> float:
    """Seconds of a sweep's wall not spent running trials at ``concurrency`` (Ray start and
    shutdown, set-up, the idle slot of an uneven last wave): its wall minus the trials' summed
    wall over ``concurrency``, floored at 0."""
    return max(0.0, run.wall_s - sum(run.trial_s) / concurrency)


def trial_slot(run: SweepRun, concurrency: int = STUDY_CONCURRENCY) -> float:
    """Wall seconds one trial of the sweep occupies at ``concurrency``: its mean wall over it."""
    return statistics.fmean(run.trial_s) / concurrency


def project_study(
    run: SweepRun, *, trained: int, sweeps: int, concurrency: int = STUDY_CONCURRENCY
) -> float:
    """Projected study wall seconds from one measured sweep: ``sweeps`` times its per-sweep cost
    (:func:`sweep_overhead`) plus ``trained`` trials of :func:`trial_slot`.

    A plain ``trained x wall / trials`` counts a small sweep's fixed cost once per trial;
    the study pays it once per sweep.
    """
    return sweeps * sweep_overhead(run, concurrency) + trained * trial_slot(run, concurrency)


def study_trials() -> dict[str, int]:
    """Trials of every sweep of ``ablations/study.py``."""
    from ablations.study import STUDY
    from search_spaces.grids import grid_arms

    return {f"{g}{suffix}": len(grid_arms(g)) * seeds for g, seeds, _, suffix in STUDY}


def study_copies(preset: str) -> dict[str, int]:
    """Per sweep of the study at ``preset``, how many of its runs an earlier sweep of the study
    already holds (same run key: copied, not trained, by ``ablations/reuse.py``)."""
    from ablations.study import STUDY
    from ablations.sweep import SweepSpec, planned_runs
    from comet_model.config import parse_override
    from comet_model.config import preset as get_preset
    from search_spaces.grids import get_grid

    seen: set[str] = set()
    out = {}
    cfg = get_preset(preset)
    for grid, seeds, sets, suffix in STUDY:
        base = dict(parse_override(item, cfg) for item in sets)
        spec = SweepSpec(name=f"{grid}{suffix}", preset=preset, seeds=tuple(range(seeds)),
                         arms=get_grid(grid), base=base)  # fmt: skip
        keys = [str(r["run_key"]) for r in planned_runs(spec)]
        out[spec.name] = sum(k in seen for k in keys)
        seen |= set(keys)
    return out


def section_study(args: argparse.Namespace, repeats: int) -> None:
    """The study's trial count, projected wall time and (if recorded) measured wall time."""
    name = args.sweep_preset or args.preset
    counts = study_trials()
    runs = []
    for i in range(repeats):
        progress(f"study: a {SWEEP_TRIALS}-trial sweep to project from ({i + 1}/{repeats})")
        runs.append(run_sweep_command(name, args.overrides, STUDY_CONCURRENCY))
    total = sum(counts.values())
    copies = study_copies(name)
    trained = total - sum(copies.values())
    sweeps = len(counts)
    print(
        f"ablations/study.py: {total} trials ({', '.join(f'{k} {v}' for k, v in counts.items())})"
        f", {total - trained} of them copied from an earlier sweep of the study "
        f"({', '.join(f'{k} {v}' for k, v in copies.items() if v)}), {trained} trained, in "
        f"{sweeps} sweeps; projected from a {SWEEP_TRIALS}-trial sweep at --max-concurrent "
        f"{STUDY_CONCURRENCY}, n={repeats}, counting the trained ones"
    )
    plain = [trained * r.wall_s / SWEEP_TRIALS / 60.0 for r in runs]
    split = [project_study(r, trained=trained, sweeps=sweeps) / 60.0 for r in runs]
    rows = [
        ["projected study wall min (per-sweep cost apart)", stat(split)],
        [f"  the {SWEEP_TRIALS}-trial sweep's wall per trial x trained", stat(plain)],
    ]
    record = Path(args.study_storage) / "study.json" if args.study_storage else None
    if record is not None and record.is_file():
        done = json.loads(record.read_text())
        calls = done.get("invocations_per_step", {})
        most = max(calls.values(), default=1)
        over = f", over {most} invocations" if most > 1 else ""
        rows.append([f"measured study wall min ({done.get('when', '')}{over})",
                     f"{done['total_s'] / 60.0:.1f}"])  # fmt: skip
        rows += [[f"  {k}" + (f" ({calls[k]} invocations)" if calls.get(k, 1) > 1 else ""),
                  f"{v / 60.0:.1f}"] for k, v in done.get("sweeps_s", {}).items()]  # fmt: skip
    elif record is not None:
        rows.append(["measured study wall min", f"no {record}"])
    table(["what", "minutes"], rows)
    per_trial = [r.wall_s / SWEEP_TRIALS for r in runs]
    overhead = [sweep_overhead(r) for r in runs]
    slot = [trial_slot(r) for r in runs]
    print(f"wall seconds per trial at {STUDY_CONCURRENCY} concurrent: {stat(per_trial)}; "
          f"of the sweep: trials {stat(slot)} s each at {STUDY_CONCURRENCY} concurrent "
          f"(their own wall over {STUDY_CONCURRENCY}), per-sweep cost (Ray start and stop, "
          f"the last wave's idle slot) {stat(overhead)} s")  # fmt: skip
