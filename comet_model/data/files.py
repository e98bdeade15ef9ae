"""Opening bring-your-own feature files safely: every claim of a header checked before use.

What a file says about itself is checked against what it holds and against the machine before
anything is allocated:

- the path is a readable file (not missing, not a folder, permission granted);
- ``.npz``: every ``.npy`` header's shape and dtype, times the element size, must match the
  bytes its zip member holds (a damaged or hand-edited header claiming petabytes is refused
  from the zip directory alone); damaged compressed data is one line, not a ``zlib.error``;
- HDF5: every dataset's bytes must be stored in the file (contiguous storage of the full size,
  or every chunk written), and the stored bytes cannot exceed the file's size (truncated);
- what a read would hold in memory is compared with the memory available
  (:func:`~comet_model.data.streaming.available_memory`).

Every problem raises :class:`DataError` with one line naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .streaming import available_memory, release_changed
from .types import DataError

__all__ = [
    "FEATURE_SUFFIXES",
    "Shapes",
    "check_fits_memory",
    "file_shapes",
    "format_bytes",
    "read_h5",
    "read_npz",
    "shapes_bytes",
    "suffix",
]

FEATURE_SUFFIXES = (".npz", ".h5", ".hdf5")
Shapes = dict[str, tuple[tuple[int, ...], np.dtype]]  # array name -> (shape, dtype)


def suffix(path: Path) -> str:
    """The file type of ``path`` (``.npz``, ``.h5`` or ``.hdf5``); DataError otherwise."""
    ext = path.suffix.lower()
    if ext not in FEATURE_SUFFIXES:
        raise DataError(f"{path}: unknown file type (expected {', '.join(FEATURE_SUFFIXES)})")
    return ext


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _readable(path: Path) -> int:
    """The size of the readable file ``path``; DataError naming the actual problem."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a feature file")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb"):
            pass
        return path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _npy_header(fp, version: tuple[int, int]) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    else:  # version 3.0 (UTF-8 field names): only a private reader exists
        from numpy.lib import _format_impl

        shape, _, dtype = _format_impl._read_array_header(fp, version)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npz_shapes(path: Path) -> Shapes:
    """Shapes and dtypes from the ``.npy`` headers, each checked against its member's size."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: unreadable .npz (not a zip archive)")
    out: Shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                with zf.open(info) as fp:
                    shape, dtype = _npy_header(fp, np.lib.format.read_magic(fp))
                    held = info.file_size - fp.tell()
                claimed = _nbytes(shape, dtype)
                if dtype.hasobject:
                    raise DataError(f"{path}: holds object arrays (not supported)")
                if claimed != held:
                    raise DataError(
                        f"{path}: '{name}' header claims shape {shape} {dtype} "
                        f"({claimed:,} bytes) but the file holds {held:,} bytes (damaged)"
                    )
                out[name] = (shape, dtype)
    except DataError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, a malformed header, ...
        raise DataError(f"{path}: unreadable .npz ({_reason(exc)})") from None
    return out


def _h5_problem(ds, file_size: int) -> str | None:
    """Why the bytes of dataset ``ds`` are not all in the file (None: they are)."""
    nbytes = _nbytes(ds.shape, ds.dtype)
    stored = ds.id.get_storage_size()
    if ds.chunks is None:
        if stored < nbytes and nbytes > 0:
            return f"claims {nbytes:,} bytes but stores {stored:,} (unwritten or damaged)"
    else:
        expected = math.prod(-(-s // c) for s, c in zip(ds.shape, ds.chunks, strict=True))
        written = ds.id.get_num_chunks()
        if written < expected:
            return f"has {written:,} of its {expected:,} chunks written (unwritten or damaged)"
    if stored > file_size:
        return f"stores {stored:,} bytes in a file of {file_size:,} (truncated)"
    return None


def _h5_shapes(path: Path, size: int) -> Shapes:
    import h5py

    release_changed(path)
    try:
        with h5py.File(path, "r") as f:
            out: Shapes = {}
            for k, v in f.items():
                if not isinstance(v, h5py.Dataset):
                    continue
                if not k.startswith(("meta_", "_")):
                    problem = _h5_problem(v, size)
                    if problem is not None:
                        raise DataError(f"{path}: '{k}' {tuple(v.shape)} {problem}")
                out[k] = (tuple(int(s) for s in v.shape), np.dtype(v.dtype))
            return out
    except DataError:
        raise
    except Exception as exc:  # OSError of a damaged file, unsupported types, ...
        raise DataError(f"{path}: unreadable HDF5 ({_reason(exc)})") from None


def file_shapes(path: str | os.PathLike[str]) -> Shapes:
    """Shape and dtype of every top-level array of a feature file (headers only, checked)."""
    path = Path(path)
    ext = suffix(path)
    size = _readable(path)
    return _npz_shapes(path) if ext == ".npz" else _h5_shapes(path, size)


def check_fits_memory(where: str, nbytes: int, hint: str = "") -> None:
    """Raise :class:`DataError` when ``nbytes`` exceed the memory available (if known)."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(
            f"{where}: needs {format_bytes(nbytes)} of memory, {format_bytes(free)} available{hint}"
        )


def read_npz(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` whose headers :func:`file_shapes` checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in names}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"{path}: holds object arrays (not supported)") from None
        raise DataError(f"{path}: unreadable .npz ({_reason(exc)})") from None
    except Exception as exc:  # zlib.error of a damaged deflate stream, BadZipFile (CRC), ...
        raise DataError(f"{path}: unreadable .npz ({_reason(exc)})") from None


def read_h5(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The whole datasets ``names`` of an HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k][()]) for k in names}
    except Exception as exc:
        raise DataError(f"{path}: unreadable HDF5 ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, zlib.error):
        return f"damaged compressed data: {text}"
    kind = type(exc).__name__
    return f"{kind}: {text}" if text and kind not in ("OSError", "ValueError") else text or kind


def shapes_bytes(shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]], names: Iterable[str],
                 itemsize: int | None = None) -> int:  # fmt: skip
    """Bytes of the arrays ``names`` (in their dtypes, or at ``itemsize`` bytes an element)."""
    return sum(
        math.prod(shapes[k][0]) * (shapes[k][1].itemsize if itemsize is None else itemsize)
        for k in names
    )
