"""Resumable conversion of many small items into one HDF5 feature file (one chunk per item).

:func:`write_items` converts the items of an :class:`ItemFile` in order, a shard of
``shard_items`` at a time. Each shard is written under a temporary name and renamed when
complete, so an interrupted conversion (Ctrl-C, SIGKILL, a full disk) leaves only whole shards
and a rerun continues after the last one. When every shard is there they are copied, in order
and in bounded chunks, into the final file, again under a temporary name first; then the
shards are removed. A final file is therefore complete or absent, never half-written, and a
rerun finds it done. An item the reader cannot convert raises :class:`Skip` with the reason;
it is left out and listed (``meta_skipped_ids`` / ``meta_skipped_reasons`` in the file). The
output depends only on the items and the reader, not on where a run was interrupted.

Every shard and the final file carry a fingerprint of the inputs and settings: a rerun with
other ones is refused instead of mixing two conversions.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._util import atomic_path
from .types import DataError

__all__ = ["Column", "FileReport", "ItemFile", "Skip", "write_items"]

Progress = Callable[[str], None]


class Skip(Exception):
    """An item that cannot be converted; the message is the reason (one line)."""


@dataclass(frozen=True)
class Column:
    """One array of the output file: ``[N, *shape]`` of ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float16", "float32", "bool", "int64"


@dataclass(frozen=True)
class ItemFile:
    """A file to write: its columns, its items (ids, in row order) and the item reader."""

    path: Path
    columns: tuple[Column, ...]
    ids: Sequence[str]
    read: Callable[[int], dict[str, np.ndarray]]  # item index -> one array per column
    fingerprint: str  # of the inputs and settings; a rerun must match it
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class FileReport:
    """What :func:`write_items` did for one file."""

    path: Path
    converted: int
    skipped: list[tuple[str, str]]  # (id, reason)
    resumed: bool = False  # already complete, or continued from earlier shards


def _work_dir(item_file: ItemFile) -> Path:
    return item_file.path.parent / ".import" / item_file.path.name


def _fingerprint_of(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("comet_fingerprint", ""))
    except OSError:
        return None


def _refuse(path: Path) -> DataError:
    return DataError(
        f"{path}: written by an import with other inputs or settings "
        "(use --fresh, or another --out)"
    )


def _write_shard(
    item_file: ItemFile, start: int, stop: int, tmp: Path, tick: Callable[[int], None]
) -> None:
    """Items ``[start, stop)`` into the shard ``tmp``, row by row (bounded memory)."""
    import h5py

    ids, skipped, reasons = [], [], []
    with h5py.File(tmp, "w") as f:
        cols = {
            c.name: f.create_dataset(
                c.name,
                shape=(0, *c.shape),
                maxshape=(None, *c.shape),
                dtype=c.dtype,
                chunks=(1, *c.shape),
            )
            for c in item_file.columns
        }
        for i in range(start, stop):
            tick(i)
            try:
                arrays = item_file.read(i)
            except Skip as exc:
                skipped.append(item_file.ids[i])
                reasons.append(str(exc))
                continue
            for c in item_file.columns:
                ds = cols[c.name]
                ds.resize(len(ids) + 1, axis=0)
                ds[len(ids)] = np.asarray(arrays[c.name], dtype=c.dtype).reshape(c.shape)
            ids.append(item_file.ids[i])
        _strings_dataset(f, "ids", ids)
        _strings_dataset(f, "skipped", skipped)
        _strings_dataset(f, "reasons", reasons)
        f.attrs["comet_fingerprint"] = item_file.fingerprint
        f.attrs["range"] = (start, stop)


def _strings_dataset(f: object, name: str, values: Sequence[str]) -> None:
    import h5py

    data = np.array(list(values), dtype=object).reshape(-1)
    f.create_dataset(name, data=data, dtype=h5py.string_dtype())  # type: ignore[attr-defined]


def _strings(ds: object) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]  # type: ignore[index]


