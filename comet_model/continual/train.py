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
naming the stage and the epoch. What a stage trains with (new modules, the PMR stream, the EWC
parameters) is set up beforehand by :func:`comet_model.continual.stage.prepare_stage`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from comet_model.config import ExperimentConfig
from comet_model.continual.batches import batch_rows, valid_tokens
from comet_model.continual.ewc import EWCPenalty
from comet_model.nn.losses import weighted_total
from comet_model.nn.model import CometModel, PseudoSource
from comet_model.nn.precision import autocast

if TYPE_CHECKING:
    from comet_model.continual.stage import StageInputs

__all__ = [
    "MetricsCallback",
    "StageSummary",
    "Trainer",
    "loss_weights",
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
        self.precision = cfg.train.precision
        self.device_type = model.codebook.embed.device.type
        # fp16 gradients underflow without loss scaling (bf16 has float32's exponent range)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.precision == "fp16")

    def state_dict(self) -> dict[str, Any]:
        """Optimiser states (tensors and primitives only)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "club": {m: o.state_dict() for m, o in self.club_optimizers.items()},
            "frozen": list(self.frozen),
            "scaler": self.scaler.state_dict(),
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
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def autocast(self) -> AbstractContextManager:
        """The training step's autocast (a no-op in fp32)."""
        return autocast(self.device_type, self.precision)


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
    with trainer.autocast():
        f = model.features(feats, masks)
    estimator = None
    if model.club and cfg.club.inner_steps > 0:
        pairs = {m: (f.codebook.quantized[m].detach(), f.specific[m].detach()) for m in feats}
        # bf16 estimator steps under autocast; fp16 ones in float32 (their own optimisers
        # have no scaler)
        with trainer.autocast() if trainer.precision == "bf16" else nullcontext():
            estimator = _club_steps(model, trainer, pairs, f.masks, cfg)
    with trainer.autocast():
        out = model.compute_losses(f, generator=generator, pseudo=pseudo)
    losses = dict(out.losses)
    if ewc is not None and ewc_params:
        losses["ewc"] = ewc(ewc_params)
    total = weighted_total(losses, {k: weights[k] for k in losses if k in weights})
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(total).backward()
    trainer.scaler.unscale_(trainer.optimizer)  # clip the true gradients
    if cfg.train.clip > 0:
        _clip(trainer.params, cfg.train.clip)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    # EMA and dead-code reset after backward (spec section 9)
    model.codebook.ema_update_(out.semantic, out.indices, out.masks)
    reset = 0
    if cfg.codebook.expire:
        reset = model.codebook.expire_codes_(valid_tokens(out.semantic, out.masks), generator)
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
    inputs: StageInputs,
    cfg: ExperimentConfig,
    *,
    generator: torch.Generator,
    on_metrics: MetricsCallback | None = None,
    start_epoch: int = 0,
    stop_epoch: int | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[int, Trainer], None] | None = None,
) -> StageSummary:
    """Train ``model`` on one prepared stage for epochs ``[start_epoch, stop_epoch or
    train.epochs)``; ``on_epoch_end(epoch, trainer)`` runs after each epoch (the place to
    checkpoint, with ``optimizer_state`` to resume from). Raises ``FloatingPointError`` when an
    epoch's mean loss is not finite."""
    stage = inputs.stage
    trainer = Trainer(model, cfg, frozen=inputs.frozen)
    if optimizer_state is not None:
        trainer.load_state_dict(optimizer_state)
    model.train()
    weights = loss_weights(cfg, model)
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
            feats, masks = batch_rows(
                stage.train, stage.modalities, idx, model.codebook.embed.device
            )
            losses, stats, n_reset = train_step(
                model, trainer, feats, masks, cfg, generator=generator, weights=weights,
                pseudo=inputs.pseudo, ewc=inputs.ewc, ewc_params=inputs.ewc_params,
            )  # fmt: skip
            reset += n_reset
            for k, v in [*losses.items(), *stats.items()]:
                key = k if "/" in k else f"loss/{k}"
                sums[key] = sums.get(key, 0.0) + v.detach()
        row = _epoch_row(inputs, epoch, steps_per_epoch, time.perf_counter() - t0, reset, sums)
        summary.steps += steps_per_epoch
        summary.epochs += 1
        summary.codes_reset += reset
        summary.history.append(row)
        summary.losses = {k[5:]: v for k, v in row.items() if k.startswith("loss/")}
        if on_metrics is not None:
            on_metrics(dict(row))
        if on_epoch_end is not None:
            on_epoch_end(epoch, trainer)
    summary.seconds = time.perf_counter() - t0
    return summary


def _epoch_row(
    inputs: StageInputs,
    epoch: int,
    steps: int,
    seconds: float,
    reset: int,
    sums: Mapping[str, Tensor],
) -> dict[str, Any]:
    """The metrics row of one epoch (means over its steps); raises on a non-finite loss."""
    row: dict[str, Any] = {
        "stage": inputs.stage.name, "epoch": epoch + 1, "step": (epoch + 1) * steps,
        "seconds": seconds, "codes_reset": reset,
    }  # fmt: skip
    if inputs.index is not None:
        row["stage_index"] = inputs.index
    row |= {k: float(v) / steps for k, v in sums.items()}
    total = row.get("loss/total", 0.0)
    if not math.isfinite(total):
        raise FloatingPointError(f"{inputs.label}, epoch {epoch + 1}: loss is {total}")
    return row
