"""Per-modality encoders and decoders of DCID (spec section 2, dcid_reference 1.3-1.5).

For every modality m (created the first time m appears, kept afterwards):

- semantic encoder: ``Linear(d_m -> D)`` then a small Transformer encoder over the T steps
  (post-norm by default, as the original; no positional encoding by default, as the original);
- modality-specific encoder: ``Linear(d_m -> D_spec) + ReLU``;
- decoder: ``Linear(D -> D)`` on the quantised semantic sequence, concatenated with the
  specific features, then ``Linear(D + D_spec -> d_m)`` (the original's audio/text decoder).

Modalities listed in ``cmg`` (:class:`CMGFrontEnd`, config ``model.video_frontend = "cmg"``)
take VGG19 pool5 maps flattened to ``[B, T, g*g*C]`` and get DCID's video modules instead
(dcid_reference 1.3-1.5, :mod:`comet_model.nn.cmg_video`): the SE + spatial-attention front end
before the temporal encoder, the convolutional specific encoder (whose pooled projection is what
CLUB sees) and the transposed-convolution decoder.

All modules are held in ``nn.ModuleDict``s keyed by modality name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from comet_model.config import ModelConfig as _M  # constructor defaults = config defaults
from comet_model.nn.cmg_video import CMGVideoDecoder, CMGVideoSemantic, CMGVideoSpecificEncoder

__all__ = [
    "CMGDecoder",
    "CMGFrontEnd",
    "CMGSemanticEncoder",
    "Decoder",
    "ModalityEncoders",
    "SemanticEncoder",
    "sinusoidal_positions",
]


def sinusoidal_positions(steps: int, dim: int) -> Tensor:
    """Fixed sinusoidal position table ``[T, D]`` (Vaswani et al. 2017)."""
    pos = torch.arange(steps, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class SemanticEncoder(nn.Module):
    """Linear projection into the shared space, then Transformer layers over time."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        layers: int = _M.layers,
        heads: int = _M.heads,
        ffn: int = _M.ffn,
        dropout: float = _M.dropout,
        norm_first: bool = _M.norm_first,
        positional: bool = _M.positional,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.positional = positional
        # independent layers (nn.TransformerEncoder would deep-copy one initialisation)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, ffn, dropout, batch_first=True, norm_first=norm_first
            )
            for _ in range(layers)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x [B, T, d_m]`` -> ``[B, T, D]``; ``mask`` bool ``[B, T]`` (True = valid step)."""
        h = self.proj(x)
        if self.positional:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h)
        pad = None
        if mask is not None:
            pad = ~mask.bool()
            pad = pad & ~pad.all(1, keepdim=True)  # fully padded items attend to all (ignored)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        return h


class Decoder(nn.Module):
    """Reconstructs the input features from ``[Linear(quantised) ; specific]``."""

    def __init__(self, dim: int, spec_dim: int, out_dim: int) -> None:
        super().__init__()
        self.vq_proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim + spec_dim, out_dim)

    def forward(self, vq: Tensor, spec: Tensor) -> Tensor:
        """``vq [B, T, D]``, ``spec [B, T, D_spec]`` -> reconstruction ``[B, T, d_m]``."""
        return self.out(torch.cat([self.vq_proj(vq), spec], dim=-1))


@dataclass(frozen=True)
class CMGFrontEnd:
    """Which modalities take CMG pool5 maps, and the map and encoder widths."""

    modalities: tuple[str, ...] = ("video",)
    grid: int = 7
    channels: int = 512
    width: int = 2048

    @property
    def in_dim(self) -> int:
        """Flattened input width ``grid * grid * channels`` (25088 for VGG19 pool5)."""
        return self.grid * self.grid * self.channels


class CMGSemanticEncoder(nn.Module):
    """DCID video semantic branch: SE + spatial attention pooling per frame, then the temporal
    encoder (dcid_reference 1.3)."""

    def __init__(self, front: CMGFrontEnd, temporal: SemanticEncoder) -> None:
        super().__init__()
        self.frame = CMGVideoSemantic(front.channels, front.grid)
        self.temporal = temporal

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x [B, T, g*g*C]`` -> ``[B, T, D]``."""
        return self.temporal(self.frame(x), mask)


