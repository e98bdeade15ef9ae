"""The continual pipeline: stages in order, each seeing only its own data (spec sections 1-5).

:func:`run_continual` seeds once, builds the model and, for every stage of the plan:

1. stage s >= 2 with COMET: creates the stage's new modality modules, freezes a copy of the
   codebook as the PMR teacher V1 (replay on) and appends ``replay.k2`` codes seeded from random
   semantic tokens of THIS stage's training data (:mod:`comet_model.continual.expansion`);
2. trains the stage (:func:`comet_model.continual.train.train_stage`, prepared by
   :func:`comet_model.continual.stage.prepare_stage`) with the EWC penalty of the stages before
   (weight ``ewc.lam``) and, from stage 2 on, the pseudo-modality of the mediator in Cross-CPC
   (weight ``replay.beta_pmr``);
3. with EWC: estimates the diagonal empirical Fisher (per batch) of this stage's training loss
   on ``ewc.fisher_batches`` random batches of this stage's data and consolidates (paper Eq. 6)
   the adapter's common layers, router and the specific layers of the modalities so far, plus,
   with ``ewc.mediator`` (our extension), the mediator's semantic encoder
   (:mod:`comet_model.continual.consolidation`);
4. evaluates the modalities seen so far (:func:`comet_model.eval.downstream.evaluate_stage`) and
   adds the objective, the forgetting and BWT rows (:func:`comet_model.eval.metrics.
   continual_metrics`);
5. writes ``out_dir/checkpoint.pt`` atomically (model with its dynamically created modules and
   grown codebook, EWC state, replay teacher, every RNG state, the completed stage count and
   every completed stage's metrics) and then calls ``on_stage_end``.

A stage only ever receives its own :class:`StageData` (training, Fisher, K2 seeding); the
downstream sets are used for evaluation only. Started again with the same ``out_dir``, a run
resumes after its last completed stage and ends with exactly the metrics of an uninterrupted run
(:mod:`comet_model.continual.resume`); a finished ``out_dir`` returns at once.

Metric keys (``task/pair/metric``): those of :func:`comet_model.eval.downstream.
evaluate_downstream`, plus ``usage/codebook_size``, ``objective``,
``forgetting/<a><-><b>/retrieval``, ``forgetting/mean`` and ``forgetting/bwt``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comet_model.config import ConfigError, ExperimentConfig
from comet_model.continual import checkpoint as ckpt
from comet_model.continual.consolidation import consolidate
from comet_model.continual.ewc import EWCPenalty
from comet_model.continual.expansion import expand_codebook, protects_old_codes
from comet_model.continual.resume import (
    CHECKPOINT,
    ResumeError,
    check_resume,
    completed_stages,
    saved_stages,
)
from comet_model.continual.stage import prepare_stage
from comet_model.continual.train import MetricsCallback, train_stage
from comet_model.data.types import Benchmark, StageData
from comet_model.data.validation import with_validation
from comet_model.eval.downstream import evaluate_stage
from comet_model.eval.metrics import continual_metrics
from comet_model.nn.model import CometModel
from comet_model.nn.replay import PseudoModalityReplay

__all__ = [
    "CHECKPOINT",
    "ContinualResult",
    "ResumeError",
    "StageReport",
    "build_benchmark",
    "completed_stages",
    "continual_metrics",
    "run_continual",
    "seed_everything",
]

log = logging.getLogger(__name__)

_DERIVED = ("forgetting/", "objective")  # recomputed from the plain evaluations on resume


@dataclass
class StageReport:
    """One completed stage (what ``on_stage_end`` receives)."""

    index: int  # 1-based stage number
    name: str  # stage name, e.g. "audio-text"
    metrics: dict[str, float]  # evaluation after this stage, incl. "objective"
    checkpoint: Path | None  # the checkpoint written after this stage (None without out_dir)
    summary: dict[str, Any] = field(default_factory=dict)  # training summary and timings


@dataclass
class ContinualResult:
    """Outcome of :func:`run_continual`: every completed stage, restored ones included."""

    model: CometModel
    stages: list[StageReport]
    seconds: float = 0.0  # wall time of this call
    resumed_from: int = 0  # stages already completed in out_dir when this call started

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics after the last stage."""
        return dict(self.stages[-1].metrics) if self.stages else {}


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's, Python's and NumPy's global RNGs once; return the run's generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def build_benchmark(cfg: ExperimentConfig) -> Benchmark:
    """The benchmark of ``cfg.data`` (stage order ``cfg.data.stages``; with a plan, the plan's
    stages that ``data.stages`` selects, every one when it is left at its default)."""
    from comet_model.data import make_benchmark
    from comet_model.data.plan import plan_selection

    d = cfg.data
    if d.source == "plan":
        return make_benchmark("plan", plan_file=d.plan_file, streaming=d.streaming,
                              stages=plan_selection(d.stages))  # fmt: skip
    kw: dict[str, Any] = {
        "stages": d.stages, "seed": d.seed, "steps": d.steps,
        "train_sequences": d.train_sequences, "val_sequences": d.val_sequences,
    }  # fmt: skip
    if d.source == "digits":
        kw["class_plan"] = d.class_plan
    return make_benchmark(d.source, **kw)


