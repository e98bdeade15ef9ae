"""Read the harness's Parquet records, validate them and drop duplicates (newest row wins)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from reports.provenance import fill_provenance
from reports.schema import METRIC_KEY, METRICS_SCHEMA, RUN_KEY, RUNS_SCHEMA


class ResultsError(ValueError):
    """A missing, empty or unreadable results folder (one-line message)."""


def _read(folder: Path, schema: pa.Schema) -> pd.DataFrame:
    files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in schema.names})
    try:
        table = ds.dataset([str(p) for p in files], format="parquet", schema=schema).to_table()
    except (pa.ArrowException, OSError) as exc:
        raise ResultsError(f"{folder}: unreadable Parquet records ({exc})") from None
    return table.to_pandas()


def _experiment_dirs(results: Path) -> list[Path]:
    if (results / "records").is_dir():
        return [results]
    return sorted(p.parent for p in results.glob("*/records") if p.is_dir())


def load_results(results: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(metrics, runs)`` for every sweep under ``results``, deduplicated.

    ``results`` is one experiment folder (holding ``records/``) or a folder of them.
    """
    results = Path(results)
    if not results.exists():
        raise ResultsError(f"{results}: results folder does not exist")
    if not results.is_dir():
        raise ResultsError(f"{results}: is a file, expected a results folder")
    dirs = _experiment_dirs(results)
    if not dirs:
        raise ResultsError(f"{results}: no sweep records found (expected */records/)")
    metrics = pd.concat(
        [_read(d / "records" / "metrics", METRICS_SCHEMA) for d in dirs], ignore_index=True
    )
    runs = pd.concat([_read(d / "records" / "runs", RUNS_SCHEMA) for d in dirs], ignore_index=True)
    if metrics.empty and runs.empty:
        raise ResultsError(f"{results}: results folder holds no records")
    if "split" in metrics:  # records from before the split column are test measurements
        metrics["split"] = metrics["split"].fillna("test")
    metrics = (
        metrics.sort_values("recorded_at", kind="stable")
        .drop_duplicates(list(METRIC_KEY), keep="last")
        .reset_index(drop=True)
    )
    runs = (
        runs.sort_values("recorded_at", kind="stable")
        .drop_duplicates(list(RUN_KEY), keep="last")
        .reset_index(drop=True)
    )
    return metrics, fill_provenance(runs)  # records from before provenance read as "unknown"
