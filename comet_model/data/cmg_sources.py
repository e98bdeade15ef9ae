"""CMG/DCID's released data containers, read and checked (dcid_reference sections 2-4).

- VGGSound-AVEL 40K: a csv (``video_id``, ``category``, ``split``), one zip per clip and
  modality holding one pickled array (audio VGGish ``[T <= 10, 128]``, video VGG19 pool5
  ``[10, 7, 7, 512]``, float64), class prompts in a csv (``label``, prompt in the 2nd column);
- AVE: h5 files ``visual_feature.h5`` / ``audio_feature.h5`` / ``labels.h5`` (dataset
  ``avadataset``; labels one-hot ``[N, 10, 29]``, background last) and ``{split}_order.h5``
  (dataset ``order``);
- AVVP: ``feature/{audio,video}/zip/<11-char id>.zip`` and tab-separated
  ``data/AVVP_eval_{audio,visual}_checked_combined.csv`` (``filename``, ``onset``, ``offset``,
  ``event_labels``; comma lists when a clip has several events), ``data/AVVP_Categories.txt``.

A bad container (missing file, unreadable csv, wrong header) raises :class:`DataError`; a bad
item (missing or damaged zip, a pickle that is not a numeric array, a wrong shape, NaN) raises
:class:`~comet_model.data.h5_writer.Skip` with the reason, so the import goes on without it.
Audio is padded to 10 rows by repeating the last row or cut to 10 rows, as CMG's loaders do.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .h5_writer import Skip
from .safe_pickle import load_zip_array
from .types import DataError

__all__ = [
    "AUDIO_DIM",
    "STEPS",
    "AVESource",
    "avvp_labels",
    "fit_audio",
    "fit_video",
    "read_categories",
    "read_csv",
    "shared_by_name",
    "zip_reader",
]

STEPS = 10  # one-second segments per clip, tokens per prompt
AUDIO_DIM = 128  # VGGish
_F16_MAX = float(np.finfo(np.float16).max)


def read_csv(path: Path, columns: tuple[str, ...], *, sep: str = ",") -> list[dict[str, str]]:
    """The rows of a csv with a header naming at least ``columns``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fp:
            reader = csv.DictReader(fp, delimiter=sep)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: no column '{missing[0]}' (header: {header})")
            reader.fieldnames = header
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable csv ({' '.join(str(exc).split())})") from None


def read_prompts(path: Path) -> dict[str, str]:
    """Class label -> prompt (the ``label`` column and the second column)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as fp:
        try:
            rows = list(csv.reader(fp))
        except csv.Error as exc:
            raise DataError(f"{path}: unreadable csv ({exc})") from None
    if not rows or len(rows[0]) < 2 or rows[0][0].strip() != "label":
        raise DataError(f"{path}: expected a header 'label,<prompt column>'")
    return {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2 and r[0].strip()}


def read_categories(path: Path) -> list[str]:
    """One class name per non-empty line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: no category names")
    return names


