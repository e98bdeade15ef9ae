"""Table builders (pure DataFrame -> :class:`Table`) and their Markdown, LaTeX and CSV writers.

A table has row labels (variants), column groups per stage, and cells formatted as
``mean ± std (n=…)`` over seeds (:func:`grid_table`) or as a paired difference with its 95 %
t-interval (:func:`delta_table`). Runs that share a (variant, seed) are averaged first, so n is
always a number of seeds. ``Table.data`` keeps the numbers behind every cell (the CSV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reports.stats import DAGGER, format_diff, format_summary, paired_diff, summarize

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
    cells: list[list[str]]
    data: pd.DataFrame
    row_header: str = "Variant"
    notes: list[str] = field(default_factory=list)


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


def grid_table(
    metrics: pd.DataFrame,
    *,
    name: str,
    title: str,
    rows: Sequence[tuple[str, str]],
    stages: Sequence[int],
    columns: Sequence[Column],
    partial: Mapping[str, Sequence[str]] | None = None,
    digits: int = 2,
    notes: Sequence[str] = (),
) -> Table:
    """Mean ± std (n) over seeds per (row variant, stage, column); ``rows`` = (variant, label)."""
    partial = partial or {}
    frames = seed_values(metrics, columns)
    header = [(f"Stage {s}", *c.header) for s in stages for c in columns]
    cells, records = [], []
    for variant, label in rows:
        mark = DAGGER if partial.get(variant) else ""
        line = []
        for s in stages:
            for c in columns:
                summ = summarize(_per_seed(frames, variant, s, c).values())
                line.append(format_summary(summ, digits, mark if summ.n else ""))
                records.append({
                    "row": label, "variant": variant, "stage": s,
                    "column": " ".join(x for x in c.header if x),
                    "task": c.key[0] if c.key else AVG, "pair": c.key[1] if c.key else "",
                    "metric": c.key[2] if c.key else AVG,
                    "mean": summ.mean, "std": summ.std, "n": summ.n, "partial": bool(mark),
                })  # fmt: skip
        cells.append(line)
    notes = [*notes, *_partial_notes(partial, [v for v, _ in rows])]
    return Table(name, title, header, [lab for _, lab in rows], cells, pd.DataFrame(records),
                 notes=notes)  # fmt: skip


def delta_table(
    metrics: pd.DataFrame,
    *,
    name: str,
    title: str,
    pairs: Sequence[tuple[str, str, str]],
    stages: Sequence[int],
    columns: Sequence[Column],
    partial: Mapping[str, Sequence[str]] | None = None,
    digits: int = 2,
) -> Table:
    """Paired differences ``a - b`` per seed with a 95 % t-interval; ``pairs`` = (a, b, label)."""
    partial = partial or {}
    frames = seed_values(metrics, columns)
    header = [(f"Stage {s}", *c.header) for s in stages for c in columns]
    cells, records = [], []
    for a, b, label in pairs:
        mark = DAGGER if partial.get(a) or partial.get(b) else ""
        line = []
        for s in stages:
            for c in columns:
                d = paired_diff(_per_seed(frames, a, s, c), _per_seed(frames, b, s, c))
                line.append(format_diff(d, digits, mark if d.n else ""))
                records.append({
                    "row": label, "a": a, "b": b, "stage": s,
                    "column": " ".join(x for x in c.header if x),
                    "diff": d.mean, "ci_lo": d.lo, "ci_hi": d.hi, "n": d.n, "partial": bool(mark),
                })  # fmt: skip
        cells.append(line)
    variants = list(dict.fromkeys(v for a, b, _ in pairs for v in (a, b)))
    notes = [
        "Paired difference over seeds (a - b), with its 95 % t-interval; n < 2 gives n/a.",
        *_partial_notes(partial, variants),
    ]
    return Table(name, title, header, [lab for *_, lab in pairs], cells, pd.DataFrame(records),
                 row_header="Difference", notes=notes)  # fmt: skip


def pretty(text: str) -> str:
    """Unicode arrows for display (``<->`` and ``->``)."""
    return text.replace("<->", "\u2194").replace("->", "\u2192")


def _group_spans(labels: Sequence[str]) -> list[tuple[str, int]]:
    spans: list[tuple[str, int]] = []
    for lab in labels:
        if spans and spans[-1][0] == lab:
            spans[-1] = (lab, spans[-1][1] + 1)
        else:
            spans.append((lab, 1))
    return spans


def header_spans(t: Table) -> list[list[tuple[str, int]]]:
    """Per header level, the (label, span) runs; a label spans only within its parent's run."""
    depth = len(t.header[0]) if t.header else 0
    levels = []
    for lvl in range(depth):
        keyed = [" / ".join(h[: lvl + 1]) for h in t.header]
        runs = _group_spans(keyed)
        levels.append([(k.split(" / ")[-1], n) for k, n in runs])
    return levels


