"""Head tasks with their own label spaces, multi-hot localisation and AVE -> AVVP relabelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comet_model.data import DownstreamSets, Sequences, TaskClasses
from comet_model.data.tasks import head_tasks, step_targets
from comet_model.eval.downstream import evaluate_downstream
from comet_model.eval.heads import localisation_f1


def _codes(labels: torch.Tensor, dim: int = 6, seed: int = 0) -> torch.Tensor:
    """Codes that carry the (first) class of each step, plus noise."""
    g = torch.Generator().manual_seed(seed)
    cls = labels if labels.ndim == 2 else labels.float().argmax(-1)
    protos = torch.randn(32, dim, generator=torch.Generator().manual_seed(9))
    return protos[cls.clamp_min(0)] + 0.1 * torch.randn(*cls.shape, dim, generator=g)


def test_multi_hot_labels_of_one_class_per_step_equal_class_ids() -> None:
    """The same events as ids [N, T] or one-hot [N, T, C] give the same head and F1."""
    g = torch.Generator().manual_seed(0)
    y_tr, y_te = (
        torch.randint(0, 5, (40, 6), generator=g),
        torch.randint(0, 5, (30, 6), generator=g),
    )
    c_tr, c_te = _codes(y_tr), _codes(y_te, seed=1)
    kw = {"num_classes": 5, "epochs": 3, "lr": 1e-2, "batch_size": 16}
    ids = localisation_f1(c_tr, y_tr, c_te, y_te, generator=torch.Generator().manual_seed(3), **kw)
    hot = localisation_f1(
        c_tr,
        F.one_hot(y_tr, 5).bool(),
        c_te,
        F.one_hot(y_te, 5).bool(),
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    assert ids == hot and ids["f1"] > 0


def test_multi_hot_steps_score_every_event() -> None:
    """Two events in one step: a head predicting only one of them gets recall 50 %."""
    y = torch.zeros(1, 1, 3, dtype=torch.bool)
    y[0, 0, :2] = True  # classes 0 and 1 at once
    assert step_targets(y, 3).tolist() == [[[1.0, 1.0, 0.0]]]
    ids = torch.tensor([[2, -1]])
    assert step_targets(ids, 3).tolist() == [[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]


def _sets(shared=None, classes=None, retrieval=True) -> DownstreamSets:
    g = torch.Generator().manual_seed(0)
    ave_y = torch.full((12, 4), 4)  # AVE: events 0-3, background 4
    ave_y[:, 1:3] = torch.arange(12)[:, None] % 4
    avvp_y = torch.zeros(10, 4, 4, dtype=torch.bool)  # AVVP: events 0-2, background 3
    avvp_y[:, :2, 0] = True
    avvp_y[::2, 1:, 2] = True
    avvp_y[..., 3] = ~avvp_y[..., :3].any(-1)

    def seqs(y: torch.Tensor, own: bool) -> Sequences:
        feats = {m: _codes(y, seed=i) for i, m in enumerate(("a", "b"))}
        if not own:
            return Sequences(feats, labels=y)
        return Sequences(feats, modality_labels={"a": y, "b": y})

    ret = Sequences({m: torch.randn(8, 4, 6, generator=g) for m in ("a", "b")})
    return DownstreamSets(
        ave_train=seqs(ave_y, False),
        ave_test=seqs(ave_y, False),
        avvp_train=seqs(avvp_y, True),
        avvp_test=seqs(avvp_y, True),
        retrieval=ret if retrieval else None,
        classes=classes or {},
        ave_avvp_shared=shared,
    )


def test_ave_to_avvp_keeps_shared_events_and_relabels_both_sides() -> None:
    # AVE 1 ~ AVVP 2 and AVE 3 ~ AVVP 0: shared space [AVVP 0, AVVP 2, background]
    classes = {"ave": TaskClasses(5, 4), "avvp": TaskClasses(4, 3)}
    sets = _sets(shared=((1, 2), (3, 0)), classes=classes)
    tasks = {t.name: t for t in head_tasks(sets, 0, None)}
    assert (tasks["ave"].num_classes, tasks["avvp"].num_classes) == (5, 4)
    cross = tasks["ave_avvp"]
    assert (cross.num_classes, cross.background_class) == (3, 2)
    codes = torch.zeros(12, 4, 6)
    c, y, _ = cross.select((codes, None, None), sets, "train", "a")
    ave_y = sets.ave_train.labels
    keep = [i for i in range(12) if int(ave_y[i, 1]) in (1, 3)]  # clips of a shared event
    assert c.shape[0] == len(keep) == 6
    expected = torch.full((6, 4), 2)
    expected[:, 1:3] = torch.tensor([1 if int(ave_y[i, 1]) == 1 else 0 for i in keep])[:, None]
    assert torch.equal(y, expected)
    c, y, _ = cross.select((torch.zeros(10, 4, 6), None, None), sets, "test", "b")
    assert y.shape == (10, 4, 3) and c.shape[0] == 10  # every AVVP clip has AVVP event 0
    avvp_y = sets.avvp_test.labels_for("b")
    assert torch.equal(y[..., 0], avvp_y[..., 0]) and torch.equal(y[..., 1], avvp_y[..., 2])
    assert torch.equal(y[..., 2], ~(avvp_y[..., 0] | avvp_y[..., 2]))


def test_evaluation_with_task_label_spaces_and_no_retrieval() -> None:
    from comet_model.config import preset
    from comet_model.nn.model import CometModel

    cfg = preset("smoke").override({"model.dim": 8, "model.heads": 2, "model.ffn": 16})
    model = CometModel.from_config(cfg, {"a": 6, "b": 6}).eval()
    classes = {"ave": TaskClasses(5, 4), "avvp": TaskClasses(4, 3)}
    kw = {
        "modalities": ["a", "b"],
        "num_classes": 0,
        "background_class": None,
        "head_epochs": 1,
        "generator": torch.Generator().manual_seed(0),
    }
    out = evaluate_downstream(model, _sets(((1, 2),), classes, retrieval=False), **kw)
    assert {k.split("/")[0] for k in out} == {"ave", "avvp", "ave_avvp", "usage"}
    assert all(k in out for k in ("ave/a->b/acc", "avvp/b->a/f1", "ave_avvp/a->b/f1"))
    kw["generator"] = torch.Generator().manual_seed(0)
    none = evaluate_downstream(model, _sets((), classes, retrieval=False), **kw)
    assert not any(k.startswith("ave_avvp") for k in none)  # no shared class: no AVE -> AVVP
    assert none["ave/a->b/acc"] == out["ave/a->b/acc"]  # the other tasks do not change
