"""Checks on loaded results: required values present, and which sweeps are partial (and why).

A sweep is partial when its runs table shows failed runs, when a variant has fewer seeds than
the sweep's other variants, when a run's metrics lack stages (compared with the planned number
of stages, or the sweep's deepest run), when a run has metrics but no status record (still
running, or killed), or when a run is recorded complete without metrics.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from reports.load import ResultsError

_REQUIRED = ("sweep", "run_key", "seed", "variant", "stage", "task", "metric")


def validate(metrics: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raise :class:`ResultsError` on rows lacking identifying values; normalise dtypes."""
    for col in _REQUIRED:
        if col in metrics and metrics[col].isna().any():
            raise ResultsError(f"metrics records lack values in column {col!r}")
    for col in ("sweep", "run_key", "status"):
        if col in runs and runs[col].isna().any():
            raise ResultsError(f"runs records lack values in column {col!r}")
    metrics = metrics.copy()
    metrics["pair"] = metrics["pair"].fillna("").astype(str)
    metrics["stage"] = metrics["stage"].astype(int)
    metrics["seed"] = metrics["seed"].astype(int)
    metrics["value"] = pd.to_numeric(metrics["value"], errors="coerce").astype(float)
    runs = runs.copy()
    runs["variant"] = runs["variant"].fillna("").astype(str)
    return metrics, runs


def expected_stages(metrics: pd.DataFrame, runs: pd.DataFrame) -> int:
    """Planned stages of a sweep: the runs table's ``num_stages`` or the deepest stage seen."""
    planned = pd.to_numeric(runs.get("num_stages", pd.Series(dtype=float)), errors="coerce")
    deepest = int(metrics["stage"].max()) if not metrics.empty else 0
    return max(deepest, int(planned.max()) if planned.notna().any() else 0)


def partial_reasons(metrics: pd.DataFrame, runs: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """``sweep -> variant -> reasons`` for every partial variant (complete sweeps are absent)."""
    out: dict[str, dict[str, list[str]]] = {}
    sweeps = sorted(set(metrics["sweep"].dropna()) | set(runs["sweep"].dropna()))
    for sweep in sweeps:
        m = metrics[metrics["sweep"] == sweep]
        r = runs[runs["sweep"] == sweep]
        reasons: dict[str, list[str]] = defaultdict(list)
        failed = r[r["status"] != "complete"]
        for variant, g in failed.groupby("variant", sort=True):
            reasons[str(variant)].append(f"{len(g)} failed run{'s' * (len(g) > 1)}")
        pairs = pd.concat([m[["variant", "seed"]], r[["variant", "seed"]]]).dropna()
        seeds = pairs.drop_duplicates().groupby("variant")["seed"].nunique()
        if len(seeds) > 1:
            most = int(seeds.max())
            for variant, k in seeds.items():
                if k < most:
                    reasons[str(variant)].append(f"{k} of {most} seeds")
        n_stages = expected_stages(m, r)
        failed_keys, known_keys = set(failed["run_key"]), set(r["run_key"])
        for (variant, key), g in m.groupby(["variant", "run_key"], sort=True):
            if key in failed_keys:
                continue
            if key not in known_keys:
                seed = int(g["seed"].iloc[0])
                reasons[str(variant)].append(
                    f"run {str(key)[:8]} (seed {seed}) has no status record (still running?)"
                )
                continue
            missing = sorted(set(range(1, n_stages + 1)) - set(g["stage"].astype(int)))
            if missing:
                seed = int(g["seed"].iloc[0])
                reasons[str(variant)].append(
                    f"run {str(key)[:8]} (seed {seed}) lacks stage {','.join(map(str, missing))}"
                )
        done = r[(r["status"] == "complete") & ~r["run_key"].isin(set(m["run_key"]))]
        for variant, g in done.groupby("variant", sort=True):
            reasons[str(variant)].append(f"{len(g)} complete run(s) without metrics")
        if reasons:
            out[sweep] = dict(reasons)
    return out


def describe(partial: dict[str, dict[str, list[str]]], limit: int = 3) -> str:
    """One line naming the partial sweeps and their first reasons."""
    parts = []
    for sweep, variants in partial.items():
        items = [f"{v}: {', '.join(rs)}" for v, rs in variants.items()]
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        parts.append(f"{sweep!r} [{'; '.join(items[:limit])}{more}]")
    return "partial sweep " + ", ".join(parts)
