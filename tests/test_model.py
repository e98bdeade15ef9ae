"""CometModel invariants: named finite losses, gradients reach every trainable parameter,
CLUB estimators stay out of the main loss, eval forward leaves the codebook untouched."""

from __future__ import annotations

import pytest
import torch

from comet_model.config import ExperimentConfig, preset
from comet_model.nn.losses import masked_mse, pooled_info_nce, weighted_total
from comet_model.nn.model import METHOD_LOSSES, CometModel
from comet_model.nn.replay import PseudoModality

DIMS = {"video": 12, "audio": 7}


def _cfg(**flat: object) -> ExperimentConfig:
    base = {"model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
            "model.club_hidden": 16, "codebook.size": 16, "model.dropout": 0.0,
            "comet": False}  # fmt: skip
    return preset("smoke").override({**base, **flat})


def _batch(seed: int = 0, n: int = 6, t: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, t, d, generator=g) for m, d in DIMS.items()}


def _model(cfg: ExperimentConfig, seed: int = 0) -> CometModel:
    torch.manual_seed(seed)
    return CometModel.from_config(cfg, DIMS)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("method", ["dcid", "cmcm", "turn"])
@pytest.mark.parametrize("comet", [False, True])
def test_losses_named_finite_and_every_parameter_gets_a_gradient(method: str, comet: bool) -> None:
    cfg = _cfg(method=method, comet=comet)
    model = _model(cfg)
    pseudo = None
    if comet:  # a later stage of COMET: the PMR stream (CMCM and TURN get a Cross-CPC for it)
        model.add_pseudo_stream_()
        g = _gen(5)
        pseudo = PseudoModality(
            codes=torch.randn(6, 5, 16, generator=g),
            from_teacher=torch.rand(6, 5, generator=g) < 0.5,
            step_weights=torch.ones(6, 5),
            indices=torch.zeros(6, 5, dtype=torch.long),
        )
    else:
        assert (model.cpc is None) == (method != "dcid") and model.adapter is None
    out = model(_batch(), generator=_gen(), pseudo=pseudo)
    expected = set(METHOD_LOSSES[method]) | ({"gate", "pmr"} if comet else set())
    assert set(out.losses) == expected
    for name, value in out.losses.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    weighted_total(out.losses, {k: 1.0 for k in out.losses}).backward()
    for group, params in model.param_groups().items():
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all(), group
            assert p.grad.abs().sum() > 0, group
    for p in model.club.parameters():  # estimators follow only their own optimiser
        assert p.grad is None


def test_param_groups_partition_the_main_parameters() -> None:
    model = _model(_cfg(comet=True))
    grouped = [id(p) for ps in model.param_groups().values() for p in ps]
    club = {id(p) for p in model.club.parameters()}
    assert len(grouped) == len(set(grouped))
    assert set(grouped) | club == {id(p) for p in model.parameters()}
    assert not set(grouped) & club
    assert {"semantic.video", "specific.audio", "decoder.video", "cpc.audio", "adapter"} <= set(
        model.param_groups()
    )


def test_club_bound_does_not_train_the_estimator_but_reaches_the_encoders() -> None:
    model = _model(_cfg(**{"club.clamp": False}))
    out = model(_batch(), generator=_gen())
    out.losses["club"].backward()
    assert all(p.grad is None for p in model.club.parameters())
    assert all(p.requires_grad for p in model.club.parameters())  # flags restored
    spec = model.param_groups()["specific.video"]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in spec)
    # the estimator's own objective does reach its parameters
    vq, spec_feat = out.club_pairs["video"]
    (-model.club["video"].log_likelihood(vq, spec_feat)).backward()
    assert all(p.grad is not None for p in model.club["video"].parameters())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_leaves_codebook_buffers_unchanged(mode: str) -> None:
    model = _model(_cfg())
    getattr(model, mode)()
    before = {k: v.clone() for k, v in model.codebook.state_dict().items()}
    with torch.no_grad():
        model(_batch(), generator=_gen())
        model.quantize("video", _batch()["video"])
    model.eval()
    model.codebook.ema_update_(
        {m: torch.randn(6, 5, 16) for m in DIMS},
        {m: torch.zeros(6, 5, dtype=torch.long) for m in DIMS},
    )
    for k, v in model.codebook.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_club_bound_is_clamped_at_zero_per_modality() -> None:
    for seed in range(50):  # the first model seed whose two bounds have opposite signs
        model = _model(_cfg(), seed)
        f = model.features(_batch())
        gen = _gen()  # the bounds draw their permutations first, in modality order
        bounds = [
            model.club[m].mi_upper_bound(f.codebook.quantized[m], f.specific[m], gen) for m in DIMS
        ]
        if min(bounds) < 0 < max(bounds):
            break
    assert min(bounds) < 0 < max(bounds)  # both cases covered
    got = model.compute_losses(f, generator=_gen()).losses["club"]
    assert torch.allclose(got, sum(b.clamp_min(0) for b in bounds))


