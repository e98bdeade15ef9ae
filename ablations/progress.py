"""A sweep's progress lines on stderr: one per finished stage and per finished run.

``[5/14 runs, 3.2 min] full seed=1: stage 2/3 objective val 0.412 test 0.398``

Tune pickles the callbacks of a sweep's first start with its experiment state and, on resume,
uses that pickled copy (with the first start's clock and count), not the one passed again. So
the count lives in the callback's ``setup``, which Tune calls at every start: it restarts the
clock and counts the runs the harness's own records already hold as complete ("resuming: 3 of 14
runs already complete"); later lines count on from there. A run is known by its run key, so a
run Tune relaunches after it finished is not counted twice.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Progress", "RunKeys", "progress_callback"]


@dataclass(frozen=True)
class RunKeys:
    """The run key of a trial's config (what ``comet_trial`` computes, and its records hold)."""

    preset_flat: Mapping[str, Any]
    arms: Mapping[str, Mapping[str, Any]]
    base: Mapping[str, Any]

    def __call__(self, config: Mapping[str, Any]) -> str:
        from ablations.keys import resolve_flat, run_key
        from ablations.trainable import trial_overrides

        overrides = dict(self.base) | trial_overrides(config, self.arms)
        return run_key(resolve_flat(self.preset_flat, overrides, int(config["seed"])))


@dataclass
class Progress:
    """Counts and prints; ``restart`` at every start of the sweep (see the module doc)."""

    total: int
    num_stages: int
    exp_dir: Path
    keys: RunKeys
    start: float = field(default_factory=time.perf_counter)
    complete: set[str] = field(default_factory=set)  # run keys of finished runs
    failed: set[str] = field(default_factory=set)  # run keys failed in this start

    def restart(self) -> None:
        """Restart the clock; count the complete runs of the records (a resumed sweep)."""
        self.start = time.perf_counter()
        self.complete = complete_runs(self.exp_dir)
        self.failed = set()
        if self.complete:
            self.line(f"resuming: {len(self.complete)} of {self.total} runs already complete")

    @property
    def done(self) -> int:
        return len(self.complete | self.failed)

    def line(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        print(f"[{self.done}/{self.total} runs, {elapsed / 60:5.1f} min] {text}", file=sys.stderr)

    @staticmethod
    def label(trial: Any) -> str:
        cfg = trial.config
        arm = cfg.get("arm", "search")
        extra = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in cfg.items()
            if k not in ("arm", "seed")
        )
        return f"{arm} seed={cfg.get('seed')}" + (f" {extra}" if extra else "")

    def result(self, trial: Any, result: Mapping[str, Any]) -> None:
        cells = []
        for split, key in (("val", "val/objective"), ("test", "objective")):
            obj = result.get(key, math.nan)
            cells.append(f"{split} {'n/a' if math.isnan(obj) else f'{obj:.3f}'}")
        shown = " ".join(cells)
        if all(c.endswith("n/a") for c in cells):
            shown += " (no unseen pair yet)"
        self.line(f"{self.label(trial)}: stage {result.get('stage')}/{self.num_stages} "
                  f"objective {shown}")  # fmt: skip

    def finished(self, trial: Any, ok: bool) -> None:
        key = self.keys(trial.config)
        if ok:
            self.complete.add(key)
            self.failed.discard(key)
        else:
            self.failed.add(key)
        status = "done" if ok else "FAILED (error recorded in the runs table)"
        self.line(f"{self.label(trial)}: {status}")


def complete_runs(exp_dir: Path) -> set[str]:
    """Run keys whose newest status record under ``exp_dir`` is ``complete``."""
    from reports.load import ResultsError, load_results

    try:
        _, runs = load_results(exp_dir)
    except (ResultsError, OSError, ValueError):
        return set()
    return set(runs.loc[runs["status"] == "complete", "run_key"])


def progress_callback(progress: Progress) -> Any:
    """A ``tune.Callback`` printing ``progress``'s lines."""
    from ray import tune

    class ProgressCallback(tune.Callback):
        def setup(self, **info: Any) -> None:
            progress.restart()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.result(trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.finished(trial, ok=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.finished(trial, ok=False)

    return ProgressCallback()
