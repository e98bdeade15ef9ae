"""Invariants of Pseudo-Modality Replay (paper section 3.3, spec section 5)."""

from __future__ import annotations

import io

import pytest
import torch

from comet_model.nn.codebook import squared_distances
from comet_model.nn.replay import PseudoModalityReplay

D, K1, K2 = 6, 5, 3


def _codes(seed: int, k: int, offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, D, generator=g) + offset


def _setup():
    v1 = _codes(0, K1)
    k2 = _codes(1, K2, offset=5.0)  # far from V1: every code is clearly attributable
    g = torch.Generator().manual_seed(2)
    # Steps sit on random V1 or K2 codes plus a little noise; which source is recorded.
    use_v1 = torch.rand(4, 7, generator=g) < 0.5
    pick_v1 = torch.randint(0, K1, (4, 7), generator=g)
    pick_k2 = torch.randint(0, K2, (4, 7), generator=g)
    sem = torch.where(use_v1[..., None], v1[pick_v1], k2[pick_k2])
    sem = sem + 0.01 * torch.randn(4, 7, D, generator=g)
    index = torch.where(use_v1, pick_v1, pick_k2 + K1)
    return v1, k2, sem, use_v1, index


def test_pseudo_codes_from_teacher_on_old_codes_and_from_new_block_elsewhere() -> None:
    v1, k2, sem, use_v1, index = _setup()
    pmr = PseudoModalityReplay(w_k2=0.25)
    pmr.set_teacher_(v1)
    p = pmr.build(sem, k2)
    assert 0 < use_v1.sum() < use_v1.numel()  # both kinds of steps are present
    assert torch.equal(p.from_teacher, use_v1)
    assert torch.equal(p.indices, index)
    torch.testing.assert_close(p.codes, torch.cat([v1, k2])[index])
    expected_w = torch.where(use_v1, torch.tensor(1.0), torch.tensor(0.25))
    torch.testing.assert_close(p.step_weights, expected_w)
    assert p.codes.shape == (4, 7, D) and p.indices.dtype == torch.int64


def test_nearest_code_matches_brute_force() -> None:
    v1, k2 = _codes(3, K1), _codes(4, K2)
    sem = torch.randn(2, 9, D, generator=torch.Generator().manual_seed(5))
    pmr = PseudoModalityReplay()
    pmr.set_teacher_(v1)
    p = pmr.build(sem, k2)
    codes = torch.cat([v1, k2])
    brute = torch.cdist(sem.reshape(-1, D), codes).argmin(-1).reshape(2, 9)
    assert torch.equal(p.indices, brute)
    torch.testing.assert_close(
        squared_distances(sem, codes),
        torch.cdist(sem, codes.expand(2, -1, -1)) ** 2,
        atol=1e-4,
        rtol=1e-4,
    )


def test_tau_forces_far_teacher_hits_to_new_block() -> None:
    v1 = torch.zeros(2, D)
    v1[1, 0] = 10.0
    k2 = torch.full((2, D), 3.0)
    k2[1] = -3.0
    # Step 0 sits exactly on V1 code 0; step 1 is V1's nearest but 1.5 away from code 0.
    sem = torch.zeros(1, 2, D)
    sem[0, 1, 1] = 1.5
    no_tau = PseudoModalityReplay(w_k2=0.1)
    no_tau.set_teacher_(v1)
    assert no_tau.build(sem, k2).from_teacher.all()
    pmr = PseudoModalityReplay(w_k2=0.1, tau=1.0)
    pmr.set_teacher_(v1)
    p = pmr.build(sem, k2)
    assert p.from_teacher.tolist() == [[True, False]]
    nearest_k2 = int(squared_distances(sem[0, 1], k2).argmin())
    assert p.indices[0, 1].item() == 2 + nearest_k2
    torch.testing.assert_close(p.codes[0, 1], k2[nearest_k2])
    torch.testing.assert_close(p.step_weights, torch.tensor([[1.0, 0.1]]))


def test_teacher_is_frozen_copy_and_build_uses_it() -> None:
    v1, k2, sem, use_v1, _ = _setup()
    live = v1.clone().requires_grad_(True)
    pmr = PseudoModalityReplay()
    pmr.set_teacher_(live)
    assert not pmr.teacher.requires_grad
    with torch.no_grad():
        live.add_(0.3)  # the live codebook keeps training (EMA) during the stage
    torch.testing.assert_close(pmr.teacher, v1)
    p = pmr.build(sem, k2)
    torch.testing.assert_close(p.codes[use_v1], v1[p.indices[use_v1]])
    assert not torch.allclose(p.codes[use_v1], live.detach()[p.indices[use_v1]])


def test_outputs_detached_and_deterministic() -> None:
    v1, k2, sem, _, _ = _setup()
    pmr = PseudoModalityReplay()
    pmr.set_teacher_(v1)
    k2 = k2.clone().requires_grad_(True)
    sem = sem.clone().requires_grad_(True)
    a, b = pmr.build(sem, k2), pmr.build(sem, k2)
    for field in ("codes", "from_teacher", "step_weights", "indices"):
        assert torch.equal(getattr(a, field), getattr(b, field))
        assert not getattr(a, field).requires_grad
    # Ties go to the teacher: a V1 code duplicated in the new block is still a V1 hit.
    dup = torch.cat([v1[:1], k2.detach()])
    p = pmr.build(v1[:1].reshape(1, 1, D), dup)
    assert p.from_teacher.item() and p.indices.item() == 0


def test_without_teacher_everything_comes_from_new_block() -> None:
    _, k2, sem, _, _ = _setup()
    pmr = PseudoModalityReplay(w_k2=0.5)
    assert not pmr.has_teacher
    p = pmr.build(sem, k2)
    assert not p.from_teacher.any() and (p.step_weights == 0.5).all()
    with pytest.raises(ValueError):
        pmr.build(sem, torch.zeros(0, D))


def test_state_dict_round_trip_with_teacher_size_change() -> None:
    v1, k2, sem, _, _ = _setup()
    pmr = PseudoModalityReplay(w_k2=0.3)
    pmr.set_teacher_(v1)
    buf = io.BytesIO()
    torch.save(pmr.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = PseudoModalityReplay(w_k2=0.3)  # empty teacher
    fresh.load_state_dict(state)
    bigger = PseudoModalityReplay(w_k2=0.3)
    bigger.set_teacher_(_codes(9, K1 + K2))  # a later stage's larger teacher
    bigger.load_state_dict(state)
    ref = pmr.build(sem, k2)
    for other in (fresh, bigger):
        assert torch.equal(other.teacher, pmr.teacher)
        got = other.build(sem, k2)
        assert torch.equal(got.indices, ref.indices) and torch.equal(got.codes, ref.codes)
