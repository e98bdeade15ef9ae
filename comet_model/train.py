"""The only optimisation loop: one stage of paired data (spec sections 2 and 9).

Per step: slice a batch from pre-shuffled tensors; phase 1 of the forward pass (encoders,
adapter, codebook); ``club.inner_steps`` Adam steps of every CLUB estimator on the detached
``(vq, spec)`` pairs of this batch (own optimisers, dcid_reference 1.10); phase 2 (losses);
weighted total (+ EWC penalty weighted by ``ewc.lam``, + PMR weighted by ``replay.beta_pmr``);
backward; global gradient-norm clip; Adam step; then the codebook's MM-EMA update and dead-code
reset, AFTER backward (an in-place EMA before backward breaks autograd of CMCM, spec section 9).

Losses are accumulated as detached tensors and reported once per epoch through ``on_metrics``
(``{"stage", "epoch", "step", "seconds", "loss/<name>", "loss/total", ...}``): no per-step host
sync apart from the dead-code counter. A non-finite epoch loss raises ``FloatingPointError``
naming the stage and the epoch.

Also here, because they run a stage's data through the model: :func:`sample_semantic_tokens`
(seeding codes from data), :func:`make_pseudo_source` (the PMR stream of a stage) and
:func:`fisher_loss_batches` (the stage's training loss on random batches, for EWC's Fisher).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from comet_model.config import ExperimentConfig
from comet_model.data.streaming import rows_per_chunk
from comet_model.data.types import Sequences, StageData
from comet_model.ewc import EWCPenalty
from comet_model.losses import weighted_total
from comet_model.model import CometModel, PseudoSource
from comet_model.replay import PseudoModality, PseudoModalityReplay

__all__ = [
    "StageSummary",
    "Trainer",
    "ewc_parameters",
    "fisher_loss_batches",
    "loss_weights",
    "make_pseudo_source",
    "sample_semantic_tokens",
    "seed_codebook_from_data",
    "train_stage",
    "train_step",
]

MetricsCallback = Callable[[dict[str, Any]], None]


@dataclass
class StageSummary:
    """What one call of :func:`train_stage` did."""

    stage: str
    epochs: int  # epochs run by this call
    steps: int  # optimisation steps run by this call
    seconds: float
    codes_reset: int  # dead codes re-seeded
    losses: dict[str, float] = field(default_factory=dict)  # means over the last epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics dict per epoch


class Trainer:
    """Main Adam optimiser over the trainable groups plus one Adam per CLUB estimator.

    ``frozen``: group names of :meth:`CometModel.param_groups` (or prefixes such as
    ``"semantic"``) whose parameters get ``requires_grad=False`` and stay out of the optimiser.
    """

    def __init__(
        self, model: CometModel, cfg: ExperimentConfig, *, frozen: Collection[str] = ()
    ) -> None:
        groups = model.param_groups()
        unmatched = [f for f in frozen if not any(_matches(g, f) for g in groups)]
        if unmatched:
            raise ValueError(f"frozen group {unmatched[0]!r} not in {sorted(groups)}")
        self.model, self.frozen = model, tuple(frozen)
        self.params: list[nn.Parameter] = []
        for name, params in groups.items():
            train = not any(_matches(name, f) for f in frozen)
            for p in params:
                p.requires_grad_(train)
            if train:
                self.params += params
        self.optimizer = _adam(self.params, cfg.train.lr)
        self.club_optimizers = {m: _adam(ps, cfg.club.lr) for m, ps in model.club_groups().items()}

    def state_dict(self) -> dict[str, Any]:
        """Optimiser states (tensors and primitives only)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "club": {m: o.state_dict() for m, o in self.club_optimizers.items()},
            "frozen": list(self.frozen),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the states written by :meth:`state_dict`."""
        if list(state["frozen"]) != list(self.frozen):
            raise ValueError(f"optimiser state froze {state['frozen']}, trainer {self.frozen}")
        self.optimizer.load_state_dict(state["optimizer"])
        if set(state["club"]) != set(self.club_optimizers):
            raise ValueError(f"CLUB optimisers {sorted(state['club'])} vs {self.club_optimizers}")
        for m, o in self.club_optimizers.items():
            o.load_state_dict(state["club"][m])


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one call for all tensors instead of ~10 ops per tensor: the
    per-tensor loop was about 7 % of a default-preset step on CPU) when every tensor supports it."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused and bool(params))


def _clip(params: list[nn.Parameter], max_norm: float) -> None:
    """Global gradient-norm clip with the multi-tensor kernels (fewer per-tensor ops)."""
    nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def _matches(group: str, pattern: str) -> bool:
    return group == pattern or group.startswith(pattern + ".")


def _valid_tokens(sem: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> Tensor:
    """All valid semantic tokens ``[N, D]`` of a batch."""
    rows = []
    for m, z in sem.items():
        mask = None if masks is None else masks.get(m)
        rows.append(z.reshape(-1, z.shape[-1]) if mask is None else z[mask.bool()])
    return torch.cat(rows)


def _batch(
    seqs: Sequences, modalities: tuple[str, ...], idx: Tensor, device: torch.device
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Rows ``idx`` of every modality (and mask), on ``device``."""
    feats = {m: seqs.features[m][idx].to(device) for m in modalities}
    masks = {m: k[idx].to(device) for m in modalities if (k := seqs.mask(m)) is not None}
    return feats, masks or None


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
        # wide features (CMG pool5 maps, 1 MB an item) are read and encoded 64 MB at a time
        step = min(rows_per_chunk(stage.train.features[m], items) for m in stage.modalities)
        sem: dict[str, list[Tensor]] = {m: [] for m in stage.modalities}
        masks_of: list[dict[str, Tensor] | None] = []
        for part in idx.split(step):
            feats, masks = _batch(stage.train, stage.modalities, part, model.codebook.embed.device)
            for m, x in feats.items():
                sem[m].append(model.encode(m, x, None if masks is None else masks.get(m)))
            masks_of.append(masks)
        first = masks_of[0]
        masks = None if first is None else {m: torch.cat([k[m] for k in masks_of]) for m in first}
        return _valid_tokens({m: torch.cat(z) for m, z in sem.items()}, masks)
    finally:
        model.train(was_training)