def to_markdown(t: Table) -> str:
    """GitHub Markdown: title, one flattened header row, rows, then the notes."""

    def esc(x: str) -> str:
        return pretty(x).replace("|", "\\|")

    head = [t.row_header] + [" ".join(x for x in h if x) for h in t.header]
    lines = [f"**{esc(t.title)}**", "", "| " + " | ".join(esc(h) for h in head) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * len(t.header)) + "|")
    for label, cells in zip(t.rows, t.cells, strict=True):
        lines.append("| " + " | ".join(esc(x) for x in [label, *cells]) + " |")
    lines += ["", *(f"{esc(n)}  " for n in t.notes)] if t.notes else []
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
_TEX_SYMBOLS = {"<->": r"$\leftrightarrow$", "->": r"$\rightarrow$", "\u00b1": r"$\pm$",
                DAGGER: r"$^\dagger$", "\u2013": "--"}  # fmt: skip


def tex_escape(text: str) -> str:
    """Escape LaTeX specials, then typeset arrows, ± and the dagger."""
    out = "".join(_TEX.get(ch, ch) for ch in text)
    for sym, tex in _TEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def to_latex(t: Table) -> str:
    """A booktabs ``table`` with multi-level column headers (``\\multicolumn`` + ``\\cmidrule``).

    Tables wider than 8 data columns are scaled to the line width (``\\resizebox``, graphicx).
    """
    ncol = len(t.header)
    wide = ncol > 8
    lines = [r"% needs \usepackage{booktabs} and \usepackage{graphicx}", r"\begin{table}[t]",
             r"\centering", r"\small", rf"\caption{{{tex_escape(t.title)}}}",
             rf"\label{{tab:{t.name}}}"]  # fmt: skip
    lines += [r"\resizebox{\linewidth}{!}{%"] if wide else []
    lines += [rf"\begin{{tabular}}{{l{'r' * ncol}}}", r"\toprule"]
    levels = header_spans(t)
    for i, level in enumerate(levels):
        first = tex_escape(t.row_header) if i == len(levels) - 1 else ""
        parts, rules, col = [first], [], 2
        for label, span in level:
            parts.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(label)}}}" if span > 1
                         else tex_escape(label))  # fmt: skip
            if span > 1 and i < len(levels) - 1 and label:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines.append(" & ".join(parts) + r" \\")
        lines += [" ".join(rules)] if rules else []
    lines.append(r"\midrule")
    for label, cells in zip(t.rows, t.cells, strict=True):
        lines.append(" & ".join(tex_escape(x) for x in [label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else "")]
    lines += [rf"\par\footnotesize {tex_escape(n)}" for n in t.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(t: Table, folder: Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (the numbers) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t.name}.{ext}" for ext in ("md", "tex", "csv")]
    paths[0].write_text(to_markdown(t), encoding="utf-8")
    paths[1].write_text(to_latex(t), encoding="utf-8")
    t.data.to_csv(paths[2], index=False)
    return paths
