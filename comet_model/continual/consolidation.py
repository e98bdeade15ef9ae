"""EWC at the end of a stage: the Fisher of the stage's training loss, then consolidation.

Paper Eq. 6 (spec section 4): while a stage's data is still there, the diagonal empirical Fisher
is estimated per batch (squared gradients of the mean loss of each batch, averaged over
``ewc.fisher_batches`` random training batches of this stage only) for the parameters EWC
protects, and :meth:`EWCPenalty.consolidate_` stores it with the anchors theta*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from comet_model.config import ExperimentConfig
from comet_model.continual.batches import batch_rows
from comet_model.continual.ewc import EWCPenalty, estimate_fisher_diag
from comet_model.continual.expansion import pseudo_source
from comet_model.continual.train import loss_weights
from comet_model.data.types import StageData
from comet_model.nn.losses import weighted_total
from comet_model.nn.model import CometModel, PseudoSource
from comet_model.nn.replay import PseudoModalityReplay

__all__ = ["consolidate", "ewc_parameters", "fisher_loss_batches"]


def ewc_parameters(
    model: CometModel, cfg: ExperimentConfig, mediator: str | None
) -> dict[str, nn.Parameter]:
    """What EWC protects under ``cfg``: the adapter (common, router, specific layers of every
    modality created so far) and, with ``ewc.mediator``, the mediator's semantic encoder."""
    return model.ewc_parameters(model.modalities, mediator=mediator if cfg.ewc.mediator else None)


def fisher_loss_batches(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    *,
    generator: torch.Generator,
    pseudo: PseudoSource | None = None,
) -> Iterator[Callable[[], Tensor]]:
    """``ewc.fisher_batches`` callables, each the stage's weighted training loss (without the
    EWC term; with PMR if ``pseudo``) on a random training batch of ``stage`` only.

    Batches are drawn from ``generator`` when the iterator is consumed; the caller sets eval
    mode (no dropout) if it wants a deterministic Fisher.
    """
    n = stage.train.num_items
    bsz = min(cfg.train.batch_size, n)
    weights = loss_weights(cfg, model)
    device = model.codebook.embed.device
    for _ in range(cfg.ewc.fisher_batches):
        idx = torch.randperm(n, generator=generator)[:bsz]

        def loss(idx: Tensor = idx) -> Tensor:
            feats, masks = batch_rows(stage.train, stage.modalities, idx, device)
            out = model(feats, masks, generator=generator, pseudo=pseudo)
            return weighted_total(out.losses, {k: weights[k] for k in out.losses})

        yield loss


def consolidate(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    ewc: EWCPenalty,
    replay: PseudoModalityReplay | None,
    generator: torch.Generator,
    label: str,
) -> None:
    """Per-batch empirical Fisher of the stage's training loss, consolidated into ``ewc``."""
    pseudo = None
    if replay is not None and replay.has_teacher and stage.mediator in stage.modalities:
        pseudo = pseudo_source(model, replay, stage.mediator)
    params = ewc_parameters(model, cfg, stage.mediator)
    if not params:
        return
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic network
    try:
        batches = fisher_loss_batches(model, stage, cfg, generator=generator, pseudo=pseudo)
        # cuDNN refuses the LSTM backward in eval mode; the native kernels do not
        with torch.backends.cudnn.flags(enabled=False):
            fisher = estimate_fisher_diag(params, batches, per_sample=False)
    finally:
        model.train(was_training)
    bad = [n for n, f in fisher.items() if not bool(torch.isfinite(f).all())]
    if bad:
        raise FloatingPointError(f"{label}, EWC Fisher: loss gradient of {bad[0]} is not finite")
    ewc.consolidate_(params, fisher)
