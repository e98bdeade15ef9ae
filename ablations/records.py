"""Write the harness's tidy Parquet records (schema in :mod:`reports.schema`).

Every file is written atomically (a dot-prefixed temp name, then ``os.replace``), so a reader
never sees half a file and a driver or trial killed mid-write leaves nothing behind that counts.
Layout under an experiment folder::

    records/metrics/<run_key>-s<stage>-<ns>.parquet   one per finished trial stage
    records/runs/<run_key>-<ns>.parquet               one per run status change

Duplicates (a stage recomputed after a crash, a trial relaunched under a new Ray id) are
expected and harmless: readers keep the newest row per key (``reports.load``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from comet_model._util import atomic_path
from reports.schema import (
    AXES,
    METRICS_SCHEMA,
    PROVENANCE,
    RUNS_SCHEMA,
    split_metric_key,
    split_of,
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _atomic_write(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _axes_values(axes: Mapping[str, object]) -> dict[str, object]:
    unknown = set(axes) - set(AXES)
    if unknown:
        raise ValueError(f"unknown result axes {sorted(unknown)}; known: {sorted(AXES)}")
    return {name: axes.get(name) for name in AXES}


def write_stage_metrics(
    root: Path,
    *,
    sweep: str,
    run_key: str,
    seed: int,
    trial_id: str,
    attempt: int,
    axes: Mapping[str, object],
    stage: int,
    stage_name: str,
    metrics: Mapping[str, float],
) -> Path:
    """Write the metrics of one finished stage of one run; returns the file written."""
    base = {"sweep": sweep, "run_key": run_key, "seed": seed, "trial_id": trial_id}
    base |= {"attempt": attempt, **_axes_values(axes), "stage": stage, "stage_name": stage_name}
    now = _now()
    rows = []
    for key in sorted(metrics):
        split, plain = split_of(key)
        task, pair, metric = split_metric_key(plain)
        rows.append(base | {"split": split, "task": task, "pair": pair, "metric": metric,
                            "value": float(metrics[key])})  # fmt: skip
        rows[-1]["recorded_at"] = now
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    path = Path(root) / "records" / "metrics" / f"{run_key}-s{stage}-{time.time_ns()}.parquet"
    _atomic_write(table, path)
    return path


def recorded_stages(root: Path, run_key: str) -> set[int]:
    """The stages of ``run_key`` whose metrics the records under ``root`` hold (from the file
    names :func:`write_stage_metrics` gives; temporary dot files do not count)."""
    found = set()
    for path in (Path(root) / "records" / "metrics").glob(f"{run_key}-s*-*.parquet"):
        stage = path.name[len(run_key) + 2 :].split("-", 1)[0]
        if stage.isdigit() and not path.name.startswith("."):
            found.add(int(stage))
    return found


def write_run(
    root: Path,
    *,
    sweep: str,
    run_key: str,
    seed: int,
    trial_id: str,
    axes: Mapping[str, object],
    status: str,
    stages_done: int,
    num_stages: int,
    config: Mapping[str, object],
    error: str = "",
    wall_s: float = float("nan"),
    selected_on: str = "",
    provenance: Mapping[str, object] | None = None,
    reused_from: str = "",
) -> Path:
    """Record a run's status (``complete`` or ``failed``) with its full resolved config and its
    ``provenance`` (``reports.schema.PROVENANCE`` columns; missing ones are written null);
    ``reused_from``: the donor sweep of a copied run (:mod:`ablations.reuse`)."""
    row = {"sweep": sweep, "run_key": run_key, "seed": seed, "trial_id": trial_id}
    row |= _axes_values(axes)
    row |= {"status": status, "stages_done": stages_done, "num_stages": num_stages}
    row |= {"error": error, "selected_on": selected_on, "wall_s": wall_s, "recorded_at": _now()}
    row["reused_from"] = reused_from
    row["config_json"] = json.dumps(dict(config), sort_keys=True, default=str)
    unknown = set(provenance or {}) - set(PROVENANCE)
    if unknown:
        raise ValueError(f"unknown provenance fields {sorted(unknown)}; known: {list(PROVENANCE)}")
    row |= {name: (provenance or {}).get(name) for name in PROVENANCE}
    table = pa.Table.from_pylist([row], schema=RUNS_SCHEMA)
    path = Path(root) / "records" / "runs" / f"{run_key}-{time.time_ns()}.parquet"
    _atomic_write(table, path)
    return path
