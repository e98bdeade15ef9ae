"""Stage plans: a TOML/YAML file naming the stages, their feature files and the downstream sets.

Format (paths relative to the plan file; the full description is in FORMAT.md)::

    seed = 0                  # seeds the train/val split of stages without a val file
    val_fraction = 0.1        # share of train items split off as val when no val file is given
    num_classes = 11          # optional; else 1 + the largest label found (0 without labels)
    background_class = 10     # optional
    class_names = ["zero", "one"]   # optional
    mediator = "text"         # optional; else the modality shared by every stage

    [meta]                    # optional provenance strings, copied into the run's metadata
    text_features = "hashed character n-grams (built-in stand-in, not BERT)"

    [[stages]]
    name = "video-text"
    modalities = ["video", "text"]
    train = "vt_train.h5"
    val = "vt_val.h5"         # optional

    [downstream]              # optional; ave_* and avvp_* required, retrieval optional
    ave_train = "ave_train.h5"
    ave_test = "ave_test.h5"
    avvp_train = "avvp_train.h5"
    avvp_test = "avvp_test.h5"
    retrieval = "retrieval.npz"

    [downstream.ave]          # optional label space of a task (default: the plan's)
    num_classes = 29
    background_class = 28
    [downstream.avvp]
    num_classes = 26
    background_class = 25
    [downstream.ave_avvp]     # needed when the two label spaces differ
    shared = [[3, 7], [9, 2]] # (AVE class, AVVP class) pairs of the classes they share

``load_plan(path, streaming=..., stages=...)``: "auto" keeps the HDF5 feature arrays on disk when
the plan's feature arrays would take more than half the available memory as float32, "on"
always, "off" never; what stays in memory must fit in the memory available. ``stages`` selects
or reorders the plan's stages by name (default: all, in the plan's order); a stage without a
val file gets the same train/val split whichever stages are selected. Every problem raises
:class:`DataError` with one line naming the file and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from comet_model.config import DataConfig

from .byo import feature_bytes, read_parts, read_sequences
from .digits import find_mediator
from .files import check_fits_memory, file_shapes
from .plan_labels import (
    TASKS,
    check_downstream_labels,
    check_plan_space,
    plan_classes,
    shared_classes,
    task_classes,
)
from .streaming import should_stream
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData, TaskClasses

__all__ = [
    "DOWNSTREAM_KEYS",
    "Streaming",
    "check_plan",
    "load_plan",
    "plan_selection",
    "plan_stage_names",
    "resolve_stages",
    "stage_count",
]

Streaming = Literal["auto", "on", "off"]
DOWNSTREAM_KEYS: tuple[str, ...] = ("ave_train", "ave_test", "avvp_train", "avvp_test", "retrieval")
_REQUIRED_DOWNSTREAM = DOWNSTREAM_KEYS[:4]
_PLAN_KEYS = {
    "name",
    "seed",
    "val_fraction",
    "num_classes",
    "background_class",
    "class_names",
    "mediator",
    "stages",
    "downstream",
    "meta",
}
_STAGE_KEYS = {"name", "modalities", "train", "val"}
_DEFAULT_STAGES = DataConfig().stages  # data.stages left at this: every stage of the plan


@dataclass(frozen=True)
class _StageSpec:
    name: str
    modalities: tuple[str, ...]
    train: Path
    val: Path | None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_plan(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a plan file")
    if not path.exists():
        raise DataError(f"{path}: plan file not found")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise DataError(f"{path}: TOML plans need Python >= 3.11 (use YAML)") from None
        parse, errors = tomllib.loads, (tomllib.TOMLDecodeError,)
    elif suffix in (".yaml", ".yml"):
        import yaml

        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    else:
        raise DataError(f"{path}: unknown plan type (expected .toml, .yaml or .yml)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: unreadable plan (not UTF-8 text)") from None
    try:
        plan = parse(text)
    except (*errors, ValueError, TypeError) as exc:
        raise DataError(f"{path}: unreadable plan ({_one_line(exc)})") from None
    if not isinstance(plan, dict):
        raise DataError(f"{path}: the plan must be a table/mapping at the top level")
    unknown = set(plan) - _PLAN_KEYS
    if unknown:
        raise DataError(f"{path}: unknown key '{sorted(unknown)[0]}' (known: {sorted(_PLAN_KEYS)})")
    return plan


def _file(path: Path, where: str, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: {what} must name a feature file")
    return path.parent / value


def _stage_specs(plan: dict[str, Any], path: Path) -> list[_StageSpec]:
    stages_raw = plan.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise DataError(f"{path}: 'stages' must be a non-empty list of stage tables")
    specs = []
    for i, st in enumerate(stages_raw):
        where = f"{path}: stage {i + 1}"
        if not isinstance(st, dict):
            raise DataError(f"{where}: must be a table with name, modalities, train")
        unknown = set(st) - _STAGE_KEYS
        if unknown:
            raise DataError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        mods = st.get("modalities")
        if not isinstance(mods, list) or not all(isinstance(m, str) and m for m in mods):
            raise DataError(f"{where}: 'modalities' must be a list of names")
        if len(set(mods)) < 2 or len(set(mods)) != len(mods):
            raise DataError(f"{where}: needs at least two distinct modalities, got {mods}")
        bad = [m for m in mods if m == "labels" or m.startswith(("labels_", "mask_", "meta_", "_"))]
        if bad:
            raise DataError(f"{where}: '{bad[0]}' is a reserved name, not a modality")
        name = st.get("name", "-".join(mods))
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DataError(f"{where}: 'name' must be a non-empty string without outer spaces")
        if "," in name:
            raise DataError(f"{where}: 'name' {name!r} has a comma (--stages is a comma list)")
        if any(s.name == name for s in specs):
            raise DataError(f"{where}: the name {name!r} is taken by an earlier stage")
        train = _file(path, where, st.get("train"), "'train'")
        val = None if "val" not in st else _file(path, where, st["val"], "'val'")
        specs.append(_StageSpec(name, tuple(mods), train, val))
    return specs


def _downstream_files(plan: dict[str, Any], path: Path) -> dict[str, Path] | None:
    if "downstream" not in plan:
        return None
    table = plan["downstream"]
    if not isinstance(table, dict):
        raise DataError(f"{path}: 'downstream' must be a table of file names")
    unknown = set(table) - set(DOWNSTREAM_KEYS) - {*TASKS, "ave_avvp"}
    if unknown:
        raise DataError(f"{path}: unknown downstream set '{sorted(unknown)[0]}'")
    missing = [k for k in _REQUIRED_DOWNSTREAM if k not in table]
    if missing:
        raise DataError(f"{path}: downstream set '{missing[0]}' is missing (ave_* and avvp_*)")
    return {
        k: _file(path, path.as_posix(), table[k], f"downstream '{k}'")
        for k in DOWNSTREAM_KEYS
        if k in table
    }


def _use_streaming(
    streaming: Streaming | bool, stages: list[_StageSpec], files: dict[str, Path] | None, plan: Path
) -> bool:
    """Whether HDF5 features stream; refuses a plan whose resident features (``.npz`` files,
    and HDF5 files read into memory) do not fit in the memory available. Reads headers only."""
    if not isinstance(streaming, bool) and streaming not in ("auto", "on", "off"):
        raise DataError(f"streaming: expected 'auto', 'on' or 'off', got {streaming!r}")
    reads = [(s.train, s.modalities) for s in stages]
    reads += [(s.val, s.modalities) for s in stages if s.val is not None]
    reads += [(p, None) for p in (files or {}).values()]  # each set is read on its own
    sizes = [(p, feature_bytes(p, mods)) for p, mods in reads]
    if isinstance(streaming, bool) or streaming != "auto":
        stream = streaming is True or streaming == "on"
    else:
        stream = should_stream(sum(b for _, b in sizes))
    resident = sum(b for p, b in sizes if not stream or p.suffix.lower() == ".npz")
    hint = "" if stream else " (data.streaming=on reads HDF5 features from disk instead)"
    check_fits_memory(f"{plan}: the plan's features as float32", resident, hint)
    return stream


class _Dims:
    """Feature dim of every modality across files (one d per modality everywhere)."""

    def __init__(self) -> None:
        self.dims: dict[str, tuple[int, Path]] = {}

    def check(self, seqs: Sequences, file: Path) -> None:
        for m in seqs.modalities:
            d = seqs.dim(m)
            if m in self.dims and self.dims[m][0] != d:
                d0, f0 = self.dims[m]
                raise DataError(f"{file}: '{m}' has d={d} but {f0.name} gives it d={d0}")
            self.dims.setdefault(m, (d, file))


def _split_orders(specs: list[_StageSpec], seed: int) -> dict[str, np.ndarray]:
    """The seeded item order of every stage without a val file, drawn in the plan's order from
    the headers alone: a stage's train/val split does not depend on which stages are selected."""
    rng, out = np.random.default_rng(seed), {}
    for spec in specs:
        if spec.val is None:
            shapes = file_shapes(spec.train)
            n = shapes[spec.modalities[0]][0][0] if spec.modalities[0] in shapes else 0
            out[spec.name] = rng.permutation(n) if n >= 2 else np.arange(n)
    return out


