"""The results contract between the sweep harness (writer) and the reports (reader).

Two tables, both tidy Parquet:

- ``metrics``: one row per (sweep, run_key, stage, task, pair, metric) with a float ``value``.
  ``stage`` is the 1-based index of the training stage just finished; ``task`` is the evaluation
  family (``ave``, ``avvp``, ``ave_avvp``, ``retrieval``, ``usage``, ``forgetting``, ``objective``),
  ``pair`` the modality pair in its direction (``video->audio``, ``image<->audio``) or a single
  modality, or ``""``; ``metric`` the quantity (``acc``, ``f1``, ``r1`` ...); ``split`` the
  downstream sets measured on (``val`` chooses, ``test`` reports). The axes that tables
  group by (``variant``, ``method``, ``comet``, ``num_experts`` ...) are columns too, so a report
  never has to join.
- ``runs``: one row per run_key, with its status (``complete``, ``failed``), error text, and the
  full resolved config as a JSON string, and its provenance (:data:`PROVENANCE`: code version
  and commit, library versions, device, threads, precision, data fingerprint).

A run_key is a hash of the resolved flat config (seed included), never Ray's trial id, so a
re-run stage overwrites rather than duplicates (readers keep the newest row per key).

This module imports only pyarrow and the sweep-axis list (``search_spaces.axes``); the harness
imports it to write, the reports to read.
"""

from __future__ import annotations

import pyarrow as pa

from search_spaces.axes import AXES as SWEEP_AXES

SCHEMA_VERSION = "1"
PRODUCER = "comet-cmg"

#: Columns that identify one measurement; readers deduplicate on these (newest wins).
METRIC_KEY = ("sweep", "run_key", "stage", "split", "task", "pair", "metric")

#: Downstream splits: "val" (held-out training-pool instances; what every choice is made on) and
#: "test" (what tables report). Records written before the column existed read as "test".
SPLITS = ("val", "test")

#: Axes copied from the config into every metrics row (what tables and curves group by).
_ARROW = {"int": pa.int32(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
AXES: dict[str, pa.DataType] = {
    "variant": pa.string(),  # grid arm label, e.g. "full", "-PM", "experts=6", "DCID"
    **{axis.column: _ARROW[axis.kind] for axis in SWEEP_AXES},  # search_spaces/axes.py
    "preset": pa.string(),
}

METRICS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("run_key", pa.string()),
        ("seed", pa.int32()),
        ("trial_id", pa.string()),  # informational only; never a key
        ("attempt", pa.int32()),
        *AXES.items(),
        ("stage", pa.int32()),
        ("stage_name", pa.string()),
        ("split", pa.string()),  # val | test (see SPLITS)
        ("task", pa.string()),
        ("pair", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("recorded_at", pa.timestamp("ms", tz="UTC")),
    ],
    metadata={"schema_version": SCHEMA_VERSION, "producer": PRODUCER, "table": "metrics"},
)

#: What made a run (written by ``ablations/provenance.py``). Records written before these
#: columns existed read as "unknown" (text) and null (flags, counts): see ``reports.provenance``.
PROVENANCE: dict[str, pa.DataType] = {
    "code_version": pa.string(),  # version of the comet-cmg package
    "code_commit": pa.string(),  # git commit of the package's source tree, or "unknown"
    "code_dirty": pa.bool_(),  # uncommitted changes to tracked files (null: unknown)
    "code_diff": pa.string(),  # sha256[:12] of `git diff HEAD` when dirty, else ""
    "torch_version": pa.string(),
    "ray_version": pa.string(),
    "numpy_version": pa.string(),
    "python_version": pa.string(),
    "device": pa.string(),  # "cpu: <CPU model>" or "cuda: <GPU name>"
    "threads": pa.int32(),  # torch threads of the trial process
    "precision": pa.string(),  # fp32 | bf16 | fp16 (train.precision; fp32 without the key)
    "data_fingerprint": pa.string(),  # sha256:<16 hex> of the data files, "synthetic", "unknown"
    "data_files": pa.string(),  # JSON {file name: sha256:<16 hex>} behind the fingerprint
}

RUNS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("run_key", pa.string()),
        ("seed", pa.int32()),
        ("trial_id", pa.string()),
        *AXES.items(),
        ("status", pa.string()),  # complete | failed
        ("stages_done", pa.int32()),
        ("num_stages", pa.int32()),
        ("error", pa.string()),
        ("selected_on", pa.string()),  # search trials: the metric the search chose on, else ""
        ("wall_s", pa.float64()),
        ("config_json", pa.string()),
        # the sweep whose finished run of the same key this run copied (ablations.reuse), else
        # "" (null in records from before the column: trained)
        ("reused_from", pa.string()),
        *PROVENANCE.items(),
        ("recorded_at", pa.timestamp("ms", tz="UTC")),
    ],
    metadata={"schema_version": SCHEMA_VERSION, "producer": PRODUCER, "table": "runs"},
)

RUN_KEY = ("sweep", "run_key")


def split_of(key: str) -> tuple[str, str]:
    """``(split, key without its split prefix)``: ``"val/ave/video->audio/acc"`` ->
    ``("val", "ave/video->audio/acc")``; keys without a prefix are test metrics."""
    head, _, rest = key.partition("/")
    return (head, rest) if head in SPLITS and rest else ("test", key)


def split_metric_key(key: str) -> tuple[str, str, str]:
    """Split an evaluation key into (task, pair, metric).

    ``"ave/video->audio/acc"`` -> ``("ave", "video->audio", "acc")``;
    ``"usage/perplexity/video"`` -> ``("usage", "video", "perplexity")``;
    ``"usage/codes_1"`` -> ``("usage", "", "codes_1")``;
    ``"objective"`` -> ``("objective", "", "value")``.
    """
    parts = key.split("/")
    if len(parts) == 1:
        return parts[0], "", "value"
    if len(parts) == 2:
        return parts[0], "", parts[1]
    task, middle, last = parts[0], "/".join(parts[1:-1]), parts[-1]
    if task == "usage":  # usage/perplexity/<modality>
        return task, last, middle
    return task, middle, last
