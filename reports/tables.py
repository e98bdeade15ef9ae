"""Table builders (pure DataFrame -> :class:`Table`) and the Markdown, LaTeX and CSV files.

A table has row labels (variants), column groups per stage, and cells (:mod:`reports.cells`): the
mean over seeds with its std set small (:func:`grid_table`), or a paired difference with its 95 %
t-interval (:func:`delta_table`); the caption states n once. Runs that share a (variant, seed)
are averaged first, so n is always a number of seeds. ``Table.data`` keeps the numbers behind
every cell (the CSV). Markdown and LaTeX follow the same layout (:mod:`reports.layout`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from reports.cells import (
    Cell,
    decimals,
    diff_caption,
    diff_cell,
    excludes_zero,
    summary_caption,
    summary_cell,
    table_n,
)
from reports.latex import to_latex
from reports.layout import Layout, plan_layout, pretty
from reports.provenance import Origins, counted
from reports.stats import DAGGER, DOUBLE_DAGGER, paired_diff, summarize

Key = tuple[str, str, str]  # (task, pair, metric)
AVG = "avg"
AVG_KEY: Key = (AVG, "", "")

#: The unseen-pair tasks of the paper's Tables 1 and 6: (task, metric, header label).
UNSEEN_TASKS: tuple[tuple[str, str, str], ...] = (
    ("ave", "acc", "AVE"),
    ("avvp", "f1", "AVVP"),
    ("ave_avvp", "f1", "AVE->AVVP"),
)
PARTIAL_NOTE = f"{DAGGER} partial sweep (built with --allow-partial)"
MIXED_NOTE = f"{DOUBLE_DAGGER} averages runs of different code or data (built with --allow-mixed)"


@dataclass(frozen=True)
class Column:
    """One data column: a metric key, or ``None`` for the per-seed mean of the ``in_avg`` ones."""

    key: Key | None
    header: tuple[str, ...]
    in_avg: bool = True  # counted in the table's Avg. column


@dataclass
class Table:
    """A rendered table: header levels per column, labelled rows of cells, numbers for the CSV."""

    name: str
    title: str
    header: list[tuple[str, ...]]
    rows: list[str]
    cells: list[list[Cell]]
    data: pd.DataFrame
    row_header: str = "Variant"
    notes: list[str] = field(default_factory=list)
    stat: str = ""  # the caption's sentence on what the cells are, stating n once


def abbrev(a: str, b: str) -> tuple[str, str]:
    """Short modality names for headers: initials (``V``, ``A``) unless they collide."""
    return (a[:1].upper(), b[:1].upper()) if a[:1].lower() != b[:1].lower() else (a, b)


def unseen_columns(a: str, b: str) -> list[Column]:
    """Table 1/6 columns for the unseen pair (a, b): AVE, AVVP, AVE->AVVP both ways, then Avg."""
    sa, sb = abbrev(a, b)
    cols = [
        Column((task, f"{x}->{y}", metric), (label, f"{sx}->{sy}"))
        for task, metric, label in UNSEEN_TASKS
        for (x, sx), (y, sy) in (((a, sa), (b, sb)), ((b, sb), (a, sa)))
    ]
    return [*cols, Column(None, ("Avg.", ""), in_avg=False)]


def retrieval_columns(a: str, b: str, mean_present: bool) -> list[Column]:
    """Tables 2-4/7 columns: R@1/5/10 for a->b and b->a, then their average."""
    sa, sb = abbrev(a, b)
    cols = [
        Column(("retrieval", f"{x}->{y}", f"r{k}"), (f"{sx}->{sy}", f"R@{k}"))
        for (x, sx), (y, sy) in (((a, sa), (b, sb)), ((b, sb), (a, sa)))
        for k in (1, 5, 10)
    ]
    avg_key = ("retrieval", f"{a}<->{b}", "mean") if mean_present else None
    return [*cols, Column(avg_key, ("Avg.", ""), in_avg=False)]


def seed_values(metrics: pd.DataFrame, columns: Sequence[Column]) -> dict[tuple, pd.DataFrame]:
    """``(variant, stage) -> DataFrame`` indexed by seed, one column per key plus ``avg``."""
    keys = sorted({c.key for c in columns if c.key is not None})
    if metrics.empty or not keys:
        return {}
    sel = pd.MultiIndex.from_frame(metrics[["task", "pair", "metric"]]).isin(keys)
    m = metrics.loc[sel]
    if m.empty:
        return {}
    wide = m.pivot_table(
        index=["variant", "seed", "stage"], columns=["task", "pair", "metric"],
        values="value", aggfunc="mean", observed=True,
    )  # fmt: skip
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(keys))
    averaged = list(dict.fromkeys(c.key for c in columns if c.key is not None and c.in_avg))
    wide[AVG_KEY] = wide[averaged].mean(axis=1, skipna=False) if averaged else np.nan
    out: dict[tuple, pd.DataFrame] = {}
    for (variant, stage), g in wide.groupby(level=["variant", "stage"], observed=True):
        out[(variant, int(stage))] = g.droplevel(["variant", "stage"])
    return out


def _per_seed(frames: Mapping[tuple, pd.DataFrame], variant: str, stage: int, col: Column) -> dict:
    g = frames.get((variant, stage))
    if g is None:
        return {}
    series = g[AVG_KEY] if col.key is None else g[col.key]
    return {int(s): float(v) for s, v in series.items() if not math.isnan(v)}


def _partial_notes(partial: Mapping[str, Sequence[str]], variants: Sequence[str]) -> list[str]:
    hit = [v for v in variants if partial.get(v)]
    if not hit:
        return []
    details = "; ".join(f"{v}: {', '.join(partial[v])}" for v in hit)
    return [f"{PARTIAL_NOTE}: {details}"]


def _mixes(mixed: Mapping[str, Origins], *variants: str) -> bool:
    """Whether the runs of ``variants`` together differ in code or data."""
    got = [mixed[v] for v in variants if v in mixed]
    return bool(got) and sum(got[1:], got[0]).mixed


def _mixed_notes(mixed: Mapping[str, Origins], groups: Sequence[Sequence[str]]) -> list[str]:
    """The note naming, for the marked rows, the code or data (what differs) of their runs."""
    hit = list(dict.fromkeys(v for g in groups if _mixes(mixed, *g) for v in g if v in mixed))
    if not hit:
        return []
    both = sum((mixed[v] for v in hit[1:]), mixed[hit[0]])
    kinds = [k for k in ("code", "data") if len(getattr(both, k)) > 1]
    parts = [f"{v}: " + "; ".join(f"{k} {counted(getattr(mixed[v], k))}" for k in kinds)
             for v in hit]  # fmt: skip
    return [f"{MIXED_NOTE}: " + "; ".join(parts)]


def _columns(stages: Sequence[int], columns: Sequence[Column]) -> list[tuple[int, Column]]:
    return [(s, c) for s in stages for c in columns]


def _record(c: Column, stage: int) -> dict:
    return {
        "stage": stage, "column": " ".join(x for x in c.header if x),
        "task": c.key[0] if c.key else AVG, "pair": c.key[1] if c.key else "",
        "metric": c.key[2] if c.key else AVG,
    }  # fmt: skip


def grid_table(
    metrics: pd.DataFrame,
    *,
    name: str,
    title: str,
    rows: Sequence[tuple[str, str]],
    stages: Sequence[int],
    columns: Sequence[Column],
    partial: Mapping[str, Sequence[str]] | None = None,
    digits: int | None = None,
    notes: Sequence[str] = (),
    mixed: Mapping[str, Origins] | None = None,
) -> Table:
    """Mean ± std over seeds per (row variant, stage, column); ``rows`` = (variant, label).

    ``digits``: decimals of every cell (default: from the table's spreads, :func:`decimals`).
    ``mixed``: per variant, the code and data of its runs; rows whose runs differ are marked.
    """
    partial, mixed = partial or {}, mixed or {}
    frames = seed_values(metrics, columns)
    grid = _columns(stages, columns)
    summ = {(v, s, c): summarize(_per_seed(frames, v, s, c).values())
            for v, _ in rows for s, c in grid}  # fmt: skip
    digits = decimals(x.std for x in summ.values()) if digits is None else digits
    n = table_n(x.n for x in summ.values())
    cells, records = [], []
    for variant, label in rows:
        mark, mix = bool(partial.get(variant)), _mixes(mixed, variant)
        cells.append([replace(summary_cell(summ[variant, s, c], digits, n, mark), mixed=mix)
                      for s, c in grid])  # fmt: skip
        for s, c in grid:
            x = summ[variant, s, c]
            records.append({"row": label, "variant": variant, **_record(c, s), "mean": x.mean,
                            "std": x.std, "n": x.n, "partial": mark, "mixed": mix})  # fmt: skip
    per_cell = any(c.n is not None for line in cells for c in line)
    return Table(name, title, [(f"Stage {s}", *c.header) for s, c in grid],
                 [lab for _, lab in rows], cells, pd.DataFrame(records),
                 notes=[*notes, *_partial_notes(partial, [v for v, _ in rows]),
                        *_mixed_notes(mixed, [(v,) for v, _ in rows])],
                 stat=summary_caption(n, per_cell))  # fmt: skip


def delta_table(
    metrics: pd.DataFrame,
    *,
    name: str,
    title: str,
    pairs: Sequence[tuple[str, str, str]],
    stages: Sequence[int],
    columns: Sequence[Column],
    partial: Mapping[str, Sequence[str]] | None = None,
    digits: int | None = None,
    notes: Sequence[str] = (),
    mixed: Mapping[str, Origins] | None = None,
) -> Table:
    """Paired differences ``a - b`` per seed with a 95 % t-interval; ``pairs`` = (a, b, label).

    Cells whose interval excludes 0 are bold. ``digits`` defaults to the table's half-widths.
    ``mixed``: as in :func:`grid_table`; a difference is marked when a's and b's runs differ.
    """
    partial, mixed = partial or {}, mixed or {}
    frames = seed_values(metrics, columns)
    grid = _columns(stages, columns)
    diffs = {(a, b, s, c): paired_diff(_per_seed(frames, a, s, c), _per_seed(frames, b, s, c))
             for a, b, _ in pairs for s, c in grid}  # fmt: skip
    if digits is None:
        digits = decimals((d.hi - d.lo) / 2 for d in diffs.values() if d.n >= 2)
    n = table_n(d.n for d in diffs.values())
    cells, records = [], []
    for a, b, label in pairs:
        mark, mix = bool(partial.get(a) or partial.get(b)), _mixes(mixed, a, b)
        cells.append([replace(diff_cell(diffs[a, b, s, c], digits, n, mark), mixed=mix)
                      for s, c in grid])  # fmt: skip
        for s, c in grid:
            d = diffs[a, b, s, c]
            records.append({"row": label, "a": a, "b": b, **_record(c, s), "diff": d.mean,
                            "ci_lo": d.lo, "ci_hi": d.hi, "excludes_zero": excludes_zero(d),
                            "n": d.n, "partial": mark, "mixed": mix})  # fmt: skip
    variants = list(dict.fromkeys(v for a, b, _ in pairs for v in (a, b)))
    per_cell = any(c.n is not None for line in cells for c in line)
    return Table(name, title, [(f"Stage {s}", *c.header) for s, c in grid],
                 [lab for *_, lab in pairs], cells, pd.DataFrame(records),
                 row_header="Difference",
                 notes=[*notes, *_partial_notes(partial, variants),
                        *_mixed_notes(mixed, [(a, b) for a, b, _ in pairs])],
                 stat=diff_caption(n, per_cell))  # fmt: skip


def _md(text: str) -> str:
    return pretty(text).replace("|", "\\|")


def _md_cell(c: Cell) -> str:
    value, rest = c.parts()
    return (f"**{_md(value)}**" if c.strong else _md(value)) + _md(rest)


def to_markdown(t: Table, layout: Layout | None = None) -> str:
    """GitHub Markdown: title and caption, one table per panel of the layout, then the notes.

    A top header label shared by a panel's columns (its stage) is the panel's heading; the lower
    levels are joined into one header row.
    """
    layout = layout or plan_layout(t)
    lines = [" ".join(x for x in (f"**{_md(t.title)}.**", _md(t.stat)) if x)]
    for panel in layout.panels:
        header = [t.header[i] for i in panel.columns]
        heads = {h[0] for h in header if len(h) > 1}
        if len(heads) == 1 and all(len(h) > 1 for h in header):
            lines += ["", f"*{_md(heads.pop())}*"]
            header = [h[1:] for h in header]
        head = [t.row_header] + [" ".join(x for x in h if x) for h in header]
        lines += ["", "| " + " | ".join(_md(h) for h in head) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * len(panel.columns)) + "|")
        for label, cells in zip(t.rows, t.cells, strict=True):
            row = [_md(label), *(_md_cell(cells[i]) for i in panel.columns)]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", *(f"{_md(n)}  " for n in t.notes)] if t.notes else []
    return "\n".join(lines) + "\n"


def write_table(t: Table, folder: Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (the numbers) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t.name}.{ext}" for ext in ("md", "tex", "csv")]
    layout = plan_layout(t)
    paths[0].write_text(to_markdown(t, layout), encoding="utf-8")
    paths[1].write_text(to_latex(t, layout), encoding="utf-8")
    t.data.to_csv(paths[2], index=False)
    return paths
