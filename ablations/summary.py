"""End-of-sweep summary: per arm, the final-stage objective over seeds, and what is missing."""

from __future__ import annotations

import re
import sys


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: experts=2 before experts=10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))


def print_summary(outcome) -> None:
    """Print the sweep's final-stage results per variant and the completeness verdict."""
    from reports.load import ResultsError, load_results

    print(f"\nsweep results: {outcome.exp_dir / 'records'}")
    try:
        metrics, _ = load_results(outcome.exp_dir)
    except ResultsError:
        metrics = None
    if metrics is not None and not metrics.empty:
        last = metrics[metrics["stage"] == metrics["stage"].max()]
        obj = last[last["task"] == "objective"]
        if not obj.empty:
            table = obj.groupby("variant", observed=True)["value"].agg(["mean", "std", "count"])
            table = table.loc[sorted(table.index, key=natural_key)]
            print("final-stage objective (mean of unseen-pair metrics) per variant:")
            for variant, row in table.iterrows():
                std = 0.0 if row["count"] < 2 else row["std"]
                print(f"  {variant:<24} {row['mean']:.3f} +- {std:.3f}  (n={int(row['count'])})")
    print(
        f"runs: {len(outcome.complete)}/{outcome.expected} complete, {len(outcome.failed)} failed, "
        f"{outcome.missing} missing; wall {outcome.wall_s / 60:.1f} min"
    )
    for key, error in outcome.failed.items():
        print(f"  failed run {key}: {error}", file=sys.stderr)
