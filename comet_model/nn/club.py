"""CLUB: sampled contrastive log-ratio upper bound of mutual information (paper Eq. 1).

A Gaussian variational net q(y | x) is fitted by maximising its log-likelihood on detached
pairs (its own optimiser, several inner steps per training step); the sampled bound then enters
the main loss to push the semantic code (x) and the modality-specific feature (y) apart
(dcid_reference 1.10, "temporal" form: statistics averaged over the steps of each item).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from comet_model.config import ModelConfig  # constructor defaults = config defaults
from comet_model.nn.precision import f32


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: the initial range of ``nn.Linear``."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class CLUB(nn.Module):
    """Gaussian q(y | x) and the sampled CLUB bound on I(x; y) (paper Eq. 1).

    The mean and log-variance nets are two MLPs (``layers`` hidden ReLU layers of width
    ``hidden``, then a linear output; tanh on the log-variance keeps it in [-1, 1], as the
    original). They run side by side: one matmul for both first layers, then batched matmuls
    over the pair (the same arithmetic as two separate MLPs in half the kernel calls; CLUB was
    about a quarter of a default-preset step). Parameters (``n`` = 2 nets): ``w_in [2 * hidden,
    x_dim]``, ``w_hidden [layers - 1, n, hidden, hidden]``, ``w_out [n, hidden, y_dim]`` and
    their biases, each initialised like ``nn.Linear``.

    Args:
        x_dim: dimension of x (the quantised semantic feature).
        y_dim: dimension of y (the modality-specific feature).
        hidden: width of the hidden layers of both MLPs.
        layers: number of hidden layers (3 in the original).
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int = ModelConfig.club_hidden, *, layers: int = 3
    ) -> None:
        super().__init__()
        self.x_dim, self.y_dim, self.hidden, self.layers = x_dim, y_dim, hidden, layers
        if layers == 0:
            self.w_in = _uniform((2 * y_dim, x_dim), x_dim)
            self.b_in = _uniform((2 * y_dim,), x_dim)
            return
        self.w_in = _uniform((2 * hidden, x_dim), x_dim)
        self.b_in = _uniform((2 * hidden,), x_dim)
        self.w_hidden = _uniform((layers - 1, 2, hidden, hidden), hidden)
        self.b_hidden = _uniform((layers - 1, 2, 1, hidden), hidden)
        self.w_out = _uniform((2, hidden, y_dim), hidden)
        self.b_out = _uniform((2, 1, y_dim), hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(y | x), each ``[..., y_dim]``."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.x_dim)  # (n, x_dim)
        h = torch.addmm(self.b_in, flat, self.w_in.t())  # (n, 2 * width)
        if self.layers == 0:
            mu, logvar = h.view(-1, 2, self.y_dim).unbind(1)
        else:
            h = torch.relu(h).view(-1, 2, self.hidden).transpose(0, 1)  # (2, n, hidden)
            for i in range(self.layers - 1):
                h = torch.relu(torch.baddbmm(self.b_hidden[i], h, self.w_hidden[i]))
            mu, logvar = torch.baddbmm(self.b_out, h, self.w_out).unbind(0)  # (n, y_dim) each
        return mu.reshape(*lead, self.y_dim), torch.tanh(logvar).reshape(*lead, self.y_dim)

    def log_likelihood(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean over valid tokens of log q(y | x) up to constants (the estimator maximises it).

        ``x [B, T, dx]``, ``y [B, T, dy]``, ``mask`` bool ``[B, T]`` (True = valid).
        """
        mu, logvar = (f32(t) for t in self(x))  # the arithmetic in float32 under autocast
        y = f32(y)
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
        mu, logvar = (f32(t) for t in self(x))  # [B, T, dy], float32 arithmetic
        y = f32(y)
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
