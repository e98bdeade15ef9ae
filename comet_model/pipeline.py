"""The continual pipeline: stages in order, each seeing only its own data (spec sections 1-5).

:func:`run_continual` seeds once, builds the model and, for every stage of the plan:

1. stage s >= 2 with COMET: creates the stage's new modality modules, freezes a copy of the
   codebook as the PMR teacher V1 (replay on) and appends ``replay.k2`` codes seeded from random
   semantic tokens of THIS stage's training data; dead-code reset then only touches that block;
2. trains the stage (:func:`comet_model.train.train_stage`) with the EWC penalty of the stages
   before (weight ``ewc.lam``) and, from stage 2 on, the pseudo-modality of the mediator in
   Cross-CPC (weight ``replay.beta_pmr``);
3. with EWC: estimates the diagonal empirical Fisher (per batch) of this stage's training loss
   on ``ewc.fisher_batches`` random batches of this stage's data and consolidates (paper Eq. 6)
   the adapter's common layers, router and the specific layers of the modalities so far, plus
   (``ewc.mediator``, our extension, default on) the mediator's semantic encoder;
4. evaluates the modalities seen so far (see :func:`evaluate_stage`), adds the objective, the
   forgetting and BWT rows (:func:`continual_metrics`);
5. writes ``out_dir/checkpoint.pt`` atomically (model with its dynamically created modules and
   grown codebook, EWC state, replay teacher, every RNG state, the completed stage count and
   every completed stage's metrics) and then calls ``on_stage_end``.

A stage only ever receives its own :class:`StageData` (training, Fisher, K2 seeding); the
downstream sets are used for evaluation only. Started again with the same ``out_dir``, a run
resumes after its last completed stage and ends with exactly the metrics of an uninterrupted run;
a finished ``out_dir`` returns at once.

Metric keys (``task/pair/metric`` for ``reports.schema.split_metric_key``): those of
:func:`comet_model.evaluate.evaluate_downstream`, plus ``usage/codebook_size``, ``objective``,
``forgetting/<a><-><b>/retrieval``, ``forgetting/mean`` and ``forgetting/bwt``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comet_model import checkpoint as ckpt
from comet_model.config import ConfigError, ExperimentConfig
from comet_model.data.types import Benchmark, StageData
from comet_model.ewc import EWCPenalty, estimate_fisher_diag
from comet_model.metrics import average_forgetting, backward_transfer, forgetting
from comet_model.model import CometModel
from comet_model.replay import PseudoModalityReplay
from comet_model.train import (
    MetricsCallback,
    StageSummary,
    ewc_parameters,
    fisher_loss_batches,
    make_pseudo_source,
    sample_semantic_tokens,
    train_stage,
)

__all__ = [
    "CHECKPOINT",
    "ContinualResult",
    "ResumeError",
    "StageReport",
    "build_benchmark",
    "completed_stages",
    "continual_metrics",
    "evaluate_stage",
    "pair_name",
    "run_continual",
    "seed_everything",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"  # file name inside out_dir
_RESUME_FREE = ("data.stages", "train.threads", "data.streaming")  # a resumed run may change
_CLS_TASKS = (("ave", "acc"), ("avvp", "f1"), ("ave_avvp", "f1"))  # the objective's head metrics


class ResumeError(ValueError):
    """``out_dir`` holds a checkpoint that this run cannot continue (other config or stages)."""


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
    """The benchmark of ``cfg.data`` (stage order ``cfg.data.stages``)."""
    from comet_model.data import make_benchmark

    d = cfg.data
    if d.source == "plan":
        if d.downstream_split != "test":
            raise ConfigError("data.downstream_split: 'val' needs the digits or synthetic source")
        return make_benchmark("plan", plan_file=d.plan_file, streaming=d.streaming)
    kw: dict[str, Any] = {
        "stages": d.stages, "seed": d.seed, "steps": d.steps,
        "train_sequences": d.train_sequences, "val_sequences": d.val_sequences,
    }  # fmt: skip
    if d.source == "digits":
        kw |= {"class_plan": d.class_plan, "downstream_split": d.downstream_split}
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


def completed_stages(out_dir: str | Path) -> int:
    """Number of stages completed in ``out_dir`` (0 without a readable checkpoint)."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        return 0
    try:
        return int(ckpt.load(path)["stage"])
    except (ValueError, OSError, RuntimeError, KeyError):
        return 0


def pair_name(a: str, b: str) -> str:
    """Unordered pair key ``"a<->b"``."""
    return f"{a}<->{b}"


