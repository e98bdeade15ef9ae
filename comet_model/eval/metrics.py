"""Continual-learning metrics over an accuracy matrix (pure NumPy).

``acc[t, k]`` is a metric (any "higher is better" score, e.g. cross-modal accuracy in %) on task
k measured after training stage t, NaN where it could not be evaluated yet (for example a task
whose modalities have not been seen). Rows are stages in training order, columns are tasks in
the order they are learnt, so ``acc[k, k]`` is task k just after it was learnt. The matrix may
have more columns than rows (tasks not reached yet). Entries that are NaN are skipped; a
summary with nothing left to average is NaN. Definitions follow Chaudhry et al. 2018
(forgetting) and Lopez-Paz & Ranzato 2017 (BWT, FWT).
"""

from __future__ import annotations

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
