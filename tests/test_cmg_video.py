"""Invariants of the CMG-compatible video modules (DCID video front end, encoder and decoder)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ablations import bench
from ablations.benchmarks import cmg
from comet_model.nn.cmg_video import (
    CMGVideoDecoder,
    CMGVideoSemantic,
    CMGVideoSpecificEncoder,
    _Col2im,
    _Im2col,
    conv2d_nhwc,
    conv_transpose2d_nhwc,
    to_grid,
)

B, T, G, C, W, D = 2, 3, 7, 16, 24, 8  # batch, steps, grid, in channels, spec width, code dim


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (conftest.one_thread)."""


def _video(seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Non-negative maps like VGG pool5 features, ``[B, T, 7, 7, C]`` (same values per dtype)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, G, G, C, generator=g).to(dtype)


def _modules(seed: int = 0) -> tuple[CMGVideoSemantic, CMGVideoSpecificEncoder, CMGVideoDecoder]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return (
            CMGVideoSemantic(C, G),
            CMGVideoSpecificEncoder(C, W, grid=G),
            CMGVideoDecoder(D, W, C),
        )


def _vq(seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_shapes_at_small_widths():
    sem, enc, dec = _modules()
    x = _video()
    pooled, weights = sem.forward_with_weights(x)
    spec, club = enc(x)
    assert pooled.shape == (B, T, C) and weights.shape == (B, T, G * G)
    assert spec.shape == (B, T, 3, 3, W) and enc.out_grid == 3
    assert club.shape == (B, T, C)  # the CLUB vector has the input's channel count by default
    assert dec(_vq(), spec).shape == (B, T, G, G, C)


def test_flat_layout_is_channels_fastest():
    x = _video()
    flat = x.reshape(B, T, -1)
    assert torch.equal(to_grid(flat, G, C), x)
    assert to_grid(x, G, C) is x
    with pytest.raises(ValueError, match="expected"):
        to_grid(flat[..., :-1], G, C)
    with pytest.raises(ValueError, match="expected"):
        to_grid(x.transpose(2, 4), G, C)


def test_flat_and_5d_inputs_give_identical_outputs():
    sem, enc, dec = _modules()
    x = _video()
    flat = x.reshape(B, T, G * G * C)
    assert torch.equal(sem(flat), sem(x))
    spec, club = enc(x)
    spec_f, club_f = enc(flat)
    assert torch.equal(spec_f, spec) and torch.equal(club_f, club)
    assert torch.equal(dec(_vq(), spec.reshape(B, T, -1)), dec(_vq(), spec))


def test_spatial_weights_are_a_distribution_over_positions():
    sem, _, _ = _modules()
    _, weights = sem.forward_with_weights(_video() * 10)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
    assert weights.std(-1).min() > 0  # positions are weighted differently


def test_spatial_pooling_is_permutation_invariant():
    """Shuffling the positions shuffles the weights alike and leaves the pooled vector."""
    sem, _, _ = _modules()
    x = _video()
    perm = torch.randperm(G * G, generator=torch.Generator().manual_seed(3))
    shuffled = x.reshape(B, T, G * G, C)[:, :, perm].reshape(B, T, G, G, C)
    out, w = sem.forward_with_weights(x)
    out_s, w_s = sem.forward_with_weights(shuffled)
    torch.testing.assert_close(w_s, w[:, :, perm])
    torch.testing.assert_close(out_s, out)


def test_uniform_map_pools_to_channel_attended_vector():
    """A map equal at every position pools to ``v * (1 + se(v))`` whatever the weights."""
    sem, _, _ = _modules()
    v = torch.rand(B, T, C, generator=torch.Generator().manual_seed(4))
    x = v[:, :, None, None, :].expand(B, T, G, G, C)
    with torch.no_grad():
        expected = v * (1 + sem.se(v))
        torch.testing.assert_close(sem(x), expected)


def test_frames_are_processed_independently():
    """Folding B*T into the batch axis must not mix frames: changing one frame changes only it."""
    sem, enc, dec = _modules()
    x = _video()
    y = x.clone()
    y[0, 1] = torch.rand(G, G, C, generator=torch.Generator().manual_seed(9))
    changed = torch.zeros(B, T, dtype=torch.bool)
    changed[0, 1] = True
    with torch.no_grad():
        outs = [
            (sem(x), sem(y)),
            (enc(x).spec, enc(y).spec),
            (enc(x).club, enc(y).club),
            (dec(_vq(), enc(x).spec), dec(_vq(), enc(y).spec)),
        ]
    for a, b in outs:
        same = (a == b).flatten(2).all(-1)
        assert torch.equal(same, ~changed)


def test_gradients_reach_every_parameter():
    sem, enc, dec = _modules()
    x = _video()
    proj = nn.Linear(C, D)  # stands in for the temporal semantic encoder
    spec, club = enc(x)
    loss = (dec(proj(sem(x)), spec) - x).pow(2).mean() + club.pow(2).mean()
    loss.backward()
    for module in (sem, enc, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{type(module).__name__}.{name} got no gradient"
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_float64_works_and_matches_float32():
    mods32 = _modules()
    mods64 = [m.double() for m in _modules()]  # same seed: same weights
    x32, x64 = _video(), _video(dtype=torch.float64)
    sem32, enc32, dec32 = mods32
    sem64, enc64, dec64 = mods64
    out64 = dec64(_vq(dtype=torch.float64), enc64(x64).spec)
    assert sem64(x64).dtype == enc64(x64).club.dtype == out64.dtype == torch.float64
    torch.testing.assert_close(sem64(x64).float(), sem32(x32), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out64.float(), dec32(_vq(), enc32(x32).spec), rtol=1e-4, atol=1e-5)
    out64.pow(2).mean().backward()
    grads = [p.grad for m in (enc64.convs, dec64) for p in m.parameters()]
    assert all(g is not None and g.dtype == torch.float64 for g in grads)


def test_encoder_decoder_overfit_a_tiny_batch():
    """The decoder reaches its input's scale: on two frames the MSE falls below the variance."""
    sem, enc, dec = _modules(seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        proj = nn.Linear(C, D)  # stands in for the temporal semantic encoder
    x = _video(seed=6)[:1, :2]
    params = [p for m in (sem, enc, dec, proj) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(100):
        recon = dec(proj(sem(x)), enc(x).spec)
        loss = (recon - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert losses[-1] < 0.85 * x.var().item()  # better than the best constant prediction
    torch.testing.assert_close(recon.mean(), x.mean(), rtol=0.1, atol=0.0)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_at_original_widths():
    """dcid_reference 1.1: video specific conv encoder 72.4 M, video deconv decoder 36.8 M."""
    with torch.device("meta"):  # no memory, no init cost
        sem, enc, dec = CMGVideoSemantic(), CMGVideoSpecificEncoder(), CMGVideoDecoder()
    assert round(_count(enc) / 1e6, 1) == 72.4  # conv stack 69.7 M + CLUB head 2.6 M
    assert round(_count(dec) / 1e6, 1) == 36.8  # incl. the Linear(256 -> 256) on the codes
    # SE 2 x 512 x 64, two Linear(512 -> 256) and Linear(256 -> 1) with biases
    assert _count(sem) == 2 * 512 * 64 + 2 * (512 * 256 + 256) + 257


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_layouts_agree(dtype):
    """The layout changes only how the convolutions run: outputs and every gradient agree."""
    x, vq = _video(dtype=dtype), _vq(dtype=dtype)
    runs = []
    for layout in ("contiguous", "auto", "channels_last", "matmul"):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            enc = CMGVideoSpecificEncoder(C, W, layout=layout).to(dtype)
            dec = CMGVideoDecoder(D, W, C, layout=layout).to(dtype)
        xg, vqg = x.clone().requires_grad_(True), vq.clone().requires_grad_(True)
        spec, club = enc(xg)
        out = dec(vqg, spec)
        (out.pow(2).mean() + club.pow(2).mean()).backward()
        grads = [xg.grad, vqg.grad] + [p.grad for p in [*enc.parameters(), *dec.parameters()]]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        runs.append([spec, club, out, *grads])
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="layout"):
        CMGVideoDecoder(D, W, C, layout="nhwc")  # type: ignore[arg-type]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize(("k", "pad", "bias"), [(3, 0, True), (3, 1, False), (1, 0, True)])
def test_matmul_convolutions_equal_torch(transposed, k, pad, bias):
    """The matmul forms equal torch's convolutions, forward and backward (float64)."""
    torch.manual_seed(0)
    kind = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = kind(5, 7, k, padding=pad, bias=bias).double()
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    ref = conv(x)
    xh = x.detach().permute(0, 2, 3, 1).requires_grad_(True)  # [N, H, W, C]
    got = (conv_transpose2d_nhwc if transposed else conv2d_nhwc)(xh, conv)
    torch.testing.assert_close(got, ref.permute(0, 2, 3, 1))
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, [x, *conv.parameters()], g)
    have = torch.autograd.grad(got, [xh, *conv.parameters()], g.permute(0, 2, 3, 1))
    torch.testing.assert_close(have[0], want[0].permute(0, 2, 3, 1))
    for a, b in zip(have[1:], want[1:], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_im2col_and_col2im_are_adjoint_with_exact_gradients(k):
    """<im2col(x), c> = <x, col2im(c)>, and both custom backwards pass gradcheck (first and
    second order, float64): each one's backward is the other."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 6 - k, 5 - k, k * k * 3, generator=g, dtype=torch.float64)
    c.requires_grad_(True)
    lhs = (_Im2col.apply(x, k) * c).sum()
    rhs = (x * _Col2im.apply(c, k)).sum()
    torch.testing.assert_close(lhs, rhs)
    assert torch.autograd.gradcheck(lambda t: _Im2col.apply(t, k), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _Im2col.apply(t, k), (x,))
    assert torch.autograd.gradcheck(lambda t: _Col2im.apply(t, k), (c,))
    assert torch.autograd.gradgradcheck(lambda t: _Col2im.apply(t, k), (c,))


def test_auto_layout_runs_only_the_padded_5x5_layer_as_a_torch_convolution(
    monkeypatch: pytest.MonkeyPatch,
):
    """float32 on CPU: torch's convolution only for padded k x k layers of more than 9 output
    positions; every other layer in the matmul form."""
    native: list[tuple[str, int]] = []
    for kind in (nn.Conv2d, nn.ConvTranspose2d):
        full = kind.forward

        def spy(self, x, *a, _full=full, **kw):  # type: ignore[no-untyped-def]
            native.append((type(self).__name__, self.kernel_size[0], x.shape[-1]))
            return _full(self, x, *a, **kw)

        monkeypatch.setattr(kind, "forward", spy)
    _, enc, dec = _modules()
    spec, _ = enc(_video())
    dec(_vq(), spec)
    # encoder: every layer as a matmul (the unpadded 7x7 -> 5x5 and 5x5 -> 3x3 ones, the padded
    # 3x3 on the 3x3 grid: 9 positions); decoder: the transposed layers as matmuls, the padded
    # residual 3x3 on 5x5 maps (25 positions) native
    assert native == [("Conv2d", 3, 5)]
    native.clear()
    spec, _ = CMGVideoSpecificEncoder(C, W, layout="matmul")(_video())
    CMGVideoDecoder(D, W, C, layout="matmul")(_vq(), spec)
    assert native == []


def test_matmul_layout_refuses_strided_convolutions():
    with pytest.raises(ValueError, match="stride-1"):
        conv2d_nhwc(torch.zeros(1, 5, 5, 2), nn.Conv2d(2, 3, 3, stride=2))


def test_module_section_times_every_module_at_tiny_width(capsys, monkeypatch):
    full = cmg.fwd_bwd_times

    def tiny(name: str, **kw: object) -> list[float]:  # same code path, tiny shapes
        return full(name, **kw | {"batch": 1, "steps": 2, "width": 8})  # type: ignore[arg-type]

    monkeypatch.setattr(cmg, "fwd_bwd_times", tiny)
    assert bench.main(["--sections", "cmg_modules", "--repeats", "1"]) == 0
    rows = [line.split("  ") for line in capsys.readouterr().out.splitlines()]
    rows = [[c.strip() for c in r if c.strip()] for r in rows]
    timed = {r[0]: float(r[1].split()[0]) for r in rows if r and r[0].split()[0] in cmg.MODULES}
    expected = ["semantic"] + [
        f"{m} ({layout})" for m in ("encoder", "decoder") for layout in cmg.CONV_LAYOUTS
    ]
    assert sorted(timed) == sorted(expected) and all(t > 0 for t in timed.values())
