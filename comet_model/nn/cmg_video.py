"""CMG-compatible video front end: DCID's video modules on VGG19 pool5 maps.

The modules follow the description in dcid_reference sections 1.3-1.5.

Users of CMG's released features hold per-second VGG19 ``pool5`` maps ``[N, T, 7, 7, 512]``
(channels last). This file gives the three video modules DCID builds on them:

- ``CMGVideoSemantic``: squeeze-excitation channel attention plus audio-free spatial attention
  pooling, one ``[512]`` vector per frame, which then feeds the temporal semantic encoder;
- ``CMGVideoSpecificEncoder``: the convolutional modality-specific encoder (7x7 -> 3x3 maps of
  2048 channels) and the pooled vector that the CLUB estimator sees;
- ``CMGVideoDecoder``: the transposed-convolution decoder that rebuilds the 7x7x512 map from the
  quantised semantic vector and the specific map.

Every module takes the 5-D form ``[B, T, H, W, C]`` or the flattened form ``[B, T, H*W*C]`` (the
layout our ``Sequences`` arrays use; C is the fastest axis). Frames are folded into the batch
axis (no Python loop over frames). The convolutions run either on channels-last tensors (what
the permuted input already is, no copy) or on a contiguous NCHW copy; ``layout="auto"`` picks
NCHW for float32 on CPU and channels-last otherwise, because on a 2-thread CPU (torch 2.13)
NCHW was about 30% faster in float32 and channels-last about 35% faster in float64 for these
layer shapes. Nothing fixes the dtype: float32 is the default, float64 works (the original ran
in float64 only).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, cast, get_args

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "CMGVideoDecoder",
    "CMGVideoSemantic",
    "CMGVideoSpecific",
    "CMGVideoSpecificEncoder",
    "Layout",
    "ResidualStack",
    "to_grid",
]


def to_grid(x: Tensor, grid: int, channels: int) -> Tensor:
    """``[B, T, grid*grid*channels]`` or ``[B, T, grid, grid, channels]`` -> the 5-D form."""
    if x.ndim == 3 and x.shape[-1] == grid * grid * channels:
        return rearrange(x, "b t (h w c) -> b t h w c", h=grid, w=grid, c=channels)
    if x.ndim == 5 and tuple(x.shape[2:]) == (grid, grid, channels):
        return x
    raise ValueError(
        f"expected [B, T, {grid}, {grid}, {channels}] or [B, T, {grid * grid * channels}], "
        f"got {tuple(x.shape)}"
    )


Layout = Literal["auto", "channels_last", "contiguous"]


def _check_layout(layout: str) -> Layout:
    if layout not in get_args(Layout):
        raise ValueError(f"layout must be one of {get_args(Layout)}, got {layout!r}")
    return cast(Layout, layout)


def _frames_nchw(x: Tensor, layout: Layout) -> Tensor:
    """``[B, T, H, W, C]`` -> ``[B*T, C, H, W]``: a channels-last view or a contiguous copy."""
    y = rearrange(x, "b t h w c -> (b t) c h w")
    auto_nchw = x.device.type == "cpu" and x.dtype == torch.float32
    if layout == "contiguous" or (layout == "auto" and auto_nchw):
        return y.contiguous()
    return y


def _frames_back(y: Tensor, batch: int) -> Tensor:
    """``[B*T, C, H, W]`` -> ``[B, T, H, W, C]`` (a view; contiguous if ``y`` is channels-last)."""
    return rearrange(y, "(b t) c h w -> b t h w c", b=batch)


class ResidualStack(nn.Module):
    """VQ-VAE residual stack: per layer ``x + Conv1x1(ReLU(Conv3x3(ReLU(x))))``, then ReLU."""

    def __init__(self, channels: int, hidden: int | None = None, layers: int = 1) -> None:
        super().__init__()
        hidden = channels if hidden is None else hidden
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, 1, bias=False),
            )
            for _ in range(layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> ``[N, C, H, W]``."""
        for layer in self.layers:
            x = x + layer(x)
        return torch.relu(x)


