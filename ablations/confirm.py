"""The confirmation of an Optuna search: its best configuration rerun on new seeds.

The search chooses on a validation metric (``val/objective`` unless ``--select-on-test``); the
best trial's searched values are then rerun as a one-arm grid sweep ``<search>-confirm`` over
``--confirm-seeds`` seeds that the search did not use, and the report shows that sweep's test
metrics as "chosen on validation, reported on test".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ablations.sweep import SweepError, SweepSpec

__all__ = ["CONFIRM_ARM", "best_trial", "confirm_spec"]

CONFIRM_ARM = "search-best"


def best_trial(exp_dir: Path, metric: str, mode: str) -> tuple[str, dict[str, object], float]:
    """``(run_key, searched overrides, value)`` of the search's best complete run on ``metric``
    at the final stage, read from the harness's records."""
    from reports.load import load_results
    from reports.schema import split_metric_key, split_of
    from search_spaces.axes import by_column
    from search_spaces.optuna_space import SEARCHED

    metrics, runs = load_results(exp_dir)
    split, plain = split_of(metric)
    task, pair, name = split_metric_key(plain)
    done = set(runs.loc[runs["status"] == "complete", "run_key"])
    rows = metrics[(metrics["split"] == split) & (metrics["task"] == task)
                   & (metrics["pair"] == pair) & (metrics["metric"] == name)
                   & metrics["run_key"].isin(done)]  # fmt: skip
    rows = rows[rows["stage"] == rows["stage"].max()]
    values = {k: float(v) for k, v in zip(rows["run_key"], rows["value"], strict=True)}
    values = {k: v for k, v in values.items() if math.isfinite(v)}
    if not values:
        raise SweepError(f"search in {exp_dir}: no complete run has a finite {metric}")
    best = (max if mode == "max" else min)(values, key=values.get)
    config = json.loads(runs.loc[runs["run_key"] == best, "config_json"].iloc[-1])
    searched = {by_column()[c].key: config[by_column()[c].key] for c in SEARCHED}
    return best, searched, values[best]


def confirm_spec(search: SweepSpec, exp_dir: Path, seeds: int) -> SweepSpec:
    """The confirmation sweep of ``search`` (seeds after the search's own seed)."""
    _, searched, _ = best_trial(exp_dir, search.metric, search.mode)
    first = search.seeds[0] + 1  # the search itself runs on its first seed only
    return SweepSpec(
        name=f"{search.name}-confirm",
        preset=search.preset,
        seeds=tuple(range(first, first + seeds)),
        arms={CONFIRM_ARM: {"comet": True, **searched}},
        base=dict(search.base),
        search="grid",
        metric=search.metric,
        mode=search.mode,
    )
