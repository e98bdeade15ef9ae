"""Checkpoints: one dict of state dicts, tensors and primitives (no pickled custom objects).

Layout (``FORMAT`` 1)::

    {"format": 1, "config": cfg.to_flat(), "modalities": [[name, in_dim], ...],
     "pseudo_stream": bool, "model": model.state_dict(), "trainer": Trainer.state_dict() | None,
     "ewc": ... | None, "replay": ... | None, "stage": int, "epoch": int,
     "rng": {"generator": ..., "torch": ..., "cuda": ... | None, "python": ..., "numpy": ...},
     "extra": {...}}

``modalities`` records the order in which the per-modality modules were created, so a fresh
model recreates them (and the Cross-CPC pseudo stream) before loading the weights; the codebook
resizes itself to the saved number of codes. Files are written atomically (temporary file +
``os.replace``) and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comet_model._util import atomic_write
from comet_model.config import ExperimentConfig
from comet_model.nn.model import PSEUDO_STREAM, CometModel

__all__ = ["FORMAT", "load", "restore_model", "restore_rng", "rng_state", "save", "snapshot"]

FORMAT = 1


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """States of ``generator``, torch's global CPU (and, if initialised, CUDA) generators,
    Python's and NumPy's global RNGs."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    version, internal, gauss = random.getstate()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "generator": None if generator is None else generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else None,  # dropout on GPUs
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },  # fmt: skip
    }


def restore_rng(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` recorded (``generator`` only if given and recorded)."""
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached"]))


def snapshot(
    model: CometModel,
    cfg: ExperimentConfig,
    *,
    trainer: Any | None = None,
    generator: torch.Generator | None = None,
    stage: int = 0,
    epoch: int = 0,
    ewc: torch.nn.Module | None = None,
    replay: torch.nn.Module | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of the current state (see the module docstring)."""
    streams = model.cpc.streams if model.cpc is not None else ()
    return {
        "format": FORMAT,
        "config": cfg.to_flat(),
        "modalities": [[m, d] for m, d in model.in_dims.items()],
        "pseudo_stream": PSEUDO_STREAM in streams,
        "model": model.state_dict(),
        "trainer": None if trainer is None else trainer.state_dict(),
        "ewc": None if ewc is None else ewc.state_dict(),
        "replay": None if replay is None else replay.state_dict(),
        "stage": int(stage),
        "epoch": int(epoch),
        "rng": rng_state(generator),
        "extra": dict(extra or {}),
    }


def save(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (parent folders are created)."""
    return atomic_write(path, lambda fh: torch.save(dict(state), fh))


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint (tensors on CPU; ``weights_only=True``: no custom objects); a file
    that is not one (damaged, a folder, unreadable) raises ValueError in one line."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: unsafe
        raise ValueError(f"{path}: unreadable checkpoint (damaged, or not ours)") from None
    except Exception as exc:  # RuntimeError, EOFError, OSError, ...
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {first}"
        raise ValueError(f"{path}: unreadable checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a COMET checkpoint of format {FORMAT}")
    return state


def restore_model(state: Mapping[str, Any], cfg: ExperimentConfig | None = None) -> CometModel:
    """A fresh model with the checkpoint's modalities, streams and weights, built from ``cfg``
    (default: the checkpoint's own config)."""
    cfg = ExperimentConfig.from_flat(state["config"]) if cfg is None else cfg
    model = CometModel.from_config(cfg, {m: int(d) for m, d in state["modalities"]})
    if state["pseudo_stream"]:
        model.add_pseudo_stream_()
    model.load_state_dict(state["model"])
    return model
