"""Provenance in the report: which code, data, machine and libraries made each sweep's runs.

Reads the provenance columns of the runs table (:data:`reports.schema.PROVENANCE`). A run's
*code* is its package version plus git commit (``e36f26bf56dd``, ``…+dirty(3fa1b2c4d5e6)`` with
a digest of its uncommitted diff, ``unknown (0.1.0)`` without git); its *data* is its data
fingerprint. A sweep whose runs differ in either is *mixed*: the report refuses it unless
``--allow-mixed``, and then marks every cell that averages (or differences) runs of different
code or data with a double dagger. ``manifest.json`` lists, per sweep, the run count and the
distinct code, data, devices and library versions (:func:`sweep_summary`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports.schema import PROVENANCE

UNKNOWN = "unknown"
_TEXT_DEFAULTS = {"code_diff": "", "data_files": "{}"}
LIBRARIES = (("torch", "torch_version"), ("ray", "ray_version"), ("numpy", "numpy_version"),
             ("python", "python_version"))  # fmt: skip


def fill_provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with every provenance column, old records filled: text "unknown" (``""`` for
    ``code_diff``, ``"{}"`` for ``data_files``), flags and counts null."""
    runs = runs.copy()
    for name, dtype in PROVENANCE.items():
        if name not in runs:
            runs[name] = pd.Series([None] * len(runs), index=runs.index, dtype="object")
        if str(dtype) == "string":
            default = _TEXT_DEFAULTS.get(name, UNKNOWN)
            runs[name] = runs[name].astype("object").where(runs[name].notna(), default)
            runs[name] = runs[name].astype(str)
    runs["threads"] = pd.to_numeric(runs["threads"], errors="coerce").astype("Int64")
    return runs


def code_label(commit: str, dirty: object, diff: str, version: str) -> str:
    """One string per code state: ``e36f26bf56dd``, ``e36f26bf56dd+dirty(3fa1b2c4d5e6)``,
    ``e36f26bf56dd+dirty?`` (diff unknown) or ``unknown (0.1.0)`` (no git)."""
    if not commit or commit == UNKNOWN:
        return f"{UNKNOWN} ({version or UNKNOWN})"
    if _plain(dirty) is None:
        return f"{commit[:12]}+dirty?"
    return f"{commit[:12]}+dirty({diff})" if bool(dirty) else commit[:12]


def code_labels(runs: pd.DataFrame) -> pd.Series:
    """The code label of every run (:func:`code_label`)."""
    cols = ("code_commit", "code_dirty", "code_diff", "code_version")
    return pd.Series([code_label(*row) for row in zip(*(runs[c] for c in cols), strict=True)],
                     index=runs.index, dtype="object")  # fmt: skip


@dataclass(frozen=True)
class Origins:
    """The code labels and data fingerprints of some runs, with how many runs each."""

    code: Counter = field(default_factory=Counter)
    data: Counter = field(default_factory=Counter)

    def __add__(self, other: Origins) -> Origins:
        return Origins(self.code + other.code, self.data + other.data)

    @property
    def mixed(self) -> bool:
        """The runs differ in code or in data."""
        return len(self.code) > 1 or len(self.data) > 1

    def describe(self) -> str:
        """``code A (2 runs), B (1 run); data X (3 runs)``: only the parts that differ."""
        parts = [f"{kind} {counted(c)}" for kind, c in (("code", self.code), ("data", self.data))
                 if len(c) > 1]  # fmt: skip
        return "; ".join(parts)


def counted(counter: Mapping[str, int]) -> str:
    """``A (2 runs), B (1 run)``, most runs first."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} ({n} run{'s' * (n != 1)})" for k, n in items)


def origins(runs: pd.DataFrame) -> Origins:
    """The :class:`Origins` of ``runs`` (filled by :func:`fill_provenance`)."""
    return Origins(Counter(code_labels(runs)), Counter(runs["data_fingerprint"].astype(str)))


def variant_origins(runs: pd.DataFrame) -> dict[str, Origins]:
    """Per variant of one sweep's runs, their :class:`Origins`."""
    return {str(v): origins(g) for v, g in runs.groupby("variant", sort=True)}


def mixed_sweeps(metrics: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Origins]:
    """``sweep -> Origins`` of every sweep whose runs behind its metrics differ in code or data."""
    fed = runs[runs["run_key"].isin(set(metrics["run_key"]))]
    out = {}
    for sweep, g in fed.groupby("sweep", sort=True):
        o = origins(g)
        if o.mixed:
            out[str(sweep)] = o
    return out