def _check_cmg_widths(cfg: ExperimentConfig, stages: Sequence[StageData]) -> None:
    """With the CMG video front end, its modalities must be ``grid * grid * channels`` wide."""
    mc = cfg.model
    if mc.video_frontend != "cmg":
        return
    want = mc.cmg_grid * mc.cmg_grid * mc.cmg_channels
    for stage in stages:
        for m in stage.modalities:
            if m in mc.cmg_modalities and stage.train.dim(m) != want:
                raise ConfigError(
                    f"model.video_frontend: 'cmg' needs '{m}' features of width {want} "
                    f"({mc.cmg_grid}x{mc.cmg_grid}x{mc.cmg_channels} maps), stage "
                    f"'{stage.name}' has {stage.train.dim(m)}"
                )


def _eval_generator(seed: int, index: int, split: str) -> torch.Generator:
    # test, stage 1: seed + 1, as the single-stage runs before the continual pipeline did
    return torch.Generator().manual_seed(
        seed + 1 + 7919 * index + (104729 if split == "val" else 0)
    )


def _split_key(split: str, key: str) -> str:
    """Metric key of ``split``: test keys are plain, validation keys carry ``val/``."""
    return key if split == "test" else f"{split}/{key}"


def _plain(metrics: dict[str, float], split: str) -> dict[str, float]:
    """The evaluation of ``split`` in a stage's metrics, without the derived keys."""
    prefix = "" if split == "test" else f"{split}/"
    out = {}
    for key, value in metrics.items():
        if split == "test" and key.startswith("val/"):
            continue
        if key.startswith(prefix) and not key[len(prefix) :].startswith(_DERIVED):
            out[key[len(prefix) :]] = value
    return out


@dataclass
class _Run:
    """The state one call of :func:`run_continual` carries from stage to stage."""

    cfg: ExperimentConfig
    benchmark: Benchmark
    names: list[str]
    path: Path | None
    model: CometModel
    generator: torch.Generator
    ewc: EWCPenalty | None
    replay: PseudoModalityReplay | None
    reports: list[StageReport]
    evals: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # split -> per stage
    seen: list[str] = field(default_factory=list)  # modalities in order of first appearance

    def see(self, stage: StageData) -> None:
        self.seen += [m for m in stage.modalities if m not in self.seen]


def _start(
    cfg: ExperimentConfig,
    benchmark: Benchmark,
    names: list[str],
    path: Path | None,
    state: dict[str, Any] | None,
    device: torch.device,
) -> _Run:
    """Seed, build (or restore from ``state``) the model, EWC and PMR modules."""
    generator = seed_everything(cfg.seed)
    ewc = replay = None
    if cfg.comet and cfg.ewc.enabled:
        ewc = EWCPenalty(adaptive=cfg.ewc.adaptive, gamma=cfg.ewc.gamma)
    if cfg.comet and cfg.replay.enabled:
        replay = PseudoModalityReplay(w_k2=cfg.replay.w_k2, tau=cfg.replay.tau)
    if state is None:
        run = _Run(cfg, benchmark, names, path, CometModel.from_config(cfg).to(device),
                   generator, ewc, replay, [])  # fmt: skip
    else:
        model = ckpt.restore_model(state, cfg).to(device)
        if ewc is not None and state["ewc"] is not None:
            ewc.load_state_dict(state["ewc"])
        if replay is not None and state["replay"] is not None:
            replay.load_state_dict(state["replay"])
        ckpt.restore_rng(state["rng"], generator)
        reports = [
            StageReport(i + 1, n, m, path, s) for i, (n, m, s) in enumerate(saved_stages(state))
        ]
        run = _Run(cfg, benchmark, names, path, model, generator, ewc, replay, reports)
        run.evals = {split: [_plain(r.metrics, split) for r in reports]
                     for split in cfg.eval.splits}  # fmt: skip
        for s in benchmark.stages[: len(reports)]:
            run.see(s)
    for module in (ewc, replay):
        if module is not None:
            module.to(device)
    return run


