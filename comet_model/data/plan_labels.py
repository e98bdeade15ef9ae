"""Label spaces of a stage plan: the plan's own, and one per downstream task where given.

The plan's ``num_classes`` / ``background_class`` / ``class_names`` cover the stage files and
every downstream set whose task has no table of its own. ``[downstream.ave]`` and
``[downstream.avvp]`` give AVE and AVVP their own label space (CMG: 28 AVE events and 25 AVVP
events, each plus background); ``[downstream.ave_avvp] shared`` lists the (AVE class, AVVP
class) pairs of the classes the two share, which AVE -> AVVP is evaluated on. AVE labels are
one class per step (``[N, T]`` integers); AVVP labels may be multi-hot (``[N, T, C]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .types import MAX_CLASSES, DataError, Sequences, TaskClasses

__all__ = [
    "TASKS",
    "check_downstream_labels",
    "check_plan_space",
    "plan_classes",
    "shared_classes",
    "task_classes",
]

TASKS: dict[str, tuple[str, str]] = {
    "ave": ("ave_train", "ave_test"),
    "avvp": ("avvp_train", "avvp_test"),
}
_TASK_KEYS = {"num_classes", "background_class", "class_names"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _space(table: Mapping[str, Any], where: str, default_classes: int) -> TaskClasses:
    """num_classes / background_class / class_names of a plan or task table."""
    num = table.get("num_classes", default_classes)
    if not _is_int(num) or num < 0:
        raise DataError(f"{where}: 'num_classes' must be a non-negative integer, got {num!r}")
    if num > MAX_CLASSES:
        raise DataError(f"{where}: 'num_classes' is {num}, at most {MAX_CLASSES}")
    bg = table.get("background_class")
    if bg is not None and (not _is_int(bg) or not 0 <= bg < num):
        raise DataError(f"{where}: 'background_class' must be an integer below num_classes")
    names = table.get("class_names", [])
    if not isinstance(names, list) or (names and len(names) != num):
        raise DataError(f"{where}: 'class_names' must list num_classes={num} names")
    return TaskClasses(num, bg, tuple(str(c) for c in names))


def task_classes(table: Any, path: Path) -> dict[str, TaskClasses]:
    """The ``[downstream.ave]`` / ``[downstream.avvp]`` label spaces given in the plan."""
    out = {}
    for task in TASKS:
        if not isinstance(table, dict) or task not in table:
            continue
        sub, where = table[task], f"{path}: downstream.{task}"
        if not isinstance(sub, dict) or "num_classes" not in sub:
            raise DataError(f"{where}: must be a table with num_classes")
        unknown = set(sub) - _TASK_KEYS
        if unknown:
            raise DataError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        out[task] = _space(sub, where, 0)
        if out[task].num_classes < 2:
            raise DataError(f"{where}: 'num_classes' must be at least 2")
    return out


def check_plan_space(plan: Mapping[str, Any], path: Path, *, downstream: bool) -> None:
    """The plan's own ``num_classes`` / ``background_class`` / ``class_names``, when given,
    before any file is read (the downstream tasks need at least two classes)."""
    if "num_classes" not in plan:
        return
    space = _space(plan, str(path), 0)
    if downstream and space.num_classes < 2:
        raise DataError(f"{path}: 'num_classes' is {space.num_classes}, the downstream tasks "
                        "need at least 2")  # fmt: skip


def _all_labels(seqs: Sequences) -> list[Tensor]:
    own = list((seqs.modality_labels or {}).values())
    return own + ([] if seqs.labels is None else [seqs.labels])


def _reach(labels: Sequence[Tensor]) -> tuple[int, int | None]:
    """(1 + largest integer class, width of multi-hot labels or None)."""
    top = max((int(y.max()) for y in labels if y.ndim == 2 and y.numel()), default=-1)
    widths = {int(y.shape[2]) for y in labels if y.ndim == 3}
    if len(widths) > 1:
        raise DataError(f"multi-hot labels of {sorted(widths)} classes in one label space")
    return top + 1, next(iter(widths), None)


def plan_classes(
    plan: Mapping[str, Any],
    path: Path,
    stages: Sequence[tuple[Sequences, Sequences]],
    sets: Mapping[str, Sequences],
    own: Mapping[str, TaskClasses],
) -> tuple[int, int | None, tuple[str, ...]]:
    """The plan's own label space: classes, background and names (checked against labels)."""
    labelled = [s for pair in stages for s in pair]
    labelled += [
        s for k, s in sets.items() if not any(k in ks and t in own for t, ks in TASKS.items())
    ]
    labels = [y for s in labelled for y in _all_labels(s)]
    try:
        top, width = _reach(labels)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    space = _space(plan, str(path), max(top, width or 0))
    uses = sets and any(t not in own for t in TASKS)  # a downstream task uses this space
    if uses and space.num_classes < 2:
        found = " (no labelled step in the files)" if top == 0 else f" (largest label {top - 1})"
        found = "" if "num_classes" in plan else found
        raise DataError(f"{path}: {space.num_classes} class(es){found}, the downstream tasks "
                        "need at least 2")  # fmt: skip
    if space.num_classes < top:
        raise DataError(f"{path}: 'num_classes' {space.num_classes!r} but labels reach {top - 1}")
    if width is not None and width != space.num_classes:
        raise DataError(
            f"{path}: multi-hot labels have {width} classes, num_classes is {space.num_classes}"
        )
    return space.num_classes, space.background_class, space.class_names


