"""The training loop: determinism, codebook seeding, CLUB isolation, freezing, reporting."""

from __future__ import annotations

import pytest
import torch

from comet_model.config import ExperimentConfig, preset
from comet_model.continual.stage import prepare_stage
from comet_model.continual.train import Trainer, loss_weights, train_stage, train_step
from comet_model.data import synthetic_benchmark
from comet_model.data.types import StageData
from comet_model.nn.losses import weighted_total
from comet_model.nn.model import CometModel

TINY = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "codebook.dead_code_threshold": 3,
    "train.epochs": 2, "train.batch_size": 16,
}  # fmt: skip


def tiny_cfg(**flat: object) -> ExperimentConfig:
    return preset("smoke").override({**TINY, **flat})


def tiny_stage(index: int = 0) -> StageData:
    return synthetic_benchmark(seed=0).stages[index]


def _run(cfg: ExperimentConfig, stage: StageData, **kw: object) -> tuple[CometModel, list[dict]]:
    torch.manual_seed(cfg.seed)
    model = CometModel.from_config(cfg)
    rows: list[dict] = []
    gen = torch.Generator().manual_seed(cfg.seed)
    inputs = prepare_stage(model, stage, cfg, generator=gen)
    train_stage(model, inputs, cfg, generator=gen, on_metrics=rows.append, **kw)  # type: ignore[arg-type]
    return model, rows


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_same_seed_gives_identical_metrics_and_weights() -> None:
    stage = tiny_stage()
    m1, r1 = _run(tiny_cfg(), stage)
    m2, r2 = _run(tiny_cfg(), stage)
    assert _strip(r1) == _strip(r2)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    _, r3 = _run(tiny_cfg(seed=1), stage)
    assert _strip(r3) != _strip(r1)


