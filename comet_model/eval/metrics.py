"""Continual-learning metrics over an accuracy matrix (pure NumPy).

``acc[t, k]`` is a metric (any "higher is better" score, e.g. cross-modal accuracy in %) on task
k measured after training stage t, NaN where it could not be evaluated yet (for example a task
whose modalities have not been seen). Rows are stages in training order, columns are tasks in
the order they are learnt, so ``acc[k, k]`` is task k just after it was learnt. The matrix may
have more columns than rows (tasks not reached yet). Entries that are NaN are skipped; a
summary with nothing left to average is NaN. Definitions follow Chaudhry et al. 2018
(forgetting) and Lopez-Paz & Ranzato 2017 (BWT, FWT).

:func:`continual_metrics` applies them to a continual run: the objective (mean of the
unseen-pair metrics), the retrieval matrix of each stage's pairs over the stages, its forgetting
and BWT. Evaluation keys are ``task/pair/metric`` (``ave/video->audio/acc``,
``retrieval/image<->audio/mean``); :func:`objective_pair` is the one place that reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _matrix(acc: np.ndarray) -> np.ndarray:
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"acc must be a non-empty 2-D [stages, tasks] array, got {a.shape}")
    return a


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def forgetting(acc: np.ndarray) -> np.ndarray:
    """Per-task forgetting [K]: f_k = max_{t < L} acc[t, k] - acc[L, k], with L the last stage.

    Sign: positive = the task got worse than its best earlier value (forgot), negative = it
    improved beyond every earlier value. NaN for a task with no evaluable earlier stage (e.g.
    the task learnt in the last stage) or no final value.
    """
    a = _matrix(acc)
    last = a.shape[0] - 1
    out = np.full(a.shape[1], np.nan)
    for k in range(a.shape[1]):
        earlier = a[:last, k]
        earlier = earlier[np.isfinite(earlier)]
        if earlier.size and np.isfinite(a[last, k]):
            out[k] = earlier.max() - a[last, k]
    return out


def average_forgetting(acc: np.ndarray) -> float:
    """Mean of :func:`forgetting` over the tasks where it is defined (positive = forgot)."""
    return _nanmean(forgetting(acc))


def backward_transfer(acc: np.ndarray) -> float:
    """BWT = mean over k < L of (acc[L, k] - acc[k, k]), L the last stage (Lopez-Paz & Ranzato).

    Sign: negative = forgetting, positive = later stages helped earlier tasks. It compares with
    the value right after learning task k, whereas :func:`forgetting` compares with the best
    earlier value, so BWT = -average_forgetting only when each task's best earlier value is the
    one just after it was learnt (e.g. scores that never rise after their own stage).
    Pairs with a NaN are skipped.
    """
    a = _matrix(acc)
    last = a.shape[0] - 1
    k = np.arange(min(last, a.shape[1]))
    return _nanmean(a[last, k] - a[k, k])


def average_accuracy(acc: np.ndarray) -> float:
    """ACC = mean of the last row over its evaluable (non-NaN) tasks."""
    return _nanmean(_matrix(acc)[-1])


def forward_transfer(acc: np.ndarray, baseline: np.ndarray) -> float:
    """FWT = mean over tasks 0 < k <= L + 1 of (acc[k - 1, k] - b_k), b_k the score of task k for an
    untrained (or reference) model (Lopez-Paz & Ranzato).

    Sign: positive = learning earlier tasks already helped task k before its own stage.
    Pairs with a NaN are skipped (e.g. tasks not evaluable before their stage).
    """
    a = _matrix(acc)
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (a.shape[1],):
        raise ValueError(f"baseline must have shape ({a.shape[1]},), got {b.shape}")
    k = np.arange(1, min(a.shape[0] + 1, a.shape[1]))  # needs stage k - 1 and task k
    return _nanmean(a[k - 1, k] - b[k])


#: The metrics the objective averages, with the separator of their pair names.
OBJECTIVE_METRICS: Mapping[tuple[str, str], str] = {
    ("ave", "acc"): "->",
    ("avvp", "f1"): "->",
    ("ave_avvp", "f1"): "->",
    ("retrieval", "mean"): "<->",
}


def objective_pair(key: str) -> tuple[str, frozenset[str]] | None:
    """``(task, {a, b})`` of an evaluation key the objective counts, None for any other key:
    ``"ave/video->audio/acc"`` -> ``("ave", {"video", "audio"})``."""
    parts = key.split("/")
    if len(parts) != 3:
        return None
    task, pair, metric = parts
    sep = OBJECTIVE_METRICS.get((task, metric))
    if sep is None or sep not in pair:
        return None
    a, b = pair.split(sep)
    return task, frozenset((a, b))


def trained_pairs(stage_mods: Sequence[Sequence[str]]) -> set[frozenset[str]]:
    """Every pair of modalities trained together in one of the stages."""
    return {frozenset((a, b)) for mods in stage_mods for a in mods for b in mods if a != b}


def unseen_objective(metrics: Mapping[str, float], trained: set[frozenset[str]]) -> float:
    """Mean of the finite objective metrics (:data:`OBJECTIVE_METRICS`) of pairs not in
    ``trained``; NaN if there is none."""
    values = []
    for key, value in metrics.items():
        found = objective_pair(key)
        if found is not None and math.isfinite(value) and found[1] not in trained:
            values.append(value)
    return float(np.mean(values)) if values else math.nan


def retrieval_matrix(
    history: Sequence[Mapping[str, float]], stage_mods: Sequence[Sequence[str]]
) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Columns ``(pair name, first stage)`` of each stage's retrieval pairs, in order of first
    training, and ``acc[stage, pair]`` = their retrieval mean after each stage (NaN before the
    pair's stage)."""
    columns: dict[str, int] = {}
    for k, mods in enumerate(stage_mods):
        for key in history[k]:
            found = objective_pair(key)
            if found is None or found[0] != "retrieval" or not found[1] <= set(mods):
                continue
            columns.setdefault(key.split("/")[1], k)
    last = len(history) - 1
    acc = np.full((last + 1, len(columns)), np.nan)
    for j, (pair, first) in enumerate(columns.items()):
        for s in range(first, last + 1):
            acc[s, j] = history[s].get(f"retrieval/{pair}/mean", math.nan)
    return list(columns.items()), acc


