"""CMoE-Adapter: a mixture of common + modality-specific linear experts (paper Eq. 4-5, spec 3).

Expert ``o`` applied to a token ``x`` of modality ``m`` is

- parallel (default): ``E_o(x) = W_c^o x + b_c^o + W_s^{o,m} x + b_s^{o,m}``
- sequential:         ``E_o(x) = W_s^{o,m} (W_c^o x + b_c^o) + b_s^{o,m}``

and the adapter output is ``x + sum_o g_o(x) E_o(x)`` (the residual is a switch), with
``g = softmax(router(x))`` per token (paper Eq. 4). No Python loop over experts: the common
layers are one stacked ``[O, D, D]`` weight, each modality's specific layers another, and the
gated sum ``sum_o g_o (x W_o + b_o)`` is one matmul of the gate-scaled inputs ``[B, T, O*D]``
with the stacked weights ``[O*D, D]`` (measured faster on CPU than materialising every expert's
output with einsum and mixing it afterwards).

Initialisation (not given in the paper): with ``residual=True`` the common weights are drawn from
``U(-s/sqrt(D), s/sqrt(D))`` with a small ``s = init_scale`` (default 0.01) and zero biases, so
the adapter starts within about 1 % of the identity and stage 1 behaves like plain DCID. With
``residual=False`` the common layers use the ``nn.Linear`` bound ``1/sqrt(D)``. Specific layers
are chosen so that a modality added later starts as the common mapping: in parallel mode they
are small (``s = init_scale``), in sequential mode they start at the identity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from comet_model.config import MoEConfig as _MoE  # constructor defaults = config defaults
from comet_model.nn.precision import f32

__all__ = ["AdapterOutput", "LinearAdapter", "MoEAdapter", "load_balance_loss"]


@dataclass
class AdapterOutput:
    """Output of an adapter: mapped tokens, the gates used and unweighted named losses."""

    y: Tensor  # (batch, steps, dim)
    gates: Tensor | None  # (batch, steps, experts); None for the plain linear adapter
    losses: dict[str, Tensor] = field(default_factory=dict)  # {"gate": load-balance loss}


def load_balance_loss(probs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scale-free load-balance penalty of paper Eq. 5 over the valid tokens.

    Loads ``L_o = sum_i G_io``, ideal load ``I = N / O``; returns ``sum_o (L_o - I)^2 / N^2``
    (0 for perfectly uniform routing, ``(O - 1) / O`` when every token picks one expert).

    Args:
        probs: router probabilities ``(..., O)``, summing to 1 over the last axis.
        mask: bool ``(...)`` with True for valid tokens; None = all valid.
    """
    num_experts = probs.shape[-1]
    flat = f32(probs).reshape(-1, num_experts)  # (tokens, experts), float32 sums
    if mask is not None:
        flat = flat * mask.reshape(-1, 1).to(flat.dtype)
        tokens = mask.sum().to(flat.dtype)
    else:
        tokens = torch.tensor(float(flat.shape[0]), dtype=flat.dtype, device=flat.device)
    tokens = tokens.clamp_min(1.0)  # an all-padding batch gives 0, not NaN
    loads = flat.sum(dim=0)  # (experts,)
    ideal = tokens / num_experts
    return ((loads - ideal) ** 2).sum() / tokens**2


