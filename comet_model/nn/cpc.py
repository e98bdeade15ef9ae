"""Cross-CPC over N streams (paper Eq. 2), with auxiliary streams for pseudo-modality replay.

Every stream (a real modality, or an auxiliary stream such as the PMR pseudo-modality) has its
own unidirectional LSTM and one linear predictor per prediction step. At one random anchor t
per call, the context of stream y predicts the feature of stream x at t + k; InfoNCE over the
batch scores the true item against the other items (dcid_reference 1.11, spec section 5).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from comet_model.config import ModelConfig  # constructor defaults = config defaults
from comet_model.nn.precision import f32, full_precision, lstm_needs_fp32

_MASKED = -1e9  # finite, so a fully masked row gives 0 * finite instead of 0 * inf = nan


class CrossCPC(nn.Module):
    """Cross-modal contrastive predictive coding for N streams (paper Eq. 2).

    Args:
        dim: feature dimension D of every stream.
        hidden: LSTM width (defaults to ``dim``).
        num_layers: LSTM layers.
        prediction_steps: number of future steps k = 1..K predicted from the anchor.
        self_weight: weight of the self pairs (x predicted from x); cross pairs weigh 1.
        min_start_steps: the anchor t is drawn from [min_start_steps, T - 1 - K].
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int | None = None,
        num_layers: int = ModelConfig.cpc_layers,
        prediction_steps: int = 1,
        self_weight: float = 0.1,
        min_start_steps: int = 1,
    ) -> None:
        super().__init__()
        if prediction_steps < 1:
            raise ValueError(f"prediction_steps must be >= 1, got {prediction_steps}")
        self.dim, self.hidden = dim, hidden or dim
        self.num_layers, self.prediction_steps = num_layers, prediction_steps
        self.self_weight, self.min_start_steps = self_weight, min_start_steps
        self.lstms = nn.ModuleDict()
        self.predictors = nn.ModuleDict()  # name -> ModuleList of K Linear(hidden -> dim)

    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the streams created so far."""
        return tuple(self.lstms.keys())

    def add_stream_(self, name: str, generator: torch.Generator | None = None) -> None:
        """Create the LSTM and predictors of stream ``name`` (no-op if it exists).

        With ``generator``, the new weights are drawn from it (PyTorch's default ranges).
        """
        if name in self.lstms:
            return
        lstm = nn.LSTM(self.dim, self.hidden, self.num_layers, batch_first=True)
        preds = nn.ModuleList(
            nn.Linear(self.hidden, self.dim) for _ in range(self.prediction_steps)
        )
        if generator is not None:
            with torch.no_grad():
                for p in lstm.parameters():
                    bound = 1.0 / math.sqrt(self.hidden)
                    p.uniform_(-bound, bound, generator=generator)
                for lin in preds:
                    assert isinstance(lin, nn.Linear)
                    bound = 1.0 / math.sqrt(self.hidden)
                    lin.weight.uniform_(-bound, bound, generator=generator)
                    lin.bias.uniform_(-bound, bound, generator=generator)
        existing = next(self.parameters(), None)
        if existing is not None:
            lstm, preds = lstm.to(existing.device), preds.to(existing.device)
        self.lstms[name] = lstm
        self.predictors[name] = preds

    def _anchor(self, steps: int, generator: torch.Generator | None) -> int:
        """One anchor t with t + K <= T - 1, drawn uniformly (one tiny draw per call)."""
        last = steps - 1 - self.prediction_steps
        if last < 0:
            raise ValueError(f"need T > prediction_steps, got T={steps}")
        first = self.min_start_steps if self.min_start_steps <= last else 0
        device = generator.device if generator is not None else None
        return int(torch.randint(first, last + 1, (1,), generator=generator, device=device))

    def forward(
        self,
        feats: dict[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        aux: dict[str, Tensor] | None = None,
        aux_step_weights: dict[str, Tensor] | None = None,
        masks: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """InfoNCE losses ``{"cpc": among feats, "pmr": terms involving an aux stream}``.

        ``feats``/``aux``: name -> ``[B, T, D]`` (aux already detached by the caller).
        ``aux_step_weights[name]``: ``[B, T]`` weights, read at the target step t + k and applied
        per sample to every term where that aux stream is the target or the context source.
        ``masks``: name -> bool ``[B, T]``; a term counts only if its target step and its context
        step are valid, and invalid contexts are no negatives. Sums are divided by B * K.
        """
        aux = aux or {}
        clash = set(feats) & set(aux)
        if clash:
            raise ValueError(f"aux stream names clash with modalities: {sorted(clash)}")
        names = list(feats) + list(aux)
        for name in names:
            self.add_stream_(name)
        x = torch.stack([*feats.values(), *aux.values()])  # [S, B, T, D]
        n_streams, batch, steps, _ = x.shape
        k_steps = self.prediction_steps
        t = self._anchor(steps, generator)

        preds = []
        for s, name in enumerate(names):
            out = self._context(name, x[s, :, : t + 1])  # [B, t+1, H]
            context = out[:, t]  # [B, H]
            preds.append(torch.stack([lin(context) for lin in self.predictors[name]]))
        with full_precision(x.device.type):  # InfoNCE scores in float32 under autocast
            pred = f32(torch.stack(preds))  # [S, K, B, D]
            x = f32(x)
            target = rearrange(x[:, :, t + 1 : t + 1 + k_steps], "s b k d -> s k b d")
            # rows: target items b of stream x; columns: predictions c from stream y's context
            scores = torch.einsum("xkbd,ykcd->xykbc", target, pred)  # [S, S, K, B, B]
            return self._losses(scores, x, names, aux, aux_step_weights, masks, t)

    def _context(self, name: str, x: Tensor) -> Tensor:
        """Stream ``name``'s LSTM outputs over ``x [B, t+1, D]`` (float32 where the CPU has no
        fp16 LSTM)."""
        if lstm_needs_fp32(x.device.type):
            with full_precision("cpu"):
                return self.lstms[name](f32(x))[0]
        return self.lstms[name](x)[0]

    def _losses(
        self,
        scores: Tensor,
        x: Tensor,
        names: list[str],
        aux: dict[str, Tensor],
        aux_step_weights: dict[str, Tensor] | None,
        masks: dict[str, Tensor] | None,
        t: int,
    ) -> dict[str, Tensor]:
        """The weighted InfoNCE terms of the score tensor ``[S, S, K, B, B]`` at anchor ``t``."""
        n_streams, batch, steps, _ = x.shape
        k_steps = self.prediction_steps

        ones = x.new_ones(batch, steps)
        valid = torch.stack(
            [(masks or {}).get(n, ones).to(device=x.device, dtype=x.dtype) for n in names]
        )  # [S, B, T]
        ctx_ok = valid[:, :, t]  # [S, B]
        tgt_ok = rearrange(valid[:, :, t + 1 : t + 1 + k_steps], "s b k -> s k b")
        scores = scores.masked_fill(ctx_ok[None, :, None, None, :] == 0, _MASKED)
        diag = torch.arange(batch, device=x.device)
        log_p = scores.log_softmax(-1)[..., diag, diag]  # [S, S, K, B]

        weights = torch.stack(
            [
                (aux_step_weights or {}).get(n, ones).to(device=x.device, dtype=x.dtype)
                if n in aux
                else ones
                for n in names
            ]
        )  # [S, B, T]
        w_tgt = rearrange(weights[:, :, t + 1 : t + 1 + k_steps], "s b k -> s k b")
        eye = torch.eye(n_streams, dtype=torch.bool, device=x.device)[:, :, None, None]
        # the aux weight applies once per stream involved (once for an aux self pair)
        step_w = torch.where(eye, w_tgt[:, None], w_tgt[:, None] * w_tgt[None, :])
        row_w = step_w * tgt_ok[:, None] * ctx_ok[None, :, None, :]  # [S, S, K, B]
        pair_w = torch.where(eye[..., 0, 0], self.self_weight, 1.0).to(x.dtype)  # [S, S]
        terms = -(log_p * row_w).sum((2, 3)) * pair_w / (batch * k_steps)  # [S, S]

        is_aux = torch.tensor([n in aux for n in names], device=x.device)
        involves_aux = (is_aux[:, None] | is_aux[None, :]).to(x.dtype)
        return {
            "cpc": (terms * (1.0 - involves_aux)).sum(),
            "pmr": (terms * involves_aux).sum(),
        }
