"""Cell statistics of the report: mean, sample std and n over seeds, and paired t-intervals.

Every table cell summarises one number per seed (runs of one variant are replicates that differ
only by their seed). Differences between two variants are paired by seed: the interval is the
Student-t interval of the per-seed differences, ``mean(d) +- t_{(1+level)/2, n-1} sd(d)/sqrt(n)``,
which is exact for normal differences and needs n >= 2 (below that it is reported as "n/a").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

DAGGER = "\u2020"
DOUBLE_DAGGER = "\u2021"  # a cell mixing runs of different code or data
DASH = "\u2013"


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1; NaN below two values) and count."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class PairedDiff:
    """Mean of per-seed differences ``a - b`` and its t-interval (NaN bounds when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def summarize(values: Iterable[float]) -> Summary:
    """Summary of the finite values (NaN and inf are dropped, so n counts real measurements)."""
    arr = _finite(values)
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    std = float(arr.std(ddof=1)) if n >= 2 else math.nan
    return Summary(mean, std, n)


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values``; ``(nan, nan)`` when n < 2."""
    arr = _finite(values)
    n = int(arr.size)
    if n < 2:
        return math.nan, math.nan
    from scipy.stats import t as student_t  # imported here: scipy.stats is slow to import

    mean = float(arr.mean())
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def paired_diff(
    a: Mapping[object, float], b: Mapping[object, float], level: float = 0.95
) -> PairedDiff:
    """Paired difference ``a - b`` over the seeds both have finite values for (t-interval)."""
    seeds = sorted(
        (s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s])), key=str
    )
    d = np.asarray([a[s] - b[s] for s in seeds], dtype=np.float64)
    if d.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, 0)
    lo, hi = t_interval(d, level)
    return PairedDiff(float(d.mean()), lo, hi, int(d.size))
