"""Bring-your-own feature files (.npz / HDF5), validated on load (spec section 8; FORMAT.md).

Arrays at the top level of a file:

- ``<modality>``: float array ``[N, T, d]`` (float16/32/64; float32 in memory). Row i of every
  modality in a file is one paired item. Modality names are free strings.
- ``mask_<modality>``: optional ``[N, T]`` bool or 0/1 array, True where the step is valid.
- ``labels``: optional ``[N, T]`` integer class per step (-1 = unknown), or ``[N, T, C]``
  multi-hot (bool or 0/1) for several events per step; ``labels_<modality>``: the same for one
  modality only (overrides ``labels`` for it).
- names starting with ``meta_`` or ``_`` are ignored.

Within a file all modalities share N and T. Values must be finite. With ``streaming=True`` the
feature arrays of an HDF5 file stay on disk (:class:`~comet_model.data.streaming.H5Rows`) and
are validated by scanning them in chunks; .npz files are always read into memory. Every
problem raises :class:`DataError` with one line naming the file and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import streaming as _streaming
from .files import (
    FEATURE_SUFFIXES,
    check_fits_memory,
    file_shapes,
    read_h5,
    read_npz,
    shapes_bytes,
    suffix,
)
from .streaming import H5Rows, check_finite, release, value_problem
from .types import MAX_CLASSES, DataError, FeatureArray, Sequences

__all__ = [
    "FEATURE_SUFFIXES",
    "feature_bytes",
    "read_parts",
    "read_sequences",
    "write_sequences",
]
Parts = list["np.ndarray | None"]  # item rows of each part (sorted), None = every item

_RESERVED = ("labels_", "mask_", "meta_", "_")


def feature_bytes(path: str | os.PathLike[str], modalities: tuple[str, ...] | None = None) -> int:
    """Bytes that the feature arrays of a file (``modalities`` or all) take as float32."""
    shapes = file_shapes(path)
    keys = _feature_keys(shapes) if modalities is None else [m for m in modalities if m in shapes]
    return shapes_bytes(shapes, keys, itemsize=4)


def _feature_keys(names: Mapping[str, object]) -> list[str]:
    return [k for k in names if k != "labels" and not k.startswith(_RESERVED)]


def _check_feature_dtype(path: Path, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype.kind in "iub":
        raise DataError(f"{path}: '{name}' has integer/bool dtype {dtype}, expected float")
    if dtype.kind in "USOV":
        raise DataError(f"{path}: '{name}' has dtype {dtype}, expected float")
    if dtype.kind == "c":
        raise DataError(f"{path}: '{name}' is complex, expected float")
    if len(shape) != 3:
        raise DataError(f"{path}: '{name}' has {len(shape)} dims {shape}, expected 3 [N, T, d]")
    if int(np.prod(shape)) == 0:
        raise DataError(f"{path}: '{name}' is empty (shape {shape})")


def _as_features(path: Path, name: str, x: np.ndarray) -> Tensor:
    problem = value_problem(x)  # before the float32 conversion, which would hide an overflow
    if problem is not None:
        raise DataError(f"{path}: '{name}' {problem}")
    return torch.from_numpy(x.astype(np.float32, copy=False))


def _h5_features(path: Path, name: str, parts: Parts) -> list[Tensor]:
    """One float32 tensor per part (rows of the file, sorted), read in chunks of about
    ``CHUNK_BYTES`` straight into them: no full-size copy in the file's dtype, and each chunk
    is checked for NaN / Inf before it is kept."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            n, item = ds.shape[0], ds.shape[1:]
            rows = [np.arange(n) if p is None else p for p in parts]
            outs = [np.empty((len(r), *item), dtype=np.float32) for r in rows]
            step = max(1, _streaming.CHUNK_BYTES // (4 * int(np.prod(item)) or 1))
            buf = np.empty((min(step, n), *item), dtype=ds.dtype)
            for a in range(0, n, step):
                b = min(n, a + step)
                ds.read_direct(buf, np.s_[a:b], np.s_[0 : b - a])
                problem = value_problem(buf[: b - a])
                if problem is not None:
                    raise DataError(f"{path}: '{name}' {problem}")
                for r, out in zip(rows, outs, strict=True):
                    lo, hi = np.searchsorted(r, (a, b))
                    out[lo:hi] = buf[r[lo:hi] - a]
    except DataError:
        raise
    except Exception as exc:  # a damaged chunk, a failing filter, ...
        raise DataError(f"{path}: unreadable HDF5 ({' '.join(str(exc).split())})") from None
    return [torch.from_numpy(o) for o in outs]


def _stream_features(path: Path, name: str, parts: Parts) -> list[FeatureArray]:
    rows = H5Rows(path, name)
    check_finite(rows, str(path), name)
    return [rows if p is None else rows.take(p) for p in parts]


def _labels(path: Path, name: str, y: np.ndarray, n: int, t: int) -> Tensor:
    """``[N, T]`` integer class ids (-1 = unknown) or ``[N, T, C]`` multi-hot (bool or 0/1)."""
    if y.ndim == 3:
        if y.shape[:2] != (n, t) or y.shape[2] < 1:
            raise DataError(f"{path}: '{name}' has shape {y.shape}, expected ({n}, {t}, C)")
        if y.shape[2] > MAX_CLASSES:
            raise DataError(f"{path}: '{name}' has {y.shape[2]} classes, at most {MAX_CLASSES}")
        if y.dtype.kind == "b":
            return torch.from_numpy(y.copy())
        if y.dtype.kind in "iuf" and np.isin(y, (0, 1)).all():
            return torch.from_numpy(y.astype(bool))
        raise DataError(f"{path}: '{name}' multi-hot labels must be bool or 0/1 values")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: '{name}' has dtype {y.dtype}, expected integers")
    if y.shape != (n, t):
        raise DataError(
            f"{path}: '{name}' has shape {y.shape}, expected ({n}, {t}) [N, T] or ({n}, {t}, C)"
        )
    if y.size and y.min() < -1:
        raise DataError(f"{path}: '{name}' has values below -1")
    if y.size and int(y.max()) >= MAX_CLASSES:  # e.g. uint32 2**32 - 1 meant as "unknown"
        raise DataError(
            f"{path}: '{name}' has the value {int(y.max())}, beyond {MAX_CLASSES - 1} (the "
            "largest class id); unknown steps are -1"
        )
    return torch.from_numpy(y.astype(np.int64))


def _mask(path: Path, name: str, k: np.ndarray, n: int, t: int) -> Tensor:
    if k.shape != (n, t):
        raise DataError(f"{path}: '{name}' has shape {k.shape}, expected ({n}, {t}) [N, T]")
    if k.dtype.kind == "b":
        return torch.from_numpy(k.copy())
    if k.dtype.kind in "iuf" and np.isin(k, (0, 1)).all():
        return torch.from_numpy(k.astype(bool))
    raise DataError(f"{path}: '{name}' must be bool or 0/1 values (dtype {k.dtype})")


def _check_memory(
    path: Path,
    shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    features: tuple[str, ...],
    side: list[str],
    npz: bool,
    streaming: bool,
    split: bool,
) -> None:
    """Refuse a read whose arrays would not fit in the available memory (before reading)."""
    need = shapes_bytes(shapes, side) + shapes_bytes(shapes, side, itemsize=8)  # labels: int64
    if npz:  # the file's arrays, their float32 copies, and the parts' rows
        need += shapes_bytes(shapes, features)
        need += shapes_bytes(shapes, features, itemsize=4) * (2 if split else 1)
        hint = " (an HDF5 file with data.streaming=on is read from disk instead)"
    elif not streaming:
        need += shapes_bytes(shapes, features, itemsize=4) + _streaming.CHUNK_BYTES
        hint = " (data.streaming=on reads it from disk instead)"
    else:
        hint = ""
    check_fits_memory(str(path), need, hint)


def _common_shape(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    n = t = first = None
    for m, shape in shapes.items():
        if n is None:
            n, t, first = shape[0], shape[1], m
        elif shape[0] != n:
            raise DataError(f"{path}: '{m}' has N={shape[0]} items but '{first}' has N={n}")
        elif shape[1] != t:
            raise DataError(f"{path}: '{m}' has T={shape[1]} steps but '{first}' has T={t}")
    assert n is not None and t is not None
    return int(n), int(t)


def _per_modality(
    path: Path,
    prefix: str,
    arrays: Mapping[str, np.ndarray],
    chosen: Mapping[str, object],
    feature_keys: list[str],
) -> dict[str, np.ndarray]:
    """``<prefix><m>`` arrays of the chosen modalities; of a modality without features: error."""
    out = {}
    for k, v in arrays.items():
        if not k.startswith(prefix):
            continue
        m = k[len(prefix) :]
        if m in chosen:
            out[m] = v
        elif m not in feature_keys:
            raise DataError(f"{path}: '{k}' has no feature array '{m}'")
    return out


def read_sequences(
    path: str | os.PathLike[str],
    modalities: tuple[str, ...] | None = None,
    *,
    streaming: bool = False,
) -> Sequences:
    """Read and validate one feature file; ``modalities`` picks (and requires) those arrays.

    ``streaming``: an HDF5 file's feature arrays stay on disk and are read in batches."""
    return read_parts(path, modalities, [None], streaming=streaming)[0]


def read_parts(
    path: str | os.PathLike[str],
    modalities: tuple[str, ...] | None,
    parts: Parts | Callable[[int], Parts],
    *,
    streaming: bool = False,
) -> list[Sequences]:
    """Validate a feature file and read it as one :class:`Sequences` per part (sorted item
    rows, or None for all; or a function of the file's N giving them), in one pass over the
    file: a train/val split of a file loaded into memory never holds the file twice."""
    path = Path(path)
    shapes = file_shapes(path)
    feature_keys = _feature_keys(shapes)
    if modalities is None:
        modalities = tuple(feature_keys)
        if not modalities:
            raise DataError(f"{path}: no feature arrays")
    missing = [m for m in modalities if m not in shapes]
    if missing:
        raise DataError(f"{path}: missing array '{missing[0]}' (has {sorted(shapes)})")
    for m in modalities:
        _check_feature_dtype(path, m, shapes[m][1], shapes[m][0])
    n, t = _common_shape(path, {m: shapes[m][0] for m in modalities})
    if callable(parts):
        parts = parts(n)
    side = [k for k in shapes if k == "labels" or k.startswith(("labels_", "mask_"))]
    npz = suffix(path) == ".npz"
    _check_memory(path, shapes, modalities, side, npz, streaming, split=parts != [None])
    if npz:
        arrays = read_npz(path, [*modalities, *side])
        full = {m: _as_features(path, m, arrays[m]) for m in modalities}
        cols = {
            m: [x if p is None else x[torch.from_numpy(p)] for p in parts] for m, x in full.items()
        }
    else:
        arrays = read_h5(path, side)
        read = _stream_features if streaming else _h5_features
        cols = {m: read(path, m, parts) for m in modalities}
    labels = None if "labels" not in arrays else _labels(path, "labels", arrays["labels"], n, t)
    own = _per_modality(path, "labels_", arrays, cols, feature_keys)
    own_labels = {m: _labels(path, f"labels_{m}", y, n, t) for m, y in own.items()}
    masks = _per_modality(path, "mask_", arrays, cols, feature_keys)
    mask_of = {m: _mask(path, f"mask_{m}", k, n, t) for m, k in masks.items()}
    out = []
    for i, p in enumerate(parts):
        rows = None if p is None else torch.from_numpy(p)

        def take(y: Tensor, rows: Tensor | None = rows) -> Tensor:
            return y if rows is None else y[rows]

        out.append(
            Sequences(
                features={m: c[i] for m, c in cols.items()},
                labels=None if labels is None else take(labels),
                masks={m: take(k) for m, k in mask_of.items()} or None,
                modality_labels={m: take(y) for m, y in own_labels.items()} or None,
            )
        )
    return out


def write_sequences(path: str | os.PathLike[str], seqs: Sequences) -> None:
    """Write ``seqs`` in the bring-your-own format (.npz or .h5/.hdf5 by suffix)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {m: np.asarray(x[:]) for m, x in seqs.features.items()}
    if seqs.labels is not None:
        arrays["labels"] = seqs.labels.numpy()
    for m, y in (seqs.modality_labels or {}).items():
        arrays[f"labels_{m}"] = y.numpy()
    for m, k in (seqs.masks or {}).items():
        arrays[f"mask_{m}"] = k.numpy()
    _write_arrays(path, arrays)


def _write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    if suffix(path) == ".npz":
        np.savez(path, **arrays)
    else:
        import h5py

        release(path)  # a cached read handle would block rewriting the file
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
