"""Timing helpers: a step time and a whole-trial breakdown on tiny synthetic configurations."""

from __future__ import annotations

from ablations.benchmarks.step import step_times
from ablations.benchmarks.trial import trial_times
from comet_model.config import preset

TINY = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "train.batch_size": 16,
    "data.source": "synthetic", "data.stages": ("a-t", "b-t"), "data.train_sequences": 32,
    "data.steps": 6, "eval.epochs": 1, "replay.k2": 4,
}  # fmt: skip


def test_step_times_are_positive() -> None:
    times = step_times(preset("smoke").override(TINY), repeats=2, warmup=1, dims={"a": 5, "b": 3})
    assert len(times) == 2 and all(t > 0 for t in times)


def test_trial_breakdown_covers_every_stage() -> None:
    total, stages = trial_times(preset("smoke").override(TINY))
    assert [s["name"] for s in stages] == ["(data)", "a-t", "b-t"]
    parts = sum(s.get(k, 0.0) for s in stages for k in ("data_s", "setup_s", "train_s",
                                                        "fisher_s", "eval_s"))  # fmt: skip
    assert 0 < parts <= total
    assert stages[2]["codebook_size"] == 20 and stages[2]["fisher_s"] > 0
