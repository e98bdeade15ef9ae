"""Codebook usage (paper Fig. 3): which modalities activate each code, and perplexities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["codebook_usage", "perplexity", "usage_matrix"]


def usage_matrix(
    indices: Mapping[str, Tensor], codebook_size: int, masks: Mapping[str, Tensor] | None = None
) -> Tensor:
    """Counts [K, M] int64: how often each code is chosen by each modality (in dict order)."""
    cols = [torch.zeros(codebook_size, dtype=torch.long)]
    for m, idx in indices.items():
        mask = None if masks is None else masks.get(m)
        flat = (idx if mask is None else idx[mask.to(idx.device)]).reshape(-1).long().cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
            raise ValueError(f"'{m}' has code indices outside [0, {codebook_size})")
        cols.append(torch.bincount(flat, minlength=codebook_size))
    return torch.stack(cols, 1)[:, 1:]


def perplexity(counts: Tensor) -> float:
    """exp(H(p)) with p = counts / sum and natural log; NaN for an empty histogram."""
    total = float(counts.sum())
    if total == 0:
        return float("nan")
    p = counts[counts > 0].double() / total
    return float(torch.exp(-(p * p.log()).sum()))


def codebook_usage(
    indices: Mapping[str, Tensor], codebook_size: int, masks: Mapping[str, Tensor] | None = None
) -> dict[str, float]:
    """Paper Fig. 3: "codes_0|1|2|3plus" = codes used by 0, 1, 2, 3+ modalities; "perplexity"
    of the pooled code histogram and "perplexity/{m}" of each modality's."""
    u = usage_matrix(indices, codebook_size, masks)  # (K, M)
    n_mod = (u > 0).sum(1)  # (K,) modalities using each code
    out = {f"codes_{j}": float((n_mod == j).sum()) for j in (0, 1, 2)}
    out["codes_3plus"] = float((n_mod >= 3).sum())
    out["perplexity"] = perplexity(u.sum(1))
    out |= {f"perplexity/{m}": perplexity(u[:, j]) for j, m in enumerate(indices)}
    return out
