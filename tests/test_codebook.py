"""Invariants of the shared EMA codebook (MM-EMA, commitment, CMCM, reset, expansion, masks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comet_model.nn.codebook import SharedCodebook

D, K = 8, 16
BUFFERS = ("embed", "cluster_size", "embed_avg", "unused", "reset_start")


def _sem(seed: int = 0, b: int = 4, t: int = 5, grad: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, t, D, generator=g).requires_grad_(grad) for m in ("a", "b")}


def _codebook(seed: int = 0, **kw) -> SharedCodebook:
    cb = SharedCodebook(D, K, **kw)
    tokens = torch.randn(64, D, generator=torch.Generator().manual_seed(100 + seed))
    cb.init_from_tokens_(tokens, torch.Generator().manual_seed(seed))
    return cb


def _snapshot(cb: SharedCodebook) -> dict[str, torch.Tensor]:
    return {n: getattr(cb, n).clone() for n in BUFFERS}


def _assert_same(cb: SharedCodebook, snap: dict[str, torch.Tensor]) -> None:
    for n in BUFFERS:
        assert torch.equal(getattr(cb, n), snap[n]), n


def test_buffers_are_not_parameters_and_get_no_gradient():
    cb = _codebook()
    assert list(cb.parameters()) == []
    assert set(BUFFERS) <= {n for n, _ in cb.named_buffers()}
    sem = _sem(grad=True)
    out = cb(sem)
    (out.losses["commit"] + out.losses["cmcm"] + out.quantized["a"].sum()).backward()
    assert cb.embed.grad is None and not cb.embed.requires_grad


def test_forward_never_mutates_buffers_in_train_mode():
    cb = _codebook().train()
    snap = _snapshot(cb)
    out = cb(_sem(grad=True))
    (out.losses["commit"] + out.losses["cmcm"]).backward()
    _assert_same(cb, snap)


def test_eval_mode_changes_no_buffer():
    cb = _codebook().eval()
    snap = _snapshot(cb)
    sem = _sem()
    out = cb(sem)
    cb.ema_update_(sem, out.indices)
    _assert_same(cb, snap)


def test_quantized_is_lookup_of_indices_and_straight_through():
    cb = _codebook()
    sem = _sem(grad=True)
    out = cb(sem)
    for m, z in sem.items():
        torch.testing.assert_close(out.quantized[m], cb.lookup(out.indices[m]), atol=1e-6, rtol=0)
        assert out.indices[m].dtype == torch.int64
        brute = torch.cdist(z.detach().reshape(-1, D), cb.embed).argmin(-1).reshape(z.shape[:2])
        assert torch.equal(out.indices[m], brute)
    weight = torch.randn(sem["a"].shape)
    (out.quantized["a"] * weight).sum().backward()
    torch.testing.assert_close(sem["a"].grad, weight)  # identity gradient


def test_quantize_and_nearest_agree_and_change_nothing():
    cb = _codebook()
    snap = _snapshot(cb)
    z = _sem()["a"]
    vec, idx = cb.quantize(z)
    assert torch.equal(idx, cb.nearest(z))
    assert torch.equal(vec, cb.embed[idx])
    _assert_same(cb, snap)


def test_cmcm_gradient_reaches_semantic_inputs():
    cb = _codebook(cmcm_temperature=0.5)
    sem = _sem(grad=True)
    out = cb(sem)
    out.losses["cmcm"].backward()
    for z in sem.values():
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_cmcm_zero_for_one_modality_and_finite_when_token_sits_on_code():
    cb = _codebook()
    z = cb.embed[:4].clone().reshape(2, 2, D).requires_grad_(True)  # distance exactly 0
    assert cb({"a": z}).losses["cmcm"] == 0
    out = cb({"a": z, "b": z.detach().flip(0).requires_grad_(True)})
    out.losses["cmcm"].backward()
    assert torch.isfinite(z.grad).all()


def test_commitment_hand_formula_and_zero_on_codes():
    cb = _codebook(commitment=0.25)
    sem = _sem()
    out = cb(sem)
    qa, qb = cb.lookup(out.indices["a"]), cb.lookup(out.indices["b"])
    za, zb = sem["a"], sem["b"]
    expect = 0.25 * (2 * F.mse_loss(za, qa) + F.mse_loss(za, qb))
    expect = expect + 0.25 * (2 * F.mse_loss(zb, qb) + F.mse_loss(zb, qa))
    torch.testing.assert_close(out.losses["commit"], expect)
    on_codes = cb.lookup(torch.randint(K, (3, 4), generator=torch.Generator().manual_seed(1)))
    assert cb({"a": on_codes, "b": on_codes.clone()}).losses["commit"].abs() < 1e-10


def test_mm_ema_hand_computed():
    cb = SharedCodebook(2, 3, decay=0.9, eps=1e-5)
    cb.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0]]))
    cb.cluster_size.fill_(1.0)
    cb.embed_avg.copy_(cb.embed)
    za, zb = torch.tensor([[[1.0, -1.0]]]), torch.tensor([[[9.0, 11.0]]])
    sem = {"a": za, "b": zb}
    out = cb(sem)
    assert out.indices["a"].item() == 0 and out.indices["b"].item() == 1
    cb.ema_update_(sem, out.indices)
    # one decay per call (not one per modality): N = 0.9 * 1 + 0.1 * hits
    size = torch.tensor([1.0, 1.0, 0.9])
    torch.testing.assert_close(cb.cluster_size, size)
    smoothed = (size + 1e-5) / (size.sum() + 3e-5) * size.sum()  # Laplace smoothing
    avg0 = 0.9 * torch.tensor([0.0, 0.0]) + 0.1 * (0.5 * za + 0.5 * zb).reshape(2)
    avg1 = 0.9 * torch.tensor([10.0, 10.0]) + 0.1 * (0.5 * zb + 0.5 * za).reshape(2)
    torch.testing.assert_close(cb.embed[0], avg0 / smoothed[0])
    torch.testing.assert_close(cb.embed[1], avg1 / smoothed[1])
    assert torch.equal(cb.embed[2], torch.tensor([-10.0, 10.0]))
    assert cb.unused.tolist() == [0, 0, 1]


def test_ema_moves_only_used_codes():
    cb = _codebook()
    sem = _sem()
    out = cb(sem)
    before = cb.embed.clone()
    cb.ema_update_(sem, out.indices)
    used = torch.zeros(K, dtype=torch.bool)
    for idx in out.indices.values():
        used[idx.reshape(-1)] = True
    assert 0 < used.sum() < K
    assert torch.equal(cb.embed[~used], before[~used])  # bit-identical
    assert not torch.allclose(cb.embed[used], before[used])
    assert (cb.unused[used] == 0).all() and (cb.unused[~used] == 1).all()


def test_attention_pairing_equals_index_pairing_when_one_hot():
    b, t = 2, 3
    sem = {}
    g = torch.Generator().manual_seed(3)
    for m in ("a", "b"):
        z = torch.zeros(b, t, D)
        z[:, torch.arange(t), torch.arange(t)] = 50.0  # orthogonal large-norm steps
        sem[m] = z + 0.1 * torch.randn(b, t, D, generator=g)
    cbs = [_codebook(pairing=p) for p in ("index", "attention")]
    outs = [cb(sem) for cb in cbs]
    torch.testing.assert_close(outs[0].losses["commit"], outs[1].losses["commit"])
    for cb, out in zip(cbs, outs, strict=True):
        cb.ema_update_(sem, out.indices)
    torch.testing.assert_close(cbs[0].embed, cbs[1].embed)


def test_attention_pairing_hand_computed_uniform_with_mask():
    cb = _codebook(pairing="attention")
    za = torch.zeros(1, 3, D)  # zero query: uniform attention over the valid keys
    zb = torch.randn(1, 3, D, generator=torch.Generator().manual_seed(4))
    masks = {"b": torch.tensor([[True, True, False]])}
    target = cb.ema_targets({"a": za, "b": zb}, masks)  # [M, B, T, D]
    partner = zb[0, :2].mean(0)
    torch.testing.assert_close(target[0, 0], (0.5 * partner).expand(3, D))
    # b's own valid steps: partner a is all zeros; padded step of b has no partner term
    torch.testing.assert_close(target[1, 0, :2], 0.5 * zb[0, :2])


def test_masks_exclude_padded_steps():
    for pairing in ("index", "attention"):
        full = _sem(seed=5, t=4)
        short = {m: z[:, :2].clone() for m, z in full.items()}
        for z in full.values():
            z[:, 2:] = 1e3  # garbage in the padding
        masks = {m: torch.tensor([True, True, False, False]).expand(4, 4) for m in full}
        cb_full, cb_short = _codebook(pairing=pairing), _codebook(pairing=pairing)
        out_full, out_short = cb_full(full, masks), cb_short(short)
        for name in ("commit", "cmcm"):
            torch.testing.assert_close(out_full.losses[name], out_short.losses[name])
        for m in full:
            torch.testing.assert_close(
                out_full.stats[f"perplexity/{m}"], out_short.stats[f"perplexity/{m}"]
            )
        cb_full.ema_update_(full, out_full.indices, masks)
        cb_short.ema_update_(short, out_short.indices)
        for n in ("embed", "cluster_size", "embed_avg", "unused"):
            torch.testing.assert_close(getattr(cb_full, n), getattr(cb_short, n))


def test_dead_code_reset_respects_threshold_and_reset_start():
    cb = _codebook(dead_code_threshold=300)
    cb.cluster_size.uniform_(1, 2)
    cb.embed_avg.copy_(cb.embed * cb.cluster_size[:, None])
    cb.reset_start.fill_(4)
    unused = torch.tensor([500, 0, 500, 301, 500, 300, 10, 400] + [0] * (K - 8))
    cb.unused.copy_(unused)
    snap = _snapshot(cb)
    tokens = torch.randn(50, D, generator=torch.Generator().manual_seed(9))
    n = cb.expire_codes_(tokens, torch.Generator().manual_seed(0))
    dead = torch.zeros(K, dtype=torch.bool)
    dead[[4, 7]] = True  # 0, 2, 3 are past the threshold but below reset_start
    assert n == 2
    for name in ("embed", "cluster_size", "embed_avg", "unused"):
        assert torch.equal(getattr(cb, name)[~dead], snap[name][~dead]), name
    assert (cb.cluster_size[dead] == 0).all() and (cb.embed_avg[dead] == 0).all()
    assert (cb.unused[dead] == 0).all()
    for row in cb.embed[dead]:
        assert (tokens == row).all(-1).any()  # re-seeded from a token row
    assert not torch.equal(cb.embed[4], cb.embed[7])


def test_same_generator_seed_gives_identical_state():
    cbs = []
    for _ in range(2):
        cb = _codebook(seed=7, dead_code_threshold=0)
        cb.unused.fill_(5)
        cb.expire_codes_(
            torch.randn(40, D, generator=torch.Generator().manual_seed(1)),
            torch.Generator().manual_seed(2),
        )
        cbs.append(cb)
    for n in BUFFERS:
        assert torch.equal(getattr(cbs[0], n), getattr(cbs[1], n))
    other = _codebook(seed=8)
    assert not torch.equal(other.embed, _codebook(seed=7).embed)


def test_append_codes_grows_consistently_and_keeps_old_codes():
    cb = _codebook()
    old = _snapshot(cb)
    teacher = cb.teacher()
    new = torch.randn(5, D, generator=torch.Generator().manual_seed(11)) + 100.0
    cb.append_codes_(new)
    assert cb.size == K + 5 and int(cb.reset_start) == K
    for n in ("embed", "cluster_size", "embed_avg", "unused"):
        assert getattr(cb, n).shape[0] == K + 5
        assert torch.equal(getattr(cb, n)[:K], old[n][:K])
    assert torch.equal(cb.embed[K:], new)
    assert (cb.cluster_size[K:] == 0).all() and (cb.embed_avg[K:] == 0).all()
    sem = _sem()
    sem["a"] = sem["a"].clone()
    sem["a"][0, 0] = new[0] + 0.5  # one token lands on new code K
    out = cb(sem)
    cb.ema_update_(sem, out.indices)
    assert torch.isfinite(cb.embed).all()
    assert torch.equal(cb.embed[K + 1 :], new[1:])  # unused new codes keep their init exactly
    assert not torch.equal(cb.embed[K], new[0])
    assert torch.equal(teacher, old["embed"])  # the teacher is a copy
    fresh = SharedCodebook(D, K)
    fresh.load_state_dict(cb.state_dict())
    assert fresh.size == K + 5 and torch.equal(fresh.embed, cb.embed)
    assert int(fresh.reset_start) == K


@pytest.mark.parametrize("pairing", ["index", "attention"])
def test_three_modalities_generalise_the_pairwise_forms(pairing):
    g = torch.Generator().manual_seed(12)
    sem = {m: torch.randn(3, 4, D, generator=g) for m in ("a", "b", "c")}
    cb = _codebook(pairing=pairing)
    out = cb(sem)
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    pair_cmcm = sum(cb({x: sem[x], y: sem[y]}).losses["cmcm"] for x, y in pairs)
    torch.testing.assert_close(out.losses["cmcm"], pair_cmcm)  # 0.5 * sum over all pairs
    if pairing == "index":  # 0.5 own + 0.25 + 0.25 (dcid_reference 1.6 and 1.7)
        target = cb.ema_targets(sem)
        torch.testing.assert_close(target[0], 0.5 * sem["a"] + 0.25 * (sem["b"] + sem["c"]))
        q = {m: cb.lookup(i) for m, i in out.indices.items()}
        expect = sum(
            0.25
            * (
                2 * F.mse_loss(sem[m], q[m])
                + sum(0.5 * F.mse_loss(sem[m], q[p]) for p in q if p != m)
            )
            for m in q
        )
        torch.testing.assert_close(out.losses["commit"], expect)


def test_cmcm_matches_a_per_item_reference():
    cb = _codebook(cmcm_temperature=0.7)
    sem = _sem(seed=13, b=5, t=3)
    got = cb(sem).losses["cmcm"]
    dist = {m: torch.cdist(z.reshape(-1, D), cb.embed).reshape(5, 3, K) for m, z in sem.items()}
    p = {m: torch.softmax(-d / 0.7, -1).mean(1) for m, d in dist.items()}  # [B, K]
    sim = p["a"] @ torch.log(p["b"] + 1e-10).t() + p["b"] @ torch.log(p["a"] + 1e-10).t()
    loss = 0.0
    for i in range(5):  # dcid_reference 1.8, one row at a time
        loss = loss - torch.log(torch.exp(sim[i, i]) / torch.exp(sim[i]).sum()) / 5
    torch.testing.assert_close(got, 0.5 * loss)


def test_step_without_partner_targets_its_own_token():
    sem = _sem(seed=14, b=2, t=3)
    masks = {"b": torch.tensor([[True, True, False], [False, False, False]])}
    target = _codebook(pairing="index").ema_targets(sem, masks)
    torch.testing.assert_close(target[0, 0, 2], sem["a"][0, 2])  # b padded: own token only
    torch.testing.assert_close(target[0, 0, :2], 0.5 * (sem["a"][0, :2] + sem["b"][0, :2]))
    target = _codebook(pairing="attention").ema_targets(sem, masks)
    torch.testing.assert_close(target[0, 1], sem["a"][1])  # item 1 of b has no valid step


def test_module_conversions_reach_the_buffers():
    cb = _codebook()
    cb.to(torch.float64)  # .to() / .cuda() recurse through nn.Module._apply into the buffers
    assert cb.embed.dtype == torch.float64 and cb.unused.dtype == torch.int64
    cb.float()
    assert cb.embed.dtype == torch.float32 and cb.cluster_size.dtype == torch.float32
    out = cb(_sem())
    assert torch.isfinite(out.losses["commit"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_round_trip_matches_cpu():
    cb = _codebook()
    sem = _sem()
    out = cb(sem)
    gpu = _codebook().cuda()
    out_gpu = gpu({m: z.cuda() for m, z in sem.items()})
    assert torch.equal(out_gpu.indices["a"].cpu(), out.indices["a"])
    gpu.ema_update_({m: z.cuda() for m, z in sem.items()}, out_gpu.indices)
    assert gpu.expire_codes_(sem["a"].cuda(), torch.Generator(device="cuda").manual_seed(0)) == 0
