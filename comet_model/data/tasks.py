"""The head tasks of the downstream evaluation: their items, labels and label spaces.

Three tasks train a head on one modality's frozen codes and score it on another's (spec
section 7, dcid_reference section 3):

- ``ave``: clip classification, trained on ``ave_train``, scored on ``ave_test``;
- ``avvp``: per-step multi-label localisation, ``avvp_train`` -> ``avvp_test``;
- ``ave_avvp``: localisation trained on ``ave_train`` and scored on ``avvp_test``. With
  ``DownstreamSets.ave_avvp_shared`` (CMG's AVE and AVVP have different label spaces) it keeps
  the clips with an event of a shared class and relabels both sides into the shared space:
  the shared AVVP classes in id order, then background (every other class counts as
  background); without it both sides already share one label space and are used as they are.

Labels are integer class ids ``[N, T]`` (-1 = unknown) or multi-hot ``[N, T, C]``;
:func:`step_targets` turns either into the per-step BCE targets of a localisation head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .types import DownstreamSets, TaskClasses

__all__ = ["HeadTask", "head_tasks", "known_steps", "step_targets"]


def known_steps(labels: Tensor) -> Tensor:
    """bool ``[N, T]``: the labelled steps (``>= 0`` ids; every multi-hot step)."""
    if labels.ndim == 3:
        return torch.ones(labels.shape[:2], dtype=torch.bool, device=labels.device)
    return labels >= 0


def step_targets(labels: Tensor, num_classes: int) -> Tensor:
    """float ``[N, T, C]`` 0/1 targets: one-hot of class ids (unknown -> class 0, to be
    masked by :func:`known_steps`) or the multi-hot labels themselves."""
    if labels.ndim == 3:
        if labels.shape[-1] != num_classes:
            raise ValueError(f"multi-hot labels have {labels.shape[-1]} classes, not {num_classes}")
        return labels.float()
    return F.one_hot(labels.clamp_min(0), num_classes).float()


@dataclass(frozen=True)
class HeadTask:
    """One head task: the sets it trains and scores on, its label space and its relabelling."""

    name: str  # "ave", "avvp" or "ave_avvp" (the metric key prefix)
    train_set: str  # DownstreamSets field of the training items
    test_set: str  # DownstreamSets field of the scored items
    clip: bool  # clip classification (the AVE head) instead of per-step localisation
    num_classes: int
    background_class: int | None
    shared: tuple[tuple[int, int], ...] | None = None  # (AVE, AVVP) pairs; ave_avvp only

    def select(
        self,
        quantized: tuple[Tensor, Tensor, Tensor | None],
        sets: DownstreamSets,
        split: Literal["train", "test"],
        modality: str,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(codes, labels, mask) of this task's items of ``split`` in ``modality``, from the
        set's quantised ``(codes [N, T, D], indices, mask)``."""
        codes, _, mask = quantized
        name = self.train_set if split == "train" else self.test_set
        labels = getattr(sets, name).labels_for(modality)
        if labels is None:
            raise ValueError(f"downstream set '{name}' has no labels for '{modality}'")
        labels = labels.to(codes.device)
        if self.shared is None:
            return codes, labels, mask
        side = 0 if split == "train" else 1  # AVE classes train, AVVP classes are scored
        avvp = sorted({b for _, b in self.shared})  # shared-space ids: AVVP class order
        compact = [avvp.index(b) for _, b in self.shared]
        labels, rows = _to_shared(labels, [p[side] for p in self.shared], compact)
        return codes[rows], labels[rows], None if mask is None else mask[rows]


def _to_shared(labels: Tensor, classes: list[int], compact: list[int]) -> tuple[Tensor, Tensor]:
    """Labels in the shared space (k events, background k) and the rows with a shared event."""
    k = max(compact) + 1
    if labels.ndim == 3:  # multi-hot: one column per shared class, then background
        ev = torch.zeros(*labels.shape[:2], k, dtype=torch.bool, device=labels.device)
        for c, j in zip(classes, compact, strict=True):
            ev[..., j] |= labels[..., c]
        out = torch.cat([ev, ~ev.any(-1, keepdim=True)], -1)
        return out, ev.any(-1).any(-1).nonzero().squeeze(1)
    size = max(int(labels.max()) + 1, max(classes) + 1)
    lut = torch.full((size,), k, dtype=torch.long, device=labels.device)
    lut[torch.tensor(classes, device=labels.device)] = torch.tensor(compact, device=labels.device)
    out = torch.where(labels >= 0, lut[labels.clamp_min(0)], -1)
    return out, ((out >= 0) & (out != k)).any(1).nonzero().squeeze(1)


def head_tasks(
    sets: DownstreamSets, num_classes: int, background_class: int | None
) -> tuple[HeadTask, ...]:
    """The ave, avvp and ave_avvp tasks of ``sets`` (ave_avvp only when some class is shared);
    label spaces default to the benchmark's."""
    default = TaskClasses(num_classes, background_class)
    ave, avvp = (sets.classes.get(t, default) for t in ("ave", "avvp"))
    shared = sets.ave_avvp_shared
    tasks = (
        HeadTask("ave", "ave_train", "ave_test", True, ave.num_classes, ave.background_class),
        HeadTask("avvp", "avvp_train", "avvp_test", False, avvp.num_classes, avvp.background_class),
    )
    if shared == ():
        return tasks
    if shared is None:
        cross = (avvp.num_classes, avvp.background_class)
    else:
        k = len({b for _, b in shared})
        cross = (k + 1, k)
    return (*tasks, HeadTask("ave_avvp", "ave_train", "avvp_test", False, *cross, shared=shared))