def _values(x: np.ndarray, dtype: str, what: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise Skip(f"{what} has NaN or Inf")
    if dtype == "float16" and x.size and float(np.abs(x).max()) > _F16_MAX:
        raise Skip(f"{what} exceeds the float16 range (import with --dtype float32)")
    return x


def fit_audio(a: np.ndarray, dtype: str) -> np.ndarray:
    """``[T, 128]`` -> ``[10, 128]``: repeat the last row up to 10 rows, or keep the first 10."""
    if a.ndim != 2 or a.shape[1] != AUDIO_DIM or a.shape[0] < 1:
        raise Skip(f"audio has shape {a.shape}, expected [T, {AUDIO_DIM}]")
    if a.shape[0] < STEPS:
        a = np.concatenate([a, np.repeat(a[-1:], STEPS - a.shape[0], axis=0)])
    return _values(a[:STEPS], dtype, "audio")


def fit_video(v: np.ndarray, grid: tuple[int, int, int], dtype: str) -> np.ndarray:
    """``[10, H, W, C]`` (or already ``[10, H*W*C]``) -> ``[10, H*W*C]``, channels fastest."""
    width = grid[0] * grid[1] * grid[2]
    if v.shape not in ((STEPS, *grid), (STEPS, width)):
        want = "x".join(map(str, grid))
        raise Skip(f"video has shape {v.shape}, expected [{STEPS}, {want.replace('x', ', ')}]")
    return _values(v.reshape(STEPS, width), dtype, "video")


def zip_reader(folder: Path, modality: str) -> Callable[[str], np.ndarray]:
    """``id -> array`` of ``folder/<id>.zip``; problems become :class:`Skip` (reasons without
    the id, which the import records beside them)."""

    def read(item_id: str) -> np.ndarray:
        path = folder / f"{item_id}.zip"
        try:
            return load_zip_array(str(path)).astype(np.float64, copy=False)
        except FileNotFoundError:
            raise Skip(f"{modality} zip missing") from None
        except DataError as exc:
            detail = str(exc).split(": ", 1)[-1] if str(exc).startswith(str(path)) else str(exc)
            raise Skip(f"{modality}: {detail}") from None

    return read


def _h5_dataset(path: Path, name: str) -> Any:
    import h5py

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")[name]
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: no readable dataset '{name}' ({exc})") from None


class AVESource:
    """The AVE h5 files of a folder: features, one-hot labels and the split orders."""

    def __init__(self, folder: Path, grid: tuple[int, int, int]) -> None:
        self.folder, self.grid = folder, grid
        self.video = _h5_dataset(folder / "visual_feature.h5", "avadataset")
        self.audio = _h5_dataset(folder / "audio_feature.h5", "avadataset")
        self.labels = _h5_dataset(folder / "labels.h5", "avadataset")
        n = self.labels.shape[0]
        if self.labels.ndim != 3 or self.labels.shape[1] != STEPS or self.labels.shape[2] < 2:
            where = folder / "labels.h5"
            raise DataError(f"{where}: shape {self.labels.shape}, expected [N, 10, C]")
        for ds, name, shape in (
            (self.video, "visual_feature.h5", (STEPS, *grid)),
            (self.audio, "audio_feature.h5", (STEPS, AUDIO_DIM)),
        ):
            if ds.shape != (n, *shape):
                raise DataError(f"{folder / name}: shape {ds.shape}, expected {(n, *shape)}")
        self.num_classes = int(self.labels.shape[2])

    def order(self, split: str) -> list[int]:
        """Row indices of ``{split}_order.h5``."""
        path = self.folder / f"{split}_order.h5"
        rows = np.asarray(_h5_dataset(path, "order")[()]).reshape(-1)
        n = len(self.labels)
        if rows.dtype.kind not in "iuf" or (rows.size and not 0 <= rows.min() <= rows.max() < n):
            raise DataError(f"{path}: 'order' must hold row indices below {n}")
        return [int(r) for r in rows]

    def item(self, row: int, dtype: str) -> dict[str, np.ndarray]:
        """video ``[10, H*W*C]``, audio ``[10, 128]`` and int labels ``[10]`` (-1: none)."""
        onehot = np.asarray(self.labels[row])
        labels = np.where(onehot.max(-1) > 0, onehot.argmax(-1), -1)
        video = np.asarray(self.video[row], dtype=np.float64)
        audio = np.asarray(self.audio[row], dtype=np.float64)
        return {
            "video": fit_video(video, self.grid, dtype),
            "audio": fit_audio(audio, dtype),
            "labels": labels,
        }


def avvp_labels(path: Path, categories: list[str]) -> dict[str, np.ndarray]:
    """11-char clip id -> multi-hot ``[10, C + 1]`` (last column: background) of one csv."""
    out: dict[str, np.ndarray] = {}
    index = {c: i for i, c in enumerate(categories)}
    cols = ("filename", "onset", "offset", "event_labels")
    for n, row in enumerate(read_csv(path, cols, sep="\t"), start=2):
        events = [e.strip() for e in row["event_labels"].split(",")]
        try:
            onsets = [int(float(x)) for x in row["onset"].split(",")]
            offsets = [int(float(x)) for x in row["offset"].split(",")]
        except ValueError:
            raise DataError(f"{path}: line {n}: onset/offset are not integers") from None
        if not len(events) == len(onsets) == len(offsets):
            raise DataError(f"{path}: line {n}: onset, offset and event_labels differ in length")
        unknown = [e for e in events if e not in index]
        if unknown:
            raise DataError(f"{path}: line {n}: unknown category '{unknown[0]}'")
        clip = row["filename"][:11]
        y = out.setdefault(clip, np.zeros((STEPS, len(categories) + 1), dtype=bool))
        for e, a, b in zip(events, onsets, offsets, strict=True):
            y[max(0, a) : min(STEPS, b), index[e]] = True
    for y in out.values():
        y[:, -1] = ~y[:, :-1].any(-1)
    return out


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower().replace("_", " ")))


def shared_by_name(
    ave: list[str], avvp: list[str], only: list[str] | None = None
) -> list[tuple[int, int]]:
    """(AVE class, AVVP class) pairs whose names' word sets contain one another ("Violin" and
    "Violin_fiddle", "Male speech" and "Speech"); ``only``: keep pairs whose AVE or AVVP name
    is listed there (CMG's ``AVE_AVVP_Categories.txt``)."""
    keep = None if only is None else {frozenset(_words(n)) for n in only}
    pairs = []
    for i, a in enumerate(ave):
        best: tuple[float, int] | None = None  # (word overlap, AVVP class): the closest name
        for j, b in enumerate(avvp):
            wa, wb = _words(a), _words(b)
            if not (wa and wb and (wa <= wb or wb <= wa)):
                continue
            if keep is None or frozenset(wa) in keep or frozenset(wb) in keep:
                score = len(wa & wb) / len(wa | wb)
                best = (score, j) if best is None or score > best[0] else best
        if best is not None:
            pairs.append((i, best[1]))
    return pairs
