"""Resuming a continual run from ``out_dir/checkpoint.pt`` (written after every stage).

A run started again with the same ``out_dir`` continues after its last completed stage and ends
with exactly the metrics of an uninterrupted run; a checkpoint of another configuration or stage
plan is refused (:class:`ResumeError`), except for the keys in :data:`RESUME_FREE`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from comet_model.config import ExperimentConfig
from comet_model.continual import checkpoint as ckpt

__all__ = ["CHECKPOINT", "RESUME_FREE", "ResumeError", "check_resume", "completed_stages"]

CHECKPOINT = "checkpoint.pt"  # file name inside out_dir
RESUME_FREE = ("data.stages", "train.threads", "data.streaming")  # a resumed run may change


class ResumeError(ValueError):
    """``out_dir`` holds a checkpoint that this run cannot continue (other config or stages)."""


def completed_stages(out_dir: str | Path) -> int:
    """Number of stages completed in ``out_dir`` (0 without a readable checkpoint)."""
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        return 0
    try:
        return int(ckpt.load(path)["stage"])
    except (ValueError, OSError, RuntimeError, KeyError):
        return 0


def check_resume(state: Mapping[str, Any], cfg: ExperimentConfig, names: Sequence[str]) -> None:
    """Raise :class:`ResumeError` unless ``state`` is an earlier point of this very run."""
    saved = dict(state["config"])
    now = cfg.to_flat()

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (tuple, list)) else v

    keys = (set(saved) | set(now)) - set(RESUME_FREE)
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


def saved_stages(state: Mapping[str, Any]) -> list[tuple[str, dict[str, float], dict[str, Any]]]:
    """``(name, metrics, summary)`` of every stage the checkpoint completed, in order."""
    extra = state["extra"]
    rows = zip(extra["stage_names"], extra["metrics"], extra["summaries"], strict=False)
    return [(name, dict(m), dict(s)) for name, m, s in rows][: int(state["stage"])]
