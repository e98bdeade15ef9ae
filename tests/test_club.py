"""Invariants of the CLUB mutual-information upper bound (paper Eq. 1)."""

from __future__ import annotations

import torch

from comet_model.nn.club import CLUB

DX, DY = 6, 4


def _pairs(seed: int, b: int = 64, t: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, y = f(x) + small noise (dependent), y_ind independent of x."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(DX, DY, generator=torch.Generator().manual_seed(0))
    x = torch.randn(b, t, DX, generator=g)
    y = x @ w + 0.3 * torch.randn(b, t, DY, generator=g)
    y_ind = torch.randn(b, t, DX, generator=g) @ w + 0.3 * torch.randn(b, t, DY, generator=g)
    return x, y, y_ind


def _trained(steps: int = 60) -> CLUB:
    torch.manual_seed(0)
    club = CLUB(DX, DY, hidden=32)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for i in range(steps):
        x, y, _ = _pairs(seed=1000 + i)
        club.fit_(x.requires_grad_(True), y, opt)
        assert x.grad is None  # the inner loop sees detached inputs only
    return club


def test_bound_and_likelihood_are_finite_scalars():
    torch.manual_seed(0)
    club = CLUB(DX, DY)
    x, y, _ = _pairs(0)
    ll = club.log_likelihood(x, y)
    mi = club.mi_upper_bound(x, y, torch.Generator().manual_seed(0))
    assert ll.shape == () and mi.shape == ()
    assert torch.isfinite(ll) and torch.isfinite(mi)


def test_estimator_training_increases_likelihood_and_bound_detects_dependence():
    x, y, y_ind = _pairs(seed=1)
    torch.manual_seed(0)
    before = CLUB(DX, DY, hidden=32).log_likelihood(x, y)
    club = _trained()
    with torch.no_grad():
        after = club.log_likelihood(x, y)
        dep = club.mi_upper_bound(x, y, torch.Generator().manual_seed(3))
        ind = club.mi_upper_bound(x, y_ind, torch.Generator().manual_seed(3))
    assert after > before + 1.0
    assert dep > ind + 1.0
    assert dep > 0
    assert ind.abs() < 0.5 * dep


def test_bound_gradient_reaches_both_inputs_not_only_the_estimator():
    torch.manual_seed(0)
    club = CLUB(DX, DY)
    x, y, _ = _pairs(0)
    x.requires_grad_(True)
    y.requires_grad_(True)
    club.mi_upper_bound(x, y, torch.Generator().manual_seed(0)).backward()
    for v in (x, y):
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_same_generator_seed_gives_same_bound():
    torch.manual_seed(0)
    club = CLUB(DX, DY)
    x, y, _ = _pairs(0)
    a = club.mi_upper_bound(x, y, torch.Generator().manual_seed(5))
    b = club.mi_upper_bound(x, y, torch.Generator().manual_seed(5))
    c = club.mi_upper_bound(x, y, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_masked_steps_are_ignored():
    torch.manual_seed(0)
    club = CLUB(DX, DY)
    x, y, _ = _pairs(0, b=8, t=5)
    mask = torch.zeros(8, 5, dtype=torch.bool)
    mask[:, :3] = True
    xg, yg = x.clone(), y.clone()
    xg[:, 3:], yg[:, 3:] = 50.0, -50.0  # garbage in the padding
    torch.testing.assert_close(
        club.log_likelihood(xg, yg, mask), club.log_likelihood(x[:, :3], y[:, :3])
    )
    torch.testing.assert_close(
        club.mi_upper_bound(xg, yg, torch.Generator().manual_seed(1), mask),
        club.mi_upper_bound(x[:, :3], y[:, :3], torch.Generator().manual_seed(1)),
    )


def test_bound_matches_a_per_item_reference_with_ragged_masks():
    torch.manual_seed(0)
    club = CLUB(DX, DY)
    b, t = 6, 5
    x, y, _ = _pairs(0, b=b, t=t)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    got = club.mi_upper_bound(x, y, torch.Generator().manual_seed(2), mask)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mu, logvar = club(x)
    total = 0.0
    for i in range(b):
        own = mask[i]
        both = own & mask[perm[i]]
        scale = torch.exp(-logvar[i][own].mean(0))
        pos = -((mu[i][own] - y[i][own]) ** 2).mean(0) * scale
        neg = -((mu[i][both] - y[perm[i]][both]) ** 2).mean(0) * scale
        total = total + (pos - neg).sum() / b
    torch.testing.assert_close(got.detach(), total / 2)


def test_fused_nets_equal_two_separate_mlps_and_do_not_mix() -> None:
    torch.manual_seed(3)
    club = CLUB(5, 4, 6, layers=3)
    x = torch.randn(2, 7, 5)
    mu, logvar = club(x)

    def mlp(net: int) -> torch.Tensor:  # the plain per-net MLP from the same parameters
        h = torch.relu(
            x @ club.w_in[net * 6 : (net + 1) * 6].t() + club.b_in[net * 6 : (net + 1) * 6]
        )
        for i in range(2):
            h = torch.relu(h @ club.w_hidden[i, net] + club.b_hidden[i, net, 0])
        return h @ club.w_out[net] + club.b_out[net, 0]

    assert torch.allclose(mu, mlp(0), atol=1e-6)
    assert torch.allclose(logvar, torch.tanh(mlp(1)), atol=1e-6)
    mu.sum().backward()  # the mean net's output reaches only the mean net's parameters
    assert club.w_in.grad[6:].abs().sum() == 0 and club.w_in.grad[:6].abs().sum() > 0
    assert club.w_hidden.grad[:, 1].abs().sum() == 0 and club.w_out.grad[1].abs().sum() == 0
    assert club.w_hidden.grad[:, 0].abs().sum() > 0


def test_zero_hidden_layers_is_linear() -> None:
    club = CLUB(3, 2, 8, layers=0)
    x = torch.randn(4, 3)
    mu, logvar = club(x)
    assert torch.allclose(mu, x @ club.w_in[:2].t() + club.b_in[:2], atol=1e-6)
    assert torch.allclose(logvar, torch.tanh(x @ club.w_in[2:].t() + club.b_in[2:]), atol=1e-6)
