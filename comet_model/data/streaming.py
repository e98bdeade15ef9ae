"""Feature arrays larger than memory: HDF5 rows read on demand, in batches.

:class:`H5Rows` stands in for a ``[N, T, d]`` float32 tensor of a ``Sequences``: it knows its
shape, and ``rows[index]`` reads just those rows from the file (one HDF5 read per row, which for
the importer's one-chunk-per-item layout is one contiguous read each) and returns them as a
float32 tensor with exactly the values the in-memory path holds (float16 and float64 files are
converted the same way, float32 is read as is). So the training loop, the Fisher batches and the
evaluation draw the same batches in the same seeded order from either storage, and their
results are identical. ``take`` gives a row view (no read), as ``Tensor[index]`` gives a copy.

File handles are opened lazily, one per file and process (an ``H5Rows`` pickles as path, name
and rows, so it can cross into Ray workers or forked processes). Validation streams too:
:func:`check_finite` scans a dataset in bounded chunks for NaN and Inf without converting it.

:func:`should_stream` is the automatic choice: stream when the float32 size of a plan's feature
arrays exceeds half the memory available to this process (``MemAvailable``, capped by a cgroup
limit).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .types import DataError

__all__ = [
    "CHUNK_BYTES",
    "H5Rows",
    "available_memory",
    "check_finite",
    "nonfinite",
    "release",
    "release_changed",
    "row_chunks",
    "rows_per_chunk",
    "should_stream",
    "value_problem",
]

CHUNK_BYTES = 1 << 26  # 64 MiB of float32 per chunk when scanning or quantising a whole array
_EXPONENT = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}  # all-ones exponent: NaN or Inf
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_FILES: dict[tuple[str, int], tuple[tuple[int, int, int], Any]] = {}  # (path, pid) -> stamp, file


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def _dataset(path: str, name: str, stamp: tuple[int, int, int] | None = None) -> Any:
    """Dataset ``name`` of the file at ``path`` through a per-process cache of open files; with
    ``stamp``, the file must still be the one seen then (not replaced or rewritten)."""
    try:
        now = _stamp(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stamp is not None and now != stamp:
        raise DataError(f"{path}: the file changed after it was loaded (load the plan again)")
    key = (path, os.getpid())
    cached = _FILES.get(key)
    if cached is None or cached[0] != now or not cached[1].id.valid:
        import h5py

        if cached is not None and cached[1].id.valid:
            cached[1].close()
        try:  # no chunk cache: every read is a whole chunk (one item), read into our buffer
            cached = _FILES[key] = (now, h5py.File(path, "r", rdcc_nbytes=0))
        except OSError as exc:
            _FILES.pop(key, None)
            raise DataError(f"{path}: unreadable HDF5 ({' '.join(str(exc).split())})") from None
    return cached[1][name]


def release_changed(path: str | os.PathLike[str]) -> None:
    """Close this process's cached handle of ``path`` if the file changed since it was opened:
    HDF5 would hand a new open of the same file that stale handle, unchecked."""
    key = (str(Path(path)), os.getpid())
    cached = _FILES.get(key)
    try:
        changed = cached is not None and cached[0] != _stamp(key[0])
    except OSError:
        changed = True
    if changed:
        release(path)


def release(path: str | os.PathLike[str] | None = None) -> None:
    """Close this process's cached read handles (of ``path``, or all), e.g. before rewriting
    the file in place: HDF5 refuses to truncate a file that is open."""
    for key in [k for k in _FILES if path is None or k[0] == str(Path(path))]:
        _, f = _FILES.pop(key)
        if f.id.valid:
            f.close()


class H5Rows:
    """Rows of a ``[N, T, d]`` float dataset of an HDF5 file, read on demand as float32."""

    ndim = 3
    dtype = torch.float32  # what indexing returns (the file may hold float16/32/64)

    def __init__(self, path: str | os.PathLike[str], name: str, rows: np.ndarray | None = None):
        self.path, self.name = str(Path(path)), name
        ds = _dataset(self.path, name)
        self.stamp = _stamp(self.path)
        if ds.ndim != 3 or ds.dtype.kind != "f" or ds.dtype.itemsize not in _UINT:
            raise DataError(f"{path}: '{name}' is {ds.dtype} {ds.shape}, expected float [N, T, d]")
        self.file_dtype = np.dtype(ds.dtype)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = ds.shape[0] if self.rows is None else len(self.rows)
        self.shape = torch.Size((n, *ds.shape[1:]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"H5Rows({self.path!r}, {self.name!r}, shape={tuple(self.shape)})"

    @property
    def nbytes(self) -> int:
        """Bytes of these rows as float32 in memory."""
        return 4 * int(np.prod(self.shape))

    def _file_rows(self, index: Any) -> np.ndarray:
        if isinstance(index, Tensor):
            index = index.cpu().numpy()
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        idx = np.where(idx < 0, idx + len(self), idx)
        return idx if self.rows is None else self.rows[idx]

    def take(self, index: Any) -> H5Rows:
        """The rows ``index`` as a new view (nothing is read)."""
        view = object.__new__(H5Rows)
        view.__dict__.update(self.__dict__)
        view.rows = self._file_rows(index)
        view.shape = torch.Size((len(view.rows), *self.shape[1:]))
        return view

    def __getitem__(self, index: Any) -> Tensor:
        """Rows ``index`` (a long tensor, array, list, slice or int) as float32 ``[n, T, d]``."""
        scalar = isinstance(index, (int, np.integer))
        rows = self._file_rows(index)
        ds = _dataset(self.path, self.name, self.stamp)
        buf = np.empty((len(rows), *self.shape[1:]), dtype=self.file_dtype)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            ds.read_direct(buf, np.s_[rows[0] : rows[0] + len(rows)])  # one contiguous read
        else:  # per-row reads: h5py's fancy indexing is ~40x slower for scattered rows
            for j, r in enumerate(rows):
                ds.read_direct(buf, np.s_[r : r + 1], np.s_[j : j + 1])
        out = torch.from_numpy(buf)
        out = out if self.file_dtype == np.float32 else out.to(torch.float32)
        return out[0] if scalar else out

    def chunks(self, max_rows: int) -> Iterator[Tensor]:
        """Consecutive float32 chunks of at most ``max_rows`` rows, in row order."""
        for start in range(0, len(self), max_rows):
            yield self[slice(start, start + max_rows)]


def rows_per_chunk(x: Tensor | H5Rows, max_rows: int, budget: int | None = None) -> int:
    """At most ``max_rows`` rows, fewer when that many float32 rows exceed ``budget`` bytes
    (default ``CHUNK_BYTES``). A function of the shape only, so streamed and in-memory arrays
    are chunked alike."""
    budget = CHUNK_BYTES if budget is None else budget
    row_bytes = 4 * int(np.prod(tuple(x.shape[1:]))) or 1
    return max(1, min(max_rows, budget // row_bytes))


def row_chunks(x: Tensor | H5Rows, max_rows: int) -> Iterator[Tensor]:
    """Consecutive row chunks of a tensor (views) or of an :class:`H5Rows` (reads)."""
    if isinstance(x, Tensor):
        yield from x.split(max_rows)
    else:
        yield from x.chunks(max_rows)


def nonfinite(raw: np.ndarray) -> bool:
    """Whether a float array has NaN or Inf (exponent bits all ones; no float conversion)."""
    size = raw.dtype.itemsize
    bits = raw.view(_UINT[size])
    return bool(((bits & _UINT[size](_EXPONENT[size])) == _EXPONENT[size]).any())


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def value_problem(raw: np.ndarray) -> str | None:
    """What makes the float array ``raw`` unusable as float32 features: NaN or Inf, or (float64)
    a finite value beyond float32's range, which would become Inf; None when nothing does."""
    if nonfinite(raw):
        return "contains NaN or Inf"
    if raw.dtype.itemsize > 4 and raw.size:
        top = float(np.abs(raw).max())
        if top > _FLOAT32_MAX:
            return f"holds {top:.4g}, which overflows float32 (largest {_FLOAT32_MAX:.4g})"
    return None


