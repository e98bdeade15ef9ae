"""Digits-world and synthetic sequences: runs, pools, pairing, class plans, downstream sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comet_model.data import (
    DataError,
    digits_benchmark,
    load_bank,
    make_benchmark,
    plan_digits,
    synthetic_benchmark,
)
from comet_model.data.labels import run_labels

SMALL = dict(
    train_sequences=200,
    val_sequences=40,
    downstream_sizes={"ave_train": 60, "ave_test": 50, "avvp_train": 60, "avvp_test": 50},
    retrieval_items=80,
)


def _segments(row: np.ndarray) -> list[tuple[int, int]]:
    """(class, length) of the maximal constant stretches of a label row."""
    out, start = [], 0
    for t in range(1, len(row) + 1):
        if t == len(row) or row[t] != row[start]:
            out.append((int(row[start]), t - start))
            start = t
    return out


@pytest.fixture(scope="module")
def plan():
    return plan_digits(**SMALL, class_plan="overlap", seed=3)


def test_runs_last_one_to_four_steps_and_adjacent_runs_differ() -> None:
    rng = np.random.default_rng(0)
    labels = run_labels(500, 12, range(10), 10, 0.25, rng)
    lengths = [n for row in labels for _, n in _segments(row)]
    assert max(lengths) <= 4 and min(lengths) >= 1
    interior = [n for row in labels for _, n in _segments(row)[1:-1]]
    assert set(interior) == {1, 2, 3, 4}  # every run length occurs
    runs = [c for row in labels for c, _ in _segments(row)]
    assert 0.18 < np.mean(np.asarray(runs) == 10) < 0.32  # about a quarter background runs
    single = run_labels(200, 8, [3], 10, 0.0, rng)  # one digit: alternates with background
    assert all(n <= 4 for row in single for _, n in _segments(row))


def test_neighbouring_steps_of_a_run_use_different_instances(plan) -> None:
    sets = [s.train for s in plan.stages] + [s.val for s in plan.stages]
    sets += list(plan.downstream.values())
    for seqs in sets:
        same = seqs.labels[:, 1:] == seqs.labels[:, :-1]
        for rows in seqs.rows.values():
            assert same.any()
            assert (rows[:, 1:][same] != rows[:, :-1][same]).all()


def test_paired_modalities_share_the_step_labels(plan) -> None:
    bank = load_bank()
    for seqs in [plan.stages[0].train, plan.downstream["ave_test"], plan.downstream["retrieval"]]:
        for m, rows in seqs.rows.items():
            assert (bank[m].labels[rows] == seqs.labels).all(), m
        a, b = list(seqs.rows.values())[:2]
        assert (a != b).any()  # instances are drawn independently per modality


def test_pools_train_val_and_test_are_separate(plan) -> None:
    bank = load_bank()
    for stage in plan.stages:
        for m in stage.modalities:
            train_rows, val_rows = stage.train.rows[m], stage.val.rows[m]
            assert (bank[m].split[train_rows] == 0).all() and (bank[m].split[val_rows] == 0).all()
            assert not set(train_rows.ravel()) & set(val_rows.ravel())
    for key in ("ave_test", "avvp_test", "retrieval"):
        for m, rows in plan.downstream[key].rows.items():
            assert (bank[m].split[rows] == 1).all(), (key, m)
    for key in ("ave_train", "avvp_train"):
        for m, rows in plan.downstream[key].rows.items():
            assert (bank[m].split[rows] == 0).all(), (key, m)


def test_overlap_class_plan(plan) -> None:
    allowed = [set(range(0, 8)), set(range(2, 10)), set(range(10))]
    for stage, digits in zip(plan.stages, allowed, strict=True):
        for seqs in (stage.train, stage.val):
            seen = set(np.unique(seqs.labels).tolist())
            assert seen == digits | {10}, stage.name
    full = plan_digits(**SMALL, seed=3)
    for stage in full.stages:
        assert set(np.unique(stage.train.labels).tolist()) == set(range(11))


def test_ave_sets_have_exactly_one_contiguous_event(plan) -> None:
    for key in ("ave_train", "ave_test"):
        labels = plan.downstream[key].labels
        assert labels.shape[1] == 10
        for row in labels:
            events = [(c, n) for c, n in _segments(row) if c != 10]
            assert len(events) == 1 and 2 <= events[0][1] <= 9
        assert len(np.unique(labels[labels != 10])) == 10  # every digit occurs


def test_avvp_sets_have_several_events(plan) -> None:
    for key in ("avvp_train", "avvp_test"):
        for row in plan.downstream[key].labels:
            assert len({c for c in row.tolist() if c != 10}) >= 2


def test_retrieval_items_are_distinct_with_one_step_hard_negatives(plan) -> None:
    labels = plan.downstream["retrieval"].labels
    assert labels.shape == (80, 5)
    assert len(np.unique(labels, axis=0)) == len(labels)
    diff = (labels[:, None, :] != labels[None, :, :]).sum(-1)  # Hamming distances
    has_neighbour = (diff == 1).any(axis=1)
    assert has_neighbour.mean() > 0.5


def test_benchmark_features_are_the_bank_rows() -> None:
    bank = load_bank()
    bench = digits_benchmark(**SMALL, seed=5)
    plan = plan_digits(**SMALL, seed=5)
    st, sp = bench.stages[1], plan.stages[1]
    assert st.name == "audio-text" and st.modalities == ("audio", "text")
    assert st.mediator == "text"
    for m in st.modalities:
        x = st.train.features[m]
        assert x.dtype == torch.float32 and x.shape == (200, 10, bank[m].dim)
        expected = torch.from_numpy(bank[m].features[sp.train.rows[m]].astype(np.float32))
        assert torch.equal(x, expected)
    assert torch.equal(st.train.labels, torch.from_numpy(sp.train.labels))
    st.train.check("stage")
    down = bench.downstream
    for seqs in (down.ave_train, down.ave_test, down.avvp_train, down.avvp_test, down.retrieval):
        assert set(seqs.modalities) == {"video", "audio", "image", "text"}
        seqs.check("downstream")
    assert bench.num_classes == 11 and bench.background_class == 10
    assert dict(bench.feature_dims) == {m: bank[m].dim for m in bank.modalities}


def test_seeds_reproduce_and_differ() -> None:
    a, b, c = (plan_digits(**SMALL, seed=s) for s in (1, 1, 2))
    for x, y in ((a, b), (a, c)):
        same = np.array_equal(x.stages[0].train.labels, y.stages[0].train.labels) and all(
            np.array_equal(x.stages[0].train.rows[m], y.stages[0].train.rows[m])
            for m in x.stages[0].modalities
        )
        assert same == (x is a and y is b)
    assert not np.array_equal(a.downstream["retrieval"].labels, c.downstream["retrieval"].labels)


def test_downstream_sets_do_not_depend_on_the_stage_list() -> None:
    a = plan_digits(**SMALL, seed=4)
    b = plan_digits(**{**SMALL, "train_sequences": 50}, stages=("audio-image",), seed=4)
    for key in a.downstream:
        assert np.array_equal(a.downstream[key].labels, b.downstream[key].labels)


def test_stage_names_and_mediator() -> None:
    one = plan_digits(**SMALL, stages=("video-audio",))
    assert one.mediator is None and one.stages[0].modalities == ("video", "audio")
    two = plan_digits(**SMALL, stages=("video-audio", "image-audio"))
    assert two.mediator == "audio"
    none = plan_digits(**SMALL, stages=("video-text", "audio-image"))
    assert none.mediator is None
    for bad in ("video", "video-video", "video-smell"):
        with pytest.raises(DataError, match="stage"):
            plan_digits(**SMALL, stages=(bad,))
    with pytest.raises(DataError, match="class plan"):
        plan_digits(**SMALL, class_plan="half")
    explicit = plan_digits(**SMALL, stages=("video-text",), class_plan=[[1, 2]])
    assert set(np.unique(explicit.stages[0].train.labels).tolist()) == {1, 2, 10}


def test_synthetic_benchmark_is_small_deterministic_and_learnable() -> None:
    a = synthetic_benchmark(seed=0)
    b = synthetic_benchmark(seed=0)
    c = synthetic_benchmark(seed=1)
    assert [s.name for s in a.stages] == ["a-t", "b-t", "c-t"] and a.stages[0].mediator == "t"
    assert a.num_classes == 4 and a.background_class == 3
    x = a.stages[0].train
    assert x.features["a"].shape == (64, 6, 8) and x.labels.shape == (64, 6)
    assert torch.equal(x.features["a"], b.stages[0].train.features["a"])
    assert not torch.equal(x.features["a"], c.stages[0].train.features["a"])
    for seqs in (a.downstream.ave_test, a.downstream.avvp_test, a.downstream.retrieval):
        assert set(seqs.modalities) == {"a", "b", "c", "t"}
        seqs.check("synthetic")
    # class means of the train set classify the val set far above chance in every modality
    for stage in a.stages:
        for m in stage.modalities:
            xt, yt = stage.train.features[m].reshape(-1, 8), stage.train.labels.reshape(-1)
            means = torch.stack([xt[yt == k].mean(0) for k in range(4)])
            xv, yv = stage.val.features[m].reshape(-1, 8), stage.val.labels.reshape(-1)
            acc = (torch.cdist(xv, means).argmin(1) == yv).float().mean()
            assert acc > 0.8, (stage.name, m, float(acc))


def test_make_benchmark_dispatches() -> None:
    s = make_benchmark("synthetic", stages=("x-y",), steps=3)
    assert s.stages[0].train.num_steps == 3
    d = make_benchmark("digits", **SMALL, stages=("image-text",))
    assert d.stages[0].modalities == ("image", "text")
    with pytest.raises(DataError, match="unknown data source"):
        make_benchmark("imagenet")
    with pytest.raises(DataError, match="plan"):
        make_benchmark("plan")


def test_validation_sets_never_use_test_instances() -> None:
    """The validation downstream sets (model selection) draw only from training pools, their
    scored sets only from the held-out tenth that no stage sequence uses."""
    bank = load_bank()
    plan = plan_digits(stages=("video-text", "audio-text", "image-text"), train_sequences=64,
                       val_sequences=16, seed=1)  # fmt: skip
    stage_rows = {m: set() for m in bank.modalities}
    for s in plan.stages:
        for m in s.modalities:
            stage_rows[m] |= set(s.train.rows[m].ravel())
    for key, ds in plan.validation.items():
        for m, rows in ds.rows.items():
            assert (bank[m].split[rows] == 0).all(), (key, m)  # never the test pool
            if key in ("ave_test", "avvp_test", "retrieval"):
                assert not set(rows.ravel()) & stage_rows[m], (key, m)  # held-out instances
    for key, ds in plan.downstream.items():  # the test sets' scored sets: test pool only
        if key in ("ave_test", "avvp_test", "retrieval"):
            assert all((bank[m].split[rows] == 1).all() for m, rows in ds.rows.items()), key
