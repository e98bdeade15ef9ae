"""The continual pipeline: stage isolation, resume, determinism, metrics and the COMET switches.

Tiny configurations on the synthetic benchmark (stages a-t, b-t, c-t; t is the mediator): every
metric is near chance, so these tests check plumbing and invariants, not accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import comet_model.continual.pipeline as pipeline
import comet_model.continual.train as train
from comet_model.config import ExperimentConfig, preset
from comet_model.continual import checkpoint as ckpt
from comet_model.continual.pipeline import (
    ContinualResult,
    ResumeError,
    StageReport,
    completed_stages,
    continual_metrics,
    run_continual,
)
from comet_model.data import synthetic_benchmark
from comet_model.data.types import Benchmark, Sequences
from comet_model.nn.model import METHOD_LOSSES, PSEUDO_STREAM
from comet_model.nn.moe_adapter import LinearAdapter, MoEAdapter

STAGES = ("a-t", "b-t", "c-t")
TINY = {
    "model.dim": 16, "model.heads": 2, "model.ffn": 32, "model.spec_dim": 8,
    "model.club_hidden": 16, "codebook.size": 16, "codebook.dead_code_threshold": 3,
    "train.epochs": 1, "train.batch_size": 16, "data.source": "synthetic",
    "data.stages": STAGES, "data.train_sequences": 64, "data.val_sequences": 16,
    "data.steps": 6, "eval.epochs": 2, "replay.k2": 4, "ewc.fisher_batches": 2,
}  # fmt: skip


def tiny_cfg(**flat: Any) -> ExperimentConfig:
    return preset("smoke").override({**TINY, **flat})


def bench(stages: tuple[str, ...] = STAGES) -> Benchmark:
    return synthetic_benchmark(stages=stages, steps=6, train_sequences=64, val_sequences=16)


def _metrics(result: ContinualResult) -> list[dict[str, float]]:
    return [r.metrics for r in result.stages]


def _same(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    """Exact equality of metric lists (NaN equals NaN)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if set(x) != set(y):
            return False
        for k in x:
            if not (x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k]))):
                return False
    return True


@pytest.fixture(scope="module")
def reference() -> ContinualResult:
    """The uninterrupted three-stage COMET run every comparison starts from."""
    return run_continual(tiny_cfg(), benchmark=bench())