def check_finite(x: Tensor | H5Rows, source: str, name: str) -> None:
    """Raise :class:`DataError` ``"<source>: '<name>' contains NaN or Inf"`` if it does (or
    holds float64 values beyond float32's range); an :class:`H5Rows` is scanned from its file
    in chunks of about ``CHUNK_BYTES``."""
    problem = None
    if isinstance(x, Tensor):  # by row chunks: torch.isfinite makes full-size temporaries
        bad = any(
            not bool(torch.isfinite(c).all()) for c in x.split(rows_per_chunk(x, len(x) or 1))
        )
    else:
        ds = _dataset(x.path, x.name, x.stamp)
        step = rows_per_chunk(x, len(x) or 1)
        bad = False
        if x.rows is None:
            buf = np.empty((step, *x.shape[1:]), dtype=x.file_dtype)
            for start in range(0, len(x), step):
                n = min(step, len(x) - start)
                ds.read_direct(buf, np.s_[start : start + n], np.s_[0:n])
                problem = value_problem(buf[:n])
                if problem is not None:
                    break
        else:
            bad = any(not bool(torch.isfinite(c).all()) for c in x.chunks(step))
    if bad:
        problem = "contains NaN or Inf"
    if problem is not None:
        raise DataError(f"{source}: '{name}' {problem}")


def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if limit == "max":
        return None
    return max(0, int(limit) - int(used))


def available_memory() -> int | None:
    """Bytes of memory this process could still use (None if the system does not say)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    cgroup = _cgroup_free()
    if cgroup is not None:
        free = cgroup if free is None else min(free, cgroup)
    return free


def should_stream(nbytes: int, available: int | None = None) -> bool:
    """The automatic choice: stream when ``nbytes`` (float32 in memory) is over half of the
    available memory (never when the system does not report it)."""
    available = available_memory() if available is None else available
    return available is not None and nbytes > available // 2