def _read_stage(
    spec: _StageSpec, dims: _Dims, fraction: float, order: np.ndarray | None, stream: bool
) -> tuple[Sequences, Sequences]:
    if order is not None:  # a seeded share of the train file's items becomes val

        def split(n: int) -> list[np.ndarray | None]:
            if n < 2:
                raise DataError(
                    f"{spec.train}: {n} item(s), need at least 2 to split off a val set"
                )
            k = min(n - 1, max(1, round(fraction * n)))
            return [np.sort(order[k:]), np.sort(order[:k])]

        train, val = read_parts(spec.train, spec.modalities, split, streaming=stream)
        dims.check(train, spec.train)
        return train, val
    train = read_sequences(spec.train, spec.modalities, streaming=stream)
    dims.check(train, spec.train)
    val = read_sequences(spec.val, spec.modalities, streaming=stream)
    if val.num_steps != train.num_steps:
        raise DataError(
            f"{spec.val}: T={val.num_steps} steps but the stage's train file has "
            f"T={train.num_steps}"
        )
    dims.check(val, spec.val)
    return train, val


def _meta(plan: dict[str, Any], path: Path) -> dict[str, str]:
    meta = plan.get("meta", {})
    ok = (str, int, float, bool)
    if not isinstance(meta, dict) or not all(isinstance(v, ok) for v in meta.values()):
        raise DataError(f"{path}: 'meta' must be a table of strings")
    return {str(k): str(v) for k, v in meta.items()}


