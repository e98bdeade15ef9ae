"""Downstream evaluation of a frozen model's quantised codes (COMET spec section 7).

:func:`evaluate_downstream` quantises each needed (set, modality) once, fits the heads of
:mod:`comet_model.eval.heads`, scores them, and adds retrieval (:mod:`comet_model.eval.retrieval`)
and codebook usage (:mod:`comet_model.eval.usage`); :func:`evaluate_stage` picks what to evaluate
among the modalities a continual run has seen so far.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from comet_model.config import ExperimentConfig
from comet_model.data.streaming import row_chunks, rows_per_chunk
from comet_model.data.tasks import head_tasks
from comet_model.data.types import Benchmark, DownstreamSets
from comet_model.eval.heads import Head, fit_heads, score_classification, score_localisation
from comet_model.eval.retrieval import retrieval_both
from comet_model.eval.usage import codebook_usage

__all__ = ["evaluate_downstream", "evaluate_stage"]

_QUANTIZE_CHUNK = 2048  # rows per model.quantize call (bounds memory on large sets)
_Quantized = dict[tuple[str, str], tuple[Tensor, Tensor, "Tensor | None"]]


def _seeded(base: int, key: str) -> torch.Generator:
    """A generator per named task, so a result does not depend on which other tasks ran."""
    return torch.Generator().manual_seed((base + zlib.crc32(key.encode())) % 2**63)


@torch.no_grad()
def _quantize(model: Any, sets: DownstreamSets, needed: set[tuple[str, str]]) -> _Quantized:
    """(set, modality) -> (codes (N, T, D), indices (N, T), mask or None), each quantised once
    in eval mode; every module's training flag is restored afterwards."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [mod.training for mod in modules]
    params = list(model.parameters()) if modules else []
    device = params[0].device if params else torch.device("cpu")
    out: _Quantized = {}
    try:
        if modules:
            model.eval()
        for s, m in sorted(needed):
            x, mask = getattr(sets, s).features[m], getattr(sets, s).mask(m)
            mask = None if mask is None else mask.to(device)
            rows = rows_per_chunk(x, _QUANTIZE_CHUNK)  # fewer rows when wide (CMG video maps)
            xs = (xi.to(device) for xi in row_chunks(x, rows))  # chunks of (n, T, d_m)
            ms = [None] * -(-len(x) // rows) if mask is None else mask.split(rows)
            parts = [model.quantize(m, xi, mi) for xi, mi in zip(xs, ms, strict=True)]
            codes = torch.cat([c for c, _ in parts]).float()
            out[(s, m)] = (codes, torch.cat([i for _, i in parts]).long(), mask)
    finally:
        for mod, flag in zip(modules, flags, strict=True):
            mod.training = flag
    return out


def evaluate_downstream(
    model: Any,
    sets: DownstreamSets,
    *,
    modalities: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    retrieval_pairs: Sequence[tuple[str, str]] | None = None,
    num_classes: int,
    background_class: int | None,
    head_epochs: int = 30,
    head_lr: float = 3e-2,
    head_batch: int = 256,
    generator: torch.Generator,
) -> dict[str, float]:
    """Every downstream of spec section 7 for a frozen ``model`` that has ``codebook_size`` and
    ``quantize(modality, x, mask) -> (codes [N, T, D], indices [N, T])``.

    ``pairs`` (a, b): heads trained on a, tested on b for AVE, AVVP and AVE -> AVVP (default:
    every ordered pair of ``modalities``); ``retrieval_pairs``: both directions of each
    (default: every unordered pair); usage counts the three test sets for ``modalities``.
    Keys: "ave/{a}->{b}/acc|step_acc", "avvp/{a}->{b}/f1|precision|recall",
    "ave_avvp/{a}->{b}/f1|precision|recall", "retrieval/{a}->{b}/r1|r5|r10",
    "retrieval/{a}<->{b}/mean", "usage/codes_0|1|2|3plus", "usage/perplexity",
    "usage/perplexity/{m}". Each head is trained once per source modality, seeded from one draw
    of ``generator`` and the task name.
    """
    mods = list(modalities)
    pairs = [(a, b) for a in mods for b in mods if a != b] if pairs is None else pairs
    if retrieval_pairs is None:  # every unordered pair, if there is a retrieval set
        retrieval_pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
        retrieval_pairs = retrieval_pairs if sets.retrieval is not None else []
    tests = tuple(s for s in ("ave_test", "avvp_test", "retrieval") if s in sets.names())
    needed = {(s, m) for s in tests for m in mods if m in getattr(sets, s).features}
    for a, b in pairs:
        needed |= {("ave_train", a), ("avvp_train", a), ("ave_test", b), ("avvp_test", b)}
    needed |= {("retrieval", m) for pair in retrieval_pairs for m in pair}
    for s, m in sorted(needed):
        if s not in sets.names():
            raise ValueError(f"downstream set '{s}' is absent")
        if m not in getattr(sets, s).features:
            raise ValueError(f"modality '{m}' is not in downstream set '{s}'")
        if s != "retrieval" and getattr(sets, s).labels_for(m) is None:
            raise ValueError(f"downstream set '{s}' has no labels")
    q = _quantize(model, sets, needed)
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    fit = {"epochs": head_epochs, "lr": head_lr, "batch_size": head_batch}
    tasks = head_tasks(sets, num_classes, background_class)  # label space of each head task
    heads: dict[tuple[str, str], Head] = {}
    sources = list(dict.fromkeys(a for a, _ in pairs))
    for task in tasks:  # every source modality's head of a task trained side by side
        space = {"num_classes": task.num_classes, "background_class": task.background_class}
        items = [task.select(q[(task.train_set, a)], sets, "train", a) for a in sources]
        gens = [_seeded(base, f"{task.name}/{a}") for a in sources]
        fitted = fit_heads(items, clip=task.clip, generators=gens, **fit, **space)
        heads |= {(task.name, a): h for a, h in zip(sources, fitted, strict=True)}
    out: dict[str, float] = {}
    for a, b in pairs:
        for task in tasks:
            head = heads[(task.name, a)]
            c, labels, mk = task.select(q[(task.test_set, b)], sets, "test", b)
            if task.clip:
                bg = task.background_class
                res = score_classification(head, c, labels, background_class=bg, mask=mk)
            else:
                res = score_localisation(head, c, labels, mask=mk)
            out |= {f"{task.name}/{a}->{b}/{k}": v for k, v in res.items()}
    for a, b in retrieval_pairs:
        (ca, _, ma), (cb, _, mb) = q[("retrieval", a)], q[("retrieval", b)]
        res = retrieval_both(ca, cb, names=(a, b), mask_a=ma, mask_b=mb)
        out |= {f"retrieval/{k}": v for k, v in res.items()}
    indices: dict[str, list[Tensor]] = {}
    for (s, m), (_, idx, mk) in q.items():
        if s in tests and m in mods:
            indices.setdefault(m, []).append(idx.reshape(-1) if mk is None else idx[mk])
    pooled = {m: torch.cat(indices[m]) for m in mods if m in indices}
    usage = codebook_usage(pooled, int(model.codebook_size))
    return out | {f"usage/{k}": v for k, v in usage.items()}


def _ordered(mods: Sequence[str], mediator: str | None) -> list[str]:
    """Modalities in order of first appearance with the mediator last (pair naming order)."""
    return [m for m in mods if m != mediator] + [m for m in mods if m == mediator]


def evaluate_stage(
    model: Any,
    benchmark: Benchmark,
    cfg: ExperimentConfig,
    seen: Sequence[str],
    mediator: str | None,
    *,
    generator: torch.Generator,
    sets: DownstreamSets | None = None,
) -> dict[str, float]:
    """Downstream metrics of the modalities ``seen`` so far that the downstream sets (``sets``,
    default ``benchmark.downstream``) have.

    Classification and localisation (ave, avvp, ave_avvp) for the ordered pairs among the
    non-mediator modalities (all modalities when there is no mediator), retrieval for every
    unordered pair (mediator last in the name), codebook usage and size. Heads train with
    ``cfg.eval``.
    """
    sets = benchmark.downstream if sets is None else sets
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
