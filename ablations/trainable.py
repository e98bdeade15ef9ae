"""The Ray Tune trainable: one trial = one full continual pipeline (a thin adapter).

The pipeline (``comet_model.pipeline.run_continual``) owns training, evaluation and its own
per-stage checkpoints in a work folder named by the run key. That folder, on the sweep's storage,
is the source of truth for resuming: a relaunched trial continues after its last completed stage
whatever Ray's own snapshot says, and a finished run returns at once. Each finished stage is
written to Parquet first and then reported to Tune with a checkpoint (which also forces Tune to
snapshot its experiment state, the fix for exact resume after SIGKILL).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from ablations.keys import axes_of, resolve_flat, run_key
from ablations.results_io import write_run, write_stage_metrics

RESERVED = ("arm", "seed")


def trial_overrides(config: Mapping[str, object], arms: Mapping[str, Mapping]) -> dict:
    """The config overrides of one trial: its grid arm plus any searched keys."""
    overrides = dict(arms.get(str(config.get("arm", "")), {}))
    overrides.update({k: v for k, v in config.items() if k not in RESERVED})
    return overrides


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
) -> None:
    """Run one continual pipeline for ``config = {"arm": label, "seed": s, ...searched keys}``."""
    from ray import tune

    from comet_model.config import ExperimentConfig
    from comet_model.config import preset as get_preset
    from comet_model.data.plan import stage_count
    from comet_model.pipeline import run_continual

    overrides = dict(base) | trial_overrides(config, arms)
    flat = resolve_flat(get_preset(preset).to_flat(), overrides, int(config["seed"]))
    cfg = ExperimentConfig.from_flat(flat)
    key = run_key(flat)
    variant = str(config.get("arm", "search"))
    axes = axes_of(flat, variant=variant, preset=preset)
    context = tune.get_context()
    trial_id = context.get_trial_id() or ""
    root_path = Path(root)
    work = root_path / "work" / key
    num_stages = stage_count(cfg.data.source, cfg.data.plan_file, cfg.data.stages)  # plan's own

    device = "cpu"
    if gpu_fraction > 0:
        import torch

        if torch.cuda.is_available():
            device = "cuda"
            # Fractional GPUs are bookkeeping only in Ray: cap this process's share of memory.
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_fraction))

    restored = tune.get_checkpoint()
    if restored is not None and not (work / "checkpoint.pt").exists():
        with restored.as_directory() as d:
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(d) / "checkpoint.pt", work / "checkpoint.pt")

    common = {"sweep": sweep, "run_key": key, "seed": int(config["seed"]), "trial_id": trial_id}
    attempt = int(time.time())

    def on_stage_end(report) -> None:
        metrics = dict(report.metrics)
        write_stage_metrics(
            root_path,
            **common,
            attempt=attempt,
            axes=axes,
            stage=report.index,
            stage_name=report.name,
            metrics=metrics,
        )
        shown = {"stage": report.index, "objective": metrics.get("objective", math.nan)}
        shown[metric] = metrics.get(metric, math.nan)
        shown |= {k: v for k, v in metrics.items() if k not in shown}
        scratch = root_path / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            shutil.copy2(report.checkpoint, Path(tmp) / "checkpoint.pt")
            tune.report(shown, checkpoint=tune.Checkpoint.from_directory(tmp))

    start = time.perf_counter()
    try:
        result = run_continual(cfg, out_dir=work, on_stage_end=on_stage_end, device=device)
    except Exception as exc:  # recorded, then re-raised so Tune marks the trial ERROR
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        write_run(
            root_path,
            **common,
            axes=axes,
            status="failed",
            stages_done=_stages_done(work),
            num_stages=num_stages,
            config=flat,
            error=message.splitlines()[-1][:500],
            wall_s=time.perf_counter() - start,
        )
        raise
    write_run(
        root_path,
        **common,
        axes=axes,
        status="complete",
        stages_done=len(result.stages),
        num_stages=num_stages,
        config=flat,
        wall_s=time.perf_counter() - start,
    )


def _stages_done(work: Path) -> int:
    from comet_model.pipeline import completed_stages

    return completed_stages(work)
