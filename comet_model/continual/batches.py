"""A stage's data through the model: batches by row index, and semantic tokens of random items."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from comet_model.data.types import Sequences, StageData
from comet_model.nn.model import CometModel

__all__ = ["batch_rows", "sample_semantic_tokens", "valid_tokens"]


def batch_rows(
    seqs: Sequences, modalities: tuple[str, ...], idx: Tensor, device: torch.device
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Rows ``idx`` of every modality (and mask) of ``seqs``, on ``device``."""
    feats = {m: seqs.features[m][idx].to(device) for m in modalities}
    masks = {m: k[idx].to(device) for m in modalities if (k := seqs.mask(m)) is not None}
    return feats, masks or None


def valid_tokens(sem: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> Tensor:
    """All valid semantic tokens ``[N, D]`` of a batch (every modality, masked steps dropped)."""
    rows = []
    for m, z in sem.items():
        mask = None if masks is None else masks.get(m)
        rows.append(z.reshape(-1, z.shape[-1]) if mask is None else z[mask.bool()])
    return torch.cat(rows)


@torch.no_grad()
def sample_semantic_tokens(
    model: CometModel, stage: StageData, generator: torch.Generator, *, items: int = 1024
) -> Tensor:
    """Valid semantic tokens ``[N, D]`` of up to ``items`` random training items of ``stage``
    (every modality of the stage, eval-mode encoders, the model's training flag restored)."""
    was_training = model.training
    model.eval()
    try:
        n = stage.train.num_items
        idx = torch.randperm(n, generator=generator)[: min(items, n)]
        feats, masks = batch_rows(stage.train, stage.modalities, idx, model.codebook.embed.device)
        sem = {
            m: model.encode(m, x, None if masks is None else masks.get(m)) for m, x in feats.items()
        }
        return valid_tokens(sem, masks)
    finally:
        model.train(was_training)
