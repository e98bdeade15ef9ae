"""Elastic weight consolidation for the CMoE-Adapter (paper Eq. 6, spec section 4).

``estimate_fisher_diag`` computes a diagonal *empirical* Fisher from squared gradients of the
stage's training loss (there is no likelihood in COMET, so the loss stands in for -log p):

- ``per_sample=False`` (default, "per-batch Fisher"): ``F = mean_b (grad L_b)^2`` where ``L_b``
  is the mean loss of batch ``b``. Cheap (one backward per batch), but it underestimates the
  per-sample Fisher by roughly the batch size because per-sample gradients partly cancel.
- ``per_sample=True`` ("per-sample Fisher"): ``F = mean_i (grad l_i)^2`` over every sample of
  every batch, with one backward per sample.

Both agree exactly for batches of size 1. ``EWCPenalty`` stores anchors ``theta*`` and Fisher
diagonals as buffers and returns ``0.5 * sum_i F_i (theta_i - theta*_i)^2``; the strength
``lambda`` of Eq. 6 is the caller's loss weight (``loss.ewc`` / ``ewc.lam``), never applied here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from comet_model._util import ResizingBuffers
from comet_model.config import EWCConfig  # constructor defaults = config defaults

__all__ = ["EWCPenalty", "estimate_fisher_diag"]


def _grads(loss: Tensor, params: list[nn.Parameter], retain_graph: bool) -> list[Tensor | None]:
    wanted = [p for p in params if p.requires_grad]
    got = torch.autograd.grad(loss, wanted, retain_graph=retain_graph, allow_unused=True)
    by_id = {id(p): g for p, g in zip(wanted, got, strict=True)}
    return [by_id.get(id(p)) for p in params]


def estimate_fisher_diag(
    params: Mapping[str, nn.Parameter],
    loss_batches: Iterable[Callable[[], Tensor]],
    *,
    per_sample: bool = False,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher (EWC, Kirkpatrick et al. 2017): per-batch or per-sample.

    Args:
        params: name -> parameter to estimate the Fisher of (``.grad`` is never touched).
        loss_batches: one callable per batch; each runs the forward pass and returns either a
            scalar batch loss or a vector ``[B]`` of per-sample losses (the batch loss is then
            their mean). ``per_sample=True`` needs the vector form.
        per_sample: False = mean over batches of the squared gradient of the batch loss;
            True = mean over all samples of the squared per-sample gradient.

    Returns:
        name -> detached float32 tensor shaped like the parameter. A parameter that gets no
        gradient (unused, or ``requires_grad=False``) has Fisher zero.
    """
    names = list(params.keys())
    plist = [params[n] for n in names]
    total = [torch.zeros_like(p, dtype=torch.float32) for p in plist]
    count = 0
    for make_loss in loss_batches:
        loss = make_loss()
        if per_sample:
            if loss.dim() != 1:
                raise ValueError(
                    "per_sample=True needs each loss callable to return per-sample losses [B], "
                    f"got shape {tuple(loss.shape)}"
                )
            # One backward per sample: simple and valid for every op (vmap is not, e.g. LSTM).
            for i in range(loss.shape[0]):
                last = i == loss.shape[0] - 1
                for acc, g in zip(total, _grads(loss[i], plist, not last), strict=True):
                    if g is not None:
                        acc.add_(g.detach().float() ** 2)
            count += loss.shape[0]
        else:
            batch_loss = loss if loss.dim() == 0 else loss.mean()
            for acc, g in zip(total, _grads(batch_loss, plist, False), strict=True):
                if g is not None:
                    acc.add_(g.detach().float() ** 2)
            count += 1
    if count == 0:
        raise ValueError("estimate_fisher_diag got no loss batches")
    return {n: acc / count for n, acc in zip(names, total, strict=True)}


