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
axis (no Python loop over frames). ``layout`` says how the convolutions run; every choice
computes the same function with the same parameters (same state dict), only the speed differs:

- ``"channels_last"``: torch's convolutions on channels-last tensors (what the permuted input
  already is, no copy);
- ``"contiguous"``: torch's convolutions on a contiguous NCHW copy;
- ``"matmul"``: each convolution as one matmul on ``[N, H, W, C]`` maps, no NCHW at all: a
  k x k convolution multiplies the ``k*k`` shifted slices of the (padded) map, concatenated on
  the channel axis, by the weight reshaped to ``[out, k*k*in]``; a stride-1 transposed
  convolution multiplies each input position by the weight reshaped to ``[in, k*k*out]`` and
  adds the ``k*k`` blocks at their offsets (the scatter form, no multiplications by the zero
  padding the direct form would add); a 1x1 convolution is a plain linear map. The shift-and-
  concatenate (im2col) and the block sum (col2im) are adjoint, and each one's backward is the
  other: autograd's own backward of k*k slices would allocate and zero a full-size map per
  offset and add them all (with that backward, the DCID step at the original's shapes took
  43.1 s in float32 against 38.9 s with this one, medians of 4 steps, 2 threads);
- ``"auto"``: for float32 on CPU, the matmul form on every layer except the zero-padded k x k
  convolutions of more than 9 output positions per frame (the decoder's residual 3x3 on 5x5
  maps), which run as torch's NCHW convolutions; under CPU autocast ``"contiguous"``;
  channels-last otherwise.

Why ``"auto"`` mixes: forward + backward at the original's shapes (800 frames, 2 threads, torch
2.13, float32, the 2-core Intel Xeon this was last timed on), per layer, NCHW against the
matmul form: the 3x3 1024 -> 2048 convolution (5x5 -> 3x3) 7.1 vs 3.4 s, the 3x3 512 -> 1024
one (7x7 -> 5x5, no input gradient) 2.5 vs 1.9 s, the last transposed one (5x5 -> 7x7) 3.5 vs
2.7 s, but the padded 3x3 1024 -> 1024 on 5x5 maps 5.4 vs 5.8 s. Whole modules, auto against
the previous rule (matmul only on the 3x3 grid): decoder 14.3 and 16.5 s vs 12.5 and 14.7 s,
encoder 17.1 and 16.4 vs 16.0 and 15.5 s (two rounds, median of 2 passes each).
On the AMD EPYC timed before, NCHW was about 30% faster than channels-last in float32 and
channels-last about 35% faster in float64. ``ablations/bench.py --sections cmg_modules`` times
every layout of each module. Nothing fixes the dtype: float32 is the default, float64 works
(the original ran in float64 only).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, cast, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "CMGVideoDecoder",
    "CMGVideoSemantic",
    "CMGVideoSpecific",
    "CMGVideoSpecificEncoder",
    "AUTO_MATMUL_POSITIONS",
    "Layout",
    "ResidualStack",
    "conv2d_nhwc",
    "conv_transpose2d_nhwc",
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


Layout = Literal["auto", "channels_last", "contiguous", "matmul"]
#: In the ``"auto"`` layout, a zero-padded k x k convolution runs in the matmul form when it has
#: at most this many output positions per frame, else as torch's NCHW convolution; every other
#: layer runs in the matmul form (see the module docstring).
AUTO_MATMUL_POSITIONS = 9


def _check_layout(layout: str) -> Layout:
    if layout not in get_args(Layout):
        raise ValueError(f"layout must be one of {get_args(Layout)}, got {layout!r}")
    return cast(Layout, layout)


def _resolve(layout: Layout, x: Tensor) -> Layout:
    """``layout`` at ``x``'s device and dtype: ``"auto"`` stays itself only for float32 on CPU
    without autocast (the mixed form, see the module docstring)."""
    if layout != "auto":
        return layout
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return "contiguous" if torch.is_autocast_enabled("cpu") else "auto"
    return "channels_last"


def _run_frames(stack: nn.Module, x: Tensor, layout: Layout) -> Tensor:
    """``stack`` on every frame: ``[B, T, H, W, C]`` -> ``[B, T, H', W', C']``."""
    layout = _resolve(layout, x)
    if layout in ("matmul", "auto"):
        frames = x.reshape(-1, *x.shape[2:])  # frames folded into the batch axis
        y = _nhwc(stack, frames, mixed=layout == "auto")
        return y.reshape(*x.shape[:2], *y.shape[1:])
    y = rearrange(x, "b t h w c -> (b t) c h w")  # a channels-last view
    y = stack(y.contiguous() if layout == "contiguous" else y)
    return rearrange(y, "(b t) c h w -> b t h w c", b=x.shape[0])


def _plain(conv: nn.Conv2d | nn.ConvTranspose2d) -> tuple[int, int]:
    """``(k, padding)`` of a square, stride-1, undilated, ungrouped, zero-padded convolution."""
    k, pad = conv.kernel_size, conv.padding
    plain = (
        k[0] == k[1]
        and isinstance(pad, tuple)
        and pad[0] == pad[1]
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and (not isinstance(conv, nn.ConvTranspose2d) or conv.output_padding == (0, 0))
    )
    if not plain:
        raise ValueError(f"the matmul layout handles plain stride-1 convolutions only, not {conv}")
    return k[0], int(pad[0])