@torch.no_grad()
def seed_codebook_from_data(
    model: CometModel, stage: StageData, generator: torch.Generator, *, items: int = 1024
) -> None:
    """Seed the codebook from semantic tokens of random training items (eval-mode encoders)."""
    model.seed_codebook_(sample_semantic_tokens(model, stage, generator, items=items), generator)


def make_pseudo_source(
    model: CometModel, replay: PseudoModalityReplay, mediator: str
) -> Callable[[dict[str, Tensor]], PseudoModality]:
    """The PMR stream of a stage: the pseudo-modality of ``mediator``'s detached semantic
    features over ``[V1 (replay's teacher); the codebook's newest block]`` (spec section 5)."""
    cb = model.codebook

    def build(sem: dict[str, Tensor]) -> PseudoModality:
        return replay.build(sem[mediator], cb.embed[int(cb.reset_start) :])

    return build


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
            feats, masks = _batch(stage.train, stage.modalities, idx, device)
            out = model(feats, masks, generator=generator, pseudo=pseudo)
            return weighted_total(out.losses, {k: weights[k] for k in out.losses})

        yield loss


def _club_steps(
    model: CometModel,
    trainer: Trainer,
    pairs: Mapping[str, tuple[Tensor, Tensor]],
    masks: Mapping[str, Tensor] | None,
    cfg: ExperimentConfig,
) -> Tensor:
    """``club.inner_steps`` estimator steps on detached ``(vq, spec)`` (own optimisers).

    Returns the estimator loss (negative log-likelihood summed over modalities) of the last
    inner step, detached.
    """
    loss = torch.zeros(())
    for _ in range(cfg.club.inner_steps):
        loss = torch.stack([
            -model.club[m].log_likelihood(x, y, None if masks is None else masks.get(m))
            for m, (x, y) in pairs.items()
        ]).sum()  # fmt: skip
        for o in trainer.club_optimizers.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        for m, o in trainer.club_optimizers.items():
            if m in pairs:
                if cfg.train.clip > 0:
                    _clip(list(model.club[m].parameters()), cfg.train.clip)
                o.step()
    return loss.detach()


def train_step(
    model: CometModel,
    trainer: Trainer,
    feats: dict[str, Tensor],
    masks: dict[str, Tensor] | None,
    cfg: ExperimentConfig,
    *,
    generator: torch.Generator,
    weights: Mapping[str, float],
    pseudo: PseudoSource | None = None,
    ewc: EWCPenalty | None = None,
    ewc_params: Mapping[str, nn.Parameter] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], int]:
    """One optimisation step.

    Returns the detached losses (plus "total" and, with CLUB, "club_estimator": the estimator's
    own loss, not part of the total), the codebook statistics and the number of codes reset.
    """
    f = model.features(feats, masks)
    estimator = None
    if model.club and cfg.club.inner_steps > 0:
        pairs = {m: (f.codebook.quantized[m].detach(), f.specific[m].detach()) for m in feats}
        estimator = _club_steps(model, trainer, pairs, f.masks, cfg)
    out = model.compute_losses(f, generator=generator, pseudo=pseudo)
    losses = dict(out.losses)
    if ewc is not None and ewc_params:
        losses["ewc"] = ewc(ewc_params)
    total = weighted_total(losses, {k: weights[k] for k in losses if k in weights})
    trainer.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.train.clip > 0:
        _clip(trainer.params, cfg.train.clip)
    trainer.optimizer.step()
    # EMA and dead-code reset after backward (spec section 9)
    model.codebook.ema_update_(out.semantic, out.indices, out.masks)
    reset = 0
    if cfg.codebook.expire:
        reset = model.codebook.expire_codes_(_valid_tokens(out.semantic, out.masks), generator)
    losses["total"] = total
    if estimator is not None:
        losses["club_estimator"] = estimator
    return {k: v.detach() for k, v in losses.items()}, out.stats, reset