def _gated_linear(gates: Tensor, inputs: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``sum_o g_o (inputs_o W_o + b_o)`` as ONE matmul over the stacked (expert, dim) axis.

    Args:
        gates: (b, t, o); inputs: (b, t, o, d) or (b, t, 1, d) shared by all experts;
        weight: (o, d, e); bias: (o, e). Returns (b, t, e).
    """
    gated = rearrange(gates.unsqueeze(-1) * inputs, "b t o d -> b t (o d)")
    return gated @ rearrange(weight, "o d e -> (o d) e") + gates @ bias


class _ExpertBank(nn.Module):
    """One linear layer per expert, stacked: ``weight [O, D_in, D_out]``, ``bias [O, D_out]``."""

    def __init__(self, num_experts: int, dim: int, *, scale: float, identity: bool = False):
        super().__init__()
        bound = scale / math.sqrt(dim)
        weight = torch.empty(num_experts, dim, dim).uniform_(-bound, bound)
        if identity:
            weight = weight + torch.eye(dim)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(num_experts, dim))


def _check_modality_name(name: str) -> None:
    if not name or "." in name:
        raise ValueError(f"modality name {name!r} must be non-empty and contain no '.'")


class MoEAdapter(nn.Module):
    """CMoE-Adapter: O experts of common + modality-specific Linears mixed by a router (Eq. 4)."""

    def __init__(
        self,
        dim: int,
        num_experts: int = _MoE.num_experts,
        *,
        specific_layers: bool = _MoE.specific_layers,
        combine: Literal["parallel", "sequential"] = _MoE.combine,
        residual: bool = _MoE.residual,
        top_k: int = _MoE.top_k,
        init_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if combine not in ("parallel", "sequential"):
            raise ValueError(f"combine must be 'parallel' or 'sequential', got {combine!r}")
        if not 0 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [0, {num_experts}], got {top_k}")
        self.dim = dim
        self.num_experts = num_experts
        self.specific_layers = specific_layers
        self.combine = combine
        self.residual = residual
        self.top_k = top_k
        self.init_scale = init_scale
        self.router = nn.Linear(dim, num_experts)
        self.common = _ExpertBank(num_experts, dim, scale=init_scale if residual else 1.0)
        if not residual:
            nn.init.uniform_(self.common.bias, -1.0 / math.sqrt(dim), 1.0 / math.sqrt(dim))
        # Only created when specific layers are on, so "SL off" has no specific parameters.
        self.specific: nn.ModuleDict | None = nn.ModuleDict() if specific_layers else None

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities that own specific layers (empty when specific layers are off)."""
        return tuple(self.specific.keys()) if self.specific is not None else ()

    def add_modality_(self, name: str) -> None:
        """Create the specific layers of modality ``name`` (idempotent; no-op with SL off)."""
        _check_modality_name(name)
        if self.specific is None or name in self.specific:
            return
        bank = _ExpertBank(
            self.num_experts,
            self.dim,
            scale=self.init_scale,
            identity=self.combine == "sequential",
        )
        self.specific[name] = bank.to(self.common.weight.device)

    def _specific(self, modality: str) -> _ExpertBank | None:
        if self.specific is None:
            return None
        if modality not in self.specific:
            raise KeyError(
                f"MoEAdapter has no specific layers for modality {modality!r}; "
                f"call add_modality_({modality!r}) first (known: {list(self.specific.keys())})"
            )
        return self.specific[modality]

    def gate_probs(self, x: Tensor) -> Tensor:
        """Dense router probabilities ``softmax(router(x))``: (batch, steps, experts)."""
        return self.router(x).softmax(dim=-1)

    def _sparsify(self, probs: Tensor) -> Tensor:
        # Keep the top_k largest probabilities per token and renormalise them to sum to 1.
        values, index = probs.topk(self.top_k, dim=-1)
        values = values / values.sum(dim=-1, keepdim=True)
        return torch.zeros_like(probs).scatter(-1, index, values)

    def expert_outputs(self, x: Tensor, modality: str) -> Tensor:
        """Every expert applied to every token: (batch, steps, dim) -> (batch, steps, O, dim).

        For inspection; ``forward`` mixes the experts without materialising all their outputs.
        """
        spec = self._specific(modality)
        common = self.common
        if spec is None:
            return torch.einsum("btd,ode->btoe", x, common.weight) + common.bias
        if self.combine == "parallel":
            weight = common.weight + spec.weight  # (O, D, D)
            return torch.einsum("btd,ode->btoe", x, weight) + (common.bias + spec.bias)
        hidden = torch.einsum("btd,ode->btoe", x, common.weight) + common.bias
        return torch.einsum("btoe,oef->btof", hidden, spec.weight) + spec.bias

    def mix(self, x: Tensor, gates: Tensor, modality: str) -> Tensor:
        """Gated expert mixture ``sum_o g_o E_o(x)`` (paper Eq. 4), without the residual.

        Args:
            x: tokens (batch, steps, dim).
            gates: (batch, steps, O), zero for experts that are not selected.
        """
        spec = self._specific(modality)
        common = self.common
        if spec is None:
            return _gated_linear(gates, x.unsqueeze(-2), common.weight, common.bias)
        if self.combine == "parallel":
            # W_c x + W_s x == (W_c + W_s) x: one product; both weights still get their gradient.
            weight = common.weight + spec.weight  # (O, D, D)
            return _gated_linear(gates, x.unsqueeze(-2), weight, common.bias + spec.bias)
        # Sequential: the common layers' outputs are per expert, then the specific layers.
        w_flat = rearrange(common.weight, "o d e -> d (o e)")
        hidden = rearrange(x @ w_flat, "b t (o e) -> b t o e", o=self.num_experts)
        return _gated_linear(gates, hidden + common.bias, spec.weight, spec.bias)

    def forward(self, x: Tensor, modality: str, mask: Tensor | None = None) -> AdapterOutput:
        """Map tokens ``x`` (batch, steps, dim) of ``modality``; mask is bool (batch, steps)."""
        probs = self.gate_probs(x)  # (b, t, o)
        gates = self._sparsify(probs) if self.top_k > 0 else probs
        mixed = self.mix(x, gates, modality)
        y = x + mixed if self.residual else mixed
        # The balance loss uses the dense probabilities: with top-k the renormalised gates are
        # constant for top_k = 1 and would give the router no balancing gradient.
        return AdapterOutput(y=y, gates=gates, losses={"gate": load_balance_loss(probs, mask)})

    def ewc_parameters(self, modalities: Iterable[str]) -> dict[str, nn.Parameter]:
        """Parameters protected by EWC (paper Eq. 6): common, router and the given specific ones.

        Names match ``named_parameters()``; modalities without specific layers are skipped.
        """
        out: dict[str, nn.Parameter] = {
            "common.weight": self.common.weight,
            "common.bias": self.common.bias,
            "router.weight": self.router.weight,
            "router.bias": self.router.bias,
        }
        if self.specific is not None:
            for m in modalities:
                if m in self.specific:
                    bank = self.specific[m]
                    out[f"specific.{m}.weight"] = bank.weight
                    out[f"specific.{m}.bias"] = bank.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_experts={self.num_experts}, "
            f"specific_layers={self.specific_layers}, combine={self.combine!r}, "
            f"residual={self.residual}, top_k={self.top_k}"
        )


