"""Zero-shot retrieval on time-pooled codes with pessimistic tie handling (spec section 7).

R@K are percentages. Ties rank pessimistically, so a collapsed codebook (every item the same
vector) scores 0, not 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from comet_model.nn.losses import masked_mean_pool

__all__ = ["ranks_from_similarity", "retrieval_both", "retrieval_recall"]


def ranks_from_similarity(sim: Tensor, tie_tol: float = 1e-6) -> Tensor:
    """Pessimistic 0-based rank [N] of the match j = i in each row of sim [N, N]: the number of
    items scoring >= s_ii - tie_tol, minus one. Ties count as ranked ahead, so a collapsed
    model whose vectors are all identical ranks every match last instead of first."""
    return (sim >= sim.diagonal()[:, None] - tie_tol).sum(1) - 1


def retrieval_recall(
    query: Tensor,
    gallery: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    query_mask: Tensor | None = None,
    gallery_mask: Tensor | None = None,
    tie_tol: float = 1e-6,
) -> dict[str, float]:
    """Zero-shot retrieval: time-pooled codes [N, T, D], cosine similarity, item i of ``query``
    matches item i of ``gallery``; "r{K}" = % of queries whose match has rank < K."""
    if query.shape[0] != gallery.shape[0]:
        raise ValueError(f"query has {query.shape[0]} items, gallery {gallery.shape[0]}")
    q = F.normalize(masked_mean_pool(query.float(), query_mask), dim=-1)  # (N, D)
    g = F.normalize(masked_mean_pool(gallery.float(), gallery_mask), dim=-1)  # (N, D)
    ranks = ranks_from_similarity(q @ g.T, tie_tol)
    return {f"r{k}": 100.0 * float((ranks < k).float().mean()) for k in ks}


def retrieval_both(
    a: Tensor,
    b: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    names: tuple[str, str] = ("a", "b"),
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
) -> dict[str, float]:
    """Both directions: "{a}->{b}/r{K}", "{b}->{a}/r{K}" and "{a}<->{b}/mean" (mean of all)."""
    ab = retrieval_recall(a, b, ks, query_mask=mask_a, gallery_mask=mask_b)
    ba = retrieval_recall(b, a, ks, query_mask=mask_b, gallery_mask=mask_a)
    out = {f"{names[0]}->{names[1]}/{k}": v for k, v in ab.items()}
    out |= {f"{names[1]}->{names[0]}/{k}": v for k, v in ba.items()}
    out[f"{names[0]}<->{names[1]}/mean"] = sum(out.values()) / len(out)
    return out