def _train(run: _Run, i: int, on_metrics: MetricsCallback | None) -> tuple[dict, dict]:
    """Expand, train, consolidate and evaluate stage ``i``; its metrics and training summary."""
    cfg, model, stage, index = run.cfg, run.model, run.benchmark.stages[i], i + 1
    label = f"stage {index} ({stage.name})"
    times: dict[str, float] = {}
    tick = time.perf_counter()
    replay = run.replay
    if replay is not None and stage.mediator not in stage.modalities:
        log.warning("%s: no mediator shared by the stages, no pseudo-modality replay", label)
        replay = None
    if i > 0 and cfg.comet:
        expand_codebook(model, stage, cfg, replay, run.generator)
    elif i > 0 and protects_old_codes(cfg):  # the control arm: a baseline keeping its codes
        model.codebook.reset_start.fill_(model.codebook_size)
    times["setup_s"] = time.perf_counter() - tick

    def report_row(row: dict[str, Any]) -> None:
        if on_metrics is not None:
            on_metrics({"kind": "train", **row})

    tick = time.perf_counter()
    inputs = prepare_stage(
        model, stage, cfg, generator=run.generator, ewc=run.ewc,
        replay=replay if i > 0 else None, frozen=cfg.train.frozen if i > 0 else (), index=index,
    )  # fmt: skip
    summary = train_stage(model, inputs, cfg, generator=run.generator, on_metrics=report_row)
    times["train_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    if run.ewc is not None:
        consolidate(model, stage, cfg, run.ewc, replay if i > 0 else None, run.generator, label)
    times["fisher_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    run.see(stage)
    metrics = _evaluate(run, i)
    times["eval_s"] = time.perf_counter() - tick
    if on_metrics is not None:
        on_metrics({"kind": "eval", "stage": stage.name, "stage_index": index, **metrics})
    info = {
        "stage": stage.name, "epochs": summary.epochs, "steps": summary.steps,
        "codes_reset": summary.codes_reset, "losses": dict(summary.losses),
        "codebook_size": model.codebook_size, **times,
    }  # fmt: skip
    if run.benchmark.meta:  # provenance of a plan's data, e.g. a stand-in for text features
        info["data"] = dict(run.benchmark.meta)
    return metrics, info


def _evaluate(run: _Run, i: int) -> dict[str, float]:
    """Every split of ``cfg.eval.splits`` after stage ``i``: downstream metrics, objective and
    forgetting ("val/" keys for the validation sets)."""
    cfg, stage = run.cfg, run.benchmark.stages[i]
    stage_mods = [s.modalities for s in run.benchmark.stages[: i + 1]]
    metrics: dict[str, float] = {}
    for split in cfg.eval.splits:
        sets = run.benchmark.downstream if split == "test" else run.benchmark.validation
        if sets is None and run.benchmark.downstream is not None:
            continue  # no validation sets could be carved (tiny training sets)
        gen = _eval_generator(cfg.seed, i, split)
        plain = evaluate_stage(run.model, run.benchmark, cfg, run.seen, stage.mediator,
                               generator=gen, sets=sets)  # fmt: skip
        history = run.evals.setdefault(split, [])
        history.append(plain)
        found = plain | continual_metrics(history, stage_mods)
        metrics |= {_split_key(split, k): v for k, v in found.items()}
    return metrics


def _finish(
    run: _Run,
    i: int,
    metrics: dict[str, float],
    info: dict[str, Any],
    on_stage_end: Callable[[StageReport], None] | None,
) -> None:
    """Checkpoint stage ``i`` and hand its report to ``on_stage_end`` (RNG states kept)."""
    report = StageReport(i + 1, run.benchmark.stages[i].name, dict(metrics), None, info)
    snap = None
    if run.path is not None:
        extra = {
            "stage_names": run.names,
            "metrics": [r.metrics for r in run.reports] + [report.metrics],
            "summaries": [r.summary for r in run.reports] + [info],
        }
        snap = ckpt.snapshot(run.model, run.cfg, generator=run.generator, stage=i + 1,
                             ewc=run.ewc, replay=run.replay, extra=extra)  # fmt: skip
        report.checkpoint = ckpt.save(run.path, snap)
    run.reports.append(report)
    if on_stage_end is not None:
        rng = snap["rng"] if snap is not None else ckpt.rng_state(run.generator)
        on_stage_end(report)
        ckpt.restore_rng(rng, run.generator)


def run_continual(
    cfg: ExperimentConfig,
    *,
    out_dir: str | Path | None = None,
    benchmark: Benchmark | None = None,
    on_metrics: MetricsCallback | None = None,
    on_stage_end: Callable[[StageReport], None] | None = None,
    device: str | torch.device = "cpu",
) -> ContinualResult:
    """Train the stages of ``cfg.data.stages`` (or ``benchmark``) in order; see the module doc.

    Args:
        cfg: the experiment; ``comet`` switches adapter, EWC and PMR (see ``config.py``).
        out_dir: folder of ``checkpoint.pt`` (resume point); None = no checkpoints.
        benchmark: prebuilt data (default: :func:`build_benchmark` of ``cfg``).
        on_metrics: gets one dict per epoch (``"kind": "train"``) and one per stage with the
            evaluation (``"kind": "eval"``); both carry ``stage`` and ``stage_index`` (1-based).
        on_stage_end: called with a :class:`StageReport` after each newly completed stage,
            after its checkpoint is written. Global RNG states are restored afterwards, so a
            callback cannot change the run.
        device: "cpu" or "cuda".

    Raises:
        FloatingPointError: a non-finite loss ("stage 2 (audio-text), epoch 3: loss is nan").
        ResumeError: ``out_dir`` holds a checkpoint of another configuration or stage plan.
    """
    t0 = time.perf_counter()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dev = torch.device(device)
    path = None if out_dir is None else Path(out_dir) / CHECKPOINT
    try:
        state = ckpt.load(path) if path is not None and path.exists() else None
    except ValueError as exc:  # damaged or not a checkpoint: the run cannot resume from it
        raise ResumeError(f"{exc}; delete it or use another out_dir") from None
    if benchmark is None and cfg.data.source != "plan":
        names = list(cfg.data.stages)
    else:
        benchmark = build_benchmark(cfg) if benchmark is None else benchmark
        names = [s.name for s in benchmark.stages]
    done = 0
    if state is not None:
        assert path is not None
        check_resume(state, cfg, names)
        done = int(state["stage"])
        if done >= len(names):  # finished: nothing to train
            reports = [StageReport(i + 1, n, m, path, s)
                       for i, (n, m, s) in enumerate(saved_stages(state))]  # fmt: skip
            model = ckpt.restore_model(state, cfg).to(dev)
            return ContinualResult(model, reports, time.perf_counter() - t0, done)
    benchmark = build_benchmark(cfg) if benchmark is None else benchmark
    if [s.name for s in benchmark.stages] != names:
        raise ValueError(
            f"benchmark stages {[s.name for s in benchmark.stages]} differ from {names}"
        )
    _check_cmg_widths(cfg, benchmark.stages)
    if "val" in cfg.eval.splits:
        benchmark = with_validation(benchmark, cfg.data.seed)
    run = _start(cfg, benchmark, names, path, state, dev)
    for i in range(done, len(benchmark.stages)):
        metrics, info = _train(run, i, on_metrics)
        _finish(run, i, metrics, info, on_stage_end)
    return ContinualResult(run.model, run.reports, time.perf_counter() - t0, done)
