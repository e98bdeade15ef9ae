"""A stage's data through the model: batches by row index, and semantic tokens of random items."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from comet_model.data.streaming import rows_per_chunk
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
        device = model.codebook.embed.device
        # wide features (CMG pool5 maps, 1 MB an item) are read and encoded 64 MB at a time
        step = min(rows_per_chunk(stage.train.features[m], items) for m in stage.modalities)
        sem: dict[str, list[Tensor]] = {m: [] for m in stage.modalities}
        masks_of: list[dict[str, Tensor] | None] = []
        for part in idx.split(step):
            feats, masks = batch_rows(stage.train, stage.modalities, part, device)
            for m, x in feats.items():
                sem[m].append(model.encode(m, x, None if masks is None else masks.get(m)))
            masks_of.append(masks)
        first = masks_of[0]
        masks = None if first is None else {m: torch.cat([k[m] for k in masks_of]) for m in first}
        return valid_tokens({m: torch.cat(z) for m, z in sem.items()}, masks)
    finally:
        model.train(was_training)
