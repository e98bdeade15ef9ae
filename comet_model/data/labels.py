"""Per-step label sequences of the digits world (and of the synthetic benchmark).

- :func:`run_labels`: runs of 1-4 steps of one class, adjacent runs different, background runs
  (class ``background``) at a stationary share; what stage sequences and AVVP sets are made of;
- :func:`ave_labels`: one event over a contiguous span, background elsewhere (AVE-like);
- :func:`avvp_labels`: run sequences with at least two distinct classes (AVVP-like);
- :func:`retrieval_labels`: distinct sequences in groups of a base and three one-step variants
  (hard negatives for retrieval);
- :func:`stage_classes`: the digits of each stage under a class plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .types import DataError

MAX_RUN = 4
RETRIEVAL_GROUP = 4  # a base item and its one-step hard negatives
DIGITS = tuple(range(10))

__all__ = ["MAX_RUN", "RETRIEVAL_GROUP", "ave_labels", "avvp_labels", "retrieval_labels",
           "run_labels", "stage_classes"]  # fmt: skip


def stage_classes(
    class_plan: str | Sequence[Sequence[int]], num_stages: int
) -> tuple[tuple[int, ...], ...]:
    """Digits of each stage under a class plan ("full", "overlap" or explicit lists)."""
    if isinstance(class_plan, str):
        if class_plan == "full":
            return tuple(DIGITS for _ in range(num_stages))
        if class_plan == "overlap":
            if num_stages == 1:
                return (DIGITS,)
            plan = [tuple(range(0, 8)), tuple(range(2, 10))]
            return tuple(plan[:num_stages]) + tuple(DIGITS for _ in range(num_stages - 2))
        raise DataError(f"class plan '{class_plan}': expected 'full', 'overlap' or digit lists")
    plan = [tuple(int(c) for c in digits) for digits in class_plan]
    if len(plan) != num_stages:
        raise DataError(f"class plan: {len(plan)} digit lists for {num_stages} stages")
    for digits in plan:
        if not digits or any(not 0 <= c <= 9 for c in digits) or len(set(digits)) != len(digits):
            raise DataError(
                f"class plan: {list(digits)} is not a non-empty list of distinct digits"
            )
    return tuple(plan)


def run_labels(
    n: int,
    steps: int,
    classes: Sequence[int],
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Label sequences made of runs of 1-4 steps; adjacent runs differ; int64 [n, steps].

    Background runs are never adjacent; a run is background with probability p = f / (1 - f)
    unless the previous one was, which makes the stationary share of background runs f.
    """
    cls = np.asarray(classes, dtype=np.int64)
    d = len(cls)
    f = min(max(background_fraction, 0.0), 0.5)
    p_bg = f / (1.0 - f)
    lengths = rng.integers(1, MAX_RUN + 1, size=(n, steps))  # at most `steps` runs are needed
    run_cls = np.empty((n, steps), dtype=np.int64)
    prev_bg = np.zeros(n, dtype=bool)
    prev_idx = np.full(n, -1)  # -1: no previous digit run adjacent
    for k in range(steps):
        # the first run is background with the stationary probability f
        bg = (rng.random(n) < (p_bg if k else f)) & ~prev_bg
        if d == 1:  # a single digit must alternate with background to keep runs distinct
            bg |= prev_idx >= 0
        fresh = rng.integers(0, d, size=n)
        shift = (prev_idx + 1 + rng.integers(0, max(d - 1, 1), size=n)) % d
        idx = np.where(prev_idx < 0, fresh, shift)  # a digit after a digit run differs from it
        run_cls[:, k] = np.where(bg, background, cls[idx])
        prev_idx = np.where(bg, -1, idx)
        prev_bg = bg
    ends = np.cumsum(lengths, axis=1)  # (n, runs)
    run_of_step = (ends[:, None, :] <= np.arange(steps)[None, :, None]).sum(axis=2)  # (n, steps)
    return np.take_along_axis(run_cls, run_of_step, axis=1)


def ave_labels(
    n: int,
    steps: int,
    background: int,
    rng: np.random.Generator,
    classes: Sequence[int] = DIGITS,
) -> np.ndarray:
    """One event (a class of ``classes``) over a contiguous span (2..T-1 steps when T allows),
    background elsewhere; int64 [n, steps]."""
    lo, hi = min(2, max(steps - 1, 1)), max(steps - 1, 1)
    length = rng.integers(lo, hi + 1, size=n)
    start = np.floor(rng.random(n) * (steps - length + 1)).astype(np.int64)
    digit = np.asarray(classes, dtype=np.int64)[rng.integers(0, len(classes), size=n)]
    t = np.arange(steps)[None, :]
    inside = (t >= start[:, None]) & (t < (start + length)[:, None])
    return np.where(inside, digit[:, None], background).astype(np.int64)


def avvp_labels(
    n: int,
    steps: int,
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
    classes: Sequence[int] = DIGITS,
) -> np.ndarray:
    """Run sequences over ``classes`` with at least two distinct classes (when T and the classes
    allow); int64 [n, steps]."""
    labels = run_labels(n, steps, classes, background, background_fraction, rng)
    need = min(2, steps, len(classes))
    for _ in range(100):
        distinct = _distinct_digits(labels, background)
        bad = np.flatnonzero(distinct < need)
        if len(bad) == 0:
            break
        labels[bad] = run_labels(len(bad), steps, classes, background, background_fraction, rng)
    return labels


def _distinct_digits(labels: np.ndarray, background: int) -> np.ndarray:
    onehot = np.zeros((len(labels), int(max(labels.max(), background)) + 1), dtype=bool)
    np.put_along_axis(onehot, labels, True, axis=1)
    onehot[:, background] = False
    return onehot.sum(axis=1)


def retrieval_labels(
    n: int,
    steps: int,
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
    classes: Sequence[int] = DIGITS,
) -> np.ndarray:
    """``n`` distinct label sequences in groups: a base and three one-step variants (a step
    changed to another class or background), shuffled; int64 [n, steps]."""
    alphabet = np.asarray(sorted({*classes, background}), dtype=np.int64)
    num = len(alphabet)
    code_of = np.zeros(int(alphabet.max()) + 1, dtype=np.int64)
    code_of[alphabet] = np.arange(num)
    out = np.empty((0, steps), dtype=np.int64)
    for _ in range(100):
        groups = int(np.ceil(1.5 * n / RETRIEVAL_GROUP)) + 1
        base = run_labels(groups, steps, classes, background, background_fraction, rng)
        items = np.repeat(base, RETRIEVAL_GROUP, axis=0)  # (groups * 4, steps)
        var = np.arange(len(items)) % RETRIEVAL_GROUP != 0
        where = rng.integers(0, steps, size=len(items))
        shift = 1 + rng.integers(0, num - 1, size=len(items))
        rows = np.flatnonzero(var)
        old = code_of[items[rows, where[rows]]]
        items[rows, where[rows]] = alphabet[(old + shift[rows]) % num]
        out = np.concatenate([out, items])
        _, first = np.unique(out, axis=0, return_index=True)
        out = out[np.sort(first)]
        if len(out) >= n:
            break
    if len(out) < n:
        raise DataError(f"retrieval: cannot make {n} distinct sequences of {steps} steps")
    return out[:n][rng.permutation(n)]
