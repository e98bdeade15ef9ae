"""Shared EMA vector-quantisation codebook with MM-EMA, commitment and CMCM (paper Eq. 3).

One codebook serves every modality (DCID, generalised to N modalities). The codebook state
lives in buffers and changes only through the in-place methods (``ema_update_``,
``expire_codes_``, ``append_codes_``, ``init_from_tokens_``); ``forward`` never mutates it, so
the CMCM loss, which needs the codebook in its graph, can be backpropagated safely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from comet_model._util import ResizingBuffers
from comet_model.config import CodebookConfig as _CB  # constructor defaults = config defaults
from comet_model.nn.precision import f32, full_precision

_DIST_FLOOR = 1e-8  # sqrt has an infinite gradient at 0: clamp distances before it
_LOG_EPS = 1e-10  # inside the logs of CMCM (dcid_reference 1.8)


@dataclass
class CodebookOutput:
    """Output of :meth:`SharedCodebook.forward`; losses are unweighted."""

    quantized: dict[str, Tensor]  # modality -> [B, T, D], straight-through z + (e - z).detach()
    indices: dict[str, Tensor]  # modality -> [B, T] int64
    losses: dict[str, Tensor]  # {"commit": scalar, "cmcm": scalar}
    # "perplexity/<m>": detached 0-dim tensors (tensors, not floats, to avoid a host sync)
    stats: dict[str, Tensor] = field(default_factory=dict)


def squared_distances(z: Tensor, codes: Tensor) -> Tensor:
    """Squared Euclidean distances ``[..., K]`` between ``z [..., D]`` and ``codes [K, D]``."""
    d = z.pow(2).sum(-1, keepdim=True) - 2.0 * (z @ codes.t()) + codes.pow(2).sum(-1)
    return d.clamp_min(0.0)  # the expanded form can dip below 0 by rounding


class SharedCodebook(ResizingBuffers):
    """Shared EMA VQ codebook with MM-EMA (paper Eq. 3), cross commitment, CMCM and code reset.

    Args:
        dim: code dimension D.
        size: number of codes K.
        decay: EMA decay (gamma in paper Eq. 3), applied once per ``ema_update_`` call.
        eps: Laplace smoothing of the cluster sizes.
        dead_code_threshold: a code unused for more than this many updates is re-seeded.
        pairing: partner vector for MM-EMA and the commitment cross terms: ``"index"`` (the
            partner's token at the same step) or ``"attention"`` (paper Eq. 3,
            softmax(z_m z_p^T / sqrt(D)) z_p over the steps of the same item, detached).
        cmcm_temperature: temperature of the code distribution softmax(-dist / tau) of CMCM.
        commitment: beta of the commitment loss (dcid_reference 1.7).
        generator: optional generator for the uniform(-1/K, 1/K) initialisation.
    """

    embed: Tensor
    cluster_size: Tensor
    embed_avg: Tensor
    unused: Tensor
    reset_start: Tensor

    def __init__(
        self,
        dim: int,
        size: int,
        *,
        decay: float = _CB.decay,
        eps: float = _CB.eps,
        dead_code_threshold: int = _CB.dead_code_threshold,
        pairing: Literal["index", "attention"] = _CB.pairing,
        cmcm_temperature: float = _CB.cmcm_temperature,
        commitment: float = _CB.commitment,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if pairing not in ("index", "attention"):
            raise ValueError(f"pairing must be 'index' or 'attention', got {pairing!r}")
        self.dim, self.decay, self.eps = dim, decay, eps
        self.dead_code_threshold, self.pairing = dead_code_threshold, pairing
        self.cmcm_temperature, self.commitment = cmcm_temperature, commitment
        init = torch.rand(size, dim, generator=generator) * (2.0 / size) - 1.0 / size
        self.register_buffer("embed", init)  # [K, D]
        self.register_buffer("cluster_size", torch.zeros(size))  # [K] EMA of hit counts
        self.register_buffer("embed_avg", torch.zeros(size, dim))  # [K, D] EMA of hit sums
        self.register_buffer("unused", torch.zeros(size, dtype=torch.long))  # updates since use
        self.register_buffer("reset_start", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Current number of codes K."""
        return self.embed.shape[0]

    def nearest(self, z: Tensor, codes: Tensor | None = None) -> Tensor:
        """Index ``[...]`` of the nearest code (squared distance, float32) for ``z [..., D]``."""
        codes = self.embed if codes is None else codes
        return squared_distances(z.detach().float(), codes.float()).argmin(-1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors ``[..., D]`` of ``indices [...]``."""
        return F.embedding(indices, self.embed)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest code vectors ``[..., D]`` and indices ``[...]``; no state change, no gradient."""
        idx = self.nearest(z)
        return self.lookup(idx), idx

    def teacher(self) -> Tensor:
        """Detached copy of the codes (the frozen V1 teacher of PMR)."""
        return self.embed.detach().clone()

    def usage(self, indices: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        """Hit counts ``[K]`` (float) over all modalities' valid steps."""
        counts = self.embed.new_zeros(self.size)
        for m, idx in indices.items():
            w = _valid(idx, masks, m).to(counts.dtype)
            counts.index_add_(0, idx.reshape(-1), w.reshape(-1))
        return counts

    def _stack(
        self, sem: dict[str, Tensor], masks: dict[str, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        """Modalities stacked: z ``[M, B, T, D]`` and bool masks ``[M, B, T]``."""
        shapes = {tuple(x.shape) for x in sem.values()}
        if len(shapes) != 1:
            raise ValueError(f"all modalities need the same [B, T, D] shape, got {shapes}")
        z = torch.stack(list(sem.values()))
        mask = torch.stack([_valid(x[..., 0], masks, m) for m, x in sem.items()])
        return z, mask

    def _partners(self, z: Tensor, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """Pairing weights and partner validity for every ordered modality pair (m, p).

        Returns ``attn [M, P, B, T, S]`` (None for index pairing, i.e. the identity over steps)
        and ``valid [M, P, B, T]`` bool: step t of m is valid and has a partner in p != m.
        """
        m_count = z.shape[0]
        off_diag = ~torch.eye(m_count, dtype=torch.bool, device=z.device)[:, :, None, None]
        if self.pairing == "index":
            valid = mask[:, None] & mask[None, :] & off_diag
            return None, valid
        with torch.no_grad():
            zd = z.detach()
            logits = torch.einsum("mbtd,pbsd->mpbts", zd, zd) / math.sqrt(z.shape[-1])
            key_ok = mask[None, :, :, None, :]  # [1, P, B, 1, S]
            has_key = mask.any(-1)  # [P, B]
            # items whose partner has no valid step get a dummy uniform row, masked by `valid`
            key_ok = key_ok | ~has_key[None, :, :, None, None]
            attn = logits.masked_fill(~key_ok, float("-inf")).softmax(-1)
        valid = mask[:, None] & has_key[None, :, :, None] & off_diag
        return attn, valid

    @staticmethod
    def _pair_apply(attn: Tensor | None, x: Tensor) -> Tensor:
        """Partner vectors ``[M, P, B, T, D]`` of ``x [P, B, T, D]`` under the pairing."""
        if attn is None:
            return x.unsqueeze(0).expand(x.shape[0], *x.shape)
        return torch.einsum("mpbts,pbsd->mpbtd", attn, x)

    def forward(
        self, sem: dict[str, Tensor], masks: dict[str, Tensor] | None = None
    ) -> CodebookOutput:
        """Quantise every modality; commitment with cross terms and CMCM losses (no state change).

        ``sem``: modality -> ``[B, T, D]``; ``masks``: modality -> bool ``[B, T]`` (True = valid;
        missing = all valid). Invalid steps count in no loss and no statistic.
        """
        with full_precision(self.embed.device.type):  # codebook math in float32 (or float64)
            return self._forward(sem, masks)

    def _forward(self, sem: dict[str, Tensor], masks: dict[str, Tensor] | None) -> CodebookOutput:
        names = list(sem)
        z, mask = self._stack({m: f32(x) for m, x in sem.items()}, masks)  # [M, B, T, D]
        m_count = len(names)
        dist = squared_distances(z, self.embed)  # [M, B, T, K], differentiable in z
        idx = dist.detach().argmin(-1)  # [M, B, T]
        codes = F.embedding(idx, self.embed)  # [M, B, T, D], buffer: no gradient
        quant = z + (codes - z).detach()

        # commitment (dcid_reference 1.7): beta * (2 * own + mean over partners of cross terms)
        d_inv = 1.0 / z.shape[-1]
        own_sq = (z - codes).pow(2).sum(-1).masked_fill(~mask, 0.0)  # [M, B, T]
        own = own_sq.sum((1, 2)) * d_inv / mask.sum((1, 2)).clamp_min(1)  # [M]
        commit = 2.0 * own.sum()
        attn, valid = self._partners(z, mask)
        if m_count > 1:
            partner_codes = self._pair_apply(attn, codes)  # [M, P, B, T, D]
            cross_sq = (z.unsqueeze(1) - partner_codes).pow(2).sum(-1).masked_fill(~valid, 0.0)
            cross = cross_sq.sum((2, 3)) * d_inv / valid.sum((2, 3)).clamp_min(1)  # [M, P]
            commit = commit + cross.sum() / (m_count - 1)
        losses = {"commit": self.commitment * commit, "cmcm": self._cmcm(dist, mask)}

        counts = torch.zeros(m_count, self.size, device=z.device, dtype=z.dtype)
        counts.scatter_add_(1, idx.flatten(1), mask.flatten(1).to(z.dtype))
        probs = counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs + _LOG_EPS)).sum(-1)).detach()
        return CodebookOutput(
            quantized={m: quant[i] for i, m in enumerate(names)},
            indices={m: idx[i] for i, m in enumerate(names)},
            losses=losses,
            stats={f"perplexity/{m}": perplexity[i] for i, m in enumerate(names)},
        )

    def _cmcm(self, dist: Tensor, mask: Tensor) -> Tensor:
        """Cross-modal code matching over all modality pairs times 0.5 (dcid_reference 1.8)."""
        m_count, batch = dist.shape[0], dist.shape[1]
        if m_count < 2:
            return dist.new_zeros(())
        logits = -dist.clamp_min(_DIST_FLOOR).sqrt() / self.cmcm_temperature
        prob = logits.softmax(-1).masked_fill(~mask[..., None], 0.0)  # [M, B, T, K]
        steps = mask.sum(-1)  # [M, B]
        item_dist = prob.sum(2) / steps.clamp_min(1)[..., None]  # [M, B, K]
        cross = torch.einsum("mbk,pck->mpbc", item_dist, torch.log(item_dist + _LOG_EPS))
        xs, ys = torch.triu_indices(m_count, m_count, 1, device=dist.device)
        sim = cross[xs, ys] + cross[ys, xs]  # [pairs, B, B], symmetric matching score
        item_ok = (steps > 0)[xs] & (steps > 0)[ys]  # [pairs, B]
        sim = sim.masked_fill(~item_ok[:, None, :], -1e9)  # padded items are no negatives
        diag = torch.arange(batch, device=dist.device)
        log_p = sim[:, diag, diag] - sim.logsumexp(-1)  # [pairs, B]
        per_pair = -(log_p * item_ok).sum(-1) / item_ok.sum(-1).clamp_min(1)
        return 0.5 * per_pair.sum()

    @torch.no_grad()
    def ema_targets(self, sem: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        """MM-EMA targets ``[M, B, T, D]``: 0.5 * own token + 0.5 * mean of its partner vectors.

        A step with no valid partner (one modality, or partners padded) targets its own token.
        """
        z, mask = self._stack(sem, masks)
        z = z.detach().to(self.embed.dtype)
        if z.shape[0] == 1:
            return z
        attn, valid = self._partners(z, mask)
        partners = self._pair_apply(attn, z)  # [M, P, B, T, D]
        w = valid.to(z.dtype)[..., None]
        n = w.sum(1)  # [M, B, T, 1]
        partner_mean = (partners * w).sum(1) / n.clamp_min(1.0)
        return torch.where(n > 0, 0.5 * z + 0.5 * partner_mean, z)

    @torch.no_grad()
    def ema_update_(
        self,
        sem: dict[str, Tensor],
        indices: dict[str, Tensor],
        masks: dict[str, Tensor] | None = None,
    ) -> None:
        """MM-EMA step (paper Eq. 3): one decay per call; only used codes move. No-op in eval."""
        if not self.training:
            return
        target = self.ema_targets(sem, masks).reshape(-1, self.dim)  # [M*B*T, D]
        _, mask = self._stack(sem, masks)
        idx = torch.stack([indices[m] for m in sem]).reshape(-1)
        w = mask.reshape(-1)
        target = torch.where(w[:, None], target, 0.0)  # padded garbage never enters a sum
        counts = torch.zeros_like(self.cluster_size).index_add_(0, idx, w.to(target.dtype))
        sums = torch.zeros_like(self.embed_avg).index_add_(0, idx, target)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.size * self.eps) * total
        used = counts > 0
        new_embed = self.embed_avg / smoothed.clamp_min(1e-12)[:, None]
        self.embed.copy_(torch.where(used[:, None], new_embed, self.embed))
        self.unused.add_(1).masked_fill_(used, 0)

    @torch.no_grad()
    def expire_codes_(self, tokens: Tensor, generator: torch.Generator) -> int:
        """Re-seed dead codes (index >= reset_start, unused > threshold) from random token rows.

        ``tokens [..., D]`` are current (valid) semantic tokens. A re-seeded code gets EMA
        statistics 0 (so it keeps its new vector until a token lands on it) and counter 0.
        Returns the number of codes reset (the only host sync).
        """
        flat = tokens.detach().reshape(-1, self.dim).to(self.embed)
        codes = torch.arange(self.size, device=self.embed.device)
        dead = (self.unused > self.dead_code_threshold) & (codes >= self.reset_start)
        rows = _sample_rows(flat.shape[0], self.size, generator).to(flat.device)
        self.embed.copy_(torch.where(dead[:, None], flat[rows], self.embed))
        self.embed_avg.masked_fill_(dead[:, None], 0.0)
        self.cluster_size.masked_fill_(dead, 0.0)
        self.unused.masked_fill_(dead, 0)
        return int(dead.sum())

    @torch.no_grad()
    def init_from_tokens_(self, tokens: Tensor, generator: torch.Generator) -> None:
        """Seed every code from random rows of data tokens ``[..., D]``; EMA statistics at 0."""
        flat = tokens.detach().reshape(-1, self.dim).to(self.embed)
        rows = _sample_rows(flat.shape[0], self.size, generator).to(flat.device)
        self.embed.copy_(flat[rows])
        self.embed_avg.zero_()
        self.cluster_size.zero_()
        self.unused.zero_()

    @torch.no_grad()
    def append_codes_(self, init: Tensor, *, protect_old: bool = True) -> None:
        """Append ``init [K2, D]`` as new codes (EMA statistics 0); with ``protect_old`` the
        dead-code reset then only touches the new codes (reset_start := old size)."""
        old = self.size
        init = init.detach().to(self.embed)
        self.embed = torch.cat([self.embed, init])
        self.embed_avg = torch.cat([self.embed_avg, torch.zeros_like(init)])
        self.cluster_size = torch.cat([self.cluster_size, init.new_zeros(init.shape[0])])
        self.unused = torch.cat([self.unused, self.unused.new_zeros(init.shape[0])])
        if protect_old:
            self.reset_start.fill_(old)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, decay={self.decay}, pairing={self.pairing}"


def _valid(x: Tensor, masks: dict[str, Tensor] | None, name: str) -> Tensor:
    """Bool mask of ``name`` with the shape of ``x`` (all True when absent)."""
    if masks is None or masks.get(name) is None:
        return torch.ones(x.shape, dtype=torch.bool, device=x.device)
    return masks[name].to(device=x.device, dtype=torch.bool).expand(x.shape)


def _sample_rows(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` row indices into ``n`` rows: distinct when ``n >= k``, with replacement otherwise."""
    if n == 0:
        raise ValueError("no tokens to sample codes from")
    if n >= k:
        return torch.randperm(n, generator=generator, device=generator.device)[:k]
    return torch.randint(n, (k,), generator=generator, device=generator.device)
