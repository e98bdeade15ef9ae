"""CLUB: sampled contrastive log-ratio upper bound of mutual information (paper Eq. 1).

A Gaussian variational net q(y | x) is fitted by maximising its log-likelihood on detached
pairs (its own optimiser, several inner steps per training step); the sampled bound then enters
the main loss to push the semantic code (x) and the modality-specific feature (y) apart
(dcid_reference 1.10, "temporal" form: statistics averaged over the steps of each item).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(in_dim: int, hidden: int, out_dim: int, layers: int, last: nn.Module | None) -> nn.Module:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output (and ``last``)."""
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    if last is not None:
        mods.append(last)
    return nn.Sequential(*mods)


class CLUB(nn.Module):
    """Gaussian q(y | x) and the sampled CLUB bound on I(x; y) (paper Eq. 1).

    Args:
        x_dim: dimension of x (the quantised semantic feature).
        y_dim: dimension of y (the modality-specific feature).
        hidden: width of the hidden layers of both MLPs.
        layers: number of hidden layers (3 in the original).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64, *, layers: int = 3) -> None:
        super().__init__()
        self.mu = _mlp(x_dim, hidden, y_dim, layers, None)
        # tanh keeps log-variance in [-1, 1], as in the original
        self.logvar = _mlp(x_dim, hidden, y_dim, layers, nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(y | x), each ``[..., y_dim]``."""
        return self.mu(x), self.logvar(x)

    def log_likelihood(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean over valid tokens of log q(y | x) up to constants (the estimator maximises it).

        ``x [B, T, dx]``, ``y [B, T, dy]``, ``mask`` bool ``[B, T]`` (True = valid).
        """
        mu, logvar = self(x)
        per_token = (-((mu - y) ** 2) / logvar.exp() - logvar).sum(-1) / 2  # [B, T]
        if mask is None:
            return per_token.mean()
        valid = mask.to(per_token.dtype)
        return (per_token * valid).sum() / valid.sum().clamp_min(1.0)

    def fit_(
        self,
        x: Tensor,
        y: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        steps: int = 1,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Estimator inner loop: ``steps`` optimiser steps maximising the log-likelihood.

        Inputs are detached (the estimator alone learns here, dcid_reference 1.10); the
        optimiser must hold only this estimator's parameters. Returns the last log-likelihood
        (detached, before its step).
        """
        x, y = x.detach(), y.detach()
        ll = x.new_zeros(())
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            ll = self.log_likelihood(x, y, mask)
            (-ll).backward()
            optimizer.step()
        return ll.detach()

    def mi_upper_bound(
        self,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Sampled CLUB bound: positive pairs minus pairs with y from a random batch permutation.

        Per item and dimension, the squared error is averaged over (valid) steps and scaled by
        exp(mean log-variance) (dcid_reference 1.10); the result is the batch mean of the sum
        over dimensions of (positive - negative), halved. ``x [B, T, dx]``, ``y [B, T, dy]``.
        """
        batch = x.shape[0]
        mu, logvar = self(x)  # [B, T, dy]
        device = generator.device if generator is not None else x.device
        perm = torch.randperm(batch, generator=generator, device=device).to(x.device)
        if mask is None:
            valid = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        else:
            valid = mask.to(device=x.device, dtype=x.dtype)
        neg_valid = valid * valid[perm]  # steps valid in both the item and its shuffled partner
        inv_var = torch.exp(-_masked_mean(logvar, valid))  # [B, dy]
        positive = -_masked_mean((mu - y) ** 2, valid) * inv_var
        negative = -_masked_mean((mu - y[perm]) ** 2, neg_valid) * inv_var
        return (positive - negative).sum(-1).mean() / 2


def _masked_mean(v: Tensor, valid: Tensor) -> Tensor:
    """Mean over steps: ``v [B, T, D]``, ``valid [B, T]`` float -> ``[B, D]``."""
    return (v * valid[..., None]).sum(1) / valid.sum(1).clamp_min(1.0)[:, None]