def describe_mixed(mixed: Mapping[str, Origins]) -> str:
    """One line naming each mixed sweep and its differing values."""
    return "; ".join(f"sweep {s!r} mixes {o.describe()}" for s, o in mixed.items())


def _plain(value: object) -> object:
    """A JSON-ready scalar: None for missing values, Python ints and bools for NumPy ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _distinct(runs: pd.DataFrame, columns: Mapping[str, str]) -> list[dict]:
    """The distinct combinations of ``columns`` (output name -> runs column) with their number
    of runs, most runs first."""
    rows = zip(*(runs[c] for c in columns.values()), strict=True)
    counts = Counter(tuple(_plain(v) for v in row) for row in rows)
    out = [dict(zip(columns, key, strict=True), runs=n) for key, n in counts.items()]
    return sorted(out, key=lambda d: (-d["runs"], json.dumps(d, sort_keys=True, default=str)))


def sweep_summary(sweep: str, runs: pd.DataFrame) -> dict:
    """The manifest entry of one sweep: run count and the distinct code, data, devices and
    library versions of its runs (each with its number of runs)."""
    runs = runs.assign(code=code_labels(runs))
    code = _distinct(runs, {"label": "code", "version": "code_version", "commit": "code_commit",
                            "dirty": "code_dirty", "diff": "code_diff"})  # fmt: skip
    data = _distinct(runs, {"fingerprint": "data_fingerprint", "files": "data_files"})
    for d in data:
        try:
            d["files"] = json.loads(d["files"])
        except (TypeError, ValueError):
            d["files"] = {}
    o = origins(runs)
    return {
        "sweep": sweep,
        "runs": int(len(runs)),
        "complete": int((runs["status"] == "complete").sum()),
        "reused": reused_counts(runs),
        "mixed": o.describe() if o.mixed else "",
        "code": code,
        "data": data,
        "devices": _distinct(
            runs, {"device": "device", "threads": "threads", "precision": "precision"}
        ),  # fmt: skip
        "libraries": _distinct(runs, dict(LIBRARIES)),
    }


def reused_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Donor sweep -> how many of ``runs`` were copied from it (``ablations.reuse``)."""
    if "reused_from" not in runs:
        return {}
    donors = runs["reused_from"].dropna().astype(str)
    return {str(k): int(n) for k, n in sorted(Counter(donors[donors != ""]).items())}


def _entries(items: Iterable[dict], text) -> str:
    parts = [f"{text(x)} ({x['runs']} run{'s' * (x['runs'] != 1)})" for x in items]
    return "; ".join(parts) or "none recorded"


def _code(c: Mapping) -> str:
    return f"{c['label']} (comet-cmg {c['version']})"


def _data(d: Mapping) -> str:
    names = ", ".join(sorted(d["files"])[:3]) + (" ..." if len(d["files"]) > 3 else "")
    return d["fingerprint"] + (f" of {names}" if names else "")


def _device(d: Mapping) -> str:
    n = d["threads"]
    threads = "" if n is None else f", {n} thread{'s' * (n != 1)}"
    return f"{d['device']}{threads}, {d['precision']}"


def _libraries(x: Mapping) -> str:
    return ", ".join(f"{name} {x[name]}" for name, _ in LIBRARIES)


def block_lines(summary: Mapping) -> list[str]:
    """The page's short provenance block of one sweep (:func:`sweep_summary`)."""
    lines = [
        f"Code: {_entries(summary['code'], _code)}",
        f"Data: {_entries(summary['data'], _data)}",
        f"Device: {_entries(summary['devices'], _device)}",
        f"Libraries: {_entries(summary['libraries'], _libraries)}",
    ]
    if summary.get("reused"):
        donors = ", ".join(f"{n} from {s!r}" for s, n in summary["reused"].items())
        lines.append(f"Reused: {donors} (runs of the same config, seed, code, data, device and "
                     "threads, whose records were copied instead of retrained)")  # fmt: skip
    if summary["mixed"]:
        lines.append(f"Mixed: {summary['mixed']}")
    return lines


def write_manifest(path: Path, summaries: list[dict], *, source: str, built_at: str) -> Path:
    """Write ``manifest.json``: every sweep's :func:`sweep_summary`."""
    doc = {"manifest": 1, "built_at": built_at, "source": source, "sweeps": summaries}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
