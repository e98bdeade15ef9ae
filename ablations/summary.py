"""End-of-sweep summary: per arm, the final-stage objective over seeds, and what is missing."""

from __future__ import annotations

import re
import sys


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: experts=2 before experts=10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))


def _objective_table(metrics):
    """Per variant: mean, std and n of the final-stage objective on each split."""
    last = metrics[metrics["stage"] == metrics["stage"].max()]
    obj = last[last["task"] == "objective"]
    if obj.empty:
        return None
    table = obj.pivot_table(index="variant", columns="split", values="value",
                            aggfunc=["mean", "std", "count"], observed=True)  # fmt: skip
    return table.loc[sorted(table.index, key=natural_key)]


def print_summary(outcome) -> None:
    """Print the sweep's final-stage objective per variant (validation chooses, test reports)
    and the completeness verdict."""
    from reports.load import ResultsError, load_results

    print(f"\nsweep results: {outcome.exp_dir / 'records'}")
    try:
        metrics, _ = load_results(outcome.exp_dir)
    except ResultsError:
        metrics = None
    table = None if metrics is None or metrics.empty else _objective_table(metrics)
    if table is not None:
        splits = [s for s in ("val", "test") if ("mean", s) in table.columns]
        print("final-stage objective (mean of unseen-pair metrics) per variant, mean +- std (n);")
        print("choose on val, report test:")
        for variant, row in table.iterrows():
            cells = []
            for split in splits:
                n = row[("count", split)]
                std = 0.0 if not n or n < 2 else row[("std", split)]
                cells.append(f"{split} {row[('mean', split)]:7.3f} +- {std:.3f} (n={int(n or 0)})")
            print(f"  {variant:<24} " + "   ".join(cells))
    print(
        f"runs: {len(outcome.complete)}/{outcome.expected} complete, {len(outcome.failed)} failed, "
        f"{outcome.missing} missing; wall {outcome.wall_s / 60:.1f} min"
    )
    for key, error in outcome.failed.items():
        print(f"  failed run {key}: {error}", file=sys.stderr)
