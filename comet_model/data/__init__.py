"""Data layer: the digits-world bank and benchmark, bring-your-own stage plans, synthetic data.

Every source returns a :class:`Benchmark` (see ``types.py``); :func:`make_benchmark` picks the
source by name. Importing this package reads no file; the bank is read on first use.
"""

from __future__ import annotations

from typing import Any

from .bank import FeatureBank, ModalityBank, load_bank
from .byo import read_sequences, write_sequences
from .digits import DigitsPlan, digits_benchmark, plan_digits
from .plan import load_plan
from .synthetic import synthetic_benchmark
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData, TaskClasses

SOURCES: tuple[str, ...] = ("digits", "plan", "synthetic")


def make_benchmark(source: str, **kwargs: Any) -> Benchmark:
    """Build a benchmark from ``source``: "digits" (:func:`digits_benchmark` keyword arguments),
    "plan" (``path=`` or ``plan_file=`` a stage plan file, optional ``streaming=`` "auto", "on"
    or "off" and ``stages=`` a selection of the plan's stages, see :func:`load_plan`) or
    "synthetic" (:func:`synthetic_benchmark` keyword arguments)."""
    if source == "digits":
        return digits_benchmark(**kwargs)
    if source == "synthetic":
        return synthetic_benchmark(**kwargs)
    if source == "plan":
        path = kwargs.pop("path", None) or kwargs.pop("plan_file", None)
        streaming = kwargs.pop("streaming", "auto")
        stages = kwargs.pop("stages", None)
        if kwargs:
            raise TypeError(f"make_benchmark('plan'): unexpected arguments {sorted(kwargs)}")
        if not path:
            raise DataError("plan: no stage plan file given (path=...)")
        return load_plan(path, streaming=streaming, stages=stages)
    raise DataError(f"unknown data source '{source}' (known: {', '.join(SOURCES)})")


__all__ = [
    "Benchmark",
    "DataError",
    "DigitsPlan",
    "DownstreamSets",
    "FeatureBank",
    "ModalityBank",
    "SOURCES",
    "Sequences",
    "StageData",
    "TaskClasses",
    "digits_benchmark",
    "load_bank",
    "load_plan",
    "make_benchmark",
    "plan_digits",
    "read_sequences",
    "synthetic_benchmark",
    "write_sequences",
]
