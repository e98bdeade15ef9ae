"""COMET: continual cross-modal generalization (reference implementation).

The public API is loaded lazily, so ``import comet_model.config`` stays cheap (no torch):

- :class:`comet_model.config.ExperimentConfig`, :func:`comet_model.config.preset`
- :class:`comet_model.nn.model.CometModel`
- :func:`comet_model.continual.pipeline.run_continual` (the continual pipeline)
- :func:`comet_model.data.make_benchmark` (digits world, bring-your-own plans, synthetic)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExperimentConfig": "comet_model.config",
    "preset": "comet_model.config",
    "CometModel": "comet_model.nn.model",
    "run_continual": "comet_model.continual.pipeline",
    "make_benchmark": "comet_model.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'comet_model' has no attribute {name!r}")