def _offsets(k: int) -> list[tuple[int, int]]:
    """The ``k*k`` kernel offsets in the order of the channel blocks below (row-major)."""
    return [(i, j) for i in range(k) for j in range(k)]


def _im2col(x: Tensor, k: int) -> Tensor:
    """``[N, H, W, C]`` -> ``[N, H-k+1, W-k+1, k*k*C]``: the map shifted by every kernel offset,
    the shifts concatenated on the channel axis (block ``i*k + j`` = offset ``(i, j)``)."""
    oh, ow = x.shape[1] - k + 1, x.shape[2] - k + 1
    return torch.cat([x[:, i : i + oh, j : j + ow] for i, j in _offsets(k)], dim=-1)


def _col2im(cols: Tensor, k: int) -> Tensor:
    """The adjoint of :func:`_im2col`: ``[N, h, w, k*k*C]`` -> ``[N, h+k-1, w+k-1, C]``, channel
    block ``i*k + j`` added at offset ``(i, j)``."""
    n, h, w, kkc = cols.shape
    c = kkc // (k * k)
    y = cols.new_zeros(n, h + k - 1, w + k - 1, c)
    for b, (i, j) in enumerate(_offsets(k)):
        y[:, i : i + h, j : j + w] += cols[..., b * c : (b + 1) * c]
    return y


class _Im2col(torch.autograd.Function):
    """:func:`_im2col` whose backward is :func:`_col2im` (autograd's own backward of the slices
    would allocate and zero one full-size map per kernel offset, then add them all)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:  # type: ignore[override]
        ctx.k = k
        return _im2col(x, k)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _Col2im.apply(grad, ctx.k), None


class _Col2im(torch.autograd.Function):
    """:func:`_col2im` whose backward is :func:`_im2col` (the two are adjoint)."""

    @staticmethod
    def forward(ctx, cols: Tensor, k: int) -> Tensor:  # type: ignore[override]
        ctx.k = k
        return _col2im(cols, k)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _Im2col.apply(grad, ctx.k), None


def conv2d_nhwc(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv`` on ``[N, H, W, C]`` as one matmul: shifted slices times the reshaped weight."""
    k, pad = _plain(conv)
    w = conv.weight  # [out, in, k, k]
    if k == 1 and pad == 0:
        return F.linear(x, w.flatten(1), conv.bias)
    if pad:
        x = F.pad(x, (0, 0, pad, pad, pad, pad))
    cols = _Im2col.apply(x, k)  # [N, oh, ow, k*k*in]
    return F.linear(cols, w.permute(0, 2, 3, 1).flatten(1), conv.bias)  # [N, oh, ow, out]


def conv_transpose2d_nhwc(x: Tensor, conv: nn.ConvTranspose2d) -> Tensor:
    """Stride-1 ``conv`` on ``[N, H, W, C]``: one matmul, then the ``k*k`` blocks summed at their
    offsets: output ``(p + i - pad, q + j - pad)`` gets input ``(p, q)`` times ``W[:, :, i, j]``.
    """
    k, pad = _plain(conv)
    w = conv.weight  # [in, out, k, k]
    if k == 1 and pad == 0:
        return F.linear(x, w.flatten(1).t(), conv.bias)
    blocks = F.linear(x, w.permute(2, 3, 1, 0).flatten(0, 2))  # [N, H, W, k*k*out]
    y = _Col2im.apply(blocks, k)  # [N, H+k-1, W+k-1, out]
    if pad:
        y = y[:, pad : y.shape[1] - pad, pad : y.shape[2] - pad]
    return y if conv.bias is None else y + conv.bias


def _matmul_positions(conv: nn.Conv2d | nn.ConvTranspose2d, x: Tensor) -> int:
    """The positions per frame that decide ``"auto"``'s form of ``conv`` on ``x [N, H, W, C]``:
    the output positions of a zero-padded k x k convolution; 0 for every other layer (1x1,
    unpadded and transposed layers always run as matmuls)."""
    k, pad = _plain(conv)
    if k == 1 or pad == 0 or isinstance(conv, nn.ConvTranspose2d):
        return 0
    return (x.shape[1] + 2 * pad - k + 1) * (x.shape[2] + 2 * pad - k + 1)


def _nhwc(module: nn.Module, x: Tensor, *, mixed: bool = False) -> Tensor:
    """``module`` (a stack of the layers below) on ``[N, H, W, C]`` in the matmul form; with
    ``mixed``, the padded k x k layers of more than ``AUTO_MATMUL_POSITIONS`` positions run as
    torch's NCHW convolutions on a contiguous copy."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        if mixed and _matmul_positions(module, x) > AUTO_MATMUL_POSITIONS:
            return module(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        if isinstance(module, nn.Conv2d):
            return conv2d_nhwc(x, module)
        return conv_transpose2d_nhwc(x, module)
    if isinstance(module, nn.ReLU):
        return torch.relu(x)
    if isinstance(module, ResidualStack):
        for layer in module.layers:
            x = x + _nhwc(layer, x, mixed=mixed)
        return torch.relu(x)
    if isinstance(module, nn.Sequential):
        for child in module:
            x = _nhwc(child, x, mixed=mixed)
        return x
    raise TypeError(f"no matmul form for {type(module).__name__}")


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
        spec = _run_frames(self.convs, x, self.layout)
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
        return _run_frames(self.deconvs, h, self.layout)
