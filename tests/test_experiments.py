"""Seeded comparisons (intervals, pairing, CLI) and the validation downstream split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from comet_model.config import preset
from comet_model.data import load_bank, plan_digits
from comet_model.experiments import lookup, main, paired_summary, parse_arm, t_interval

SMALL = dict(
    train_sequences=50,
    val_sequences=20,
    downstream_sizes={"ave_train": 40, "ave_test": 30, "avvp_train": 40, "avvp_test": 30},
    retrieval_items=40,
)


def test_t_interval_matches_the_textbook_formula() -> None:
    x = [1.0, 2.0, 4.0, 7.0]
    mean, half, n = t_interval(x + [math.nan])
    assert n == 4 and mean == pytest.approx(3.5)
    assert half == pytest.approx(3.182 * np.std(x, ddof=1) / 2)
    assert math.isnan(t_interval([2.0])[1]) and t_interval([])[2] == 0


def test_paired_differences_use_common_seeds_only() -> None:
    def run(v: float, r: float) -> list[dict[str, float]]:
        return [{}, {"objective": v, "retrieval/audio<->image/mean": r}]

    runs = {
        "A": {0: run(10, 1), 1: run(12, 2), 2: run(14, 3)},
        "B": {0: run(11, 5), 1: run(14, 6), 3: run(99, 7)},  # seed 3 has no partner
    }
    rows = [("obj", "objective"), ("I<->A", "retrieval/image<->audio/mean")]
    s = paired_summary(runs, ["A", "B"], stage=2, rows=rows)
    mean, half, n = s[0]["diff"]["B"]
    assert n == 2 and mean == pytest.approx(1.5)  # (1 + 2) / 2
    assert half == pytest.approx(12.706 * np.std([1, 2], ddof=1) / math.sqrt(2))
    assert s[1]["arms"]["B"][0] == pytest.approx(6.0)  # found under the other pair order
    assert lookup({"x/a<->b/mean": 3.0}, "x/b<->a/mean") == 3.0
    assert math.isnan(lookup({}, "objective"))


def test_parse_arm_types_values() -> None:
    base = preset("smoke")
    label, flat = parse_arm("-PM:replay.enabled=false;replay.k2=0", base)
    assert label == "-PM" and flat == {"replay.enabled": False, "replay.k2": 0}


def test_compare_cli_runs_pairs_and_writes_per_seed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "compare", "--out", str(tmp_path), "--plans", "full", "--seeds", "2", "--preset", "smoke",
        "--jobs", "1", "--set", "data.source=synthetic", "--set", "data.stages=a-t,b-t",
        "--set", "data.train_sequences=32", "--set", "data.steps=6", "--set", "train.batch_size=16",
        "--set", "eval.epochs=1", "--set", "model.dim=16", "--set", "codebook.size=16",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plan full, after stage 2" in out and "DCID+COMET - DCID" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["results"]["full"]) == {"DCID", "DCID+COMET"}
    assert sorted(data["results"]["full"]["DCID"]) == ["0", "1"]
    lines = (tmp_path / "per_seed.csv").read_text().splitlines()
    assert lines[0].startswith("plan,arm,seed,stage") and len(lines) > 1
    assert (tmp_path / "runs" / "full" / "DCID+COMET" / "seed1" / "checkpoint.pt").exists()


def test_val_downstream_split_never_uses_test_instances() -> None:
    bank = load_bank()
    test = plan_digits(**SMALL, seed=1)
    val = plan_digits(**SMALL, seed=1, downstream_split="val")
    for a, b in zip(test.stages, val.stages, strict=True):  # the same stage sequences
        assert all(np.array_equal(a.train.rows[m], b.train.rows[m]) for m in a.modalities)
    stage_rows = {m: set() for m in bank.modalities}
    for s in val.stages:
        for m in s.modalities:
            stage_rows[m] |= set(s.train.rows[m].ravel())
    for key, ds in val.downstream.items():
        for m, rows in ds.rows.items():
            assert (bank[m].split[rows] == 0).all(), (key, m)  # never the test pool
            if key in ("ave_test", "avvp_test", "retrieval"):
                assert not set(rows.ravel()) & stage_rows[m], (key, m)  # held-out instances