# Buffer names may not contain '.', parameter names do: escape reversibly ('%' first).
def _encode(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2E")


def _decode(key: str) -> str:
    return re.sub(r"%2E|%25", lambda m: "." if m.group(0) == "%2E" else "%", key)


class _TensorStore(ResizingBuffers):
    """Buffers keyed by (escaped) parameter names, created dynamically, also when loading."""

    dynamic_buffers = True  # loading means "become the saved store"

    def names(self) -> list[str]:
        return [_decode(k) for k in self._buffers]

    def get(self, name: str) -> Tensor:
        return self._buffers[_encode(name)]  # type: ignore[return-value]

    def set_(self, name: str, value: Tensor) -> None:
        key = _encode(name)
        if key in self._buffers:
            self._buffers[key] = value
        else:
            self.register_buffer(key, value)


class EWCPenalty(nn.Module):
    """EWC penalty of paper Eq. 6 without lambda: ``0.5 * sum_i F_i (theta_i - theta*_i)^2``.

    Args:
        adaptive: normalise each new Fisher tensor (each weight and each bias separately) to
            mean 1 before accumulating ("adaptive" EWC, spec section 4); False keeps raw values.
        gamma: online accumulation ``F <- gamma * F + F_new`` at every consolidation.
    """

    def __init__(
        self,
        *,
        adaptive: bool = EWCConfig.adaptive,
        gamma: float = EWCConfig.gamma,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.adaptive = adaptive
        self.gamma = gamma
        self.eps = eps
        self.fisher = _TensorStore()
        self.anchor = _TensorStore()
        self.register_buffer("consolidations", torch.zeros((), dtype=torch.int64))

    def __len__(self) -> int:
        """Number of consolidated tensors (0 before the first consolidation)."""
        return len(self.fisher.names())

    def names(self) -> list[str]:
        """Names of the consolidated parameters."""
        return self.fisher.names()

    def fisher_of(self, name: str) -> Tensor:
        """Accumulated Fisher diagonal of ``name``."""
        return self.fisher.get(name)

    def anchor_of(self, name: str) -> Tensor:
        """Anchor ``theta*`` of ``name`` (value at the last consolidation)."""
        return self.anchor.get(name)

    def _normalise(self, fisher: Tensor) -> Tensor:
        if not self.adaptive:
            return fisher
        mean = fisher.mean()
        # An all-zero Fisher stays zero (nothing to protect) instead of becoming NaN.
        return fisher / mean if mean > self.eps else torch.zeros_like(fisher)

    @torch.no_grad()
    def consolidate_(
        self, params: Mapping[str, nn.Parameter], fisher: Mapping[str, Tensor]
    ) -> None:
        """Set ``theta*`` to the current ``params`` and accumulate ``F <- gamma F + F_new``.

        Names seen for the first time are added with ``F = F_new``; consolidated names absent
        from ``params`` keep their Fisher and anchor unchanged.
        """
        for name, p in params.items():
            if name not in fisher:
                raise KeyError(f"no Fisher estimate given for parameter {name!r}")
            f_new = fisher[name].detach().to(device=p.device, dtype=torch.float32)
            if f_new.shape != p.shape:
                raise ValueError(
                    f"Fisher of {name!r} has shape {tuple(f_new.shape)}, "
                    f"parameter has {tuple(p.shape)}"
                )
            f_new = self._normalise(f_new)
            if name in self.fisher.names():
                f_old = self.fisher.get(name)
                if f_old.shape != p.shape:
                    raise ValueError(
                        f"parameter {name!r} changed shape from {tuple(f_old.shape)} to "
                        f"{tuple(p.shape)} since its last consolidation; EWC cannot anchor a "
                        "parameter that grew (register new rows as a separate parameter)"
                    )
                f_new = self.gamma * f_old + f_new
            self.fisher.set_(name, f_new.clone())
            self.anchor.set_(name, p.detach().to(torch.float32).clone())
        self.consolidations += 1

    def forward(self, params: Mapping[str, nn.Parameter]) -> Tensor:
        """Penalty over every consolidated name (0 before any consolidation).

        ``params`` must contain every consolidated name; extra names (layers not yet
        consolidated, e.g. a new modality's specific layers) are ignored.
        """
        names = self.fisher.names()
        if not names:
            device = next(iter(params.values())).device if params else None
            return torch.zeros((), dtype=torch.float32, device=device)
        total: Tensor | None = None
        for name in names:
            if name not in params:
                raise KeyError(f"consolidated parameter {name!r} missing from params")
            p = params[name]
            anchor = self.anchor.get(name)
            if p.shape != anchor.shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(p.shape)}, anchored with "
                    f"{tuple(anchor.shape)}: EWC cannot handle a parameter that grew"
                )
            term = (self.fisher.get(name) * (p - anchor) ** 2).sum()
            total = term if total is None else total + term
        assert total is not None
        return 0.5 * total

    def extra_repr(self) -> str:
        return f"adaptive={self.adaptive}, gamma={self.gamma}, tensors={len(self)}"