def _ordered(mods: Sequence[str], mediator: str | None) -> list[str]:
    """Modalities in order of first appearance with the mediator last (pair naming order)."""
    return [m for m in mods if m != mediator] + [m for m in mods if m == mediator]


def evaluate_stage(
    model: CometModel,
    benchmark: Benchmark,
    cfg: ExperimentConfig,
    seen: Sequence[str],
    mediator: str | None,
    *,
    generator: torch.Generator,
) -> dict[str, float]:
    """Downstream metrics of the modalities ``seen`` so far that the downstream sets have.

    Classification and localisation (ave, avvp, ave_avvp) for the ordered pairs among the
    non-mediator modalities (all modalities when there is no mediator), retrieval for every
    unordered pair (mediator last in the name), codebook usage and size.
    """
    from comet_model.evaluate import evaluate_downstream

    sets = benchmark.downstream
    out = {"usage/codebook_size": float(model.codebook_size)}
    if sets is None:
        return out
    names = sets.names()  # the retrieval set is optional
    avail = [m for m in seen if all(m in getattr(sets, s).features for s in names)]
    avail = _ordered(avail, mediator)
    if len(avail) < 2:
        return out
    heads = [m for m in avail if m != mediator]
    pairs = [(a, b) for a in heads for b in heads if a != b]
    rpairs = [(a, b) for i, a in enumerate(avail) for b in avail[i + 1 :]]
    rpairs = rpairs if sets.retrieval is not None else []
    metrics = evaluate_downstream(
        model, sets, modalities=avail, pairs=pairs, retrieval_pairs=rpairs,
        num_classes=benchmark.num_classes, background_class=benchmark.background_class,
        head_epochs=cfg.eval.epochs, head_lr=cfg.eval.lr, head_batch=cfg.eval.batch_size,
        generator=generator,
    )  # fmt: skip
    return metrics | out


def _trained_pairs(stage_mods: Sequence[Sequence[str]]) -> set[frozenset[str]]:
    return {frozenset((a, b)) for mods in stage_mods for a in mods for b in mods if a != b}


