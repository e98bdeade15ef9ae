"""What one stage trains with, set up before its first step (the loop in ``train.py`` only runs it).

:func:`prepare_stage` creates the modules of modalities seen for the first time, the Cross-CPC
stream of the pseudo-modality (replay with a teacher), seeds the codebook from data tokens before
the very first step of a run (``codebook.init == "data"``, spec section 9), and collects the PMR
stream and the parameters the EWC penalty applies to into a :class:`StageInputs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from comet_model.config import ExperimentConfig
from comet_model.continual.batches import sample_semantic_tokens
from comet_model.continual.consolidation import ewc_parameters
from comet_model.continual.ewc import EWCPenalty
from comet_model.continual.expansion import pseudo_source
from comet_model.data.types import StageData
from comet_model.nn.model import CometModel, PseudoSource
from comet_model.nn.replay import PseudoModalityReplay

__all__ = ["StageInputs", "prepare_stage", "seed_codebook_from_data"]


@dataclass
class StageInputs:
    """One stage's data and the COMET terms of its loss, ready for ``train_stage``."""

    stage: StageData
    label: str  # "stage 2 (audio-text)": names the stage in errors
    index: int | None = None  # 1-based stage number (rows carry it as "stage_index")
    pseudo: PseudoSource | None = None  # the PMR stream in Cross-CPC (weight replay.beta_pmr)
    ewc: EWCPenalty | None = None  # consolidated penalty (weight ewc.lam), None = no EWC term
    ewc_params: Mapping[str, nn.Parameter] = field(default_factory=dict)
    frozen: tuple[str, ...] = ()  # parameter groups kept out of the optimiser


@torch.no_grad()
def seed_codebook_from_data(
    model: CometModel, stage: StageData, generator: torch.Generator, *, items: int = 1024
) -> None:
    """Seed the codebook from semantic tokens of random training items (eval-mode encoders)."""
    model.seed_codebook_(sample_semantic_tokens(model, stage, generator, items=items), generator)


def prepare_stage(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    *,
    generator: torch.Generator,
    ewc: EWCPenalty | None = None,
    replay: PseudoModalityReplay | None = None,
    frozen: tuple[str, ...] = (),
    index: int | None = None,
) -> StageInputs:
    """Set the model up for ``stage`` and collect its loss terms (see the module docstring).

    ``ewc`` (once consolidated): its penalty on :func:`ewc_parameters` enters the loss.
    ``replay`` (with a teacher set): the pseudo-modality of ``stage.mediator`` joins Cross-CPC.
    """
    mods = stage.modalities
    for m in mods:
        model.add_modality_(m, stage.train.dim(m))
    use_replay = replay is not None and replay.has_teacher
    if use_replay:
        if stage.mediator is None or stage.mediator not in mods:
            raise ValueError(f"stage '{stage.name}': replay needs a mediator among {mods}")
        model.add_pseudo_stream_()
    if cfg.codebook.init == "data" and not bool(model.codebook_seeded):
        seed_codebook_from_data(model, stage, generator)
    label = f"stage {index} ({stage.name})" if index is not None else f"stage {stage.name}"
    inputs = StageInputs(stage, label, index, frozen=tuple(frozen))
    if use_replay:
        assert replay is not None and stage.mediator is not None
        inputs.pseudo = pseudo_source(model, replay, stage.mediator)
    if ewc is not None and len(ewc) > 0:
        inputs.ewc, inputs.ewc_params = ewc, ewc_parameters(model, cfg, stage.mediator)
    return inputs
