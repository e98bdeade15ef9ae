"""Small pure loss functions and the one place where named losses are weighted.

Modules return *unweighted* named losses; :func:`weighted_total` combines them with the weights
of the configuration and is strict in both directions (a weight without a loss, or a loss
without a weight, raises), so a misspelt or forgotten name cannot be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from comet_model.nn.precision import f32, full_precision

__all__ = ["masked_mean_pool", "masked_mse", "pooled_info_nce", "weighted_total"]


def weighted_total(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Sum of ``weights[name] * losses[name]``.

    Raises ``KeyError`` if a weight names a loss that is not in ``losses`` or a loss has no
    weight. Terms with weight exactly 0 are skipped (not multiplied), so a switched-off loss
    that happens to be NaN cannot poison the total.
    """
    extra = sorted(set(weights) - set(losses))
    if extra:
        raise KeyError(f"weight given for missing loss {extra[0]!r} (losses: {sorted(losses)})")
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"loss {missing[0]!r} has no weight (weights: {sorted(weights)})")
    if not losses:
        raise ValueError("weighted_total of no losses")
    total: Tensor | None = None
    for name, value in losses.items():
        w = float(weights[name])
        if w == 0.0:
            continue
        term = value * w
        total = term if total is None else total + term
    if total is None:  # every weight is 0
        total = next(iter(losses.values())).new_zeros(())
    return total


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the valid steps (``pred``/``target`` ``[B, T, d]``, mask ``[B, T]``).

    Equal to ``F.mse_loss(pred, target)`` when every step is valid.
    """
    sq = (f32(pred) - f32(target)).pow(2)  # float32 reduction under autocast
    if mask is None:
        return sq.mean()
    valid = mask.to(sq.dtype)[..., None]
    return (sq * valid).sum() / (valid.sum() * sq.shape[-1]).clamp_min(1.0)


def masked_mean_pool(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the valid steps: ``[B, T, D]`` -> ``[B, D]`` (zeros for fully padded items)."""
    if mask is None:
        return x.mean(1)
    valid = mask.to(x.dtype)[..., None]
    return (x * valid).sum(1) / valid.sum(1).clamp_min(1.0)


def pooled_info_nce(
    feats: Mapping[str, Tensor],
    masks: Mapping[str, Tensor | None] | None = None,
    *,
    temperature: float = 0.1,
) -> Tensor:
    """Global contrastive alignment of TURN (our reading, spec section 6).

    Each modality's semantic sequence ``[B, T, D]`` is mean-pooled over valid steps and
    L2-normalised; for every unordered modality pair the symmetric InfoNCE (cosine / temperature,
    positives on the diagonal) is averaged over both directions; pairs are summed.
    """
    names = list(feats)
    if len(names) < 2:
        return next(iter(feats.values())).new_zeros(())
    pooled = {
        m: F.normalize(masked_mean_pool(f32(x), None if masks is None else masks.get(m)), dim=-1)
        for m, x in feats.items()
    }
    batch = pooled[names[0]].shape[0]
    target = torch.arange(batch, device=pooled[names[0]].device)
    with full_precision(target.device.type):  # logits and cross-entropy in float32
        return _pairwise_info_nce(names, pooled, target, temperature)


def _pairwise_info_nce(
    names: list[str], pooled: Mapping[str, Tensor], target: Tensor, temperature: float
) -> Tensor:
    """Sum over unordered pairs of the symmetric InfoNCE of pooled unit vectors ``[B, D]``."""
    total = pooled[names[0]].new_zeros(())
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            logits = pooled[a] @ pooled[b].t() / temperature  # [B, B]
            total = total + 0.5 * (
                F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
            )
    return total