class CMGVideoSemantic(nn.Module):
    """DCID video semantic front end: SE channel attention + spatial attention pooling.

    Per frame: ``v`` = mean of the ``grid x grid`` map; channel attention
    ``a = sigmoid(W2 ReLU(W1 v))`` (no biases) applied as ``x' = x * a + x``; spatial weights
    ``alpha = softmax_p(tanh(w^T (ReLU(U x'_p) * ReLU(V v)) + b))`` over the ``grid**2``
    positions; output ``sum_p alpha_p x'_p``. The pooled *input* ``v`` drives both attentions
    (our reading of the description), and no audio enters ("audio-free").
    """

    def __init__(
        self,
        in_channels: int = 512,
        grid: int = 7,
        *,
        se_hidden: int | None = None,
        att_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.grid = in_channels, grid
        se_hidden = in_channels // 8 if se_hidden is None else se_hidden  # 512 -> 64
        att_hidden = in_channels // 2 if att_hidden is None else att_hidden  # 512 -> 256
        self.se = nn.Sequential(
            nn.Linear(in_channels, se_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(se_hidden, in_channels, bias=False),
            nn.Sigmoid(),
        )
        self.position_proj = nn.Linear(in_channels, att_hidden)
        self.pooled_proj = nn.Linear(in_channels, att_hidden)
        self.score = nn.Linear(att_hidden, 1)

    def forward_with_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, T, g, g, C]`` or flat -> (pooled ``[B, T, C]``, weights ``[B, T, g*g]``)."""
        x = to_grid(x, self.grid, self.in_channels)
        maps = rearrange(x, "b t h w c -> b t (h w) c")  # (batch, time, positions, channels)
        pooled = maps.mean(dim=2)  # (b, t, c)
        attended = maps * self.se(pooled).unsqueeze(2) + maps  # channel attention, residual
        joint = torch.relu(self.position_proj(attended)) * torch.relu(
            self.pooled_proj(pooled)
        ).unsqueeze(2)  # (b, t, p, att_hidden)
        weights = torch.softmax(torch.tanh(self.score(joint).squeeze(-1)), dim=-1)  # (b, t, p)
        out = torch.einsum("btp,btpc->btc", weights, attended)
        return out, weights

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, T, g, g, C]`` or ``[B, T, g*g*C]`` -> attention-pooled frames ``[B, T, C]``."""
        return self.forward_with_weights(x)[0]


class CMGVideoSpecific(NamedTuple):
    """Outputs of ``CMGVideoSpecificEncoder``."""

    spec: Tensor  # (b, t, g-4, g-4, channels): the modality-specific map
    club: Tensor  # (b, t, club_dim): its pooled projection, the CLUB estimator's input


class CMGVideoSpecificEncoder(nn.Module):
    """DCID video modality-specific encoder: 3x3 conv stack + residual stack, and a CLUB head.

    Per frame: Conv3x3 (no padding) ``C -> mid``, ReLU, Conv3x3 ``mid -> channels``, ReLU,
    Conv1x1, residual stack (one layer), ReLU: a ``7x7`` map becomes ``3x3``. The CLUB vector
    is the spatial mean of that map through ``Linear(channels -> club_hidden)``, ReLU,
    ``Linear(club_hidden -> club_dim)``. Defaults are the original widths (72.4 M parameters).
    ``layout`` is the convolutions' memory format (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 512,
        channels: int = 2048,
        *,
        grid: int = 7,
        mid_channels: int | None = None,
        club_hidden: int | None = None,
        club_dim: int | None = None,
        residual_layers: int = 1,
        layout: Layout = "auto",
    ) -> None:
        super().__init__()
        self.layout = _check_layout(layout)
        if grid < 5:
            raise ValueError(f"grid must be >= 5 (two unpadded 3x3 convolutions), got {grid}")
        self.in_channels, self.channels, self.grid = in_channels, channels, grid
        mid_channels = channels // 2 if mid_channels is None else mid_channels  # 1024
        club_hidden = channels // 2 if club_hidden is None else club_hidden  # 1024
        club_dim = in_channels if club_dim is None else club_dim  # 512
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3),
            nn.ReLU(),
            nn.Conv2d(mid_channels, channels, 3),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            ResidualStack(channels, layers=residual_layers),  # ends with the final ReLU
        )
        self.club_head = nn.Sequential(
            nn.Linear(channels, club_hidden), nn.ReLU(), nn.Linear(club_hidden, club_dim)
        )

    @property
    def out_grid(self) -> int:
        """Side of the specific map (``grid - 4``; 3 for 7x7 inputs)."""
        return self.grid - 4

    def forward(self, x: Tensor) -> CMGVideoSpecific:
        """``x [B, T, g, g, C]`` or flat -> spec ``[B, T, g-4, g-4, channels]``, club vector."""
        x = to_grid(x, self.grid, self.in_channels)
        spec = _frames_back(self.convs(_frames_nchw(x, self.layout)), x.shape[0])
        club = self.club_head(spec.mean(dim=(2, 3)))  # (b, t, club_dim)
        return CMGVideoSpecific(spec, club)


class CMGVideoDecoder(nn.Module):
    """DCID video decoder: ``[spec ; tiled Linear(vq)]`` -> transposed convs -> the input map.

    ``Linear(dim -> dim)`` on the quantised vector, tiled over the ``3x3`` grid and concatenated
    after the specific map's channels; ConvT3x3 ``channels + dim -> mid`` (3 -> 5), residual
    stack, ConvT3x3 ``mid -> out_channels`` (5 -> 7), ReLU, ConvT1x1. Defaults are the original
    widths (36.8 M parameters). Output is always 5-D; flatten with ``rearrange`` if needed.
    ``layout`` is the convolutions' memory format (see the module docstring).
    """

    def __init__(
        self,
        dim: int = 256,
        channels: int = 2048,
        out_channels: int = 512,
        *,
        spec_grid: int = 3,
        mid_channels: int | None = None,
        residual_layers: int = 1,
        layout: Layout = "auto",
    ) -> None:
        super().__init__()
        self.layout = _check_layout(layout)
        self.dim, self.channels, self.spec_grid = dim, channels, spec_grid
        mid_channels = channels // 2 if mid_channels is None else mid_channels  # 1024
        self.vq_proj = nn.Linear(dim, dim)
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(channels + dim, mid_channels, 3),
            ResidualStack(mid_channels, layers=residual_layers),
            nn.ConvTranspose2d(mid_channels, out_channels, 3),
            nn.ReLU(),
            nn.ConvTranspose2d(out_channels, out_channels, 1),
        )

    def forward(self, vq: Tensor, spec: Tensor) -> Tensor:
        """``vq [B, T, dim]``, ``spec [B, T, 3, 3, channels]`` (or flat) -> ``[B, T, 7, 7, C]``."""
        spec = to_grid(spec, self.spec_grid, self.channels)
        g = self.spec_grid
        tiled = self.vq_proj(vq)[:, :, None, None, :].expand(-1, -1, g, g, -1)
        h = torch.cat([spec, tiled], dim=-1)  # (b, t, g, g, channels + dim), channels last
        return _frames_back(self.deconvs(_frames_nchw(h, self.layout)), vq.shape[0])
