"""Invariants of the diagonal Fisher estimate and the EWC penalty (paper Eq. 6)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from comet_model.continual.ewc import EWCPenalty, estimate_fisher_diag
from comet_model.nn.moe_adapter import MoEAdapter


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _params(net: nn.Module) -> dict[str, nn.Parameter]:
    return dict(net.named_parameters())


def _fisher(shape_seed: int, params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(shape_seed)
    return {n: torch.rand(p.shape, generator=g) + 0.1 for n, p in params.items()}


def _losses(net: nn.Module, n_batches: int, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = [
        (torch.randn(b, 4, generator=g), torch.randn(b, 2, generator=g)) for _ in range(n_batches)
    ]
    # Per-sample losses [B]; the per-batch Fisher uses their mean.
    return [lambda x=x, y=y: (net(x) - y).pow(2).sum(-1) for x, y in data]


def _shift_(params: dict[str, nn.Parameter], delta: dict[str, torch.Tensor], k: float) -> None:
    with torch.no_grad():
        for n, p in params.items():
            p.add_(k * delta[n])


def test_zero_before_consolidation_and_at_anchor() -> None:
    net = _net()
    ewc = EWCPenalty()
    params = _params(net)
    assert len(ewc) == 0 and ewc(params).item() == 0.0
    ewc.consolidate_(params, _fisher(0, params))
    assert len(ewc) == len(params)
    assert ewc(params).item() == 0.0
    delta = _fisher(1, params)
    _shift_(params, delta, 0.1)
    assert ewc(params) > 0


def test_penalty_is_quadratic_and_matches_formula() -> None:
    net = _net()
    params = _params(net)
    fisher = _fisher(0, params)
    ewc = EWCPenalty(adaptive=False)
    ewc.consolidate_(params, fisher)
    delta = {
        n: torch.randn(p.shape, generator=torch.Generator().manual_seed(5))
        for n, p in params.items()
    }
    _shift_(params, delta, 0.1)
    p1 = ewc(params)
    expected = 0.5 * sum((fisher[n] * (0.1 * delta[n]) ** 2).sum() for n in params)
    torch.testing.assert_close(p1, expected)
    _shift_(params, delta, 0.1)  # displacement now 0.2
    torch.testing.assert_close(ewc(params), 4 * p1)
    # Gradient of the penalty is F (theta - theta*).
    name = "0.weight"
    grad = torch.autograd.grad(ewc(params), params[name])[0]
    torch.testing.assert_close(grad, fisher[name] * 0.2 * delta[name])


def test_fisher_of_parameter_without_gradient_is_zero() -> None:
    lin = nn.Linear(3, 2)
    unused = nn.Parameter(torch.ones(5))
    frozen = nn.Parameter(torch.ones(2), requires_grad=False)
    x = torch.randn(4, 3)
    params = {"w": lin.weight, "b": lin.bias, "unused": unused, "frozen": frozen}

    def loss() -> torch.Tensor:
        # `lin.bias * 0` keeps the bias in the graph with an exactly zero gradient.
        return (x @ lin.weight.T + 0 * lin.bias + frozen).pow(2).sum(-1)

    for per_sample in (False, True):
        f = estimate_fisher_diag(params, [loss], per_sample=per_sample)
        assert f["w"].abs().sum() > 0
        for n in ("b", "unused", "frozen"):
            assert torch.equal(f[n], torch.zeros_like(params[n])), n
    assert lin.weight.grad is None  # the estimate never touches .grad


def test_per_sample_and_per_batch_agree_for_batch_size_one() -> None:
    net = _net()
    params = _params(net)
    losses = _losses(net, n_batches=3, b=1)
    fb = estimate_fisher_diag(params, losses, per_sample=False)
    fs = estimate_fisher_diag(params, losses, per_sample=True)
    for n in params:
        torch.testing.assert_close(fb[n], fs[n])
        assert fb[n].abs().sum() > 0


def test_per_sample_fisher_is_mean_of_squared_sample_gradients() -> None:
    net = _net()
    params = _params(net)
    losses = _losses(net, n_batches=2, b=3)
    fs = estimate_fisher_diag(params, losses, per_sample=True)
    fb = estimate_fisher_diag(params, losses, per_sample=False)
    ref = {n: torch.zeros_like(p) for n, p in params.items()}
    for make in losses:
        for i in range(3):
            grads = torch.autograd.grad(make()[i], list(params.values()))
            for n, g in zip(params, grads, strict=True):
                ref[n] += g**2 / 6
    for n in params:
        torch.testing.assert_close(fs[n], ref[n])
    # Per-sample gradients partly cancel in the batch mean: the per-batch Fisher is smaller.
    assert sum(fb[n].sum() for n in params) < sum(fs[n].sum() for n in params)
    with pytest.raises(ValueError, match="per-sample"):
        estimate_fisher_diag(params, [lambda: losses[0]().mean()], per_sample=True)


def test_adaptive_normalisation_gives_mean_one_per_tensor() -> None:
    params = _params(_net())
    fisher = {n: f * 37.0 for n, f in _fisher(0, params).items()}
    fisher["2.bias"] = torch.zeros_like(params["2.bias"])
    ewc = EWCPenalty(adaptive=True)
    ewc.consolidate_(params, fisher)
    for n in params:
        stored = ewc.fisher_of(n)
        if n == "2.bias":
            assert torch.equal(stored, torch.zeros_like(stored))  # zero stays zero, no NaN
        else:
            torch.testing.assert_close(stored.mean(), torch.tensor(1.0))
            torch.testing.assert_close(stored, fisher[n] / fisher[n].mean())
    raw = EWCPenalty(adaptive=False)
    raw.consolidate_(params, fisher)
    torch.testing.assert_close(raw.fisher_of("0.weight"), fisher["0.weight"])


@pytest.mark.parametrize("adaptive", [False, True])
def test_online_accumulation_with_gamma(adaptive: bool) -> None:
    net = _net()
    params = _params(net)
    f1, f2 = _fisher(0, params), _fisher(1, params)
    ewc = EWCPenalty(adaptive=adaptive, gamma=0.5)
    ewc.consolidate_(params, f1)
    _shift_(params, f2, 0.3)
    ewc.consolidate_(params, f2)
    for n, p in params.items():
        a, b = (f1[n], f2[n]) if not adaptive else (f1[n] / f1[n].mean(), f2[n] / f2[n].mean())
        torch.testing.assert_close(ewc.fisher_of(n), 0.5 * a + b)
        torch.testing.assert_close(ewc.anchor_of(n), p.detach())  # anchor = latest values
    assert int(ewc.consolidations) == 2


def test_new_names_are_added_and_grown_parameter_raises() -> None:
    a = MoEAdapter(4, 2)
    a.add_modality_("video")
    ewc = EWCPenalty()
    p1 = a.ewc_parameters(["video"])
    ewc.consolidate_(p1, {n: torch.ones_like(p) for n, p in p1.items()})
    a.add_modality_("audio")
    p2 = a.ewc_parameters(["video", "audio"])
    assert ewc(p2).item() == 0.0  # the new modality's layers are not yet penalised
    ewc.consolidate_(p2, {n: torch.ones_like(p) for n, p in p2.items()})
    assert len(ewc) == len(p2) == len(p1) + 2
    grown = dict(p2)
    grown["router.bias"] = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="grew"):
        ewc(grown)
    with pytest.raises(ValueError, match="grew"):
        ewc.consolidate_(grown, {n: torch.ones_like(p) for n, p in grown.items()})
    with pytest.raises(KeyError):
        ewc({"common.weight": a.common.weight})


def test_state_dict_round_trip_into_fresh_penalty() -> None:
    a = MoEAdapter(4, 2)
    a.add_modality_("video")
    a.add_modality_("a%2Eb%25")  # names survive the escaping of "." and "%"
    params = a.ewc_parameters(a.modalities)
    ewc = EWCPenalty(gamma=0.7)
    ewc.consolidate_(params, _fisher(0, params))
    ewc.consolidate_(params, _fisher(1, params))
    _shift_(params, _fisher(2, params), 0.2)
    expected = ewc(params)
    assert expected > 0

    buf = io.BytesIO()
    torch.save(ewc.state_dict(), buf)
    buf.seek(0)
    fresh = EWCPenalty(gamma=0.7)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert sorted(fresh.names()) == sorted(params)
    torch.testing.assert_close(fresh(params), expected)
    assert int(fresh.consolidations) == 2

    # Loading replaces whatever a non-fresh penalty held (here: another parameter set).
    other = EWCPenalty()
    lin = nn.Linear(2, 2)
    other.consolidate_(
        dict(lin.named_parameters()), {"weight": torch.ones(2, 2), "bias": torch.ones(2)}
    )
    other.load_state_dict(ewc.state_dict())
    assert sorted(other.names()) == sorted(params)
    torch.testing.assert_close(other(params), expected)
