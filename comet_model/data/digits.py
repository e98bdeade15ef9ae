"""The digits world: continual stages and downstream sets drawn from the bank (spec section 7).

A sequence has T steps; each step shows one class (a digit 0-9 or background, class 10). Steps
come in runs: a class is held for 1-4 consecutive steps, each step a different instance of it
(another recording, photo or word form), so neighbouring steps are correlated the way consecutive
seconds of a video are. Adjacent runs have different classes. Paired modalities share the step
labels but draw their instances independently.

Pools and splits:
- train sequences draw from each modality's train pool minus a held-out tenth of every class;
- val sequences draw only from that held-out tenth (so validation sees unseen instances of the
  train pool, never test data);
- downstream training sets (``ave_train``, ``avvp_train``) draw from the whole train pool;
- test sequences (``ave_test``, ``avvp_test``, ``retrieval``) draw only from the test pools.

The validation downstream sets (``Benchmark.validation``, for model selection) are the same
sets drawn from the train pool minus the held-out tenth (head training sets) and that tenth
(``ave_test``, ``avvp_test``, ``retrieval``), so settings are chosen without ever looking at
test-pool instances (the stage sequences are the same in both).

Class plans: ``"full"`` gives every stage all ten digits; ``"overlap"`` is the paper's partial
overlap: stage 1 digits 0-7, stage 2 digits 2-9, every later stage all digits (a single stage
gets all digits). An explicit list of digit lists (one per stage) is accepted too. Background
runs (about ``background_fraction`` of the runs) appear in every stage.

Downstream sets carry all four modalities (video, audio, image, text), paired by labels:
- AVE-like: one digit event over a contiguous span of 2..T-1 steps, the other steps background;
- AVVP-like: run sequences (as in training, all digits) with at least two distinct digits;
- retrieval: T = ``retrieval_steps`` test items in groups of four: a base sequence and three hard
  negatives that each differ from the base in exactly one step; all label sequences are
  distinct and the items are shuffled.

Everything is vectorised numpy on row indices into the bank; the features are gathered once at
the end (:func:`materialise`). :func:`plan_digits` exposes those row indices for inspection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from .bank import FeatureBank, load_bank
from .labels import ave_labels, avvp_labels, retrieval_labels, run_labels, stage_classes
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData

VAL_HOLDOUT = 0.1  # share of every class of every train pool reserved for val sequences
DEFAULT_DOWNSTREAM_SIZES: Mapping[str, int] = {
    "ave_train": 1000,
    "ave_test": 500,
    "avvp_train": 1000,
    "avvp_test": 500,
}
DOWNSTREAM_MODALITIES: tuple[str, ...] = ("video", "audio", "image", "text")


@dataclass(frozen=True)
class IndexedSequences:
    """Sequences before featurisation: per-step labels and, per modality, rows of its bank pool."""

    labels: np.ndarray  # int64 [N, T]
    rows: Mapping[str, np.ndarray]  # modality -> int64 [N, T] row index into bank[modality]


@dataclass(frozen=True)
class StagePlan:
    """One stage of the digits world as row indices."""

    name: str
    modalities: tuple[str, ...]
    classes: tuple[int, ...]  # digits of this stage (background always included)
    train: IndexedSequences
    val: IndexedSequences


@dataclass(frozen=True)
class DigitsPlan:
    """The whole digits benchmark as row indices (see :func:`plan_digits`)."""

    stages: tuple[StagePlan, ...]
    downstream: Mapping[
        str, IndexedSequences
    ]  # ave_train, ave_test, avvp_train, avvp_test, retrieval
    mediator: str | None
    validation: Mapping[str, IndexedSequences]  # the same sets from the held-out train tenth


def parse_stage(name: str, known: Sequence[str]) -> tuple[str, ...]:
    """``"video-text"`` -> ``("video", "text")``; at least two distinct known modality names."""
    mods = tuple(name.split("-"))
    unknown = [m for m in mods if m not in known]
    if unknown:
        raise DataError(f"stage '{name}': unknown modality {unknown[0]!r} (known: {list(known)})")
    if len(mods) < 2 or len(set(mods)) != len(mods):
        raise DataError(f"stage '{name}': needs at least two distinct modalities joined by '-'")
    return mods


def find_mediator(stage_modalities: Sequence[Sequence[str]]) -> str | None:
    """The modality shared by every stage (None for one stage or none shared).

    If several are shared, the second modality of the first stage wins when it is one of them
    (the paper's "(A, B), (C, B)" convention), else the first shared one in stage-1 order.
    """
    if len(stage_modalities) < 2:
        return None
    first = list(stage_modalities[0])
    common = [m for m in first if all(m in s for s in stage_modalities[1:])]
    if not common:
        return None
    if len(first) > 1 and first[1] in common:
        return first[1]
    return common[0]


def draw_rows(
    labels: np.ndarray, pool: Mapping[int, np.ndarray], rng: np.random.Generator, source: str
) -> np.ndarray:
    """Rows of a pool for every step: uniform per class, never the same row on consecutive
    steps of the same class (a class with a single instance repeats it). int64 [N, T]."""
    n, t = labels.shape
    num = int(max(max(pool), labels.max())) + 1
    sizes = np.zeros(num, dtype=np.int64)
    for c, rows in pool.items():
        sizes[c] = len(rows)
    missing = [int(c) for c in np.unique(labels) if sizes[c] == 0]
    if missing:
        raise DataError(f"{source}: no instances of class {missing[0]} in this pool")
    starts = np.zeros(num, dtype=np.int64)
    starts[1:] = np.cumsum(sizes)[:-1]
    flat = np.concatenate([np.asarray(pool.get(c, ()), dtype=np.int64) for c in range(num)])
    size = sizes[labels]  # (n, t)
    new_run = np.ones((n, t), dtype=bool)
    new_run[:, 1:] = labels[:, 1:] != labels[:, :-1]
    u = rng.random((n, t))
    first = np.floor(u * size).astype(np.int64)
    step = 1 + np.floor(u * np.maximum(size - 1, 0)).astype(np.int64)
    step = np.where(size > 1, step, 0)
    val = np.where(new_run, first, step)
    cum = np.cumsum(val, axis=1)
    base = np.maximum.accumulate(np.where(new_run, cum - val, -1), axis=1)  # cum is monotone
    pos = (cum - base) % size
    return flat[starts[labels] + pos]


def _pools(
    bank: FeatureBank, modality: str, split: int, rows_mask: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    pool = bank[modality]
    keep = pool.split == split
    if rows_mask is not None:
        keep &= rows_mask
    rows = np.flatnonzero(keep)
    labels = pool.labels[rows]
    return {int(c): rows[labels == c] for c in np.unique(labels)}


def _holdout_masks(bank: FeatureBank, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per modality: True for train-pool rows held out for val (a tenth of each class, >= 1)."""
    out = {}
    for m, pool in bank.modalities.items():
        mask = np.zeros(len(pool), dtype=bool)
        for c in np.unique(pool.labels):
            rows = np.flatnonzero((pool.split == 0) & (pool.labels == c))
            if len(rows) >= 3:
                k = max(1, round(VAL_HOLDOUT * len(rows)))
                mask[rng.choice(rows, k, replace=False)] = True
        out[m] = mask
    return out


def _indexed(
    labels: np.ndarray,
    pools: Mapping[str, Mapping[int, np.ndarray]],
    rng: np.random.Generator,
    what: str,
) -> IndexedSequences:
    return IndexedSequences(
        labels=labels,
        rows={m: draw_rows(labels, p, rng, f"digits {what} ({m})") for m, p in pools.items()},
    )


@dataclass(frozen=True)
class DigitsSpec:
    """Every size and choice of the digits benchmark; the defaults are the config's ``data``
    section (one place for them).

    Args:
        stages: stage names "a-b" (or "a-b-c") over the bank's modalities, in training order.
        class_plan: "full", "overlap" or one digit list per stage.
        steps: T of the stage and AVE/AVVP sequences.
        downstream_sizes: overrides of ``DEFAULT_DOWNSTREAM_SIZES`` (ave_train, ave_test,
            avvp_train, avvp_test).
        retrieval_steps, retrieval_items: T and N of the retrieval set.
        background_fraction: share of background runs in stage sequences.
        seed: everything is a function of the seed; the downstream sets do not depend on the
            stage list, class plan or stage sizes.
    """

    stages: tuple[str, ...] = DataConfig.stages
    class_plan: str | Sequence[Sequence[int]] = DataConfig.class_plan
    steps: int = DataConfig.steps
    train_sequences: int = DataConfig.train_sequences
    val_sequences: int = DataConfig.val_sequences
    downstream_sizes: Mapping[str, int] | None = None
    retrieval_steps: int = 5
    retrieval_items: int = 500
    background_fraction: float = 0.25
    seed: int = DataConfig.seed

    def checked(self, bank: FeatureBank) -> tuple[list[tuple[str, ...]], dict[str, int]]:
        """The stages' modalities and the downstream sizes; raises DataError on a bad value."""
        if self.steps < 1 or self.retrieval_steps < 1:
            raise DataError("digits: steps and retrieval_steps must be >= 1")
        if self.train_sequences < 1 or self.val_sequences < 1:
            raise DataError("digits: train_sequences and val_sequences must be >= 1")
        if not self.stages:
            raise DataError("digits: at least one stage is needed")
        sizes = dict(DEFAULT_DOWNSTREAM_SIZES)
        unknown = set(self.downstream_sizes or {}) - set(sizes)
        if unknown:
            raise DataError(
                f"digits: unknown downstream set {sorted(unknown)[0]!r} (known: {list(sizes)})"
            )
        sizes.update(self.downstream_sizes or {})
        return [parse_stage(s, tuple(bank.modalities)) for s in self.stages], sizes


def _spec(spec: DigitsSpec | None, fields: Mapping[str, Any]) -> DigitsSpec:
    spec = replace(spec or DigitsSpec(), **fields)
    if isinstance(spec.stages, str):
        spec = replace(spec, stages=(spec.stages,))
    return replace(spec, stages=tuple(spec.stages))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _plan_stages(
    spec: DigitsSpec, bank: FeatureBank, stage_mods: list[tuple[str, ...]], fit_pools, val_pools
) -> list[StagePlan]:
    classes = stage_classes(spec.class_plan, len(spec.stages))
    bg, f = bank.background_class, spec.background_fraction
    plans = []
    for i, (name, mods, digits) in enumerate(zip(spec.stages, stage_mods, classes, strict=True)):
        r_train, r_val = _rng(spec.seed, 100 + i, 0), _rng(spec.seed, 100 + i, 1)
        tr = run_labels(spec.train_sequences, spec.steps, digits, bg, f, r_train)
        va = run_labels(spec.val_sequences, spec.steps, digits, bg, f, r_val)
        plans.append(
            StagePlan(
                name=name,
                modalities=mods,
                classes=tuple(digits),
                train=_indexed(tr, {m: fit_pools[m] for m in mods}, r_train, f"{name} train"),
                val=_indexed(va, {m: val_pools[m] for m in mods}, r_val, f"{name} val"),
            )
        )
    return plans


def _plan_downstream(
    spec: DigitsSpec, bank: FeatureBank, sizes: Mapping[str, int], train_pools, test_pools
) -> dict[str, IndexedSequences]:
    bg, steps = bank.background_class, spec.steps
    down_mods = [m for m in DOWNSTREAM_MODALITIES if m in bank.modalities]
    downstream = {}
    for k, key in enumerate(("ave_train", "ave_test", "avvp_train", "avvp_test")):
        pools = train_pools if key.endswith("train") else test_pools
        r = _rng(spec.seed, 10 + k)
        if key.startswith("ave"):
            lab = ave_labels(sizes[key], steps, bg, r)
        else:
            lab = avvp_labels(sizes[key], steps, bg, 0.3, r)
        downstream[key] = _indexed(lab, {m: pools[m] for m in down_mods}, r, key)
    r = _rng(spec.seed, 20)
    lab = retrieval_labels(
        spec.retrieval_items, spec.retrieval_steps, bg, spec.background_fraction, r
    )
    downstream["retrieval"] = _indexed(lab, {m: test_pools[m] for m in down_mods}, r, "retrieval")
    return downstream


def plan_digits(
    spec: DigitsSpec | None = None,
    *,
    bank: FeatureBank | str | os.PathLike[str] | None = None,
    **fields: Any,
) -> DigitsPlan:
    """Labels and bank rows of every set of :func:`digits_benchmark` (same arguments)."""
    bank = bank if isinstance(bank, FeatureBank) else load_bank(bank)
    spec = _spec(spec, fields)
    stage_mods, sizes = spec.checked(bank)
    known = tuple(bank.modalities)
    holdout = _holdout_masks(bank, _rng(spec.seed, 0))
    fit_pools = {m: _pools(bank, m, 0, ~holdout[m]) for m in known}
    val_pools = {m: _pools(bank, m, 0, holdout[m]) for m in known}
    train_pools = {m: _pools(bank, m, 0) for m in known}
    test_pools = {m: _pools(bank, m, 1) for m in known}
    stages = _plan_stages(spec, bank, stage_mods, fit_pools, val_pools)
    downstream = _plan_downstream(spec, bank, sizes, train_pools, test_pools)
    # model selection: heads on the train pools minus the held-out tenth, scored on that tenth;
    # never a test-pool instance (the same label draws as the test sets)
    validation = _plan_downstream(spec, bank, sizes, fit_pools, val_pools)
    return DigitsPlan(tuple(stages), downstream, find_mediator(stage_mods), validation)


def materialise(indexed: IndexedSequences, bank: FeatureBank) -> Sequences:
    """Gather the bank features of every row: float32 ``[N, T, d]`` per modality."""
    feats = {}
    for m, rows in indexed.rows.items():
        table = bank[m].tensor()  # (n_pool, d)
        flat = torch.from_numpy(rows.reshape(-1))
        feats[m] = table.index_select(0, flat).view(*rows.shape, table.shape[1])
    return Sequences(features=feats, labels=torch.from_numpy(indexed.labels))


def digits_benchmark(
    spec: DigitsSpec | None = None,
    *,
    bank: FeatureBank | str | os.PathLike[str] | None = None,
    **fields: Any,
) -> Benchmark:
    """The digits-world benchmark (spec section 7): stages, downstream sets and label space.

    ``spec`` (default :class:`DigitsSpec`) with any of its fields replaced by ``fields``;
    ``bank``: a loaded bank, a path, or None for the bank shipped with the package.
    """
    bank = bank if isinstance(bank, FeatureBank) else load_bank(bank)
    plan = plan_digits(spec, bank=bank, **fields)
    stage_data = tuple(
        StageData(
            name=s.name,
            modalities=s.modalities,
            train=materialise(s.train, bank),
            val=materialise(s.val, bank),
            mediator=plan.mediator,
        )
        for s in plan.stages
    )
    down = {k: materialise(v, bank) for k, v in plan.downstream.items()}
    val = {k: materialise(v, bank) for k, v in plan.validation.items()}
    return Benchmark(
        stages=stage_data,
        downstream=DownstreamSets(**down),
        validation=DownstreamSets(**val),
        feature_dims={m: bank[m].dim for m in bank.modalities},
        num_classes=bank.num_classes,
        background_class=bank.background_class,
        class_names=bank.class_names,
    )
