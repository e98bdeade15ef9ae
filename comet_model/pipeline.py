"""The stage loop: build the model, train the stages in order, evaluate after the last one.

``run_stages`` is the function the continual COMET pipeline extends next (EWC consolidation and
pseudo-modality replay between stages); today it accepts the ``ewc`` / ``replay`` hooks and
passes them to :func:`comet_model.train.train_stage` unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from comet_model.config import ExperimentConfig
from comet_model.data.types import Benchmark
from comet_model.ewc import EWCPenalty
from comet_model.model import CometModel
from comet_model.replay import PseudoModalityReplay
from comet_model.train import MetricsCallback, StageSummary, Trainer, train_stage

__all__ = ["RunResult", "build_benchmark", "evaluate_model", "run_stages", "seed_everything"]


@dataclass
class RunResult:
    """Outcome of :func:`run_stages`."""

    model: CometModel
    summaries: list[StageSummary]
    metrics: dict[str, float] = field(default_factory=dict)  # downstream metrics (last stage)
    seconds: float = 0.0  # wall time of training and evaluation


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's, Python's and NumPy's global RNGs once; return the run's generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def build_benchmark(cfg: ExperimentConfig) -> Benchmark:
    """The benchmark of ``cfg.data`` (stage order ``cfg.data.stages``)."""
    from comet_model.data import make_benchmark

    d = cfg.data
    if d.source == "plan":
        return make_benchmark("plan", plan_file=d.plan_file)
    kw: dict[str, Any] = {
        "stages": d.stages, "seed": d.seed, "steps": d.steps,
        "train_sequences": d.train_sequences, "val_sequences": d.val_sequences,
    }  # fmt: skip
    if d.source == "digits":
        kw["class_plan"] = d.class_plan
    return make_benchmark(d.source, **kw)


def evaluate_model(
    model: CometModel,
    benchmark: Benchmark,
    cfg: ExperimentConfig,
    modalities: Sequence[str],
    *,
    generator: torch.Generator,
) -> dict[str, float]:
    """Downstream metrics on every pair of ``modalities`` present in the downstream sets."""
    from comet_model.evaluate import evaluate_downstream

    sets = benchmark.downstream
    if sets is None:
        return {}
    avail = [
        m
        for m in modalities
        if all(m in getattr(sets, s).features for s in ("ave_train", "ave_test", "retrieval"))
    ]
    if len(avail) < 2:
        return {}
    return evaluate_downstream(
        model, sets, modalities=avail, num_classes=benchmark.num_classes,
        background_class=benchmark.background_class, head_epochs=cfg.eval.epochs,
        head_lr=cfg.eval.lr, head_batch=cfg.eval.batch_size, generator=generator,
    )  # fmt: skip


def run_stages(
    cfg: ExperimentConfig,
    benchmark: Benchmark | None = None,
    *,
    on_metrics: MetricsCallback | None = None,
    ewc: EWCPenalty | None = None,
    replay: PseudoModalityReplay | None = None,
    on_epoch_end: Callable[[int, int, Trainer], None] | None = None,
    evaluate: bool = True,
) -> RunResult:
    """Seed once, build the model, train every stage in order, evaluate after the last stage.

    ``on_metrics`` gets one dict per epoch (``"stage_index"`` added) and one with
    ``"kind": "eval"`` and the downstream metrics. ``train.frozen`` groups are frozen from
    stage 2 on. Sets torch's thread count to ``train.threads`` when it is > 0.
    ``on_epoch_end(stage_index, epoch, trainer)`` is the checkpoint hook.
    """
    t0 = time.perf_counter()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    benchmark = build_benchmark(cfg) if benchmark is None else benchmark
    generator = seed_everything(cfg.seed)
    model = CometModel.from_config(cfg)
    summaries: list[StageSummary] = []
    seen: list[str] = []
    for i, stage in enumerate(benchmark.stages):

        def report(row: dict[str, Any], i: int = i) -> None:
            if on_metrics is not None:
                on_metrics({"kind": "train", "stage_index": i, **row})

        def epoch_end(epoch: int, trainer: Trainer, i: int = i) -> None:
            if on_epoch_end is not None:
                on_epoch_end(i, epoch, trainer)

        summaries.append(
            train_stage(
                model,
                stage,
                cfg,
                generator=generator,
                on_metrics=report,
                ewc=ewc,
                replay=replay,
                frozen=cfg.train.frozen if i > 0 else (),
                on_epoch_end=epoch_end,
            )  # fmt: skip
        )
        seen += [m for m in stage.modalities if m not in seen]
    metrics: dict[str, float] = {}
    if evaluate:
        eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
        metrics = evaluate_model(model, benchmark, cfg, seen, generator=eval_gen)
        if on_metrics is not None:
            last = benchmark.stages[-1].name
            on_metrics(
                {"kind": "eval", "stage_index": len(summaries) - 1, "stage": last, **metrics}
            )
    return RunResult(model, summaries, metrics, time.perf_counter() - t0)
