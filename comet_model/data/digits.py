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

With ``downstream_split="val"`` the downstream sets are for model selection instead: training
sets draw from the train pool minus the held-out tenth, the "test" sets (``ave_test``,
``avvp_test``, ``retrieval``) only from that held-out tenth, so settings can be chosen without
ever looking at test-pool instances (the stage sequences are the same in both modes).

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
from dataclasses import dataclass

import numpy as np
import torch

from .bank import FeatureBank, load_bank
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData

MAX_RUN = 4
VAL_HOLDOUT = 0.1  # share of every class of every train pool reserved for val sequences
RETRIEVAL_GROUP = 4  # a base item and its one-step hard negatives
DEFAULT_STAGES: tuple[str, ...] = ("video-text", "audio-text", "image-text")
DEFAULT_DOWNSTREAM_SIZES: Mapping[str, int] = {
    "ave_train": 1000,
    "ave_test": 500,
    "avvp_train": 1000,
    "avvp_test": 500,
}
DOWNSTREAM_MODALITIES: tuple[str, ...] = ("video", "audio", "image", "text")
_DIGITS = tuple(range(10))


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


def stage_classes(
    class_plan: str | Sequence[Sequence[int]], num_stages: int
) -> tuple[tuple[int, ...], ...]:
    """Digits of each stage under a class plan ("full", "overlap" or explicit lists)."""
    if isinstance(class_plan, str):
        if class_plan == "full":
            return tuple(_DIGITS for _ in range(num_stages))
        if class_plan == "overlap":
            if num_stages == 1:
                return (_DIGITS,)
            plan = [tuple(range(0, 8)), tuple(range(2, 10))]
            return tuple(plan[:num_stages]) + tuple(_DIGITS for _ in range(num_stages - 2))
        raise DataError(f"class plan '{class_plan}': expected 'full', 'overlap' or digit lists")
    plan = [tuple(int(c) for c in digits) for digits in class_plan]
    if len(plan) != num_stages:
        raise DataError(f"class plan: {len(plan)} digit lists for {num_stages} stages")
    for digits in plan:
        if not digits or any(not 0 <= c <= 9 for c in digits) or len(set(digits)) != len(digits):
            raise DataError(
                f"class plan: {list(digits)} is not a non-empty list of distinct digits"
            )
    return tuple(plan)


