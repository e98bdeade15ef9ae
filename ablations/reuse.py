"""Run reuse: a run another sweep of the same storage already finished is copied, not retrained.

Sweeps of one study share runs: the ``methods`` grid's DCID, DCID+COMET and DCID+COMET+mEWC
arms are the ``ablations`` grid's DCID, full and COMET+mEWC, and the expert curve's default
expert count is ``full`` again (18 of the study's 133 trials at its seeds). A run key is a hash
of the whole resolved config with its seed; a pipeline with a fixed seed is deterministic, so a
finished run of the same key made by the same code (commit and uncommitted diff), on the same
data, device, thread count and library versions holds exactly the numbers a new run would
produce. Such a *donor* run's final checkpoint is copied into the new run's work folder; the
pipeline then returns its stored stage metrics at once, and the trial records them under its own
sweep, arm and trial id, with ``reused_from`` naming the donor's sweep (the report counts them).

Anything unknown rules reuse out: a code state without a git commit or with an unknown dirty
flag, a donor whose checkpoint is missing or incomplete. ``--no-reuse`` trains every run.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Donor", "copied_donor", "copy_donor", "find_donor", "same_origin"]

CHECKPOINT = "checkpoint.pt"  # comet_model.continual.resume.CHECKPOINT (no torch import here)
MARKER = "reused_from.txt"  # in a work folder whose checkpoint was copied: the donor's sweep
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Donor:
    """A finished run of another sweep: its sweep name and its work folder."""

    sweep: str
    work: Path


def _norm(value: object) -> object:
    """One comparable form of a provenance value read from Parquet or made in this process."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return value


def same_origin(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether a recorded run's provenance (``reports.schema.PROVENANCE`` columns) makes it
    interchangeable with a run made now: every column equal, and the code state known."""
    from reports.schema import PROVENANCE

    known = str(now.get("code_commit", UNKNOWN)) not in ("", UNKNOWN)
    if not known or _norm(now.get("code_dirty")) is None:
        return False
    return all(_norm(recorded.get(name)) == _norm(now.get(name)) for name in PROVENANCE)


def _newest_status(files: list[Path]) -> dict[str, Any] | None:
    """The newest row (``recorded_at``; on a tie the later file name, which ends in the write's
    nanoseconds) of one run's status files in one sweep; a damaged file is skipped."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(files):
        try:
            rows += pq.read_table(path).to_pylist()
        except Exception:  # a damaged record is no donor
            continue
    newest = max(enumerate(rows), key=lambda ir: (ir[1]["recorded_at"], ir[0]), default=None)
    return None if newest is None else newest[1]


def find_donor(
    storage: Path, exp_dir: Path, key: str, provenance: Mapping[str, Any], num_stages: int
) -> Donor | None:
    """A complete run of ``key`` in another sweep folder of ``storage`` with the same origin
    (:func:`same_origin`) and a finished checkpoint of ``num_stages`` stages; None if none."""
    exp_dir = exp_dir.resolve()
    by_sweep: dict[Path, list[Path]] = {}
    for path in storage.glob(f"*/records/runs/{key}-*.parquet"):
        if not path.name.startswith((".", "_")):
            by_sweep.setdefault(path.parents[2].resolve(), []).append(path)
    for folder in sorted(by_sweep):
        if folder == exp_dir:
            continue
        row = _newest_status(by_sweep[folder])
        if row is None or row.get("status") != "complete" or row.get("run_key") != key:
            continue
        if int(row.get("stages_done") or 0) != num_stages or not same_origin(row, provenance):
            continue
        work = folder / "work" / key
        if (work / CHECKPOINT).is_file():
            return Donor(str(row.get("sweep") or folder.name), work)
    return None


def copy_donor(donor: Donor, work: Path) -> None:
    """Copy the donor's final checkpoint into ``work`` (atomically: a partial copy never counts
    as a checkpoint), with the marker naming the donor written first."""
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text(donor.sweep + "\n", encoding="utf-8")
    tmp = work / f".{CHECKPOINT}.reuse"
    shutil.copy2(donor.work / CHECKPOINT, tmp)
    tmp.replace(work / CHECKPOINT)


def copied_donor(work: Path) -> Donor | None:
    """The donor an earlier attempt copied into ``work`` (its marker), or None."""
    marker = work / MARKER
    if not (marker.is_file() and (work / CHECKPOINT).is_file()):
        return None
    return Donor(marker.read_text(encoding="utf-8").strip(), work)
