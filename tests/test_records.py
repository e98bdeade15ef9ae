"""The Parquet records: atomic per-stage files, stable run keys, newest-row-wins dedup."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ablations.keys import axes_of, resolve_flat, run_key
from ablations.records import write_run, write_stage_metrics
from reports.load import ResultsError, load_results
from reports.schema import split_metric_key

AXES = {"variant": "full", "method": "dcid", "comet": True, "num_experts": 6}


def _write(root, stage, value, run="r1", seed=0):
    return write_stage_metrics(
        root,
        sweep="s",
        run_key=run,
        seed=seed,
        trial_id="t",
        attempt=0,
        axes=AXES,
        stage=stage,
        stage_name=f"stage{stage}",
        metrics={"ave/video->audio/acc": value, "objective": value / 2},
    )


def test_run_key_is_stable_and_sensitive_to_config_and_seed() -> None:
    base = {"a": 1, "b": (1, 2), "seed": 0}
    assert run_key(base) == run_key(dict(reversed(list(base.items()))))
    assert run_key(base) != run_key(base | {"seed": 1})
    assert run_key(base) != run_key(base | {"a": 2})
    assert len(run_key(base)) == 16


def test_resolve_flat_rejects_unknown_keys_and_sets_seed() -> None:
    flat = resolve_flat({"x": 1, "seed": 0}, {"x": 3}, 7)
    assert flat == {"x": 3, "seed": 7}
    with pytest.raises(KeyError, match="nope"):
        resolve_flat({"x": 1, "seed": 0}, {"nope": 3}, 0)


def test_axes_join_tuples() -> None:
    axes = axes_of({"data.stages": ("a-t", "b-t"), "moe.num_experts": 4}, variant="v", preset="p")
    assert axes["stage_order"] == "a-t,b-t" and axes["num_experts"] == 4 and axes["variant"] == "v"


def test_split_metric_key() -> None:
    assert split_metric_key("ave/video->audio/acc") == ("ave", "video->audio", "acc")
    assert split_metric_key("retrieval/image<->audio/mean") == (
        "retrieval",
        "image<->audio",
        "mean",
    )
    assert split_metric_key("usage/codes_1") == ("usage", "", "codes_1")
    assert split_metric_key("usage/perplexity/text") == ("usage", "text", "perplexity")
    assert split_metric_key("objective") == ("objective", "", "value")


def test_rerun_stage_is_deduplicated_newest_wins(tmp_path) -> None:
    _write(tmp_path, 1, 0.2)
    _write(tmp_path, 2, 0.4)
    _write(tmp_path, 2, 0.5)  # the same stage recomputed after a crash
    write_run(
        tmp_path,
        sweep="s",
        run_key="r1",
        seed=0,
        trial_id="t",
        axes=AXES,
        status="failed",
        stages_done=1,
        num_stages=2,
        config={"seed": 0},
        error="boom",
    )
    write_run(
        tmp_path,
        sweep="s",
        run_key="r1",
        seed=0,
        trial_id="t2",
        axes=AXES,
        status="complete",
        stages_done=2,
        num_stages=2,
        config={"seed": 0},
    )
    metrics, runs = load_results(tmp_path)
    assert len(metrics) == 4  # 2 stages x 2 metrics, no duplicates
    acc = metrics[(metrics["stage"] == 2) & (metrics["metric"] == "acc")]["value"]
    assert acc.tolist() == [0.5]
    assert runs["status"].tolist() == ["complete"] and runs["trial_id"].tolist() == ["t2"]
    # idempotent: reading again gives the same frame
    again, _ = load_results(tmp_path)
    pd.testing.assert_frame_equal(metrics, again)


def test_no_temp_files_left_and_hidden_files_ignored(tmp_path) -> None:
    path = _write(tmp_path, 1, 0.3)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    (path.parent / ".half-written.parquet").write_bytes(b"garbage")
    metrics, _ = load_results(tmp_path)
    assert math.isclose(metrics[metrics["metric"] == "acc"]["value"].iloc[0], 0.3)


def test_unknown_axis_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown result axes"):
        write_stage_metrics(
            tmp_path,
            sweep="s",
            run_key="r",
            seed=0,
            trial_id="",
            attempt=0,
            axes={"colour": 1},
            stage=1,
            stage_name="x",
            metrics={"objective": 1.0},
        )


def test_missing_empty_and_corrupt_results_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ResultsError, match="does not exist"):
        load_results(tmp_path / "absent")
    with pytest.raises(ResultsError, match="no sweep records"):
        load_results(tmp_path)
    bad = tmp_path / "exp" / "records" / "metrics"
    bad.mkdir(parents=True)
    (bad / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match="unreadable"):
        load_results(tmp_path)