def run_labels(
    n: int,
    steps: int,
    classes: Sequence[int],
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Label sequences made of runs of 1-4 steps; adjacent runs differ; int64 [n, steps].

    Background runs are never adjacent; a run is background with probability p = f / (1 - f)
    unless the previous one was, which makes the stationary share of background runs f.
    """
    cls = np.asarray(classes, dtype=np.int64)
    d = len(cls)
    f = min(max(background_fraction, 0.0), 0.5)
    p_bg = f / (1.0 - f)
    lengths = rng.integers(1, MAX_RUN + 1, size=(n, steps))  # at most `steps` runs are needed
    run_cls = np.empty((n, steps), dtype=np.int64)
    prev_bg = np.zeros(n, dtype=bool)
    prev_idx = np.full(n, -1)  # -1: no previous digit run adjacent
    for k in range(steps):
        # the first run is background with the stationary probability f
        bg = (rng.random(n) < (p_bg if k else f)) & ~prev_bg
        if d == 1:  # a single digit must alternate with background to keep runs distinct
            bg |= prev_idx >= 0
        fresh = rng.integers(0, d, size=n)
        shift = (prev_idx + 1 + rng.integers(0, max(d - 1, 1), size=n)) % d
        idx = np.where(prev_idx < 0, fresh, shift)  # a digit after a digit run differs from it
        run_cls[:, k] = np.where(bg, background, cls[idx])
        prev_idx = np.where(bg, -1, idx)
        prev_bg = bg
    ends = np.cumsum(lengths, axis=1)  # (n, runs)
    run_of_step = (ends[:, None, :] <= np.arange(steps)[None, :, None]).sum(axis=2)  # (n, steps)
    return np.take_along_axis(run_cls, run_of_step, axis=1)


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


def ave_labels(
    n: int,
    steps: int,
    background: int,
    rng: np.random.Generator,
    classes: Sequence[int] = _DIGITS,
) -> np.ndarray:
    """One event (a class of ``classes``) over a contiguous span (2..T-1 steps when T allows),
    background elsewhere; int64 [n, steps]."""
    lo, hi = min(2, max(steps - 1, 1)), max(steps - 1, 1)
    length = rng.integers(lo, hi + 1, size=n)
    start = np.floor(rng.random(n) * (steps - length + 1)).astype(np.int64)
    digit = np.asarray(classes, dtype=np.int64)[rng.integers(0, len(classes), size=n)]
    t = np.arange(steps)[None, :]
    inside = (t >= start[:, None]) & (t < (start + length)[:, None])
    return np.where(inside, digit[:, None], background).astype(np.int64)


def avvp_labels(
    n: int,
    steps: int,
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
    classes: Sequence[int] = _DIGITS,
) -> np.ndarray:
    """Run sequences over ``classes`` with at least two distinct classes (when T and the classes
    allow); int64 [n, steps]."""
    labels = run_labels(n, steps, classes, background, background_fraction, rng)
    need = min(2, steps, len(classes))
    for _ in range(100):
        distinct = _distinct_digits(labels, background)
        bad = np.flatnonzero(distinct < need)
        if len(bad) == 0:
            break
        labels[bad] = run_labels(len(bad), steps, classes, background, background_fraction, rng)
    return labels


def _distinct_digits(labels: np.ndarray, background: int) -> np.ndarray:
    onehot = np.zeros((len(labels), int(max(labels.max(), background)) + 1), dtype=bool)
    np.put_along_axis(onehot, labels, True, axis=1)
    onehot[:, background] = False
    return onehot.sum(axis=1)


def retrieval_labels(
    n: int,
    steps: int,
    background: int,
    background_fraction: float,
    rng: np.random.Generator,
    classes: Sequence[int] = _DIGITS,
) -> np.ndarray:
    """``n`` distinct label sequences in groups: a base and three one-step variants (a step
    changed to another class or background), shuffled; int64 [n, steps]."""
    alphabet = np.asarray(sorted({*classes, background}), dtype=np.int64)
    num = len(alphabet)
    code_of = np.zeros(int(alphabet.max()) + 1, dtype=np.int64)
    code_of[alphabet] = np.arange(num)
    out = np.empty((0, steps), dtype=np.int64)
    for _ in range(100):
        groups = int(np.ceil(1.5 * n / RETRIEVAL_GROUP)) + 1
        base = run_labels(groups, steps, classes, background, background_fraction, rng)
        items = np.repeat(base, RETRIEVAL_GROUP, axis=0)  # (groups * 4, steps)
        var = np.arange(len(items)) % RETRIEVAL_GROUP != 0
        where = rng.integers(0, steps, size=len(items))
        shift = 1 + rng.integers(0, num - 1, size=len(items))
        rows = np.flatnonzero(var)
        old = code_of[items[rows, where[rows]]]
        items[rows, where[rows]] = alphabet[(old + shift[rows]) % num]
        out = np.concatenate([out, items])
        _, first = np.unique(out, axis=0, return_index=True)
        out = out[np.sort(first)]
        if len(out) >= n:
            break
    if len(out) < n:
        raise DataError(f"retrieval: cannot make {n} distinct sequences of {steps} steps")
    return out[:n][rng.permutation(n)]


def plan_digits(
    *,
    stages: Sequence[str] = DEFAULT_STAGES,
    class_plan: str | Sequence[Sequence[int]] = "full",
    steps: int = 10,
    train_sequences: int = 4000,
    val_sequences: int = 400,
    downstream_sizes: Mapping[str, int] | None = None,
    retrieval_steps: int = 5,
    retrieval_items: int = 500,
    background_fraction: float = 0.25,
    seed: int = 0,
    bank: FeatureBank | str | os.PathLike[str] | None = None,
    downstream_split: str = "test",
) -> DigitsPlan:
    """Labels and bank rows of every set of :func:`digits_benchmark` (same arguments)."""
    bank = bank if isinstance(bank, FeatureBank) else load_bank(bank)
    if steps < 1 or retrieval_steps < 1:
        raise DataError("digits: steps and retrieval_steps must be >= 1")
    if train_sequences < 1 or val_sequences < 1:
        raise DataError("digits: train_sequences and val_sequences must be >= 1")
    if isinstance(stages, str):
        stages = (stages,)
    if not stages:
        raise DataError("digits: at least one stage is needed")
    known = tuple(bank.modalities)
    stage_mods = [parse_stage(s, known) for s in stages]
    classes = stage_classes(class_plan, len(stages))
    sizes = dict(DEFAULT_DOWNSTREAM_SIZES)
    unknown = set(downstream_sizes or {}) - set(sizes)
    if unknown:
        raise DataError(
            f"digits: unknown downstream set {sorted(unknown)[0]!r} (known: {list(sizes)})"
        )
    sizes.update(downstream_sizes or {})
    if downstream_split not in ("test", "val"):
        raise DataError(f"digits: downstream_split must be 'test' or 'val': {downstream_split!r}")
    bg = bank.background_class

    def rng(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, *key])

    holdout = _holdout_masks(bank, rng(0))
    fit_pools = {m: _pools(bank, m, 0, ~holdout[m]) for m in known}
    val_pools = {m: _pools(bank, m, 0, holdout[m]) for m in known}
    train_pools = {m: _pools(bank, m, 0) for m in known}
    test_pools = {m: _pools(bank, m, 1) for m in known}

    plans = []
    for i, (name, mods, digits) in enumerate(zip(stages, stage_mods, classes, strict=True)):
        r_train, r_val = rng(100 + i, 0), rng(100 + i, 1)
        tr = run_labels(train_sequences, steps, digits, bg, background_fraction, r_train)
        va = run_labels(val_sequences, steps, digits, bg, background_fraction, r_val)
        plans.append(
            StagePlan(
                name=name,
                modalities=mods,
                classes=tuple(digits),
                train=_indexed(tr, {m: fit_pools[m] for m in mods}, r_train, f"{name} train"),
                val=_indexed(va, {m: val_pools[m] for m in mods}, r_val, f"{name} val"),
            )
        )

    down_mods = [m for m in DOWNSTREAM_MODALITIES if m in known]
    if downstream_split == "val":  # model selection: never a test-pool instance
        train_pools, test_pools = fit_pools, val_pools
    downstream = {}
    for k, (key, pools) in enumerate(
        (
            ("ave_train", train_pools),
            ("ave_test", test_pools),
            ("avvp_train", train_pools),
            ("avvp_test", test_pools),
        )
    ):
        r = rng(10 + k)
        if key.startswith("ave"):
            lab = ave_labels(sizes[key], steps, bg, r)
        else:
            lab = avvp_labels(sizes[key], steps, bg, 0.3, r)
        downstream[key] = _indexed(lab, {m: pools[m] for m in down_mods}, r, key)
    r = rng(20)
    lab = retrieval_labels(retrieval_items, retrieval_steps, bg, background_fraction, r)
    downstream["retrieval"] = _indexed(lab, {m: test_pools[m] for m in down_mods}, r, "retrieval")
    return DigitsPlan(tuple(plans), downstream, find_mediator(stage_mods))


def materialise(indexed: IndexedSequences, bank: FeatureBank) -> Sequences:
    """Gather the bank features of every row: float32 ``[N, T, d]`` per modality."""
    feats = {}
    for m, rows in indexed.rows.items():
        table = bank[m].tensor()  # (n_pool, d)
        flat = torch.from_numpy(rows.reshape(-1))
        feats[m] = table.index_select(0, flat).view(*rows.shape, table.shape[1])
    return Sequences(features=feats, labels=torch.from_numpy(indexed.labels))


def digits_benchmark(
    *,
    stages: Sequence[str] = DEFAULT_STAGES,
    class_plan: str | Sequence[Sequence[int]] = "full",
    steps: int = 10,
    train_sequences: int = 4000,
    val_sequences: int = 400,
    downstream_sizes: Mapping[str, int] | None = None,
    retrieval_steps: int = 5,
    retrieval_items: int = 500,
    background_fraction: float = 0.25,
    seed: int = 0,
    bank: FeatureBank | str | os.PathLike[str] | None = None,
    downstream_split: str = "test",
) -> Benchmark:
    """The digits-world benchmark (spec section 7): stages, downstream sets and label space.

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
        bank: a loaded bank, a path, or None for the bank shipped with the package.
        downstream_split: "test" (default) or "val": downstream sets from the train pools'
            held-out tenth (test sets) and the rest of the train pools (head training sets),
            for choosing settings without test data.
    """
    bank = bank if isinstance(bank, FeatureBank) else load_bank(bank)
    plan = plan_digits(
        stages=stages,
        class_plan=class_plan,
        steps=steps,
        train_sequences=train_sequences,
        val_sequences=val_sequences,
        downstream_sizes=downstream_sizes,
        retrieval_steps=retrieval_steps,
        retrieval_items=retrieval_items,
        background_fraction=background_fraction,
        seed=seed,
        bank=bank,
        downstream_split=downstream_split,
    )
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
    return Benchmark(
        stages=stage_data,
        downstream=DownstreamSets(**down),
        feature_dims={m: bank[m].dim for m in bank.modalities},
        num_classes=bank.num_classes,
        background_class=bank.background_class,
        class_names=bank.class_names,
    )