def continual_metrics(
    history: Sequence[Mapping[str, float]], stage_mods: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Objective, forgetting and BWT after the last stage of ``history``.

    Args:
        history: the evaluation metrics after each completed stage (last = current).
        stage_mods: the modalities of those stages (same length).

    ``objective``: mean of the unseen-pair values (pairs never trained together in any stage
    so far): the ave acc, avvp f1 and ave_avvp f1 in both directions and the retrieval mean of
    every unseen pair; NaN if there is none. ``forgetting/<pair>/retrieval``: for each pair
    trained in an earlier stage, the best earlier retrieval mean minus the current one
    (positive = forgot); ``forgetting/mean`` their mean; ``forgetting/bwt``: backward transfer
    over the stages' pairs (negative = forgot). Forgetting keys appear from stage 2 on.
    """
    if len(history) != len(stage_mods) or not history:
        raise ValueError("history and stage_mods need one entry per completed stage")
    current = history[-1]
    trained = _trained_pairs(stage_mods)
    values: list[float] = []
    for key, value in current.items():
        parts = key.split("/")
        if len(parts) != 3 or not math.isfinite(value):
            continue
        task, pair, metric = parts
        if task == "retrieval" and metric == "mean" and "<->" in pair:
            a, b = pair.split("<->")
        elif (task, metric) in _CLS_TASKS and "->" in pair:
            a, b = pair.split("->")
        else:
            continue
        if frozenset((a, b)) not in trained:
            values.append(value)
    out = {"objective": float(np.mean(values)) if values else math.nan}
    t = len(history) - 1
    if t == 0:
        return out
    # columns: each stage's pairs (by their recorded retrieval name), in order of first training
    columns: list[tuple[str, int]] = []
    for k, mods in enumerate(stage_mods):
        for key in history[k]:
            parts = key.split("/")
            if parts[0] != "retrieval" or parts[-1] != "mean" or len(parts) != 3:
                continue
            if set(parts[1].split("<->")) <= set(mods) and parts[1] not in dict(columns):
                columns.append((parts[1], k))
    if not columns:
        return out
    acc = np.full((t + 1, len(columns)), np.nan)  # acc[stage, pair], NaN before its stage
    for j, (pair, first) in enumerate(columns):
        for s in range(first, t + 1):
            acc[s, j] = history[s].get(f"retrieval/{pair}/mean", math.nan)
    fg = forgetting(acc)
    for j, (pair, first) in enumerate(columns):
        if first < t and math.isfinite(fg[j]):
            out[f"forgetting/{pair}/retrieval"] = float(fg[j])
    out["forgetting/mean"] = average_forgetting(acc)
    by_stage = np.full((t + 1, t + 1), np.nan)  # column k = mean over the pairs of stage k
    for k in range(t + 1):
        cols = [j for j, (_, first) in enumerate(columns) if first == k]
        for s in range(t + 1):
            vals = acc[s, cols]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                by_stage[s, k] = vals.mean()
    out["forgetting/bwt"] = backward_transfer(by_stage)
    return out


def _begin_stage(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    replay: PseudoModalityReplay | None,
    generator: torch.Generator,
) -> None:
    """Stage s >= 2 with COMET: teacher V1 (replay on) and K2 new codes from this stage's data."""
    for m in stage.modalities:  # the new modality's encoder must exist to give tokens
        model.add_modality_(m, stage.train.dim(m))
    if replay is not None:
        replay.set_teacher_(model.codebook.teacher())
    k2 = cfg.replay.k2
    init = model.codebook.embed.new_zeros(0, model.codebook.dim)
    if k2 > 0:
        tokens = sample_semantic_tokens(model, stage, generator)  # [N, D]
        n = tokens.shape[0]
        rows = (
            torch.randperm(n, generator=generator)[:k2]
            if n >= k2
            else torch.randint(n, (k2,), generator=generator)
        )
        init = tokens[rows.to(tokens.device)]
    # appending (even nothing) moves reset_start to the old size: old codes are never re-seeded
    model.codebook.append_codes_(init)


def _consolidate(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    ewc: EWCPenalty,
    replay: PseudoModalityReplay | None,
    generator: torch.Generator,
    label: str,
) -> None:
    """EWC at the end of a stage: per-batch empirical Fisher of the stage's training loss."""
    pseudo = None
    if replay is not None and replay.has_teacher and stage.mediator in stage.modalities:
        pseudo = make_pseudo_source(model, replay, stage.mediator)
    params = ewc_parameters(model, cfg, stage.mediator)
    if not params:
        return
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic network
    try:
        batches = fisher_loss_batches(model, stage, cfg, generator=generator, pseudo=pseudo)
        # cuDNN refuses the LSTM backward in eval mode; the native kernels do not
        with torch.backends.cudnn.flags(enabled=False):
            fisher = estimate_fisher_diag(params, batches, per_sample=False)
    finally:
        model.train(was_training)
    bad = [n for n, f in fisher.items() if not bool(torch.isfinite(f).all())]
    if bad:
        raise FloatingPointError(f"{label}, EWC Fisher: loss gradient of {bad[0]} is not finite")
    ewc.consolidate_(params, fisher)


def _eval_generator(seed: int, index: int) -> torch.Generator:
    # stage 1 uses seed + 1, as the single-stage runs before the continual pipeline did
    return torch.Generator().manual_seed(seed + 1 + 7919 * index)


def _check_resume(state: Mapping[str, Any], cfg: ExperimentConfig, names: Sequence[str]) -> None:
    saved = dict(state["config"])
    now = cfg.to_flat()

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (tuple, list)) else v

    keys = (set(saved) | set(now)) - set(_RESUME_FREE)
    diff = sorted(k for k in keys if norm(saved.get(k)) != norm(now.get(k)))
    if diff:
        raise ResumeError(
            f"checkpoint config differs in {diff[0]!r} ({saved.get(diff[0])!r} saved, "
            f"{now.get(diff[0])!r} now): use another out_dir"
        )
    done_names = list(state["extra"]["stage_names"])[: int(state["stage"])]
    if list(names[: len(done_names)]) != done_names:
        raise ResumeError(
            f"checkpoint stages {done_names} are not a prefix of this run's {list(names)}"
        )


def _restore(state: Mapping[str, Any], cfg: ExperimentConfig, device: torch.device) -> CometModel:
    model = CometModel.from_config(cfg, {m: int(d) for m, d in state["modalities"]})
    if state["pseudo_stream"]:
        model.add_pseudo_stream_()
    model.load_state_dict(state["model"])
    return model.to(device)