def stage_means(columns: Sequence[tuple[str, int]], acc: np.ndarray) -> np.ndarray:
    """``[stages, stages]``: column k = the mean over the pairs first trained in stage k."""
    t = acc.shape[0]
    out = np.full((t, t), np.nan)
    for k in range(t):
        cols = [j for j, (_, first) in enumerate(columns) if first == k]
        for s in range(t):
            vals = acc[s, cols]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                out[s, k] = vals.mean()
    return out


def continual_metrics(
    history: Sequence[Mapping[str, float]], stage_mods: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Objective, forgetting and BWT after the last stage of ``history``.

    Args:
        history: the evaluation metrics after each completed stage (last = current).
        stage_mods: the modalities of those stages (same length).

    ``objective``: :func:`unseen_objective` of the current metrics (pairs never trained together
    in any stage so far). ``forgetting/<pair>/retrieval``: for each pair trained in an earlier
    stage, the best earlier retrieval mean minus the current one (positive = forgot);
    ``forgetting/mean`` their mean; ``forgetting/bwt``: backward transfer over the stages'
    pairs (negative = forgot). Forgetting keys appear from stage 2 on.
    """
    if len(history) != len(stage_mods) or not history:
        raise ValueError("history and stage_mods need one entry per completed stage")
    out = {"objective": unseen_objective(history[-1], trained_pairs(stage_mods))}
    t = len(history) - 1
    if t == 0:
        return out
    columns, acc = retrieval_matrix(history, stage_mods)
    if not columns:
        return out
    fg = forgetting(acc)
    for j, (pair, first) in enumerate(columns):
        if first < t and math.isfinite(fg[j]):
            out[f"forgetting/{pair}/retrieval"] = float(fg[j])
    out["forgetting/mean"] = average_forgetting(acc)
    out["forgetting/bwt"] = backward_transfer(stage_means(columns, acc))
    return out