class CMGSpecific(nn.Module):
    """The convolutional specific encoder; returns (map for the decoder, vector for CLUB)."""

    def __init__(self, front: CMGFrontEnd, club_dim: int) -> None:
        super().__init__()
        self.net = CMGVideoSpecificEncoder(
            front.channels, front.width, grid=front.grid, club_dim=club_dim
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, T, g*g*C]`` -> spec map ``[B, T, g-4, g-4, W]``, CLUB vector ``[B, T, club]``."""
        out = self.net(x)
        return out.spec, out.club


class CMGDecoder(nn.Module):
    """The transposed-convolution decoder, output flattened like the input ``[B, T, g*g*C]``."""

    def __init__(self, front: CMGFrontEnd, dim: int) -> None:
        super().__init__()
        self.net = CMGVideoDecoder(dim, front.width, front.channels, spec_grid=front.grid - 4)

    def forward(self, vq: Tensor, spec: Tensor) -> Tensor:
        """``vq [B, T, D]``, ``spec [B, T, g-4, g-4, W]`` -> ``[B, T, g*g*C]``."""
        return rearrange(self.net(vq, spec), "b t h w c -> b t (h w c)")


class ModalityEncoders(nn.Module):
    """Semantic encoders, specific encoders and decoders of every modality seen so far."""

    def __init__(
        self,
        dim: int,
        *,
        spec_dim: int = _M.spec_dim,
        layers: int = _M.layers,
        heads: int = _M.heads,
        ffn: int = _M.ffn,
        dropout: float = _M.dropout,
        norm_first: bool = _M.norm_first,
        positional: bool = _M.positional,
        cmg: CMGFrontEnd | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.spec_dim, self.cmg = dim, spec_dim, cmg
        self._semantic_kw = {
            "layers": layers,
            "heads": heads,
            "ffn": ffn,
            "dropout": dropout,
            "norm_first": norm_first,
            "positional": positional,
        }
        self.semantic = nn.ModuleDict()
        self.specific = nn.ModuleDict()
        self.decoder = nn.ModuleDict()
        self.in_dims: dict[str, int] = {}
        self.club_dims: dict[str, int] = {}  # width of what the CLUB estimator of m sees

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities in order of first appearance."""
        return tuple(self.in_dims)

    def add_modality_(self, name: str, in_dim: int) -> bool:
        """Create the modules of ``name`` (input width ``in_dim``); False if it already exists."""
        if not name or "." in name:
            raise ValueError(f"modality name {name!r} must be non-empty and contain no '.'")
        if name in self.in_dims:
            if self.in_dims[name] != in_dim:
                raise ValueError(
                    f"modality '{name}' was created with {self.in_dims[name]} features, "
                    f"got {in_dim}"
                )
            return False
        if self.is_cmg(name):
            assert self.cmg is not None
            if in_dim != self.cmg.in_dim:
                g, c = self.cmg.grid, self.cmg.channels
                raise ValueError(
                    f"modality '{name}' uses the CMG front end and expects {g}x{g}x{c} maps "
                    f"flattened to {self.cmg.in_dim} features, got {in_dim}"
                )
            temporal = SemanticEncoder(self.cmg.channels, self.dim, **self._semantic_kw)
            self.semantic[name] = CMGSemanticEncoder(self.cmg, temporal)
            self.specific[name] = CMGSpecific(self.cmg, club_dim=self.cmg.channels)
            self.decoder[name] = CMGDecoder(self.cmg, self.dim)
            self.club_dims[name] = self.cmg.channels
        else:
            self.semantic[name] = SemanticEncoder(in_dim, self.dim, **self._semantic_kw)
            self.specific[name] = nn.Sequential(nn.Linear(in_dim, self.spec_dim), nn.ReLU())
            self.decoder[name] = Decoder(self.dim, self.spec_dim, in_dim)
            self.club_dims[name] = self.spec_dim
        self.in_dims[name] = in_dim
        return True

    def is_cmg(self, name: str) -> bool:
        """Whether modality ``name`` uses the CMG video front end."""
        return self.cmg is not None and name in self.cmg.modalities

    def check_input(self, name: str, x: Tensor) -> None:
        """Raise a one-line error if ``x`` does not fit modality ``name``."""
        if name not in self.in_dims:
            raise KeyError(f"unknown modality '{name}' (known: {list(self.in_dims)})")
        if x.ndim != 3 or x.shape[-1] != self.in_dims[name]:
            raise ValueError(
                f"modality '{name}' expects [B, T, {self.in_dims[name]}], got {tuple(x.shape)}"
            )

    def encode_semantic(self, name: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Continuous semantic features ``[B, T, D]`` of modality ``name``."""
        self.check_input(name, x)
        return self.semantic[name](x, mask)

    def encode_specific(self, name: str, x: Tensor) -> tuple[Tensor, Tensor]:
        """Modality-specific features: (decoder input, CLUB input ``[B, T, club_dims[name]]``).

        Both are the same ``[B, T, D_spec]`` tensor for linear modalities; for a CMG modality
        the decoder gets the ``[B, T, g-4, g-4, W]`` map and CLUB its pooled projection.
        """
        out = self.specific[name](x)
        return out if isinstance(out, tuple) else (out, out)

    def decode(self, name: str, vq: Tensor, spec: Tensor) -> Tensor:
        """Reconstruction ``[B, T, d_m]`` of modality ``name``."""
        return self.decoder[name](vq, spec)
