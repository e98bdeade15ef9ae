"""Bring-your-own features: a stage plan plus per-stage .npz / HDF5 files (spec section 8).

Feature files (``.npz``, or ``.h5`` / ``.hdf5`` read with h5py; arrays at the top level):

- ``<modality>``: float array ``[N, T, d]`` (float16/32/64; stored as float32 in memory). Row i
  of every modality in a file is one paired item. Modality names are free strings.
- ``mask_<modality>``: optional ``[N, T]`` bool or 0/1 array, True where the step is valid.
- ``labels``: optional ``[N, T]`` integer class per step (-1 = unknown).
- names starting with ``meta_`` or ``_`` are ignored.

Within a file all modalities share N and T; within a stage the train and val files share T; a
modality keeps its feature dim d in every file. Values must be finite.

Stage plan (TOML or YAML; paths relative to the plan file)::

    seed = 0                  # seeds the train/val split of stages without a val file
    val_fraction = 0.1        # share of train items split off as val when no val file is given
    num_classes = 11          # optional; else 1 + the largest label found (0 without labels)
    background_class = 10     # optional
    class_names = ["zero", "one"]   # optional
    mediator = "text"         # optional; else the modality shared by every stage

    [[stages]]
    name = "video-text"
    modalities = ["video", "text"]
    train = "vt_train.npz"
    val = "vt_val.npz"        # optional

    [[stages]]
    name = "audio-text"
    modalities = ["audio", "text"]
    train = "at_train.h5"

    [downstream]              # optional; if present, all five files
    ave_train = "ave_train.npz"
    ave_test = "ave_test.npz"
    avvp_train = "avvp_train.npz"
    avvp_test = "avvp_test.npz"
    retrieval = "retrieval.npz"

Downstream files keep every modality they hold. Every problem raises :class:`DataError` with
one line naming the file and the problem.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .digits import find_mediator
from .types import Benchmark, DataError, DownstreamSets, Sequences, StageData

DOWNSTREAM_KEYS: tuple[str, ...] = ("ave_train", "ave_test", "avvp_train", "avvp_test", "retrieval")
FEATURE_SUFFIXES = (".npz", ".h5", ".hdf5")
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
}
_STAGE_KEYS = {"name", "modalities", "train", "val"}


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All top-level arrays of a .npz or HDF5 file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path}: unreadable .npz (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: np.asarray(npz[k]) for k in npz.files}
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise DataError(f"{path}: holds object arrays (not supported)") from None
            raise DataError(f"{path}: unreadable .npz ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: unreadable .npz ({exc})") from None
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                out = {}
                for k, v in f.items():
                    if isinstance(v, h5py.Dataset):
                        out[k] = np.asarray(v[()])
                return out
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: unreadable HDF5 ({exc})") from None
    raise DataError(f"{path}: unknown file type (expected {', '.join(FEATURE_SUFFIXES)})")


def _as_features(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iub":
        raise DataError(f"{path}: '{name}' has integer/bool dtype {x.dtype}, expected float")
    if x.dtype.kind in "USOV":
        raise DataError(f"{path}: '{name}' has dtype {x.dtype}, expected float")
    if x.dtype.kind == "c":
        raise DataError(f"{path}: '{name}' is complex, expected float")
    if x.ndim != 3:
        raise DataError(f"{path}: '{name}' has {x.ndim} dims {x.shape}, expected 3 [N, T, d]")
    if x.size == 0:
        raise DataError(f"{path}: '{name}' is empty (shape {x.shape})")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: '{name}' contains NaN or Inf")
    return x


def read_sequences(
    path: str | os.PathLike[str], modalities: tuple[str, ...] | None = None
) -> Sequences:
    """Read and validate one feature file; ``modalities`` picks (and requires) those arrays."""
    path = Path(path)
    arrays = _read_arrays(path)
    masks_raw = {k[5:]: v for k, v in arrays.items() if k.startswith("mask_")}
    labels_raw = arrays.get("labels")
    feature_keys = [
        k for k in arrays if k != "labels" and not k.startswith(("mask_", "meta_", "_"))
    ]
    if modalities is None:
        modalities = tuple(feature_keys)
        if not modalities:
            raise DataError(f"{path}: no feature arrays")
    missing = [m for m in modalities if m not in arrays]
    if missing:
        raise DataError(f"{path}: missing array '{missing[0]}' (has {sorted(arrays)})")
    feats = {m: _as_features(path, m, arrays[m]) for m in modalities}
    n = t = None
    for m, x in feats.items():
        if n is None:
            n, t, first = x.shape[0], x.shape[1], m
        elif x.shape[0] != n:
            raise DataError(f"{path}: '{m}' has N={x.shape[0]} items but '{first}' has N={n}")
        elif x.shape[1] != t:
            raise DataError(f"{path}: '{m}' has T={x.shape[1]} steps but '{first}' has T={t}")
    labels = None
    if labels_raw is not None:
        if labels_raw.dtype.kind not in "iu":
            raise DataError(f"{path}: 'labels' has dtype {labels_raw.dtype}, expected integers")
        if labels_raw.shape != (n, t):
            raise DataError(
                f"{path}: 'labels' has shape {labels_raw.shape}, expected ({n}, {t}) [N, T]"
            )
        if labels_raw.size and labels_raw.min() < -1:
            raise DataError(f"{path}: 'labels' has values below -1")
        labels = torch.from_numpy(labels_raw.astype(np.int64))
    masks = {}
    for m, k in masks_raw.items():
        if m not in feats:
            if m in feature_keys:
                continue  # the mask of a modality this stage does not use
            raise DataError(f"{path}: 'mask_{m}' has no feature array '{m}'")
        if k.shape != (n, t):
            raise DataError(f"{path}: 'mask_{m}' has shape {k.shape}, expected ({n}, {t}) [N, T]")
        if k.dtype.kind == "b":
            masks[m] = torch.from_numpy(k.copy())
        elif k.dtype.kind in "iuf" and np.isin(k, (0, 1)).all():
            masks[m] = torch.from_numpy(k.astype(bool))
        else:
            raise DataError(f"{path}: 'mask_{m}' must be bool or 0/1 values (dtype {k.dtype})")
    return Sequences(
        features={m: torch.from_numpy(x) for m, x in feats.items()},
        labels=labels,
        masks=masks or None,
    )


def _read_plan(path: Path) -> dict[str, Any]:
    if not path.is_file():
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
        plan = parse(path.read_text(encoding="utf-8"))
    except (*errors, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable plan ({_one_line(exc)})") from None
    if not isinstance(plan, dict):
        raise DataError(f"{path}: the plan must be a table/mapping at the top level")
    unknown = set(plan) - _PLAN_KEYS
    if unknown:
        raise DataError(f"{path}: unknown key '{sorted(unknown)[0]}' (known: {sorted(_PLAN_KEYS)})")
    return plan


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _split_train_val(
    seqs: Sequences, fraction: float, rng: np.random.Generator, path: Path
) -> tuple[Sequences, Sequences]:
    n = seqs.num_items
    if n < 2:
        raise DataError(f"{path}: {n} item(s), need at least 2 to split off a val set")
    k = min(n - 1, max(1, round(fraction * n)))
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
    return seqs.subset(torch.from_numpy(train_idx)), seqs.subset(torch.from_numpy(val_idx))


def load_plan(path: str | os.PathLike[str]) -> Benchmark:
    """Load and validate a bring-your-own stage plan and all its files into a :class:`Benchmark`."""
    path = Path(path)
    plan = _read_plan(path)
    base = path.parent
    seed = plan.get("seed", 0)
    fraction = plan.get("val_fraction", 0.1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{path}: 'seed' must be an integer")
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise DataError(f"{path}: 'val_fraction' must be a number in (0, 1)")
    stages_raw = plan.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise DataError(f"{path}: 'stages' must be a non-empty list of stage tables")

    dims: dict[str, tuple[int, Path]] = {}

    def check_dims(seqs: Sequences, file: Path) -> None:
        for m in seqs.modalities:
            d = seqs.dim(m)
            if m in dims and dims[m][0] != d:
                raise DataError(
                    f"{file}: '{m}' has d={d} but {dims[m][1].name} gives it d={dims[m][0]}"
                )
            dims.setdefault(m, (d, file))

    rng = np.random.default_rng(seed)
    stages = []
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
        bad = [m for m in mods if m == "labels" or m.startswith(("mask_", "meta_", "_"))]
        if bad:
            raise DataError(f"{where}: '{bad[0]}' is a reserved name, not a modality")
        name = st.get("name", "-".join(mods))
        if not isinstance(name, str):
            raise DataError(f"{where}: 'name' must be a string")
        if not isinstance(st.get("train"), str):
            raise DataError(f"{where}: 'train' must name a feature file")
        train_path = base / st["train"]
        train = read_sequences(train_path, tuple(mods))
        check_dims(train, train_path)
        if "val" in st:
            if not isinstance(st["val"], str):
                raise DataError(f"{where}: 'val' must name a feature file")
            val_path = base / st["val"]
            val = read_sequences(val_path, tuple(mods))
            if val.num_steps != train.num_steps:
                raise DataError(
                    f"{val_path}: T={val.num_steps} steps but the stage's train file has "
                    f"T={train.num_steps}"
                )
            check_dims(val, val_path)
        else:
            train, val = _split_train_val(train, float(fraction), rng, train_path)
        stages.append((name, tuple(mods), train, val))

    mediator = plan.get("mediator")
    stage_mods = [s[1] for s in stages]
    if mediator is None:
        mediator = find_mediator(stage_mods)
    elif not isinstance(mediator, str) or not all(mediator in m for m in stage_mods):
        raise DataError(f"{path}: mediator {mediator!r} is not a modality of every stage")

    downstream = None
    if "downstream" in plan:
        table = plan["downstream"]
        if not isinstance(table, dict):
            raise DataError(f"{path}: 'downstream' must be a table of file names")
        unknown = set(table) - set(DOWNSTREAM_KEYS)
        if unknown:
            raise DataError(f"{path}: unknown downstream set '{sorted(unknown)[0]}'")
        missing = [k for k in DOWNSTREAM_KEYS if k not in table]
        if missing:
            raise DataError(f"{path}: downstream set '{missing[0]}' is missing (all five needed)")
        sets = {}
        for k in DOWNSTREAM_KEYS:
            if not isinstance(table[k], str):
                raise DataError(f"{path}: downstream '{k}' must name a feature file")
            p = base / table[k]
            sets[k] = read_sequences(p)
            check_dims(sets[k], p)
        downstream = DownstreamSets(**sets)

    labelled = [s for _, _, tr, va in stages for s in (tr, va)]
    if downstream is not None:
        labelled += [getattr(downstream, k) for k in DOWNSTREAM_KEYS]
    max_label = max((int(s.labels.max()) for s in labelled if s.labels is not None), default=-1)
    num_classes = plan.get("num_classes", max_label + 1)
    if not isinstance(num_classes, int) or num_classes < max_label + 1:
        raise DataError(f"{path}: 'num_classes' {num_classes!r} but labels reach {max_label}")
    background = plan.get("background_class")
    if background is not None and (
        not isinstance(background, int) or not 0 <= background < num_classes
    ):
        raise DataError(f"{path}: 'background_class' must be an integer below num_classes")
    names = plan.get("class_names", [])
    if not isinstance(names, list) or (names and len(names) != num_classes):
        raise DataError(f"{path}: 'class_names' must list num_classes={num_classes} names")

    return Benchmark(
        stages=tuple(
            StageData(name=n, modalities=m, train=tr, val=va, mediator=mediator)
            for n, m, tr, va in stages
        ),
        downstream=downstream,
        feature_dims={m: d for m, (d, _) in dims.items()},
        num_classes=num_classes,
        background_class=background,
        class_names=tuple(str(c) for c in names),
    )


def write_sequences(path: str | os.PathLike[str], seqs: Sequences) -> None:
    """Write ``seqs`` in the bring-your-own format (.npz or .h5/.hdf5 by suffix)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {m: x.numpy() for m, x in seqs.features.items()}
    if seqs.labels is not None:
        arrays["labels"] = seqs.labels.numpy()
    for m, k in (seqs.masks or {}).items():
        arrays[f"mask_{m}"] = k.numpy()
    _write_arrays(path, arrays)


def _write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
    else:
        raise DataError(f"{path}: unknown file type (expected {', '.join(FEATURE_SUFFIXES)})")
