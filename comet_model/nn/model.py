"""CometModel: encoders -> (adapter) -> shared codebook -> decoders, with CLUB and Cross-CPC.

Composition only (no optimiser, no loop). ``from_config`` is the single place that maps the
configuration to constructor arguments. The forward pass is split in two phases so the
training loop can run the CLUB estimator's inner steps on the current batch's detached
``(vq, spec)`` pairs between them (dcid_reference 1.10): :meth:`CometModel.features` (encoders,
adapter, codebook) and :meth:`CometModel.compute_losses`; ``forward`` runs both.

Losses per method (spec section 6, our reading of the baselines):
- ``dcid``: recon, commit, cmcm, cpc, club (all of spec section 2);
- ``cmcm``: recon, commit, cmcm (Liu et al. 2021);
- ``turn``: recon, commit, contrastive (global InfoNCE of time-pooled semantic vectors);
plus ``gate`` when the MoE adapter is on and ``pmr`` when a pseudo-modality is given. Losses
whose configured weight is 0 are not computed. "+COMET" for CMCM and TURN (no Cross-CPC of their
own) gets a Cross-CPC module that serves only the PMR term (``pmr``: the InfoNCE terms where the
pseudo stream is the context or the target); its ``cpc`` terms are never used. Per-modality
terms (recon, club, gate) are summed over modalities, as the original sums its per-modality
terms.

CLUB (our change, switch ``club.clamp``): each modality's sampled bound is clipped at 0 before
it enters the loss. Mutual information is non-negative; a negative estimate only means the
estimator lags behind the encoders, and following its gradient lets the encoders scale the
specific features up without limit (measured on the digits world: the unclipped bound ran to
-3,700 and cross-modal accuracy fell to chance). The estimator parameters are excluded from the
main graph (``requires_grad`` off while the bound is computed): they follow only their own
optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from comet_model.config import ClubConfig, ExperimentConfig, ModelConfig
from comet_model.nn.club import CLUB
from comet_model.nn.codebook import CodebookOutput, SharedCodebook
from comet_model.nn.cpc import CrossCPC
from comet_model.nn.encoders import CMGFrontEnd, ModalityEncoders
from comet_model.nn.losses import masked_mse, pooled_info_nce
from comet_model.nn.moe_adapter import LinearAdapter, MoEAdapter
from comet_model.nn.replay import PseudoModality

__all__ = ["METHOD_LOSSES", "CometModel", "Features", "ModelOutput", "PSEUDO_STREAM"]

METHOD_LOSSES: dict[str, tuple[str, ...]] = {
    "dcid": ("recon", "commit", "cmcm", "cpc", "club"),
    "cmcm": ("recon", "commit", "cmcm"),
    "turn": ("recon", "commit", "contrastive"),
}
PSEUDO_STREAM = "pseudo"  # name of the PMR auxiliary stream in Cross-CPC

PseudoSource = PseudoModality | Callable[[dict[str, Tensor]], PseudoModality]


@dataclass
class Features:
    """Phase 1 of the forward pass: everything before the losses."""

    inputs: dict[str, Tensor]  # modality -> [B, T, d_m]
    masks: dict[str, Tensor] | None  # modality -> bool [B, T]
    semantic: dict[str, Tensor]  # continuous semantic features after the adapter [B, T, D]
    specific: dict[str, Tensor]  # what CLUB sees [B, T, club_dim]
    codebook: CodebookOutput
    gate: Tensor | None  # summed load-balance loss of the adapter (None without MoE)
    decoder_inputs: dict[str, Tensor] = field(default_factory=dict)  # specific part of recon


@dataclass
class ModelOutput:
    """Unweighted named losses plus what the training loop needs afterwards."""

    losses: dict[str, Tensor]  # unweighted, only the losses the method uses
    semantic: dict[str, Tensor]  # detached [B, T, D] (for ema_update_ / expire_codes_)
    indices: dict[str, Tensor]  # [B, T] int64
    masks: dict[str, Tensor] | None
    club_pairs: dict[str, tuple[Tensor, Tensor]]  # detached (vq, spec) per modality
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached 0-dim tensors
    pseudo: PseudoModality | None = None


class CometModel(nn.Module):
    """DCID generalised to N modalities, with the optional CMoE-Adapter of COMET.

    Args:
        encoders: per-modality semantic/specific encoders and decoders.
        codebook: the shared EMA codebook.
        adapter: MoEAdapter, LinearAdapter or None (COMET off).
        cpc: Cross-CPC (None for methods without it).
        active: names of the losses to compute (see the module docstring).
        club_hidden: hidden width of the per-modality CLUB estimators (if "club" is active).
        club_clamp: clip each modality's CLUB bound at 0 (see the module docstring).
        contrastive_temperature: temperature of the TURN InfoNCE.
    """

    def __init__(
        self,
        encoders: ModalityEncoders,
        codebook: SharedCodebook,
        *,
        adapter: MoEAdapter | LinearAdapter | None = None,
        cpc: CrossCPC | None = None,
        active: tuple[str, ...] = METHOD_LOSSES["dcid"],
        club_hidden: int = ModelConfig.club_hidden,
        club_clamp: bool = ClubConfig.clamp,
        contrastive_temperature: float = ModelConfig.contrastive_temperature,
    ) -> None:
        super().__init__()
        if "cpc" in active and cpc is None:
            raise ValueError("the 'cpc' loss needs a CrossCPC module")
        self.encoders, self.codebook, self.adapter, self.cpc = encoders, codebook, adapter, cpc
        self.active = tuple(active)
        self.club_hidden, self.club_clamp = club_hidden, club_clamp
        self.contrastive_temperature = contrastive_temperature
        self.club = nn.ModuleDict()
        self.register_buffer("codebook_seeded", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, feature_dims: Mapping[str, int] | None = None
    ) -> CometModel:
        """Build the model of ``cfg`` (the only config -> constructor mapping)."""
        mc, cc = cfg.model, cfg.codebook
        cmg = None
        if mc.video_frontend == "cmg":
            cmg = CMGFrontEnd(mc.cmg_modalities, mc.cmg_grid, mc.cmg_channels, mc.cmg_width)
        encoders = ModalityEncoders(
            mc.dim, spec_dim=mc.spec_dim, layers=mc.layers, heads=mc.heads, ffn=mc.ffn,
            dropout=mc.dropout, norm_first=mc.norm_first, positional=mc.positional, cmg=cmg,
        )  # fmt: skip
        codebook = SharedCodebook(
            mc.dim, cc.size, decay=cc.decay, eps=cc.eps, dead_code_threshold=cc.dead_code_threshold,
            pairing=cc.pairing, cmcm_temperature=cc.cmcm_temperature, commitment=cc.commitment,
        )  # fmt: skip
        adapter: MoEAdapter | LinearAdapter | None = None
        if cfg.comet and cfg.moe.enabled:
            m = cfg.moe
            adapter = MoEAdapter(
                mc.dim, m.num_experts, specific_layers=m.specific_layers, combine=m.combine,
                residual=m.residual, top_k=m.top_k,
            )  # fmt: skip
        elif cfg.comet and cfg.moe.linear_fallback:  # ours: a plain linear adapter, no experts
            adapter = LinearAdapter(mc.dim, residual=cfg.moe.residual)
        weights = vars(cfg.loss)
        losses = METHOD_LOSSES[cfg.method]
        if cfg.loss.add_cpc and "cpc" not in losses:  # control arm: Cross-CPC for TURN / CMCM
            losses = (*losses, "cpc")
        active = [n for n in losses if weights[n] > 0]
        if isinstance(adapter, MoEAdapter) and cfg.loss.gate > 0:
            active.append("gate")
        needs_cpc = "cpc" in losses or (cfg.comet and cfg.replay.enabled)
        cpc = CrossCPC(mc.dim, num_layers=mc.cpc_layers) if needs_cpc else None
        model = cls(
            encoders, codebook, adapter=adapter, cpc=cpc, active=tuple(active),
            club_hidden=mc.club_hidden, club_clamp=cfg.club.clamp,
            contrastive_temperature=mc.contrastive_temperature,
        )  # fmt: skip
        for name, in_dim in (feature_dims or {}).items():
            model.add_modality_(name, in_dim)
        return model

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities created so far, in order of first appearance."""
        return self.encoders.modalities

    @property
    def in_dims(self) -> dict[str, int]:
        """Input width of every modality (what a checkpoint needs to recreate the modules)."""
        return dict(self.encoders.in_dims)

    @property
    def codebook_size(self) -> int:
        """Current number of codes."""
        return self.codebook.size

    def add_modality_(self, name: str, in_dim: int) -> bool:
        """Create every module of modality ``name``; False if it already existed."""
        if not self.encoders.add_modality_(name, in_dim):
            return False
        if self.adapter is not None:
            self.adapter.add_modality_(name)
        if self.cpc is not None:
            self.cpc.add_stream_(name)
        if "club" in self.active:
            club_dim = self.encoders.club_dims[name]
            self.club[name] = CLUB(self.encoders.dim, club_dim, self.club_hidden)
        self.to(self.codebook.embed.device)  # new modules follow the model's device
        return True

    def add_pseudo_stream_(self) -> None:
        """Create the Cross-CPC stream of the PMR pseudo-modality (before building optimisers)."""
        if self.cpc is None:
            raise ValueError("pseudo-modality replay needs a Cross-CPC module")
        self.cpc.add_stream_(PSEUDO_STREAM)
        self.to(self.codebook.embed.device)

    def ewc_parameters(
        self, modalities: Iterable[str], *, mediator: str | None = None
    ) -> dict[str, nn.Parameter]:
        """Parameters EWC protects (paper Eq. 6), named as in ``named_parameters()``.

        The adapter's common layers, router and the specific layers of ``modalities`` (empty
        without an adapter); with ``mediator`` also that modality's semantic encoder (our
        documented extension against mediator drift, switch ``ewc.mediator``).
        """
        out: dict[str, nn.Parameter] = {}
        if self.adapter is not None:
            adapter = self.adapter.ewc_parameters(modalities)
            out |= {f"adapter.{k}": p for k, p in adapter.items()}
        if mediator is not None and mediator in self.modalities:
            prefix = f"encoders.semantic.{mediator}."
            out |= {k: p for k, p in self.named_parameters() if k.startswith(prefix)}
        return out

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of the main loss by group, for stage freezing.

        Groups: ``semantic.<m>``, ``specific.<m>``, ``decoder.<m>``, ``adapter`` (common layers
        and router), ``adapter.<m>`` (specific layers), ``cpc`` (shared parts, if any),
        ``cpc.<m>`` / ``cpc.pseudo``. The CLUB estimators are excluded: they have their own
        optimisers (:meth:`club_groups`).
        """
        groups: dict[str, list[nn.Parameter]] = {}
        streams = set(self.modalities) | {PSEUDO_STREAM}
        for name, p in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "club":
                continue
            if parts[0] == "encoders":
                key = f"{parts[1]}.{parts[2]}"
            elif parts[0] in ("adapter", "cpc"):
                owner = next((s for s in parts[1:] if s in streams), None)
                key = parts[0] if owner is None else f"{parts[0]}.{owner}"
            else:
                key = parts[0]
            groups.setdefault(key, []).append(p)
        return groups

    def club_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each modality's CLUB estimator."""
        return {m: list(c.parameters()) for m, c in self.club.items()}

    def _adapt(self, name: str, h: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.adapter is None:
            return h, None
        out = self.adapter(h, name, mask)
        return out.y, out.losses.get("gate")

    def encode(self, modality: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Continuous semantic features ``[N, T, D]`` (after the adapter); no state change."""
        h = self.encoders.encode_semantic(modality, x, mask)
        return self._adapt(modality, h, mask)[0]

    @torch.no_grad()
    def quantize(
        self, modality: str, x: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Nearest code vectors ``[N, T, D]`` and indices ``[N, T]``; no state change, no grad.

        Call it in eval mode for deterministic output (dropout).
        """
        return self.codebook.quantize(self.encode(modality, x, mask))

    def features(
        self, batch: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Features:
        """Phase 1: semantic (+adapter), specific features and codebook output of a batch."""
        if not batch:
            raise ValueError("empty batch")
        inputs = dict(batch)
        mk = {m: masks[m] for m in inputs if masks.get(m) is not None} if masks else None
        mk = mk or None
        semantic, specific, decoder_inputs, gates = {}, {}, {}, []
        for m, x in inputs.items():
            mask = None if mk is None else mk.get(m)
            h = self.encoders.encode_semantic(m, x, mask)
            semantic[m], gate = self._adapt(m, h, mask)
            if gate is not None:
                gates.append(gate)
            decoder_inputs[m], specific[m] = self.encoders.encode_specific(m, x)
        cb = self.codebook(semantic, mk)
        gate_total = torch.stack(gates).sum() if gates else None
        return Features(inputs, mk, semantic, specific, cb, gate_total, decoder_inputs)

    @contextmanager
    def _club_frozen(self) -> Iterator[None]:
        """Estimator parameters out of the main graph (they follow only their own optimiser)."""
        params = [p for c in self.club.values() for p in c.parameters()]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(params, flags, strict=True):
                p.requires_grad_(f)

    def compute_losses(
        self,
        feats: Features,
        *,
        generator: torch.Generator,
        pseudo: PseudoSource | None = None,
    ) -> ModelOutput:
        """Phase 2: the unweighted named losses of the active method."""
        sem, mk, cb = feats.semantic, feats.masks, feats.codebook
        detached = {m: z.detach() for m, z in sem.items()}

        def mask_of(m: str) -> Tensor | None:
            return None if mk is None else mk.get(m)

        losses: dict[str, Tensor] = {}
        vq, spec = cb.quantized, feats.specific
        dec_in = feats.decoder_inputs or spec
        if "recon" in self.active:
            recon = [
                masked_mse(self.encoders.decode(m, vq[m], dec_in[m]), x, mask_of(m))
                for m, x in feats.inputs.items()
            ]
            losses["recon"] = torch.stack(recon).sum()
        for name in ("commit", "cmcm"):
            if name in self.active:
                losses[name] = cb.losses[name]
        if "club" in self.active:
            with self._club_frozen():
                bounds = [
                    self.club[m].mi_upper_bound(vq[m], spec[m], generator, mask_of(m))
                    for m in feats.inputs
                ]
            bound = torch.stack(bounds)
            losses["club"] = (bound.clamp_min(0.0) if self.club_clamp else bound).sum()
        if "contrastive" in self.active:
            losses["contrastive"] = pooled_info_nce(
                sem, mk, temperature=self.contrastive_temperature
            )
        if "gate" in self.active and feats.gate is not None:
            losses["gate"] = feats.gate
        built = pseudo(detached) if callable(pseudo) else pseudo
        if self.cpc is not None and ("cpc" in self.active or built is not None):
            aux = aux_w = None
            if built is not None:
                aux = {PSEUDO_STREAM: built.codes.detach()}
                aux_w = {PSEUDO_STREAM: built.step_weights.detach()}
            cpc = self.cpc(sem, generator=generator, aux=aux, aux_step_weights=aux_w, masks=mk)
            if "cpc" in self.active:
                losses["cpc"] = cpc["cpc"]
            if built is not None:
                losses["pmr"] = cpc["pmr"]
        elif built is not None:
            raise ValueError("a pseudo-modality was given but the model has no Cross-CPC")
        return ModelOutput(
            losses=losses,
            semantic=detached,
            indices=cb.indices,
            masks=mk,
            club_pairs={
                m: (cb.quantized[m].detach(), feats.specific[m].detach())
                for m in self.club
                if m in sem
            },
            stats=dict(cb.stats),
            pseudo=built,
        )

    def forward(
        self,
        batch: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        *,
        generator: torch.Generator,
        pseudo: PseudoSource | None = None,
    ) -> ModelOutput:
        """Both phases: ``batch`` modality -> ``[B, T, d_m]``; unweighted named losses."""
        return self.compute_losses(self.features(batch, masks), generator=generator, pseudo=pseudo)

    @torch.no_grad()
    def seed_codebook_(self, tokens: Tensor, generator: torch.Generator) -> None:
        """Seed every code from data tokens ``[N, D]`` (spec section 9) and mark it seeded."""
        self.codebook.init_from_tokens_(tokens, generator)
        self.codebook_seeded.fill_(True)