def test_reports_once_per_epoch_with_named_losses() -> None:
    cfg = tiny_cfg()
    model, rows = _run(cfg, tiny_stage())
    assert [r["epoch"] for r in rows] == [1, 2]
    names = {f"loss/{n}" for n in model.active} | {"loss/total"}
    for r in rows:
        assert names <= set(r) and all(r[k] == r[k] for k in names)  # present, not NaN
    assert rows[1]["step"] == 2 * (tiny_stage().train.num_items // cfg.train.batch_size)


def test_codebook_seeded_from_data_tokens_before_training() -> None:
    cfg = tiny_cfg()
    stage = tiny_stage()
    model, rows = _run(cfg, stage, stop_epoch=0)  # seeding only, no step
    assert rows == [] and bool(model.codebook_seeded)
    model.eval()
    with torch.no_grad():
        tokens = torch.cat(
            [model.encode(m, stage.train.features[m]).reshape(-1, 16) for m in stage.modalities]
        )
    exact = "donot_use_mm_for_euclid_dist"
    dist = torch.cdist(model.codebook.embed, tokens, compute_mode=exact).min(1).values
    assert dist.max() < 1e-4  # every code is one of the data tokens
    uniform, _ = _run(tiny_cfg(**{"codebook.init": "uniform"}), stage, stop_epoch=0)
    assert not bool(uniform.codebook_seeded)
    assert uniform.codebook.embed.abs().max() <= 1.0 / 16


def test_club_estimators_follow_only_their_own_optimiser() -> None:
    stage = tiny_stage()
    for steps, should_move in ((0, False), (2, True)):
        cfg = tiny_cfg(**{"club.inner_steps": steps})
        torch.manual_seed(0)
        model = CometModel.from_config(cfg, {m: stage.train.dim(m) for m in stage.modalities})
        trainer = Trainer(model, cfg)
        main_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        assert not main_ids & {id(p) for p in model.club.parameters()}
        before = [p.detach().clone() for p in model.club.parameters()]
        feats = {m: stage.train.features[m][:16] for m in stage.modalities}
        gen = torch.Generator().manual_seed(0)
        train_step(
            model, trainer, feats, None, cfg, generator=gen, weights=loss_weights(cfg, model)
        )
        moved = any(
            not torch.equal(a, p) for a, p in zip(before, model.club.parameters(), strict=True)
        )
        assert moved == should_move


def test_frozen_groups_do_not_move() -> None:
    cfg = tiny_cfg(**{"train.epochs": 1})
    stage = tiny_stage()
    torch.manual_seed(0)
    model = CometModel.from_config(cfg, {m: stage.train.dim(m) for m in stage.modalities})
    first = stage.modalities[0]
    frozen = [p.detach().clone() for p in model.param_groups()[f"semantic.{first}"]]
    other = [p.detach().clone() for p in model.param_groups()[f"decoder.{first}"]]
    gen = torch.Generator().manual_seed(0)
    inputs = prepare_stage(model, stage, cfg, generator=gen, frozen=(f"semantic.{first}",))
    train_stage(model, inputs, cfg, generator=gen)
    groups = model.param_groups()
    assert all(map(torch.equal, frozen, groups[f"semantic.{first}"]))
    assert not all(map(torch.equal, other, groups[f"decoder.{first}"]))
    with pytest.raises(ValueError, match="frozen group"):
        Trainer(model, cfg, frozen=("semantic.nothing",))


def test_dead_codes_are_reset_and_ema_moves_codes() -> None:
    cfg = tiny_cfg(**{"train.epochs": 3})
    stage = tiny_stage()
    threshold = cfg.codebook.dead_code_threshold
    for expire in (True, False):
        cfg = cfg.override({"codebook.expire": expire})
        model, _ = _run(cfg, stage, stop_epoch=0)  # seeded, not trained
        model.codebook.embed[0] = 1e3  # an unreachable (dead) code
        seeded = model.codebook.embed.clone()
        gen = torch.Generator().manual_seed(0)
        summary = train_stage(
            model, prepare_stage(model, stage, cfg, generator=gen), cfg, generator=gen
        )
        assert summary.steps > threshold + 1
        moved = ~torch.isclose(seeded, model.codebook.embed).all(1)
        assert moved[1:].any()  # MM-EMA moved used codes
        assert bool(model.codebook.cluster_size.sum() > 0)
        if expire:  # reset runs after every update: nothing stays dead
            assert summary.codes_reset >= 1 and moved[0]
            assert int(model.codebook.unused.max()) <= threshold
        else:
            assert summary.codes_reset == 0 and not moved[0]
            assert int(model.codebook.unused[0]) == summary.steps


@pytest.mark.parametrize("method", ["dcid", "cmcm", "turn"])
def test_each_loss_weight_scales_exactly_its_own_term(method: str) -> None:
    """Raising one configured weight raises the total by exactly that weight change times the
    term of the same name, whatever the other terms are."""
    cfg = tiny_cfg(method=method)
    stage = tiny_stage()
    torch.manual_seed(0)
    model = CometModel.from_config(cfg)
    prepare_stage(model, stage, cfg, generator=torch.Generator().manual_seed(0))
    batch = {m: x[:8] for m, x in stage.train.features.items()}
    with torch.no_grad():
        losses = dict(model(batch, generator=torch.Generator().manual_seed(5)).losses)
    losses |= {"ewc": torch.tensor(0.37), "pmr": torch.tensor(0.73)}  # the hooks' terms
    losses = {k: v.double() for k, v in losses.items()}  # exact differences of large totals
    assert {"recon", "commit", "gate"} <= set(losses)
    keys = {"ewc": "ewc.lam", "pmr": "replay.beta_pmr"}
    for name in losses:
        key = keys.get(name, f"loss.{name}")
        low = loss_weights(cfg.override({key: 0.5}), model)
        high = loss_weights(cfg.override({key: 2.0}), model)
        assert {k for k in low if low[k] != high[k]} == {name}, name
        diff = weighted_total(losses, high) - weighted_total(losses, low)
        assert float(diff) == pytest.approx(1.5 * float(losses[name]), rel=1e-9, abs=1e-12), name