def test_same_seed_gives_identical_metrics_and_another_seed_differs(
    reference: ContinualResult,
) -> None:
    again = run_continual(tiny_cfg(), benchmark=bench())
    assert _same(_metrics(again), _metrics(reference))
    for (k, a), b in zip(
        reference.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    other = run_continual(tiny_cfg(seed=1), benchmark=bench())
    assert not _same(_metrics(other), _metrics(reference))


def test_resume_after_an_interrupted_stage_equals_the_uninterrupted_run(
    tmp_path: Path, reference: ContinualResult
) -> None:
    reports: list[StageReport] = []

    def stop_after_first(report: StageReport) -> None:
        reports.append(report)
        torch.rand(5)  # a callback using the global RNG cannot change the run
        assert report.checkpoint is not None and report.checkpoint.exists()
        assert ckpt.load(report.checkpoint)["stage"] == report.index
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_continual(
            tiny_cfg(), out_dir=tmp_path, benchmark=bench(), on_stage_end=stop_after_first
        )
    assert completed_stages(tmp_path) == 1 and [r.index for r in reports] == [1]
    assert reports[0].name == "a-t" and math.isnan(reports[0].metrics["objective"])
    torch.manual_seed(999)  # scramble the global RNG: the checkpoint restores it

    resumed = run_continual(
        tiny_cfg(), out_dir=tmp_path, benchmark=bench(), on_stage_end=reports.append
    )
    assert [r.index for r in reports] == [1, 2, 3] and resumed.resumed_from == 1
    assert _same(_metrics(resumed), _metrics(reference))
    assert completed_stages(tmp_path) == 3
    for (k, a), b in zip(
        reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k

    # a finished folder returns at once: no training, no callback, same metrics
    def never(_: StageReport) -> None:
        raise AssertionError("a finished run trained again")

    def no_benchmark(*args: object, **kw: object) -> Benchmark:
        raise AssertionError("a finished run built its data")

    done = pytest.MonkeyPatch.context()
    with done as mp:
        mp.setattr(pipeline, "build_benchmark", no_benchmark)
        finished = run_continual(tiny_cfg(), out_dir=tmp_path, on_stage_end=never)
    assert finished.resumed_from == 3 and _same(_metrics(finished), _metrics(reference))
    assert finished.model.codebook_size == reference.model.codebook_size
    with pytest.raises(ResumeError, match="codebook.size"):
        run_continual(tiny_cfg(**{"codebook.size": 20}), out_dir=tmp_path, benchmark=bench())


def test_a_finished_stage_plan_prefix_continues_with_more_stages(
    tmp_path: Path, reference: ContinualResult
) -> None:
    full = bench()
    first = dataclasses.replace(full, stages=full.stages[:1])
    run_continual(tiny_cfg(**{"data.stages": STAGES[:1]}), out_dir=tmp_path, benchmark=first)
    assert completed_stages(tmp_path) == 1
    resumed = run_continual(tiny_cfg(), out_dir=tmp_path, benchmark=full)
    assert resumed.resumed_from == 1 and _same(_metrics(resumed), _metrics(reference))
    with pytest.raises(ResumeError, match="prefix"):
        run_continual(
            tiny_cfg(**{"data.stages": ("b-t", "a-t", "c-t")}),
            out_dir=tmp_path,
            benchmark=synthetic_benchmark(stages=("b-t", "a-t", "c-t"), steps=6),
        )


def _poisoned_copy(b: Benchmark) -> Benchmark:
    def clone(s: Sequences) -> Sequences:
        return Sequences({m: x.clone() for m, x in s.features.items()}, s.labels, s.masks)

    stages = tuple(dataclasses.replace(s, train=clone(s.train), val=clone(s.val)) for s in b.stages)
    return dataclasses.replace(b, stages=stages)


def test_each_stage_sees_only_its_own_data(reference: ContinualResult) -> None:
    # poison every stage's data with NaN as soon as the stage is done: any later use of it
    # (training, Fisher, K2 seeding, replay) would change the run or make it diverge
    data = _poisoned_copy(bench())
    calls: list[tuple[str, str]] = []
    originals = {
        name: getattr(pipeline, name)
        for name in ("expand_codebook", "prepare_stage", "train_stage", "consolidate")
    }

    def spy(name: str) -> Any:
        def wrapped(model: Any, stage: Any, *args: Any, **kw: Any) -> Any:
            seen = stage.stage if name == "train_stage" else stage  # train_stage gets StageInputs
            assert any(seen is s for s in data.stages)
            calls.append((name, seen.name))
            return originals[name](model, stage, *args, **kw)

        return wrapped

    def poison(report: StageReport) -> None:
        stage = data.stages[report.index - 1]
        for seqs in (stage.train, stage.val):
            for x in seqs.features.values():
                x.fill_(float("nan"))

    with pytest.MonkeyPatch.context() as mp:
        for name in originals:
            mp.setattr(pipeline, name, spy(name))
        result = run_continual(tiny_cfg(), benchmark=data, on_stage_end=poison)
    assert _same(_metrics(result), _metrics(reference))
    steps = ("prepare_stage", "train_stage", "consolidate")
    assert calls == [
        *((n, "a-t") for n in steps),
        ("expand_codebook", "b-t"), *((n, "b-t") for n in steps),
        ("expand_codebook", "c-t"), *((n, "c-t") for n in steps),
    ]  # fmt: skip
    assert all(bool(torch.isnan(x).all()) for s in data.stages for x in s.train.features.values())


def test_non_finite_loss_raises_naming_stage_and_epoch() -> None:
    data = _poisoned_copy(bench())
    data.stages[1].train.features["b"][0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"^stage 2 \(b-t\), epoch 1: loss is nan$"):
        run_continual(tiny_cfg(), benchmark=data)


def test_metrics_per_stage_objective_and_forgetting(reference: ContinualResult) -> None:
    from reports.schema import split_metric_key

    s1, s2, s3 = _metrics(reference)
    assert not any(k.startswith(("ave/", "avvp/")) for k in s1)  # one non-mediator modality
    assert "retrieval/a<->t/mean" in s1 and math.isnan(s1["objective"])
    assert not any(k.startswith("forgetting/") for k in s1)
    unseen = [s2[f"{t}/{p}/{m}"] for t, m in (("ave", "acc"), ("avvp", "f1"), ("ave_avvp", "f1"))
              for p in ("a->b", "b->a")] + [s2["retrieval/a<->b/mean"]]  # fmt: skip
    assert s2["objective"] == pytest.approx(float(np.mean(unseen)))
    assert {"retrieval/a<->t/mean", "retrieval/b<->t/mean", "retrieval/a<->b/mean"} <= set(s2)
    hist = [s1["retrieval/a<->t/mean"], s2["retrieval/a<->t/mean"], s3["retrieval/a<->t/mean"]]
    assert s3["forgetting/a<->t/retrieval"] == pytest.approx(max(hist[:2]) - hist[2])
    b_hist = [s2["retrieval/b<->t/mean"], s3["retrieval/b<->t/mean"]]
    assert s3["forgetting/b<->t/retrieval"] == pytest.approx(b_hist[0] - b_hist[1])
    bwt = ((hist[2] - hist[0]) + (b_hist[1] - b_hist[0])) / 2
    assert s3["forgetting/bwt"] == pytest.approx(bwt)
    assert "forgetting/c<->t/retrieval" not in s3  # learnt in the last stage
    assert {"ave/a->c/acc", "ave/c->b/acc", "retrieval/a<->c/mean"} <= set(s3)
    sizes = [m["usage/codebook_size"] for m in (s1, s2, s3)]
    assert sizes == [16, 20, 24]  # K2 = 4 per stage >= 2
    for key in s3:
        task, pair, metric = split_metric_key(key)
        assert task and metric, key
    assert split_metric_key("forgetting/a<->t/retrieval") == ("forgetting", "a<->t", "retrieval")


def test_continual_metrics_on_a_hand_made_history() -> None:
    hist = [
        {"retrieval/v<->t/mean": 50.0},
        {"retrieval/v<->t/mean": 40.0, "retrieval/a<->t/mean": 60.0, "retrieval/v<->a/mean": 10.0,
         "ave/v->a/acc": 30.0, "ave/a->v/acc": 20.0, "ave/v->a/step_acc": 99.0},
        {"retrieval/v<->t/mean": 45.0, "retrieval/a<->t/mean": 30.0, "retrieval/v<->a/mean": 20.0,
         "ave/v->a/acc": 50.0, "ave/a->v/acc": float("nan")},
    ]  # fmt: skip
    mods = [("v", "t"), ("a", "t"), ("i", "t")]
    assert math.isnan(continual_metrics(hist[:1], mods[:1])["objective"])
    two = continual_metrics(hist[:2], mods[:2])
    assert two["objective"] == pytest.approx((10 + 30 + 20) / 3)
    assert two["forgetting/v<->t/retrieval"] == 10.0 and two["forgetting/bwt"] == -10.0
    three = continual_metrics(hist, mods)
    assert three["objective"] == pytest.approx((20 + 50) / 2)  # NaN skipped
    assert three["forgetting/v<->t/retrieval"] == 5.0  # best earlier 50, now 45
    assert three["forgetting/a<->t/retrieval"] == 30.0
    assert three["forgetting/mean"] == pytest.approx(17.5)
    assert three["forgetting/bwt"] == pytest.approx(((45 - 50) + (30 - 60)) / 2)


def _stage2_spy(check: Any) -> Any:
    """Wrap train.train_step: ``check(stage_index, step, args, kwargs, before)`` before the
    step and ``check(..., after=True)`` after it, for stage 2 steps only."""
    original = train.train_step
    counter = {"step": 0}

    def wrapped(model: Any, trainer: Any, feats: dict, *args: Any, **kw: Any) -> Any:
        stage2 = "b" in feats
        if stage2:
            check(counter["step"], model, feats, kw, after=False)
        out = original(model, trainer, feats, *args, **kw)
        if stage2:
            check(counter["step"], model, feats, kw, after=True)
            counter["step"] += 1
        return out

    return wrapped


@pytest.mark.parametrize("frozen", [(), ("semantic.t",)])
def test_stage2_gradients_ewc_teacher_and_pseudo_codes(
    tmp_path: Path, frozen: tuple[str, ...]
) -> None:
    cfg = tiny_cfg(**{"train.epochs": 2, "train.frozen": frozen, "replay.w_k2": 0.25})
    seen: dict[str, Any] = {"ewc": []}
    state1: dict[str, Any] = {}

    def after_stage(report: StageReport) -> None:
        if report.index == 1:
            state1.update(ckpt.load(report.checkpoint))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_continual(cfg, out_dir=tmp_path, benchmark=bench(STAGES[:2]), on_stage_end=after_stage)
    teacher = state1["model"]["codebook.embed"]  # the codebook at the end of stage 1

    def check(step: int, model: Any, feats: dict, kw: dict, *, after: bool) -> None:
        groups = model.param_groups()
        if not after:
            ewc, params = kw["ewc"], kw["ewc_params"]
            seen["ewc"].append(float(ewc(params).detach()))
            # the pseudo stream: V1 = end-of-stage-1 codebook, frozen; K2 = the newest block
            k1 = teacher.shape[0]
            new_block = model.codebook.embed[k1:]
            assert int(model.codebook.reset_start) == k1 and new_block.shape[0] == 4
            sem = torch.cat([teacher[:6], new_block[:3], teacher[6:9]]).reshape(2, 6, -1)
            p = kw["pseudo"]({"t": sem, "b": torch.zeros_like(sem)})
            expect_v1 = torch.tensor([True] * 6 + [False] * 3 + [True] * 3).reshape(2, 6)
            assert torch.equal(p.from_teacher, expect_v1)
            assert torch.equal(p.codes, sem)
            assert torch.equal(p.step_weights, torch.where(expect_v1, 1.0, 0.25))
            return
        # after backward: only what stage 2 trains got a gradient
        for g in ("semantic.a", "specific.a", "decoder.a", "cpc.a"):
            assert all(p.grad is None for p in groups[g]), g
        for g in ("semantic.b", "specific.b", "decoder.b", "cpc.b", "cpc.pseudo", "adapter"):
            assert all(p.grad is not None for p in groups[g]), g
        text = groups["semantic.t"]
        if frozen:
            assert all(p.grad is None and not p.requires_grad for p in text)
        else:
            assert all(p.grad is not None for p in text)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "train_step", _stage2_spy(check))
        result = run_continual(cfg, out_dir=tmp_path, benchmark=bench(STAGES[:2]))
    assert seen["ewc"][0] == 0.0  # right after consolidation the penalty is 0
    assert max(seen["ewc"]) > 0.0  # and grows as the adapter moves
    model = result.model
    state2 = ckpt.load(tmp_path / "checkpoint.pt")
    assert torch.equal(state2["replay"]["teacher"], teacher)  # the teacher never changed
    assert not torch.equal(model.codebook.embed[: teacher.shape[0]], teacher)  # live codes did
    first = state1["model"]
    for name, value in state2["model"].items():
        if ".a." in name and name.startswith(("encoders.", "cpc.")):
            assert torch.equal(value, first[name]), name  # stage 1's modality is untouched
        if frozen and name.startswith("encoders.semantic.t."):
            assert torch.equal(value, first[name]), name
    assert PSEUDO_STREAM in model.cpc.streams


def _losses(rows: list[dict], stage: str) -> set[str]:
    return {
        k[5:]
        for r in rows
        if r["kind"] == "train" and r["stage"] == stage
        for k in r
        if k.startswith("loss/") and k not in ("loss/total", "loss/club_estimator")
    }


def _run2(**flat: Any) -> tuple[ContinualResult, list[dict]]:
    rows: list[dict] = []
    cfg = tiny_cfg(**{"data.stages": STAGES[:2], **flat})
    return run_continual(cfg, benchmark=bench(STAGES[:2]), on_metrics=rows.append), rows


@pytest.mark.parametrize(
    ("flat", "stage1", "stage2", "size"),
    [
        ({}, {"gate"}, {"gate", "pmr", "ewc"}, 20),
        ({"comet": False}, set(), set(), 16),
        ({"replay.enabled": False}, {"gate"}, {"gate", "ewc"}, 20),
        ({"ewc.enabled": False}, {"gate"}, {"gate", "pmr"}, 20),
        ({"loss.gate": 0.0}, set(), {"pmr", "ewc"}, 20),
        ({"replay.k2": 0}, {"gate"}, {"gate", "pmr", "ewc"}, 16),
        ({"moe.enabled": False}, set(), {"pmr"}, 20),  # no adapter: EWC has nothing to keep
        ({"moe.enabled": False, "moe.linear_fallback": True}, set(), {"pmr", "ewc"}, 20),
        ({"method": "cmcm"}, {"gate"}, {"gate", "pmr", "ewc"}, 20),
        ({"method": "turn", "comet": False}, set(), set(), 16),
        ({"method": "turn", "comet": False, "loss.add_cpc": True}, {"cpc"}, {"cpc"}, 16),
        ({"method": "cmcm", "comet": False, "loss.add_cpc": True}, {"cpc"}, {"cpc"}, 16),
    ],
)
def test_switches_do_what_they_say(
    flat: dict[str, Any], stage1: set[str], stage2: set[str], size: int
) -> None:
    result, rows = _run2(**flat)
    cfg = tiny_cfg(**flat)
    base = set(METHOD_LOSSES[cfg.method])
    assert _losses(rows, "a-t") == base | stage1
    assert _losses(rows, "b-t") == base | stage2
    model = result.model
    assert model.codebook_size == size
    names = [n for n, _ in model.named_parameters()]
    if not cfg.comet or not (cfg.moe.enabled or cfg.moe.linear_fallback):
        assert model.adapter is None and not any(n.startswith("adapter.") for n in names)
    elif not cfg.moe.enabled:
        assert isinstance(model.adapter, LinearAdapter) and not any("router" in n for n in names)
    else:
        assert isinstance(model.adapter, MoEAdapter) and any("router" in n for n in names)
    has_pseudo = model.cpc is not None and PSEUDO_STREAM in model.cpc.streams
    assert has_pseudo == (cfg.comet and cfg.replay.enabled)
    if cfg.loss.gate == 0.0:
        assert "gate" not in model.active


def test_specific_layers_off_and_expert_count() -> None:
    result, _ = _run2(**{"moe.specific_layers": False, "moe.num_experts": 3})
    names = [n for n, _ in result.model.named_parameters()]
    assert (
        not any(n.startswith("adapter.specific.") for n in names)
        and result.model.adapter.num_experts == 3
    )
    with_sl, _ = _run2()
    assert {n for n, _ in with_sl.model.named_parameters() if ".specific." in n} >= {
        "adapter.specific.a.weight", "adapter.specific.b.weight", "adapter.specific.t.weight"
    }  # fmt: skip


def test_ewc_state_follows_the_switches(tmp_path: Path) -> None:
    cfg = tiny_cfg(**{"data.stages": STAGES[:2]})
    run_continual(cfg, out_dir=tmp_path / "on", benchmark=bench(STAGES[:2]))
    state = ckpt.load(tmp_path / "on" / "checkpoint.pt")
    assert not cfg.ewc.mediator
    assert int(state["ewc"]["consolidations"]) == 2  # after each stage, while its data exists
    assert any("specific%2Eb" in k for k in state["ewc"])  # b's specific layers were added
    off = cfg.override({"ewc.enabled": False})
    run_continual(off, out_dir=tmp_path / "off", benchmark=bench(STAGES[:2]))
    assert ckpt.load(tmp_path / "off" / "checkpoint.pt")["ewc"] is None
    keys = state["ewc"]  # default: the paper's scope, the adapter only
    assert not any("encoders" in k for k in keys) and any("adapter" in k for k in keys)
    ours = cfg.override({"ewc.mediator": True})  # our extension: the mediator's encoder too
    run_continual(ours, out_dir=tmp_path / "ours", benchmark=bench(STAGES[:2]))
    keys = ckpt.load(tmp_path / "ours" / "checkpoint.pt")["ewc"]
    assert any("encoders%2Esemantic%2Et%2E" in k for k in keys)
    assert not any("encoders%2Esemantic%2Ea" in k for k in keys)


def test_every_sweep_grid_key_is_a_config_key() -> None:
    from search_spaces.grids import GRIDS, check_keys, get_grid

    flat = preset("default").to_flat()
    for name in GRIDS:
        arms = get_grid(name)
        check_keys(arms, flat)
        for overrides in arms.values():
            ExperimentConfig.from_flat({**flat, **overrides})  # valid values too
        assert arms, name


@pytest.mark.gpu
def test_runs_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    result = run_continual(tiny_cfg(**{"data.stages": STAGES[:2]}), benchmark=bench(STAGES[:2]),
                           device="cuda")  # fmt: skip
    assert result.model.codebook.embed.is_cuda and len(result.stages) == 2


@pytest.mark.parametrize(
    ("flat", "protected"),
    [({}, True), ({"codebook.protect_old": "off"}, False), ({"comet": False}, False),
     ({"comet": False, "codebook.protect_old": "on"}, True)],
)  # fmt: skip
def test_old_code_protection_follows_its_switch(flat: dict[str, Any], protected: bool) -> None:
    result, _ = _run2(**flat)
    cb = result.model.codebook
    first = 16  # the stage-1 codebook size of tiny_cfg
    if protected:  # later stages never re-seed a code of an earlier stage
        assert int(cb.reset_start) >= first
    else:
        assert int(cb.reset_start) == 0
