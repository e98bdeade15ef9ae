"""Invariants of Cross-CPC over N streams with weighted auxiliary streams (paper Eq. 2)."""

from __future__ import annotations

import math

import pytest
import torch

from comet_model.nn.cpc import CrossCPC

D, B, T = 8, 16, 6


def _noise(seed: int, b: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, T, D, generator=g) for m in ("a", "b")}


def _signal(seed: int, b: int = B) -> dict[str, torch.Tensor]:
    """Two views of one latent that rotates predictably over time."""
    fixed = torch.Generator().manual_seed(0)
    rot = torch.linalg.qr(torch.randn(D, D, generator=fixed))[0]
    wa, wb = torch.randn(D, D, generator=fixed), torch.randn(D, D, generator=fixed)
    g = torch.Generator().manual_seed(seed)
    s = [torch.randn(b, D, generator=g)]
    for _ in range(T - 1):
        s.append(s[-1] @ rot + 0.05 * torch.randn(b, D, generator=g))
    lat = torch.stack(s, 1)  # [B, T, D]
    return {"a": lat @ wa, "b": lat @ wb + 0.05 * torch.randn(b, T, D, generator=g)}


def _model(seed: int = 0, **kw) -> CrossCPC:
    cpc = CrossCPC(D, **kw)
    for i, name in enumerate(("a", "b", "pseudo")):
        cpc.add_stream_(name, torch.Generator().manual_seed(seed + i))
    return cpc


