"""Tables, figures and an HTML index built from the sweep harness's Parquet records.

Reads only the results contract (:mod:`reports.schema`); never imports torch, ray, comet_model or
ablations. Importing the package is cheap: the pandas/matplotlib modules load on first use.
Build everything with ``python reports/build.py`` (console script ``comet-report``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ResultsError", "build", "load_results", "main"]

_LAZY = {
    "ResultsError": "reports.load",
    "load_results": "reports.load",
    "build": "reports.build",
    "main": "reports.build",
}


def __getattr__(name: str) -> Any:
    """Load the public API on first access (keeps ``import reports`` light)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
