"""Pseudo-Modality Replay (PMR, paper section 3.3, spec section 5).

At the start of stage s >= 2 the codebook of stage s - 1 is frozen as the teacher ``V1``
``[K1, D]`` and ``K2`` new codes are appended to the live codebook. For every step of the
mediator's (e.g. text's) semantic sequence, the pseudo-modality takes the nearest code over
``[V1 ; K2-block]``: a V1 hit contributes the frozen V1 vector, a K2 hit the current K2 vector.
With ``tau`` set, a V1 hit farther than ``tau`` (Euclidean distance) counts as "no matching old
code" and the step takes its nearest K2 code instead. Steps from K2 get weight ``w_k2`` in
Cross-CPC, steps from V1 weight 1. Everything returned is detached: P is a teacher signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from comet_model._util import ResizingBuffers
from comet_model.config import ReplayConfig  # constructor defaults = config defaults
from comet_model.nn.codebook import squared_distances

__all__ = ["PseudoModality", "PseudoModalityReplay"]


@dataclass
class PseudoModality:
    """The pseudo-modality code sequence built from the mediator's semantic features."""

    codes: Tensor  # (batch, steps, dim) detached code vectors
    from_teacher: Tensor  # (batch, steps) bool: True = V1 hit
    step_weights: Tensor  # (batch, steps) float: 1 for V1 hits, w_k2 for K2 hits
    indices: Tensor  # (batch, steps) int64 into cat([V1, K2-block])


class PseudoModalityReplay(ResizingBuffers):
    """PMR: frozen teacher codebook V1 and the pseudo-modality builder (spec section 5).

    Args:
        w_k2: Cross-CPC weight of steps whose pseudo code came from the new K2 block.
        tau: optional Euclidean distance threshold on V1 hits (None = no threshold).
    """

    teacher: Tensor

    def __init__(
        self, *, w_k2: float = ReplayConfig.w_k2, tau: float | None = ReplayConfig.tau
    ) -> None:
        super().__init__()
        if w_k2 < 0:
            raise ValueError(f"w_k2 must be >= 0, got {w_k2}")
        if tau is not None and not tau > 0:  # the same rule as replay.tau
            raise ValueError(f"tau must be > 0 or None, got {tau}")
        self.w_k2 = w_k2
        self.tau = tau
        self.register_buffer("teacher", torch.zeros(0, 0))  # (K1, D); empty = no teacher yet

    @property
    def has_teacher(self) -> bool:
        """True once ``set_teacher_`` was called with a non-empty codebook."""
        return self.teacher.numel() > 0

    @property
    def k1(self) -> int:
        """Number of teacher codes."""
        return int(self.teacher.shape[0])

    @torch.no_grad()
    def set_teacher_(self, teacher: Tensor) -> None:
        """Freeze a detached float32 copy of the previous codebook ``[K1, D]`` as V1."""
        if teacher.dim() != 2:
            raise ValueError(f"teacher must be [K1, D], got shape {tuple(teacher.shape)}")
        self.teacher = teacher.detach().to(torch.float32).clone()

    @torch.no_grad()
    def build(self, mediator_sem: Tensor, new_block: Tensor) -> PseudoModality:
        """Pseudo-modality from the mediator's semantics ``(B, T, D)`` and the K2 block ``[K2, D]``.

        Nearest code over ``cat([V1, new_block])`` (ties go to V1). A step with no usable code
        source (no teacher and an empty block) raises ``ValueError``. With ``tau`` set but an
        empty K2 block, far V1 hits are kept (there is nothing to fall back to).
        """
        dim = mediator_sem.shape[-1]
        teacher = self.teacher.to(mediator_sem.device)
        if not self.has_teacher:
            teacher = teacher.new_zeros(0, dim)
        new_block = new_block.detach().to(device=mediator_sem.device, dtype=torch.float32)
        if new_block.dim() != 2 or new_block.shape[-1] != dim:
            raise ValueError(f"new_block must be [K2, {dim}], got {tuple(new_block.shape)}")
        if teacher.shape[-1] != dim:
            raise ValueError(f"teacher has dim {teacher.shape[-1]}, mediator features {dim}")
        k1, k2 = teacher.shape[0], new_block.shape[0]
        if k1 + k2 == 0:
            raise ValueError("PMR needs a teacher codebook or a non-empty K2 block")

        codes = torch.cat([teacher, new_block], dim=0)  # (K1 + K2, D)
        dist = squared_distances(mediator_sem.detach().float(), codes.float())  # (B, T, K1 + K2)
        best, index = dist.min(dim=-1)  # first minimum: ties resolve to V1
        from_teacher = index < k1
        if self.tau is not None and k2 > 0 and k1 > 0:
            far = from_teacher & (best.sqrt() > self.tau)
            k2_index = dist[..., k1:].argmin(dim=-1) + k1
            index = torch.where(far, k2_index, index)
            from_teacher = from_teacher & ~far

        ones = torch.ones_like(best)
        step_weights = torch.where(from_teacher, ones, ones * self.w_k2)
        return PseudoModality(
            codes=codes[index],
            from_teacher=from_teacher,
            step_weights=step_weights,
            indices=index,
        )

    def extra_repr(self) -> str:
        return f"w_k2={self.w_k2}, tau={self.tau}, k1={self.k1}"