def _reports(state: Mapping[str, Any], path: Path) -> list[StageReport]:
    extra = state["extra"]
    return [
        StageReport(i + 1, name, dict(m), path, dict(s))
        for i, (name, m, s) in enumerate(
            zip(extra["stage_names"], extra["metrics"], extra["summaries"], strict=False)
        )
    ][: int(state["stage"])]


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
    state = ckpt.load(path) if path is not None and path.exists() else None
    if benchmark is None and cfg.data.source != "plan":
        names = list(cfg.data.stages)
    else:
        benchmark = build_benchmark(cfg) if benchmark is None else benchmark
        names = [s.name for s in benchmark.stages]
    done = 0
    if state is not None:
        assert path is not None
        _check_resume(state, cfg, names)
        done = int(state["stage"])
        if done >= len(names):  # finished: nothing to train
            model = _restore(state, cfg, dev)
            return ContinualResult(model, _reports(state, path), time.perf_counter() - t0, done)
    benchmark = build_benchmark(cfg) if benchmark is None else benchmark
    stages = benchmark.stages
    if [s.name for s in stages] != names:
        raise ValueError(f"benchmark stages {[s.name for s in stages]} differ from {names}")
    _check_cmg_widths(cfg, stages)

    generator = seed_everything(cfg.seed)
    ewc = replay = None
    if cfg.comet and cfg.ewc.enabled:
        ewc = EWCPenalty(adaptive=cfg.ewc.adaptive, gamma=cfg.ewc.gamma)
    if cfg.comet and cfg.replay.enabled:
        replay = PseudoModalityReplay(w_k2=cfg.replay.w_k2, tau=cfg.replay.tau)
    reports: list[StageReport] = []
    if state is None:
        model = CometModel.from_config(cfg).to(dev)
    else:
        assert path is not None
        model = _restore(state, cfg, dev)
        if ewc is not None and state["ewc"] is not None:
            ewc.load_state_dict(state["ewc"])
        if replay is not None and state["replay"] is not None:
            replay.load_state_dict(state["replay"])
        ckpt.restore_rng(state["rng"], generator)
        reports = _reports(state, path)
    for module in (ewc, replay):
        if module is not None:
            module.to(dev)

    derived = ("forgetting/", "objective")  # recomputed from the plain evaluations
    evals = [{k: v for k, v in r.metrics.items() if not k.startswith(derived)} for r in reports]
    seen: list[str] = []
    for s in stages[:done]:
        seen += [m for m in s.modalities if m not in seen]

    for i in range(done, len(stages)):
        stage, index = stages[i], i + 1
        label = f"stage {index} ({stage.name})"
        times: dict[str, float] = {}
        tick = time.perf_counter()
        use_replay = replay
        if replay is not None and stage.mediator not in stage.modalities:
            log.warning("%s: no mediator shared by the stages, no pseudo-modality replay", label)
            use_replay = None
        if i > 0 and cfg.comet:
            _begin_stage(model, stage, cfg, use_replay, generator)
        times["setup_s"] = time.perf_counter() - tick

        def report_row(row: dict[str, Any]) -> None:
            if on_metrics is not None:
                on_metrics({"kind": "train", **row})

        tick = time.perf_counter()
        summary: StageSummary = train_stage(
            model, stage, cfg, generator=generator, on_metrics=report_row, ewc=ewc,
            replay=use_replay if i > 0 else None, frozen=cfg.train.frozen if i > 0 else (),
            index=index,
        )  # fmt: skip
        times["train_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if ewc is not None:
            _consolidate(model, stage, cfg, ewc, use_replay if i > 0 else None, generator, label)
        times["fisher_s"] = time.perf_counter() - tick

        tick = time.perf_counter()
        seen += [m for m in stage.modalities if m not in seen]
        metrics = evaluate_stage(
            model, benchmark, cfg, seen, stage.mediator, generator=_eval_generator(cfg.seed, i)
        )
        evals.append(metrics)
        metrics = metrics | continual_metrics(evals, [s.modalities for s in stages[: i + 1]])
        times["eval_s"] = time.perf_counter() - tick
        if on_metrics is not None:
            on_metrics({"kind": "eval", "stage": stage.name, "stage_index": index, **metrics})

        info = {
            "stage": stage.name, "epochs": summary.epochs, "steps": summary.steps,
            "codes_reset": summary.codes_reset, "losses": dict(summary.losses),
            "codebook_size": model.codebook_size, **times,
        }  # fmt: skip
        if benchmark.meta:  # provenance of a plan's data, e.g. a stand-in for text features
            info["data"] = dict(benchmark.meta)
        report = StageReport(index, stage.name, dict(metrics), None, info)
        snap = None
        if path is not None:
            extra = {
                "stage_names": names,
                "metrics": [r.metrics for r in reports] + [report.metrics],
                "summaries": [r.summary for r in reports] + [info],
            }
            snap = ckpt.snapshot(
                model, cfg, generator=generator, stage=index, ewc=ewc, replay=replay, extra=extra
            )
            report.checkpoint = ckpt.save(path, snap)
        reports.append(report)
        if on_stage_end is not None:
            rng = snap["rng"] if snap is not None else ckpt.rng_state(generator)
            on_stage_end(report)
            ckpt.restore_rng(rng, generator)
    return ContinualResult(model, reports, time.perf_counter() - t0, done)
