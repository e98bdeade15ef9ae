"""Downstream evaluation: metric functions on hand-made inputs, head sanity, and the runner."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from comet_model.data.types import DownstreamSets, Sequences
from comet_model.eval.downstream import evaluate_downstream
from comet_model.eval.heads import (
    clip_labels,
    cross_modal_classification,
    f1_from_predictions,
    fit_head,
    fit_heads,
    localisation_f1,
)
from comet_model.eval.retrieval import ranks_from_similarity, retrieval_both, retrieval_recall
from comet_model.eval.usage import codebook_usage, usage_matrix

BG, C, D = 10, 11, 16  # background class, classes incl. background, code dim
HEAD = {"epochs": 30, "lr": 3e-2, "batch_size": 64}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny heads run several times slower with two threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ave_labels(n: int, t: int, g: torch.Generator) -> Tensor:
    """One digit over a contiguous span of 2..t steps, background elsewhere: (n, t)."""
    cls = torch.randint(0, BG, (n, 1), generator=g)
    length = torch.randint(2, t + 1, (n, 1), generator=g)
    start = (torch.rand(n, 1, generator=g) * (t - length + 1)).long()
    steps = torch.arange(t)[None]
    return torch.where((steps >= start) & (steps < start + length), cls, BG)


def _codes(labels: Tensor, protos: Tensor, noise: float, g: torch.Generator) -> Tensor:
    return protos[labels] + noise * torch.randn(*labels.shape, protos.shape[1], generator=g)


def test_ranks_are_pessimistic_on_ties() -> None:
    sim = torch.tensor(
        [
            [0.9, 0.9, 0.1, 0.0],  # tied with one other item -> rank 1
            [0.2, 0.5, 0.7, 0.5],  # one item ahead, one tied -> rank 2
            [0.3, 0.1, 0.8, 0.0],  # strictly best -> rank 0
            [0.4, 0.4, 0.4, 0.4],  # all tied -> last
        ]
    )
    assert ranks_from_similarity(sim).tolist() == [1, 2, 0, 3]


def test_retrieval_recall_hand_cases() -> None:
    eye = torch.eye(4)[:, None, :].expand(4, 3, 4)  # item i = e_i at every step
    assert retrieval_recall(eye, eye, ks=(1, 2)) == {"r1": 100.0, "r2": 100.0}
    # query i points between e_i and e_{i+1}: two gallery items tie with the match.
    query = (torch.eye(4) + torch.eye(4).roll(1, dims=1))[:, None, :]
    assert retrieval_recall(query, eye[:, :1], ks=(1, 2)) == {"r1": 0.0, "r2": 100.0}
    # A collapsed model (every vector identical) ranks every match last, not first.
    same = torch.ones(4, 3, 4)
    assert retrieval_recall(same, same, ks=(1, 3, 4)) == {"r1": 0.0, "r3": 0.0, "r4": 100.0}


def test_retrieval_ignores_masked_steps_and_both_directions() -> None:
    g = _gen(0)
    a, b = torch.randn(20, 4, 8, generator=g), torch.randn(20, 4, 8, generator=g)
    mask = torch.ones(20, 4, dtype=torch.bool)
    mask[:, 3] = False
    garbage = a.clone()
    garbage[:, 3] = 1e3
    base = retrieval_recall(a[:, :3], b)
    assert retrieval_recall(garbage, b, query_mask=mask) == pytest.approx(base)
    both = retrieval_both(a, b, names=("x", "y"))
    swapped = retrieval_both(b, a, names=("y", "x"))
    assert {k for k in both if k.endswith("/mean")} == {"x<->y/mean"}
    assert both["x->y/r5"] == swapped["x->y/r5"] and both["y->x/r1"] == swapped["y->x/r1"]
    six = [both[f"{d}/r{k}"] for d in ("x->y", "y->x") for k in (1, 5, 10)]
    assert both["x<->y/mean"] == pytest.approx(sum(six) / 6)


def test_codebook_usage_hand_counts() -> None:
    idx = {
        "a": torch.tensor([[0, 1, 1]]),
        "b": torch.tensor([[1, 2, 2]]),
        "c": torch.tensor([[1, 2, 3]]),
    }
    u = usage_matrix(idx, 6)
    assert u.tolist() == [[1, 0, 0], [2, 1, 1], [0, 2, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    out = codebook_usage(idx, 6)
    # code 0: a; code 1: a, b, c; code 2: b, c; code 3: c; codes 4, 5: unused
    assert [out[f"codes_{j}"] for j in ("0", "1", "2", "3plus")] == [2.0, 2.0, 1.0, 1.0]
    h = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert out["perplexity/a"] == pytest.approx(math.exp(h))
    pooled = torch.tensor([1.0, 4.0, 3.0, 1.0]) / 9
    assert out["perplexity"] == pytest.approx(math.exp(-(pooled * pooled.log()).sum().item()))
    # uniform over the codes used -> perplexity = number of codes used
    assert codebook_usage({"d": torch.tensor([[5, 2, 0, 3]])}, 6)["perplexity"] == pytest.approx(4)
    masked = usage_matrix(idx, 6, masks={"a": torch.tensor([[True, False, False]])})
    assert masked[:, 0].tolist() == [1, 0, 0, 0, 0, 0] and masked[:, 1:].equal(u[:, 1:])
    with pytest.raises(ValueError):
        usage_matrix({"a": torch.tensor([[6]])}, 6)


def test_f1_from_predictions_hand_values() -> None:
    pred = torch.tensor([[1, 0, 1], [0, 1, 0]]).bool()
    target = torch.tensor([[1, 0, 0], [0, 0, 1]]).bool()
    out = f1_from_predictions(pred, target)  # TP 1, 3 predicted, 2 true
    assert out["precision"] == pytest.approx(100 / 3)
    assert out["recall"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(40.0)  # 2 * (1/3) * (1/2) / (1/3 + 1/2)
    nothing = f1_from_predictions(torch.zeros(2, 3, dtype=torch.bool), target)
    assert nothing == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_clip_labels_hand_values() -> None:
    labels = torch.tensor([[BG, 3, 3, BG], [BG] * 4, [2, 5, 5, 2], [-1] * 4, [BG, 7, BG, 4]])
    assert clip_labels(labels, None, C, BG).tolist() == [3, BG, 2, -1, 4]
    mask = torch.tensor([[True] * 4] * 4 + [[True, True, True, False]])
    assert clip_labels(labels, mask, C, BG)[4].item() == 7


def _separable(seed: int, n: int = 300, t: int = 6, noise: float = 0.2):
    g = _gen(seed)
    protos = torch.randn(C, D, generator=_gen(99))
    labels = _ave_labels(n, t, g)
    return _codes(labels, protos, noise, g), labels


def test_classification_head_learns_separable_codes_not_random_labels() -> None:
    (xa, ya), (xb, yb) = _separable(1), _separable(2)
    good = cross_modal_classification(
        xa, ya, xb, yb, num_classes=C, background_class=BG, generator=_gen(0), **HEAD
    )
    assert good["acc"] > 95 and good["step_acc"] > 95
    shuffled = ya[torch.randperm(len(ya), generator=_gen(3))]  # labels unrelated to codes
    bad = cross_modal_classification(
        xa, shuffled, xb, yb, num_classes=C, background_class=BG, generator=_gen(0), **HEAD
    )
    assert bad["acc"] < 30  # chance is 10 %


def test_cross_modal_transfer_needs_matching_codes() -> None:
    (xa, ya), (_, yb) = _separable(1), _separable(2)
    xb = _codes(yb, torch.randn(C, D, generator=_gen(99)), 0.0, _gen(0))  # B's codes = A's codes
    same = cross_modal_classification(
        xa, ya, xb, yb, num_classes=C, background_class=BG, generator=_gen(0), **HEAD
    )
    perm = torch.randperm(len(xb), generator=_gen(4))
    moved = cross_modal_classification(
        xa, ya, xb[perm], yb, num_classes=C, background_class=BG, generator=_gen(0), **HEAD
    )
    assert same["acc"] > 95 and moved["acc"] < 30
    loc_same = localisation_f1(xa, ya, xb, yb, num_classes=C, generator=_gen(0), **HEAD)
    loc_moved = localisation_f1(xa, ya, xb[perm], yb, num_classes=C, generator=_gen(0), **HEAD)
    assert loc_same["f1"] > 95 and loc_moved["f1"] < 40  # one class per step: about 21


def test_heads_are_seeded_masked_and_leave_global_rng_alone() -> None:
    (xa, ya), (xb, yb) = _separable(1, noise=1.5), _separable(2, noise=1.5)
    mask = torch.ones(ya.shape, dtype=torch.bool)
    mask[:, -1] = False
    ya_m = torch.where(mask, ya, BG)  # a masked step may hold any label
    junk = xa.clone()
    junk[:, -1] = 50.0
    state = torch.get_rng_state()
    kw = {"num_classes": C, "background_class": BG, "train_mask": mask, **HEAD}
    r1 = cross_modal_classification(xa, ya_m, xb, yb, generator=_gen(5), **kw)
    r2 = cross_modal_classification(junk, ya, xb, yb, generator=_gen(5), **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert r1 == r2


class _FakeModel(nn.Module):
    """quantize = nearest code of a fixed codebook; records the mode of every call."""

    def __init__(self, codebook: Tensor) -> None:
        super().__init__()
        self.register_buffer("codebook", codebook)
        self.proj = nn.Linear(2, 2)  # a submodule whose own flag must survive
        self.calls: list[tuple[str, bool, bool]] = []

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    def quantize(self, modality: str, x: Tensor, mask: Tensor | None = None):
        self.calls.append((modality, self.training, torch.is_grad_enabled()))
        idx = torch.cdist(x, self.codebook.expand(len(x), -1, -1)).argmin(-1)  # (N, T)
        return self.codebook[idx], idx


def _sets(mods: tuple[str, ...], noise: float) -> DownstreamSets:
    g = _gen(7)
    protos = torch.randn(C, D, generator=_gen(99)) * 2

    def seqs(labels: Tensor) -> Sequences:
        return Sequences({m: _codes(labels, protos, noise, g) for m in mods}, labels)

    multi = lambda n, t: torch.randint(0, C, (n, t), generator=g)  # noqa: E731
    return DownstreamSets(
        ave_train=seqs(_ave_labels(200, 6, g)),
        ave_test=seqs(_ave_labels(100, 6, g)),
        avvp_train=seqs(multi(200, 6)),
        avvp_test=seqs(multi(100, 6)),
        retrieval=seqs(multi(60, 4)),
    )


RUN = {"num_classes": C, "background_class": BG, "head_epochs": 20, "head_batch": 32}


@pytest.mark.parametrize("training", [True, False])
def test_runner_keys_modes_and_caching(training: bool) -> None:
    mods = ("video", "audio", "text")
    model = _FakeModel(torch.cat([torch.randn(C, D, generator=_gen(99)) * 2, torch.zeros(5, D)]))
    model.train(training)
    model.proj.train(not training)
    out = evaluate_downstream(
        model,
        _sets(mods, 0.3),
        modalities=mods,
        pairs=[("video", "audio")],
        retrieval_pairs=[("video", "text")],
        generator=_gen(0),
        **RUN,
    )
    assert model.training is training and model.proj.training is (not training)
    assert all(not train and not grad for _, train, grad in model.calls)
    assert len(model.calls) == 3 * 3 + 2  # three test sets x 3 modalities + 2 training sets
    va = "ave/video->audio"
    expected = {f"{va}/acc", f"{va}/step_acc", "retrieval/video<->text/mean"}
    expected |= {f"{t}/video->audio/{k}" for t in ("avvp", "ave_avvp") for k in ("f1", "recall")}
    expected |= {f"retrieval/{d}/r{k}" for d in ("video->text", "text->video") for k in (1, 5, 10)}
    expected |= {f"usage/{k}" for k in ("codes_0", "codes_1", "codes_2", "codes_3plus")}
    expected |= {"usage/perplexity"} | {f"usage/perplexity/{m}" for m in mods}
    assert expected <= set(out) and all(math.isfinite(v) for v in out.values())
    assert out[f"{va}/acc"] > 90 and out["avvp/video->audio/f1"] > 90  # codes carry the labels
    assert out["retrieval/video->text/r10"] > 50
    assert out["usage/codes_3plus"] == C and out["usage/codes_0"] == 5


def test_runner_is_deterministic_and_order_independent() -> None:
    mods = ("video", "audio")
    sets = _sets(mods, 2.0)
    model = _FakeModel(torch.randn(24, D, generator=_gen(98)) * 2)
    one = evaluate_downstream(model, sets, modalities=mods, generator=_gen(3), **RUN)
    two = evaluate_downstream(model, sets, modalities=mods, generator=_gen(3), **RUN)
    assert one == two
    assert set(one) >= {"ave/audio->video/acc", "ave/video->audio/acc"}  # default: both ways
    alone = evaluate_downstream(
        model, sets, modalities=mods, pairs=[("audio", "video")], generator=_gen(3), **RUN
    )
    assert alone["ave/audio->video/acc"] == one["ave/audio->video/acc"]


def test_runner_collapsed_model_scores_nothing() -> None:
    mods = ("video", "audio")
    model = _FakeModel(torch.ones(8, D))  # every code identical: index 0 always wins
    out = evaluate_downstream(model, _sets(mods, 0.3), modalities=mods, generator=_gen(0), **RUN)
    assert out["retrieval/video->audio/r1"] == 0.0 and out["retrieval/video<->audio/mean"] == 0.0
    assert out["usage/codes_2"] == 1 and out["usage/perplexity"] == pytest.approx(1.0)
    assert out["ave/video->audio/acc"] < 30


def test_runner_rejects_missing_modality() -> None:
    model = _FakeModel(torch.randn(8, D, generator=_gen(0)))
    with pytest.raises(ValueError, match="speech"):
        evaluate_downstream(
            model, _sets(("video",), 0.3), modalities=("video", "speech"), generator=_gen(0), **RUN
        )


@pytest.mark.parametrize("clip", [True, False])
def test_heads_trained_side_by_side_equal_heads_trained_alone(clip: bool) -> None:
    """fit_heads is S independent fit_head runs in one batched model: same init, same shuffles
    (each head its own generator), so the same weights up to float summation order."""
    g = _gen(5)
    n, t, c = 40, 6, 4
    labels = torch.randint(0, c, (n, t), generator=g)
    labels[0, 2] = -1  # an unlabelled step
    items = [
        (torch.randn(n, t, D, generator=g) + 0.5 * labels[..., None].float(), labels, None),
        (torch.randn(n, t, D, generator=g), labels, torch.rand(n, t, generator=g) > 0.2),
    ]
    kw = {"clip": clip, "num_classes": c, "background_class": None, "epochs": 3, "lr": 1e-2,
          "batch_size": 16}  # fmt: skip
    together = fit_heads(items, generators=[_gen(11), _gen(12)], **kw)
    alone = [fit_head(x, y, mask=k, generator=_gen(11 + i), **kw)
             for i, (x, y, k) in enumerate(items)]  # fmt: skip
    for a, b in zip(together, alone, strict=True):
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5), name
