"""The committed digits-world feature bank: loading and in-memory access."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .types import DataError

BANK_FILENAME = "digits_bank.npz"
_FIELDS = ("features", "labels", "split", "origin", "item", "group")


def default_bank_path() -> Path:
    """Path of the bank file shipped inside the package."""
    return Path(__file__).resolve().parent / "bank" / BANK_FILENAME


@dataclass(frozen=True, eq=False)
class ModalityBank:
    """One modality's pool of single-step items.

    ``origin`` is 0 for rows of the modality's digit dataset and 1 for background material;
    ``item`` is the row's index inside its raw source; ``group`` is the speaker (audio digits),
    participant (sign photos), sound-icon source file (audio background), word (text) or -1.
    """

    name: str
    features: np.ndarray  # float16 [n, d], standardised with train-pool statistics
    labels: np.ndarray  # int64 [n]: 0-9 digits, 10 background
    split: np.ndarray  # int8 [n]: 0 train pool, 1 test pool
    origin: np.ndarray  # int8 [n]
    item: np.ndarray  # int32 [n]
    group: np.ndarray  # int32 [n]
    strings: tuple[str, ...] = field(default_factory=tuple)  # text only: the row's word

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @cached_property
    def _tensor(self) -> Tensor:
        return torch.from_numpy(self.features.astype(np.float32))

    def tensor(self) -> Tensor:
        """The features as a float32 tensor [n, d] (converted once, then shared; do not modify)."""
        return self._tensor


@dataclass(frozen=True, eq=False)
class FeatureBank:
    """All modalities of the digits world, with the label space."""

    modalities: Mapping[str, ModalityBank]
    class_names: tuple[str, ...]
    background_class: int
    format_version: int
    recipe: Mapping[str, object]
    path: Path | None = None

    def __getitem__(self, modality: str) -> ModalityBank:
        try:
            return self.modalities[modality]
        except KeyError:
            raise DataError(
                f"{self.path or 'bank'}: no modality '{modality}' (has {sorted(self.modalities)})"
            ) from None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def bank_from_arrays(arrays: Mapping[str, np.ndarray], path: Path | None = None) -> FeatureBank:
    """Assemble a :class:`FeatureBank` from the bank file's arrays (name -> array)."""
    where = path or "bank"
    try:
        version = int(arrays["meta/format_version"])
        names = tuple(str(m) for m in arrays["meta/modalities"])
        class_names = tuple(str(c) for c in arrays["meta/class_names"])
        background = int(arrays["meta/background_class"])
        recipe = json.loads(str(arrays["meta/recipe"]))
        pools = {}
        for m in names:
            cols = {f: np.asarray(arrays[f"{m}/{f}"]) for f in _FIELDS}
            strings = tuple(str(s) for s in arrays.get(f"{m}/strings", ()))
            pools[m] = ModalityBank(name=m, strings=strings, **cols)
    except KeyError as exc:
        raise DataError(f"{where}: missing array {exc.args[0]}") from None
    for m, pool in pools.items():
        n = len(pool.features)
        if pool.features.ndim != 2 or any(len(getattr(pool, f)) != n for f in _FIELDS):
            raise DataError(f"{where}: arrays of modality '{m}' have inconsistent lengths")
    return FeatureBank(pools, class_names, background, version, recipe, path)


def read_bank(path: str | os.PathLike[str]) -> FeatureBank:
    """Read a bank file (no caching)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: bank file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: unreadable bank (not a .npz zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable bank ({exc})") from None
    return bank_from_arrays(arrays, path)


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> FeatureBank:
    return read_bank(path)


def load_bank(path: str | os.PathLike[str] | None = None) -> FeatureBank:
    """The digits-world feature bank (default: the file shipped with the package), cached."""
    p = Path(path) if path is not None else default_bank_path()
    try:
        st = p.resolve().stat()
    except OSError:
        raise DataError(f"{p}: bank file not found") from None
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