def _select(specs: list[_StageSpec], stages: Sequence[str] | None, path: Path) -> list[_StageSpec]:
    """The stages ``stages`` names, in that order (None: all, in the plan's order)."""
    if stages is None:
        return specs
    by_name = {s.name: s for s in specs}
    if not stages:
        raise DataError(f"{path}: no stage selected")
    for i, name in enumerate(stages):
        if name not in by_name:
            raise DataError(f"{path}: no stage named {name!r} (the plan's stages: "
                            f"{', '.join(by_name)})")  # fmt: skip
        if name in stages[:i]:
            raise DataError(f"{path}: stage {name!r} selected twice")
    return [by_name[name] for name in stages]


def plan_selection(stages: Sequence[str]) -> tuple[str, ...] | None:
    """``data.stages`` as a selection of a plan's stages: None (every stage, in the plan's
    order) when it is the config's default, which names the digits world's stages."""
    return None if tuple(stages) == _DEFAULT_STAGES else tuple(stages)


def plan_stage_names(
    path: str | os.PathLike[str], stages: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The names of the plan's stages that ``stages`` selects (None: all), in training order,
    from the plan file alone (no feature file read); DataError on a name the plan lacks."""
    path = Path(path)
    return tuple(s.name for s in _select(_stage_specs(_read_plan(path), path), stages, path))


def resolve_stages(path: str | os.PathLike[str], stages: Sequence[str] | None) -> tuple[str, ...]:
    """``data.stages`` for a run of the plan at ``path``: the stages ``stages`` selects (None:
    all), checked against the plan. Refuses the one selection that ``data.stages`` cannot
    express: the config's default names when the plan has further stages."""
    names = plan_stage_names(path, stages)
    if plan_selection(names) is None and names != plan_stage_names(path):
        raise DataError(
            f"{path}: selecting exactly the stages {', '.join(names)} cannot be told apart from "
            "data.stages' default (every stage of the plan); rename a stage in the plan"
        )
    return names


def stage_count(source: str, plan_file: str, stages: Sequence[str]) -> int:
    """Stages a run of ``data.source`` will train: those of a plan that ``data.stages`` selects
    (every one when it is left at its default), else ``data.stages``; also ``data.stages``
    when the plan cannot be read (the run itself reports that)."""
    if source == "plan":
        try:
            return len(plan_stage_names(plan_file, plan_selection(stages)))
        except DataError:
            pass
    return len(stages)


def _mediator(plan: dict[str, Any], path: Path, specs: list[_StageSpec]) -> str | None:
    mediator = plan.get("mediator")
    stage_mods = [s.modalities for s in specs]
    if mediator is None:
        return find_mediator(stage_mods)
    if not isinstance(mediator, str) or not all(mediator in m for m in stage_mods):
        raise DataError(f"{path}: mediator {mediator!r} is not a modality of every stage")
    return mediator


def load_plan(
    path: str | os.PathLike[str],
    streaming: Streaming | bool = "auto",
    stages: Sequence[str] | None = None,
) -> Benchmark:
    """Load and validate a stage plan and all its files into a :class:`Benchmark` (only the
    stages ``stages`` names, in that order; None: every stage). The plan's own keys and every
    file's header are checked before any feature array is read."""
    path = Path(path)
    plan = _read_plan(path)
    seed, fraction = plan.get("seed", 0), plan.get("val_fraction", 0.1)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise DataError(f"{path}: 'seed' must be an integer in [0, 2**32)")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise DataError(f"{path}: 'val_fraction' must be a number in (0, 1)")
    all_specs = _stage_specs(plan, path)
    specs = _select(all_specs, stages, path)
    files = _downstream_files(plan, path)
    meta = _meta(plan, path)
    mediator = _mediator(plan, path, specs)
    classes = task_classes(plan.get("downstream"), path)
    check_plan_space(plan, path, downstream=files is not None)
    stream = _use_streaming(streaming, specs, files, path)
    dims, orders = _Dims(), _split_orders(all_specs, seed)
    pairs = [_read_stage(s, dims, float(fraction), orders.get(s.name), stream) for s in specs]

    downstream = None
    sets = {k: read_sequences(p, streaming=stream) for k, p in (files or {}).items()}
    for k, seqs in sets.items():
        dims.check(seqs, (files or {})[k])
    if files is not None:
        check_downstream_labels(sets, files)  # labelled at all, before the label spaces
    num_classes, background, names = plan_classes(plan, path, pairs, sets, classes)
    if files is not None:
        spaces = {t: classes.get(t, TaskClasses(num_classes, background, names)) for t in TASKS}
        check_downstream_labels(sets, files, spaces)
        shared = shared_classes(plan["downstream"], path, spaces)
        downstream = DownstreamSets(**sets, classes=classes, ave_avvp_shared=shared)
    return Benchmark(
        stages=tuple(
            StageData(name=s.name, modalities=s.modalities, train=tr, val=va, mediator=mediator)
            for s, (tr, va) in zip(specs, pairs, strict=True)
        ),
        downstream=downstream,
        feature_dims={m: d for m, (d, _) in dims.dims.items()},
        num_classes=num_classes,
        background_class=background,
        class_names=names,
        meta=meta,
        streamed=stream,
    )


def check_plan(
    path: str | os.PathLike[str],
    streaming: Streaming | bool = "auto",
    stages: Sequence[str] | None = None,
) -> Benchmark:
    """Every check :func:`load_plan` makes for a run with ``streaming``, holding as little as it
    can: the memory such a run would need is compared with what is available, and HDF5
    features are then scanned from disk in chunks whatever ``streaming`` says. ``streamed`` of
    the result is what the run would do. (``python -m comet_model.data check`` and the sweep
    driver, before any trial starts.)"""
    path = Path(path)
    plan = _read_plan(path)
    specs = _select(_stage_specs(plan, path), stages, path)
    stream = _use_streaming(streaming, specs, _downstream_files(plan, path), path)
    return replace(load_plan(path, streaming="on", stages=stages), streamed=stream)