def _assemble(item_file: ItemFile, shards: list[Path]) -> FileReport:
    """Copy the shards in order into the final file (via a temporary name)."""
    import h5py

    counts, ids, skipped = [], [], []
    for p in shards:
        with h5py.File(p, "r") as s:
            counts.append(len(s["ids"]))
            ids += _strings(s["ids"])
            skipped += list(zip(_strings(s["skipped"]), _strings(s["reasons"]), strict=True))
    n = sum(counts)
    with atomic_path(item_file.path) as tmp, h5py.File(tmp, "w") as f:
        for c in item_file.columns:
            # features [N, T, d]: one chunk per item, so reading a row reads one chunk; the
            # small side arrays (labels, masks), read whole, get chunks of about 1 MB
            item_bytes = np.dtype(c.dtype).itemsize * math.prod(c.shape)
            side = c.name.startswith(("labels", "mask_"))
            rows = max(1, (1 << 20) // item_bytes) if side else 1
            chunks = (min(rows, max(n, 1)), *c.shape) if n else None
            ds = f.create_dataset(c.name, shape=(n, *c.shape), dtype=c.dtype, chunks=chunks)
            at = 0
            for p, cnt in zip(shards, counts, strict=True):
                with h5py.File(p, "r") as s:
                    src = s[c.name]
                    for a in range(0, cnt, 64):  # 64 items at a time: bounded memory
                        b = min(cnt, a + 64)
                        ds[at + a : at + b] = src[a:b]
                at += cnt
        _strings_dataset(f, "meta_ids", ids)
        _strings_dataset(f, "meta_skipped_ids", [s for s, _ in skipped])
        _strings_dataset(f, "meta_skipped_reasons", [r for _, r in skipped])
        for k, v in item_file.attrs.items():
            f.attrs[k] = v
        f.attrs["comet_fingerprint"] = item_file.fingerprint
    return FileReport(item_file.path, n, skipped)


def _report_of(path: Path) -> FileReport:
    import h5py

    with h5py.File(path, "r") as f:
        skipped = list(
            zip(_strings(f["meta_skipped_ids"]), _strings(f["meta_skipped_reasons"]), strict=True)
        )
        return FileReport(path, len(f["meta_ids"]), skipped, resumed=True)


def _eta(done: int, remaining: int, seconds: float) -> str:
    """Rate of the ``done`` items of this run and the time the ``remaining`` ones will take."""
    rate = done / seconds if seconds > 0 else 0.0
    left = remaining / rate if rate > 0 else math.inf
    when = "?" if not math.isfinite(left) else f"{int(left // 60)} min {int(left % 60):02d} s"
    return f"{rate:.1f} items/s, {when} left"


def write_items(
    item_file: ItemFile,
    *,
    shard_items: int = 256,
    progress: Progress | None = None,
    every: float = 2.0,
) -> FileReport:
    """Convert ``item_file`` (resuming earlier shards); see the module docstring."""
    path, total = item_file.path, len(item_file.ids)
    if path.exists():
        if _fingerprint_of(path) != item_file.fingerprint:
            raise _refuse(path)
        return _report_of(path)
    work = _work_dir(item_file)
    work.mkdir(parents=True, exist_ok=True)
    bounds = [(s, min(total, s + shard_items)) for s in range(0, total, shard_items)]
    shards = [work / f"shard_{k:05d}.h5" for k in range(len(bounds))]
    done = [p.exists() for p in shards]
    for p in (p for p, d in zip(shards, done, strict=True) if d):
        if _fingerprint_of(p) != item_file.fingerprint:
            raise _refuse(p)
    t0 = last = time.perf_counter()  # the first line after `every` seconds
    resumed = any(done)
    before = sum(b - a for (a, b), d in zip(bounds, done, strict=True) if d)
    first_new = None

    def tick(i: int) -> None:
        nonlocal last, first_new
        first_new = i if first_new is None else first_new
        now = time.perf_counter()
        if progress is None or now - last < every:
            return
        last = now
        fresh = i - first_new  # items converted by this run so far (in item order)
        converted = before + fresh
        progress(
            f"{path.name}: {converted:,}/{total:,} items ({100.0 * converted / total:.0f} %), "
            f"{_eta(fresh, total - converted, now - t0)}"
        )

    for k, ((start, stop), p) in enumerate(zip(bounds, shards, strict=True)):
        if done[k]:
            continue
        with atomic_path(p) as tmp:
            _write_shard(item_file, start, stop, tmp, tick)
    if progress is not None and total:
        progress(f"{path.name}: {total:,}/{total:,} items, {time.perf_counter() - t0:.1f} s")
    report = _assemble(item_file, shards)
    report.resumed = resumed
    shutil.rmtree(work)
    if not any(work.parent.iterdir()):
        work.parent.rmdir()
    return report