def loss_weights(cfg: ExperimentConfig, model: CometModel) -> dict[str, float]:
    """Weight of every loss the model and the hooks can produce."""
    weights = {n: float(getattr(cfg.loss, n)) for n in model.active}
    return weights | {"pmr": cfg.replay.beta_pmr, "ewc": cfg.ewc.lam}


def train_stage(
    model: CometModel,
    stage: StageData,
    cfg: ExperimentConfig,
    *,
    generator: torch.Generator,
    on_metrics: MetricsCallback | None = None,
    ewc: EWCPenalty | None = None,
    replay: PseudoModalityReplay | None = None,
    start_epoch: int = 0,
    stop_epoch: int | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    frozen: Collection[str] = (),
    on_epoch_end: Callable[[int, Trainer], None] | None = None,
    index: int | None = None,
) -> StageSummary:
    """Train ``model`` on one stage for epochs ``[start_epoch, stop_epoch or train.epochs)``.

    Creates the modules of modalities seen for the first time, seeds the codebook from data
    tokens before the very first step when ``codebook.init == "data"``, and calls
    ``on_epoch_end(epoch, trainer)`` after each epoch (the place to checkpoint). ``ewc`` (once
    consolidated): its penalty on :func:`ewc_parameters` is added with weight ``ewc.lam``.
    ``replay`` (with a teacher set): the pseudo-modality of ``stage.mediator`` joins Cross-CPC,
    weight ``replay.beta_pmr``. ``index`` (1-based stage number) only labels errors and rows.
    Raises ``FloatingPointError`` when an epoch's mean loss is not finite.
    """
    mods = stage.modalities
    for m in mods:
        model.add_modality_(m, stage.train.dim(m))
    use_replay = replay is not None and replay.has_teacher
    if use_replay:
        if stage.mediator is None or stage.mediator not in mods:
            raise ValueError(f"stage '{stage.name}': replay needs a mediator among {mods}")
        model.add_pseudo_stream_()
    trainer = Trainer(model, cfg, frozen=frozen)
    if optimizer_state is not None:
        trainer.load_state_dict(optimizer_state)
    if cfg.codebook.init == "data" and not bool(model.codebook_seeded):
        seed_codebook_from_data(model, stage, generator)
    model.train()

    pseudo: PseudoSource | None = None
    if use_replay:
        assert replay is not None and stage.mediator is not None
        pseudo = make_pseudo_source(model, replay, stage.mediator)

    ewc_params: dict[str, nn.Parameter] = {}
    if ewc is not None and len(ewc) > 0:
        ewc_params = ewc_parameters(model, cfg, stage.mediator)
    weights = loss_weights(cfg, model)
    label = f"stage {index} ({stage.name})" if index is not None else f"stage {stage.name}"

    n = stage.train.num_items
    bsz = min(cfg.train.batch_size, n)
    steps_per_epoch = n // bsz  # the last incomplete batch is dropped
    stop = cfg.train.epochs if stop_epoch is None else stop_epoch
    summary = StageSummary(stage.name, 0, 0, 0.0, 0)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, stop):
        perm = torch.randperm(n, generator=generator)
        sums: dict[str, Tensor] = {}
        reset = 0
        for s in range(steps_per_epoch):
            idx = perm[s * bsz : (s + 1) * bsz]
            feats, masks = _batch(stage.train, mods, idx, model.codebook.embed.device)
            losses, stats, n_reset = train_step(
                model, trainer, feats, masks, cfg, generator=generator, weights=weights,
                pseudo=pseudo, ewc=ewc if ewc_params else None, ewc_params=ewc_params,
            )  # fmt: skip
            reset += n_reset
            for k, v in [*losses.items(), *stats.items()]:
                key = k if "/" in k else f"loss/{k}"
                sums[key] = sums.get(key, 0.0) + v.detach()
        summary.steps += steps_per_epoch
        summary.epochs += 1
        summary.codes_reset += reset
        row: dict[str, Any] = {
            "stage": stage.name, "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
            "seconds": time.perf_counter() - t0, "codes_reset": reset,
        }  # fmt: skip
        if index is not None:
            row["stage_index"] = index
        row |= {k: float(v) / steps_per_epoch for k, v in sums.items()}
        total = row.get("loss/total", 0.0)
        if not math.isfinite(total):
            raise FloatingPointError(f"{label}, epoch {epoch + 1}: loss is {total}")
        summary.history.append(row)
        summary.losses = {k[5:]: v for k, v in row.items() if k.startswith("loss/")}
        if on_metrics is not None:
            on_metrics(dict(row))
        if on_epoch_end is not None:
            on_epoch_end(epoch, trainer)
    summary.seconds = time.perf_counter() - t0
    return summary
