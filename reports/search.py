"""The Optuna search sweep: best configurations and parameter importances from the Parquet runs.

The harness's Optuna study lives in Ray's driver and is gone when the sweep ends; the records
hold every trial's resolved config and per-stage objective, so an in-memory study is rebuilt from
them (``create_trial`` per run) and handed to ``optuna.importance.get_param_importances``.
Distributions are rebuilt from the observed values: integers become a categorical over the
values seen, floats a range over [min, max] (log scale for the parameters searched on a log
scale, or for positive ranges spanning 20x or more).
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from reports.cells import Cell
from reports.tables import Table
from search_spaces.axes import by_column
from search_spaces.optuna_space import SEARCHED as SEARCHED_COLUMNS

#: Searched flat config keys -> the results axis holding the same value (fallback).
SEARCHED: dict[str, str] = {by_column()[c].key: c for c in SEARCHED_COLUMNS}
LOG_SCALE = {by_column()[c].key for c in SEARCHED_COLUMNS if by_column()[c].scale == "log"}
MIN_TRIALS = 5  # below this the importances are noise: report it instead


def search_trials(metrics: pd.DataFrame, runs: pd.DataFrame, final_stage: int) -> pd.DataFrame:
    """One row per search run with its final-stage objective and its searched parameters."""
    obj = metrics[(metrics["task"] == "objective") & (metrics["stage"] == final_stage)]
    obj = obj.groupby("run_key", sort=True).agg(seed=("seed", "first"), objective=("value", "mean"))
    configs = {
        str(k): json.loads(c) if isinstance(c, str) and c else {}
        for k, c in zip(runs["run_key"], runs["config_json"], strict=True)
    }
    first = metrics.drop_duplicates("run_key").set_index("run_key")
    rows = []
    for key, row in obj.iterrows():
        cfg = configs.get(str(key), {})
        rec = {"run_key": str(key), "seed": int(row["seed"]), "objective": float(row["objective"])}
        for param, axis in SEARCHED.items():
            value = cfg.get(param, first.at[key, axis] if axis in first.columns else math.nan)
            rec[param] = math.nan if value is None else value
        rows.append(rec)
    out = pd.DataFrame(rows, columns=["run_key", "seed", "objective", *SEARCHED])
    out = out[out["objective"].map(lambda v: math.isfinite(v))]
    return out.sort_values(["objective", "run_key"], ascending=[False, True]).reset_index(drop=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "\u2013" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def top_table(trials: pd.DataFrame, *, name: str, title: str, k: int = 5) -> Table:
    """The ``k`` best trials by final-stage objective with their searched parameters."""
    best = trials.head(k).reset_index(drop=True)
    header = [("objective",), *((p,) for p in SEARCHED), ("run",), ("seed",)]
    cells = [
        [Cell(x) for x in (f"{r['objective']:.2f}", *(_fmt(r[p]) for p in SEARCHED),
                           r["run_key"][:8], str(r["seed"]))]
        for _, r in best.iterrows()
    ]  # fmt: skip
    best.insert(0, "rank", range(1, len(best) + 1))
    notes = [f"{len(trials)} finished trials; objective = mean of unseen-pair metrics."]
    return Table(name, title, header, [str(i + 1) for i in range(len(best))], cells, best,
                 row_header="Rank", notes=notes)  # fmt: skip


def _distributions(trials: pd.DataFrame, params: Sequence[str]) -> dict[str, object]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists: dict[str, object] = {}
    for p in params:
        vals = trials[p].tolist()
        if all(isinstance(v, numbers.Integral) for v in vals):
            dists[p] = CategoricalDistribution(sorted({int(v) for v in vals}))
            continue
        lo, hi = float(min(vals)), float(max(vals))
        log = lo > 0 and (p in LOG_SCALE or hi / lo >= 20)
        dists[p] = FloatDistribution(lo, hi, log=log)
    return dists


def importances(trials: pd.DataFrame) -> tuple[dict[str, float] | None, str]:
    """Optuna's default-evaluator importances of the searched parameters, or why there are none."""
    params = [p for p in SEARCHED if trials[p].map(is_number).all()]
    n = len(trials)
    if n < MIN_TRIALS:
        return None, (
            f"too few finished trials for parameter importances ({n}; need at least {MIN_TRIALS})"
        )
    if not params:
        return None, "no searched parameter has a value in every trial"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = _distributions(trials, params)
    study = optuna.create_study(direction="maximize")
    for _, row in trials.iterrows():
        values = {p: _native(row[p], dists[p]) for p in params}
        study.add_trial(
            optuna.trial.create_trial(
                params=values, distributions=dists, value=float(row["objective"])
            )
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        return None, f"parameter importances unavailable: {exc}"
    return {k: float(v) for k, v in result.items()}, (
        f"optuna {optuna.__version__} get_param_importances (default evaluator) over {n} "
        "trials rebuilt from the records; normalised to sum 1"
    )


def importance_table(imps: Mapping[str, float], *, name: str, title: str, note: str) -> Table:
    """Parameter importances as a one-column table (largest first)."""
    items = sorted(imps.items(), key=lambda kv: -kv[1])
    data = pd.DataFrame(items, columns=["param", "importance"])
    return Table(name, title, [("importance",)], [k for k, _ in items],
                 [[Cell(f"{v:.3f}")] for _, v in items], data, row_header="Parameter",
                 notes=[note])  # fmt: skip


def is_number(v: object) -> bool:
    """A finite real number (not a bool): a usable parameter value."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def _native(value: object, dist: object) -> object:
    from optuna.distributions import CategoricalDistribution

    return int(value) if isinstance(dist, CategoricalDistribution) else float(value)