def test_quantize_returns_codebook_vectors_of_its_indices() -> None:
    model = _model(_cfg()).eval()
    x = _batch()["audio"]
    codes, idx = model.quantize("audio", x)
    assert codes.shape == (6, 5, 16) and idx.shape == (6, 5) and idx.dtype == torch.long
    assert torch.equal(codes, model.codebook.lookup(idx))
    out = model(_batch(), generator=_gen())
    assert torch.equal(out.indices["audio"], idx)
    assert model.codebook_size == 16


def test_padded_steps_do_not_change_valid_outputs() -> None:
    model = _model(_cfg(method="cmcm")).eval()
    batch = _batch()
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[:, 3:] = False
    masks = {m: mask for m in DIMS}
    noisy = {m: x.clone() for m, x in batch.items()}
    for x in noisy.values():
        x[:, 3:] += 100.0
    a = model(batch, masks, generator=_gen())
    b = model(noisy, masks, generator=_gen())
    for name in a.losses:
        assert torch.allclose(a.losses[name], b.losses[name], atol=1e-5), name
    assert torch.equal(a.indices["video"][:, :3], b.indices["video"][:, :3])


def test_pseudo_modality_joins_cpc_as_pmr() -> None:
    model = _model(_cfg())
    model.add_pseudo_stream_()
    g = torch.Generator().manual_seed(1)
    pseudo = PseudoModality(
        codes=torch.randn(6, 5, 16, generator=g),
        from_teacher=torch.ones(6, 5, dtype=torch.bool),
        step_weights=torch.ones(6, 5),
        indices=torch.zeros(6, 5, dtype=torch.long),
    )
    out = model(_batch(), generator=_gen(), pseudo=pseudo)
    assert "pmr" in out.losses and torch.isfinite(out.losses["pmr"]) and out.losses["pmr"] > 0
    out_fn = model(_batch(), generator=_gen(), pseudo=lambda sem: pseudo)
    assert torch.equal(out_fn.losses["pmr"], out.losses["pmr"])
    zero = PseudoModality(pseudo.codes, pseudo.from_teacher, torch.zeros(6, 5), pseudo.indices)
    assert model(_batch(), generator=_gen(), pseudo=zero).losses["pmr"] == 0


def test_zero_weight_switches_a_loss_off_and_modalities_are_checked() -> None:
    model = _model(_cfg(**{"loss.club": 0.0}))
    assert "club" not in model(_batch(), generator=_gen()).losses and len(model.club) == 0
    assert model.add_modality_("video", 12) is False
    with pytest.raises(ValueError, match="created with 12"):
        model.add_modality_("video", 13)
    with pytest.raises(KeyError, match="unknown modality"):
        model({"text": torch.randn(2, 5, 3)}, generator=_gen())
    with pytest.raises(ValueError, match="expects"):
        model({"video": torch.randn(2, 5, 3)}, generator=_gen())


def test_weighted_total_is_strict() -> None:
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(float("nan"))}
    assert weighted_total(losses, {"a": 3.0, "b": 0.0}) == 6.0  # zero weight skips a NaN
    with pytest.raises(KeyError, match="missing loss 'c'"):
        weighted_total(losses, {"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(KeyError, match="'b' has no weight"):
        weighted_total(losses, {"a": 1.0})


def test_small_losses() -> None:
    x, y = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    assert torch.allclose(masked_mse(x, y), torch.nn.functional.mse_loss(x, y))
    mask = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    assert torch.allclose(masked_mse(x, y, mask), torch.nn.functional.mse_loss(x[:, :2], y[:, :2]))
    aligned = pooled_info_nce({"a": x, "b": x * 2.0}, temperature=0.05)
    shuffled = pooled_info_nce({"a": x, "b": x[[1, 2, 0]]}, temperature=0.05)
    assert aligned < shuffled


def test_to_reaches_the_codebook_and_new_modules_follow_its_device() -> None:
    model = _model(_cfg(comet=True)).double()
    assert model.codebook.embed.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in model.parameters())
    model = model.float()
    assert model.codebook.embed.dtype == torch.float32
    model.to("meta")  # a device no module starts on
    assert model.codebook.embed.is_meta
    model.add_modality_("image", 9)
    model.add_pseudo_stream_()
    assert all(p.is_meta for p in model.parameters())