class LinearAdapter(nn.Module):
    """The "MoE off" ablation: one plain Linear with the same residual switch; no router."""

    def __init__(
        self, dim: int, *, residual: bool = _MoE.residual, init_scale: float = 0.01
    ) -> None:
        super().__init__()
        self.dim = dim
        self.residual = residual
        self.linear = nn.Linear(dim, dim)
        if residual:
            # Same near-identity start as MoEAdapter (see the module docstring).
            bound = init_scale / math.sqrt(dim)
            nn.init.uniform_(self.linear.weight, -bound, bound)
            nn.init.zeros_(self.linear.bias)

    @property
    def modalities(self) -> tuple[str, ...]:
        """No modality-specific state."""
        return ()

    def add_modality_(self, name: str) -> None:
        """No-op (kept for API compatibility with MoEAdapter)."""
        _check_modality_name(name)

    def forward(self, x: Tensor, modality: str, mask: Tensor | None = None) -> AdapterOutput:
        """Map tokens ``x`` (batch, steps, dim); ``modality`` and ``mask`` are ignored."""
        mapped = self.linear(x)
        y = x + mapped if self.residual else mapped
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return AdapterOutput(y=y, gates=None, losses={"gate": zero})

    def ewc_parameters(self, modalities: Iterable[str]) -> dict[str, nn.Parameter]:
        """The Linear's weight and bias (the modalities are irrelevant here)."""
        return {"linear.weight": self.linear.weight, "linear.bias": self.linear.bias}
