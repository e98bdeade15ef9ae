"""The Ray Tune trainable: one trial = one full continual pipeline (a thin adapter).

The pipeline (``comet_model.continual.pipeline.run_continual``) owns training, evaluation and
its own per-stage checkpoints in a work folder named by the run key. That folder, on the sweep's
storage, is the source of truth for resuming: a relaunched trial continues after its last
completed stage whatever Ray's own snapshot says, and a finished run returns at once. Each
finished stage is written to Parquet first and then reported to Tune with a checkpoint (which
also forces Tune to snapshot its experiment state, the fix for exact resume after SIGKILL).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.keys import axes_of, resolve_flat, run_key
from ablations.records import recorded_stages, write_run, write_stage_metrics
from ablations.reuse import CHECKPOINT, Donor, copied_donor, copy_donor, find_donor

RESERVED = ("arm", "seed")


def trial_overrides(config: Mapping[str, object], arms: Mapping[str, Mapping]) -> dict:
    """The config overrides of one trial: its grid arm plus any searched keys."""
    overrides = dict(arms.get(str(config.get("arm", "")), {}))
    overrides.update({k: v for k, v in config.items() if k not in RESERVED})
    return overrides


@dataclass(frozen=True)
class _Trial:
    """Who a trial is: its records' identity, its axes, its resolved config and work folder."""

    root: Path
    common: dict[str, Any]  # sweep, run_key, seed, trial_id: the identity of every record
    axes: dict[str, object]
    flat: dict[str, object]
    work: Path
    selected_on: str = ""  # search trials: the metric the search optimises
    provenance: Mapping[str, Any] | None = None  # the driver's code and data provenance
    device: str = "cpu"

    def write_run(self, status: str, stages_done: int, num_stages: int, **kw: Any) -> None:
        from ablations.provenance import run_provenance

        prov = run_provenance(self.provenance or {}, self.flat, self.device)
        write_run(self.root, **self.common, axes=self.axes, status=status, config=self.flat,
                  stages_done=stages_done, num_stages=num_stages,
                  selected_on=self.selected_on, provenance=prov, **kw)  # fmt: skip


def _device_kind(gpu_fraction: float) -> str:
    """ "cuda" when the trial holds a GPU share and CUDA is there, else "cpu"."""
    if gpu_fraction <= 0:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device(gpu_fraction: float) -> str:
    """:func:`_device_kind`, with this process's share of GPU memory capped on "cuda"."""
    device = _device_kind(gpu_fraction)
    if device == "cuda":
        import torch

        # Fractional GPUs are bookkeeping only in Ray: cap this process's share of memory.
        torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_fraction))
    return device


def _reporter(trial: _Trial, metric: str) -> Callable[[Any], None]:
    """``on_stage_end``: the stage's Parquet records first, then ``tune.report`` with a copy of
    the pipeline checkpoint (staged under ``scratch/``, cleaned by the driver)."""
    from ray import tune

    attempt = int(time.time())

    def on_stage_end(report: Any) -> None:
        metrics = dict(report.metrics)
        write_stage_metrics(
            trial.root,
            **trial.common,
            attempt=attempt,
            axes=trial.axes,
            stage=report.index,
            stage_name=report.name,
            metrics=metrics,
        )
        shown = {"stage": report.index, "objective": metrics.get("objective", math.nan)}
        shown["val/objective"] = metrics.get("val/objective", math.nan)
        shown[metric] = metrics.get(metric, math.nan)
        shown |= {k: v for k, v in metrics.items() if k not in shown}
        scratch = trial.root / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            shutil.copy2(report.checkpoint, Path(tmp) / CHECKPOINT)
            tune.report(shown, checkpoint=tune.Checkpoint.from_directory(tmp))

    return on_stage_end


def comet_trial(
    config: dict,
    *,
    sweep: str,
    root: str,
    preset: str,
    arms: dict,
    base: dict,
    metric: str,
    gpu_fraction: float = 0.0,
    provenance: dict | None = None,
    reuse: bool = True,
) -> None:
    """Run one continual pipeline for ``config = {"arm": label, "seed": s, ...searched keys}``.

    ``reuse``: copy a finished run of the same key from another sweep of the storage instead of
    training it (:mod:`ablations.reuse`)."""
    from ray import tune

    from comet_model.config import ExperimentConfig
    from comet_model.config import preset as get_preset
    from comet_model.continual.pipeline import completed_stages, run_continual
    from comet_model.data.plan import stage_count

    flat = resolve_flat(get_preset(preset).to_flat(), dict(base) | trial_overrides(config, arms),
                        int(config["seed"]))  # fmt: skip
    cfg = ExperimentConfig.from_flat(flat)
    key = run_key(flat)
    common = {"sweep": sweep, "run_key": key, "seed": int(config["seed"]),
              "trial_id": tune.get_context().get_trial_id() or ""}  # fmt: skip
    variant = str(config.get("arm", "search"))
    axes = axes_of(flat, variant=variant, preset=preset)
    trial = _Trial(Path(root), common, axes, flat, Path(root) / "work" / key,
                   selected_on=metric if variant == "search" else "", provenance=provenance,
                   device=_device_kind(gpu_fraction))  # fmt: skip
    restored = tune.get_checkpoint()
    if restored is not None and not (trial.work / CHECKPOINT).exists():
        with restored.as_directory() as d:
            trial.work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(d) / CHECKPOINT, trial.work / CHECKPOINT)
    num_stages = stage_count(cfg.data.source, cfg.data.plan_file, cfg.data.stages)  # plan's own
    start = time.perf_counter()
    reporter = _reporter(trial, metric)
    donor = _reuse(trial, num_stages) if reuse else None
    try:
        result = run_continual(cfg, out_dir=trial.work, on_stage_end=reporter,
                               device=_device(gpu_fraction))  # fmt: skip
        if result.resumed_from >= len(result.stages):  # finished before this call (a copied
            recorded = recorded_stages(trial.root, key)  # donor, or killed before its records)
            for report in result.stages:
                if report.index not in recorded:
                    reporter(report)
    except Exception as exc:  # recorded, then re-raised so Tune marks the trial ERROR
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        trial.write_run(
            "failed",
            completed_stages(trial.work),
            num_stages,
            error=message.splitlines()[-1][:500],
            wall_s=time.perf_counter() - start,
        )
        raise
    trial.write_run("complete", len(result.stages), num_stages, wall_s=time.perf_counter() - start,
                    reused_from=donor.sweep if donor is not None else "")  # fmt: skip


def _reuse(trial: _Trial, num_stages: int) -> Donor | None:
    """Copy the checkpoint of a finished run of this key from another sweep of the storage into
    the trial's work folder (only when the work folder holds none); returns the donor (also the
    one an earlier attempt of this trial copied)."""
    import torch

    from ablations.provenance import run_provenance

    if (trial.work / CHECKPOINT).exists():
        return copied_donor(trial.work)
    threads = int(trial.flat.get("train.threads", 0) or 0)
    if threads > 0:  # what run_continual sets, and the records of the donor hold
        torch.set_num_threads(threads)
    now = run_provenance(trial.provenance or {}, trial.flat, trial.device)
    donor = find_donor(trial.root.parent, trial.root, str(trial.common["run_key"]), now,
                       num_stages)  # fmt: skip
    if donor is not None:
        copy_donor(donor, trial.work)
    return donor