def check_downstream_labels(
    sets: Mapping[str, Sequences],
    files: Mapping[str, Path],
    spaces: Mapping[str, TaskClasses] | None = None,
) -> None:
    """Every AVE / AVVP set is labelled, with at least one labelled step, for each modality
    (AVE: one class a step), within its task's label space (unless ``spaces`` is None)."""
    for task, keys in TASKS.items():
        space = None if spaces is None else spaces[task]
        for k in keys:
            seqs, file = sets[k], files[k]
            for m in seqs.modalities:
                y = seqs.labels_for(m)
                if y is None:
                    raise DataError(f"{file}: {k} needs labels (none for '{m}')")
                if not bool((y >= 0).any() if y.ndim == 2 else y.any()):
                    raise DataError(f"{file}: {k} has no labelled step for '{m}' (all unknown)")
                if task == "ave" and y.ndim != 2:
                    raise DataError(f"{file}: {k} needs one class per step, [N, T] integers")
                if space is None:
                    continue
                if y.ndim == 3 and y.shape[2] != space.num_classes:
                    raise DataError(
                        f"{file}: multi-hot labels of '{m}' have {y.shape[2]} "
                        f"classes, {task} has {space.num_classes}"
                    )
                if y.ndim == 2 and y.numel() and int(y.max()) >= space.num_classes:
                    raise DataError(
                        f"{file}: labels of '{m}' reach {int(y.max())}, {task} has "
                        f"{space.num_classes} classes"
                    )


def shared_classes(
    table: Mapping[str, Any], path: Path, spaces: Mapping[str, TaskClasses]
) -> tuple[tuple[int, int], ...] | None:
    """The ``[downstream.ave_avvp] shared`` pairs, checked against both label spaces; None
    when the table is absent and AVE and AVVP share one label space."""
    ave, avvp = spaces["ave"], spaces["avvp"]
    where = f"{path}: downstream.ave_avvp"
    if "ave_avvp" not in table:
        same = (ave.num_classes, ave.background_class) == (avvp.num_classes, avvp.background_class)
        if not same:
            raise DataError(f"{where}: 'shared' is needed, AVE and AVVP label spaces differ")
        return None
    sub = table["ave_avvp"]
    if not isinstance(sub, dict) or set(sub) != {"shared"} or not isinstance(sub["shared"], list):
        raise DataError(f"{where}: must be a table with one key, shared = [[ave, avvp], ...]")
    pairs = []
    for pair in sub["shared"]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_int, pair))):
            raise DataError(f"{where}: 'shared' entries must be [ave class, avvp class] pairs")
        a, b = pair
        for c, sp, name in ((a, ave, "AVE"), (b, avvp, "AVVP")):
            if not 0 <= c < sp.num_classes or c == sp.background_class:
                raise DataError(f"{where}: {name} class {c} is not an event class")
        pairs.append((a, b))
    if len({a for a, _ in pairs}) != len(pairs):
        raise DataError(f"{where}: 'shared' must list each AVE class at most once")
    return tuple(pairs)  # empty: no shared class, AVE -> AVVP is not evaluated
