"""The expanding codebook and the PMR teacher at the start of a later stage (spec section 5).

Stage s >= 2 with COMET starts by freezing a copy of the codebook as the teacher V1 (replay on)
and appending ``replay.k2`` codes seeded from random semantic tokens of THIS stage's training
data (EMA statistics at zero); with ``codebook.protect_old`` (on with COMET, spec section 5) the
dead-code reset then only touches the new block, so the old codes, which the old data no longer
reaches, are never re-seeded. Without COMET the same protection (a control arm) leaves no code
to reset in later stages. :func:`pseudo_source` gives the
pseudo-modality stream of the stage: the mediator's semantic sequence mapped to its nearest codes
over ``[V1 ; newest block]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from comet_model.config import ExperimentConfig
from comet_model.continual.batches import sample_semantic_tokens
from comet_model.data.types import StageData
from comet_model.nn.model import CometModel
from comet_model.nn.replay import PseudoModality, PseudoModalityReplay

__all__ = ["expand_codebook", "protects_old_codes", "pseudo_source"]


def protects_old_codes(cfg: ExperimentConfig) -> bool:
    """Whether stages >= 2 exempt earlier stages' codes from the dead-code reset
    (``codebook.protect_old``; "with_comet": exactly when COMET is on)."""
    mode = cfg.codebook.protect_old
    return cfg.comet if mode == "with_comet" else mode == "on"


def expand_codebook(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    replay: PseudoModalityReplay | None,
    generator: torch.Generator,
) -> None:
    """Stage s >= 2 with COMET: teacher V1 (replay on) and K2 new codes from this stage's data."""
    for m in stage.modalities:  # the new modality's encoder must exist to give tokens
        model.add_modality_(m, stage.train.dim(m))
    if replay is not None:
        replay.set_teacher_(model.codebook.teacher())
    k2 = cfg.replay.k2
    init = model.codebook.embed.new_zeros(0, model.codebook.dim)
    if k2 > 0:
        tokens = sample_semantic_tokens(model, stage, generator)  # [N, D]
        n = tokens.shape[0]
        rows = (
            torch.randperm(n, generator=generator)[:k2]
            if n >= k2
            else torch.randint(n, (k2,), generator=generator)
        )
        init = tokens[rows.to(tokens.device)]
    # with protection, appending (even nothing) moves reset_start to the old size: the old codes
    # are never re-seeded
    model.codebook.append_codes_(init, protect_old=protects_old_codes(cfg))


def pseudo_source(
    model: CometModel, replay: PseudoModalityReplay, mediator: str
) -> Callable[[dict[str, Tensor]], PseudoModality]:
    """The PMR stream of a stage: the pseudo-modality of ``mediator``'s detached semantic
    features over ``[V1 (replay's teacher); the codebook's newest block]`` (spec section 5)."""
    cb = model.codebook

    def build(sem: dict[str, Tensor]) -> PseudoModality:
        return replay.build(sem[mediator], cb.embed[int(cb.reset_start) :])

    return build
