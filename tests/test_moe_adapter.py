"""Invariants of the CMoE-Adapter (paper Eq. 4-5) and the linear "MoE off" adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comet_model.nn.moe_adapter import LinearAdapter, MoEAdapter, load_balance_loss

D, E = 8, 4


def _x(seed: int = 0, b: int = 3, t: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, D, generator=g)


def _adapter(**kw) -> MoEAdapter:
    torch.manual_seed(0)
    a = MoEAdapter(D, kw.pop("num_experts", E), **kw)
    a.add_modality_("video")
    a.add_modality_("text")
    # Larger weights than the near-identity init so that expert differences are visible.
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0.0, 0.5)
    return a


@pytest.mark.parametrize("top_k", [0, 1, 2])
def test_gates_sum_to_one_and_top_k(top_k: int) -> None:
    a = _adapter(top_k=top_k)
    gates = a(_x(), "video").gates
    assert gates is not None and gates.shape == (3, 5, E)
    torch.testing.assert_close(gates.sum(-1), torch.ones(3, 5))
    assert (gates >= 0).all()
    if top_k:
        assert ((gates > 0).sum(-1) == top_k).all()
        # The kept experts are the ones with the largest router probabilities.
        probs = a.gate_probs(_x())
        top = probs.topk(top_k, dim=-1).indices
        assert (gates.gather(-1, top) > 0).all()
    else:
        torch.testing.assert_close(gates, a.gate_probs(_x()))


def test_load_balance_loss_uniform_collapsed_and_masked() -> None:
    n = 12
    uniform = torch.full((n, E), 1.0 / E)
    collapsed = F.one_hot(torch.zeros(n, dtype=torch.long), E).float()
    half = F.one_hot(torch.arange(n) % 2, E).float()  # two of four experts used
    lu, lc, lh = (load_balance_loss(p) for p in (uniform, collapsed, half))
    assert lu.abs() < 1e-7
    assert lc > lh > lu
    torch.testing.assert_close(lc, torch.tensor((E - 1) / E))
    # Scale-free: duplicating the batch does not change the loss.
    torch.testing.assert_close(load_balance_loss(collapsed.repeat(3, 1)), lc)
    # Masked tokens do not count: a uniform batch plus padding collapsed on expert 0.
    probs = torch.cat([uniform, collapsed])
    mask = torch.cat([torch.ones(n), torch.zeros(n)]).bool()
    assert load_balance_loss(probs, mask).abs() < 1e-7
    assert load_balance_loss(probs) > 1e-3


def test_forward_gate_loss_nonnegative_and_differentiable() -> None:
    a = _adapter()
    loss = a(_x(), "text").losses["gate"]
    assert loss.dim() == 0 and loss >= 0
    loss.backward()
    assert a.router.weight.grad is not None and a.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("combine", ["parallel", "sequential"])
def test_gradients_reach_only_current_modality(combine: str) -> None:
    a = _adapter(combine=combine)
    out = a(_x(), "video")
    (out.y.pow(2).sum() + out.losses["gate"]).backward()
    for name in ("common.weight", "common.bias", "router.weight", "specific.video.weight"):
        grad = dict(a.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    for p in a.specific["text"].parameters():
        assert p.grad is None or p.grad.abs().sum() == 0


def test_specific_layers_off_has_no_specific_parameters() -> None:
    a = MoEAdapter(D, E, specific_layers=False)
    a.add_modality_("video")
    names = [n for n, _ in a.named_parameters()]
    assert not any("specific" in n for n in names)
    assert sorted(names) == ["common.bias", "common.weight", "router.bias", "router.weight"]
    assert set(a.ewc_parameters(["video"])) == set(names)
    # Any modality name is accepted, and it does not matter which.
    x = _x()
    torch.testing.assert_close(a(x, "video").y, a(x, "audio").y)


def test_add_modality_is_idempotent_and_unknown_modality_raises() -> None:
    a = MoEAdapter(D, E)
    a.add_modality_("video")
    before = a.specific["video"].weight.detach().clone()
    count = len(list(a.parameters()))
    a.add_modality_("video")
    assert len(list(a.parameters())) == count
    torch.testing.assert_close(a.specific["video"].weight, before)
    with pytest.raises(KeyError, match="add_modality_"):
        a(_x(), "audio")
    with pytest.raises(ValueError):
        a.add_modality_("a.b")


@pytest.mark.parametrize("combine", ["parallel", "sequential"])
@pytest.mark.parametrize("residual", [True, False])
def test_vectorised_equals_naive_expert_loop(combine: str, residual: bool) -> None:
    a = _adapter(combine=combine, residual=residual)
    x = _x(1)
    out = a(x, "text")
    g = torch.softmax(x @ a.router.weight.T + a.router.bias, dim=-1)
    ref = torch.zeros_like(x)
    c, s = a.common, a.specific["text"]
    for o in range(E):
        common = x @ c.weight[o] + c.bias[o]
        if combine == "parallel":
            expert = common + x @ s.weight[o] + s.bias[o]
        else:
            expert = common @ s.weight[o] + s.bias[o]
        ref = ref + g[..., o : o + 1] * expert
    if residual:
        ref = ref + x
    torch.testing.assert_close(out.y, ref, rtol=1e-5, atol=1e-5)
    # The inspection path (all expert outputs, then mixed) agrees with the fused forward.
    mixed = torch.einsum("bto,btoe->bte", out.gates, a.expert_outputs(x, "text"))
    torch.testing.assert_close(mixed + x if residual else mixed, out.y, rtol=1e-5, atol=1e-5)


def test_single_expert_no_specific_no_residual_is_plain_linear() -> None:
    a = MoEAdapter(D, 1, specific_layers=False, residual=False)
    x = _x(2)
    out = a(x, "anything")
    assert out.gates is not None and torch.equal(out.gates, torch.ones(3, 5, 1))
    ref = F.linear(x, a.common.weight[0].T, a.common.bias[0])
    torch.testing.assert_close(out.y, ref)
    assert out.losses["gate"].abs() < 1e-7  # one expert is always balanced


@pytest.mark.parametrize("combine", ["parallel", "sequential"])
def test_residual_init_starts_near_identity(combine: str) -> None:
    a = MoEAdapter(D, E, combine=combine)
    a.add_modality_("video")
    x = _x(3)
    y = a(x, "video").y
    assert (y - x).norm() < 0.05 * x.norm()


def test_ewc_parameters_selects_existing_modalities() -> None:
    a = _adapter()
    names = set(a.ewc_parameters(["video", "audio"]))
    assert names == {
        "common.weight",
        "common.bias",
        "router.weight",
        "router.bias",
        "specific.video.weight",
        "specific.video.bias",
    }
    params = dict(a.named_parameters())
    for n, p in a.ewc_parameters(["video", "text"]).items():
        assert params[n] is p


def test_expert_weights_are_stacked() -> None:
    a = _adapter()
    assert a.common.weight.shape == (E, D, D)
    assert a.specific["video"].weight.shape == (E, D, D)
    # 2 common + 2 router + 2 per modality: no per-expert parameters.
    assert len(list(a.parameters())) == 8


def test_linear_adapter() -> None:
    lin = LinearAdapter(D, residual=False)
    x = _x(4)
    out = lin(x, "video")
    torch.testing.assert_close(out.y, lin.linear(x))
    assert out.gates is None and out.losses["gate"].item() == 0.0
    assert set(lin.ewc_parameters(["video"])) == {"linear.weight", "linear.bias"}
    res = LinearAdapter(D)
    assert (res(x, "text").y - x).norm() < 0.05 * x.norm()