def _train(make_batch, steps: int = 60) -> CrossCPC:
    cpc = _model()
    opt = torch.optim.Adam(cpc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for i in range(steps):
        opt.zero_grad()
        cpc(make_batch(1000 + i), generator=g)["cpc"].backward()
        opt.step()
    return cpc


def _eval(cpc: CrossCPC, make_batch, n: int = 8) -> float:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return sum(float(cpc(make_batch(i), generator=g)["cpc"]) for i in range(n)) / n


def test_loss_drops_on_shared_signal_but_not_on_independent_noise():
    chance = (2 * 1.0 + 2 * 0.1) * math.log(B)  # 2 cross pairs + 2 self pairs at 0.1
    signal = _eval(_train(_signal), _signal)
    noise = _eval(_train(_noise), _noise)
    assert signal < 0.5 * chance
    assert noise > 0.95 * chance  # InfoNCE cannot beat ln B on independent data


def test_zero_aux_weights_remove_the_aux_terms():
    cpc = _model()
    feats = _noise(0)
    pseudo = torch.randn(B, T, D, generator=torch.Generator().manual_seed(7))
    plain = cpc(feats, generator=torch.Generator().manual_seed(3))
    zero = cpc(
        feats,
        generator=torch.Generator().manual_seed(3),
        aux={"pseudo": pseudo},
        aux_step_weights={"pseudo": torch.zeros(B, T)},
    )
    assert plain["pmr"] == 0 and zero["pmr"] == 0
    assert torch.equal(plain["cpc"], zero["cpc"])
    full = cpc(feats, generator=torch.Generator().manual_seed(3), aux={"pseudo": pseudo})
    assert full["pmr"] > 0 and torch.equal(full["cpc"], plain["cpc"])


def test_aux_step_weights_scale_per_sample_at_the_target_step():
    cpc = _model()
    feats = _noise(0)
    aux = {"pseudo": torch.randn(B, T, D, generator=torch.Generator().manual_seed(7))}

    def pmr(weights: torch.Tensor) -> torch.Tensor:
        out = cpc(
            feats,
            generator=torch.Generator().manual_seed(3),
            aux=aux,
            aux_step_weights={"pseudo": weights},
        )
        return out["pmr"]

    ones = torch.ones(B, T)
    base = pmr(ones)
    torch.testing.assert_close(pmr(0.3 * ones), 0.3 * base)  # once per term, self pair too
    early = ones.clone()
    early[:, :2] = 0.0  # t >= 1, so steps 0 and 1 are never a target
    assert torch.equal(pmr(early), base)
    short = {m: x[:, :3] for m, x in feats.items()}  # T = 3: the anchor must be t = 1
    short_aux = {"pseudo": aux["pseudo"][:, :3]}
    w_at = [torch.ones(B, 3).index_fill_(1, torch.tensor([s]), 0.0) for s in range(3)]
    short_pmr = [cpc(short, aux=short_aux, aux_step_weights={"pseudo": w})["pmr"] for w in w_at]
    assert short_pmr[0] == short_pmr[1] > 0 and short_pmr[2] == 0  # read at target step t + 1
    g = torch.Generator().manual_seed(4)
    w1, w2 = torch.rand(B, T, generator=g), torch.rand(B, T, generator=g)
    torch.testing.assert_close(pmr(w1 + w2), pmr(w1) + pmr(w2))  # linear in per-sample weights
    half = ones.clone()
    half[: B // 2] = 0.0
    rest = pmr(half)
    assert 0 < rest < base


def test_same_generator_seed_gives_identical_results():
    feats = _noise(0)
    outs = [
        _model()(feats, generator=torch.Generator().manual_seed(9), aux={"pseudo": feats["a"]})
        for _ in range(2)
    ]
    for key in ("cpc", "pmr"):
        assert torch.equal(outs[0][key], outs[1][key])


def test_gradient_reaches_features_and_streams_are_created_once():
    cpc = CrossCPC(D)
    feats = {m: x.requires_grad_(True) for m, x in _noise(0).items()}
    cpc(feats)["cpc"].backward()
    assert cpc.streams == ("a", "b")
    for x in feats.values():
        assert x.grad is not None and x.grad.abs().sum() > 0
    n_params = sum(p.numel() for p in cpc.parameters())
    cpc.add_stream_("a")
    assert sum(p.numel() for p in cpc.parameters()) == n_params


def test_masked_items_drop_out_of_the_batch():
    cpc = _model(prediction_steps=2)
    feats = _noise(0)
    masks = {m: torch.ones(B, T, dtype=torch.bool) for m in feats}
    for m in masks:
        masks[m][0] = False
    garbage = {m: x.clone() for m, x in feats.items()}
    for x in garbage.values():
        x[0] = 1e3
    masked = cpc(garbage, generator=torch.Generator().manual_seed(2), masks=masks)
    rest = cpc({m: x[1:] for m, x in feats.items()}, generator=torch.Generator().manual_seed(2))
    # both sums are divided by their own batch size
    torch.testing.assert_close(masked["cpc"] * B, rest["cpc"] * (B - 1))


def _reference(cpc: CrossCPC, feats: dict, t: int, aux_w: dict | None = None) -> dict:
    """dcid_reference 1.11 written as loops over pairs and items: at anchor t, stream y's LSTM
    context predicts stream x at t + 1; score of item b against prediction c is the raw dot
    product; the term of (x, y) is -sum_b w_b log softmax_c(score)[b, b] / B, weighted 1 for
    cross pairs and 0.1 for self pairs; an aux stream's step weight at t + 1 multiplies every
    term it takes part in (once for its self pair)."""
    names = list(feats)
    batch = next(iter(feats.values())).shape[0]
    context = {}
    for y in names:
        out, _ = cpc.lstms[y](feats[y][:, : t + 1])
        context[y] = cpc.predictors[y][0](out[:, t])  # [B, D]
    cpc_sum, pmr_sum = torch.zeros(()), torch.zeros(())
    for x in names:
        for y in names:
            term = torch.zeros(())
            for b in range(batch):
                scores = torch.stack([feats[x][b, t + 1] @ context[y][c] for c in range(batch)])
                w = 1.0
                for name in {x, y}:
                    if aux_w and name in aux_w:
                        w = w * aux_w[name][b, t + 1]
                term = term - w * torch.log_softmax(scores, 0)[b]
            term = term / batch * (cpc.self_weight if x == y else 1.0)
            if aux_w and (x in aux_w or y in aux_w):
                pmr_sum = pmr_sum + term
            else:
                cpc_sum = cpc_sum + term
    return {"cpc": cpc_sum, "pmr": pmr_sum}


def test_matches_a_per_pair_per_item_reference_with_an_aux_stream():
    torch.manual_seed(0)
    cpc = CrossCPC(6)
    g = torch.Generator().manual_seed(3)
    feats = {m: torch.randn(5, 7, 6, generator=g) for m in ("a", "t")}
    aux = {"p": torch.randn(5, 7, 6, generator=g)}
    weights = {"p": torch.rand(5, 7, generator=g)}
    gen = torch.Generator().manual_seed(11)
    t = CrossCPC(6)._anchor(7, torch.Generator().manual_seed(11))  # the anchor the call draws
    with torch.no_grad():
        got = cpc(feats, generator=gen, aux=aux, aux_step_weights=weights)
        want = _reference(cpc, feats | aux, t, weights)
    assert float(got["cpc"]) == pytest.approx(float(want["cpc"]), rel=1e-5)
    assert float(got["pmr"]) == pytest.approx(float(want["pmr"]), rel=1e-5)
    assert float(want["pmr"]) > 0 and float(want["cpc"]) > 0
