"""How a table is laid out to fit a two-column paper: its width, and where it is split.

The reference page is two-column, 10 pt, 6.75 in of text width and 3.25 in columns (the ICML and
CVPR formats; ACL and IEEE are within a few points). A table goes in one column (``table``,
``\\columnwidth``) when it fits there, else across the page (``table*``, ``\\textwidth``); one
still too wide is not shrunk but split into panels stacked in the same table: one per top header
group (a stage), then, if a stage alone is too wide, runs of its second-level groups (a task or a
modality pair). The Markdown writer uses the same panels.

Widths are estimated from Computer Modern's metrics (pdflatex's default font; Times, the font of
most venues, is narrower) at the sizes the LaTeX writer sets: ``\\small`` text, ``\\scriptsize``
spreads, ``\\tabcolsep`` of 4 pt, no outer padding. tests/test_reports_latex.py compiles the
tables and checks the estimate against TeX's own measurement.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reports.cells import Cell

if TYPE_CHECKING:
    from reports.tables import Table

PT_PER_IN = 72.27
COLUMN_WIDTH = 3.25 * PT_PER_IN  # \columnwidth of the reference page, pt
TEXT_WIDTH = 6.75 * PT_PER_IN  # \textwidth
FILL = 0.97  # use at most this share of the width: room for the estimate's error
TABCOLSEP = 4.0  # pt, set by the LaTeX writer
SMALL_EM = 9.25  # pt per em of cmr10's proportions at \small (cmr9 is 2.8 % wider per size)
SCRIPT_EM = 7.97  # the same at \scriptsize (cmr7, 13.8 % wider)
THIN = 1.54  # \, at \small
BOLD = 1.12  # bold extended over medium (digits: 0.575 em against 0.5)
LABEL_MAX = 120.0  # pt: a longer row label wraps onto a second line (reports.latex.label_tex)
CALIBRATION = 1.01  # TeX sets the report's tables about 1 % wider than the sum of their glyphs

#: Character widths in em of cmr10 (measured with TeX), grouped by width.
_GROUPS = {
    0.278: "il.,;:!'[]|`", 0.306: "fj", 0.333: "- ", 0.361: "I", 0.39: "()trs", 0.444: "cez\u2020",
    0.472: "?", 0.5: "ago0123456789/*\u2013", 0.514: "J", 0.528: "kqvxy", 0.556: "bdhnpuS_",
    0.611: "Z", 0.625: "L", 0.653: "F", 0.681: "EP", 0.708: "B", 0.722: "CTw", 0.736: "R",
    0.75: "AHNUVXY", 0.764: "D", 0.778: "GKOQ+=<>@&\u00b1\u2212", 0.833: "m%#", 0.917: "M",
    1.0: "\u2192\u2194", 1.028: "W",
}  # fmt: skip
_EM = {ch: w for w, chars in _GROUPS.items() for ch in chars}
_UNKNOWN = 0.6


def pretty(text: str) -> str:
    """Unicode arrows for display (``<->`` and ``->``)."""
    return text.replace("<->", "\u2194").replace("->", "\u2192")


def text_width(text: str, em: float = SMALL_EM) -> float:
    """Estimated width in pt of ``text`` (arrows as the writers set them) at ``em`` pt per em."""
    shown = pretty(text).replace(" - ", " \u2212 ")  # a difference "a - b" is set as a minus
    return em * sum(_EM.get(ch, _UNKNOWN) for ch in shown)


def cell_width(c: Cell) -> float:
    """Estimated width of a cell as :func:`reports.latex.cell_tex` sets it."""
    value = re.sub(r"(?<![\w.])-(?=\d)", "\u2212", c.value)  # a math minus, as the writer sets it
    w = text_width(value) * (BOLD if c.strong else 1.0)
    small = ""
    if c.spread:
        small = f"[{c.spread}]" if c.interval else f"\u00b1{c.spread}"
    if c.n is not None:
        small += f" (n={c.n})"
    if small:
        w += THIN + text_width(small.replace("-", "\u2212"), SCRIPT_EM)
    return w + 0.43 * SMALL_EM * (int(c.partial) + int(c.mixed))


def _runs(labels: Sequence[str]) -> list[tuple[str, int]]:
    spans: list[tuple[str, int]] = []
    for lab in labels:
        if spans and spans[-1][0] == lab:
            spans[-1] = (lab, spans[-1][1] + 1)
        else:
            spans.append((lab, 1))
    return spans


def header_spans(header: Sequence[tuple[str, ...]]) -> list[list[tuple[str, int]]]:
    """Per header level, the (label, span) runs; a label spans only within its parent's run."""
    depth = len(header[0]) if header else 0
    levels = []
    for lvl in range(depth):
        runs = _runs(["\x00".join(h[: lvl + 1]) for h in header])
        levels.append([(k.split("\x00")[-1], n) for k, n in runs])
    return levels


def bottom_aligned(h: tuple[str, ...]) -> tuple[str, ...]:
    """The deepest label moved to the bottom row: ``("Avg.", "")`` -> ``("", "Avg.")``."""
    k = max((i for i, x in enumerate(h) if x), default=len(h) - 1)
    return h if k >= len(h) - 1 else (*h[:k], *("",) * (len(h) - 1 - k), h[k])


@dataclass(frozen=True)
class Panel:
    """Columns shown together; ``title`` is the top header label they share when it is dropped."""

    columns: tuple[int, ...]
    title: str = ""


@dataclass(frozen=True)
class Layout:
    """Where a table goes and how it is split.

    ``shared``: every panel has the same columns below the top level, so the header is written
    once and each panel starts with its title row (the paper's stage blocks); otherwise each
    panel has its own full header.
    """

    wide: bool  # table* across \textwidth, else table in \columnwidth
    panels: tuple[Panel, ...]
    shared: bool
    width: float  # estimated natural width of the widest panel, pt

    @property
    def target(self) -> float:
        """The line width the table must fit, pt."""
        return TEXT_WIDTH if self.wide else COLUMN_WIDTH

    def headers(self, t: Table, panel: Panel) -> list[tuple[str, ...]]:
        """The header tuples a panel shows, bottom-aligned (without the top level if shared)."""
        start = 1 if self.shared else 0
        return [bottom_aligned(t.header[i][start:]) for i in panel.columns]


def _column_widths(t: Table, columns: Sequence[int], start: int) -> list[float]:
    """Natural widths of ``columns`` (cells and header levels from ``start``), pt."""
    header = [bottom_aligned(t.header[i][start:]) for i in columns]
    widths = [
        max([text_width(header[j][-1]) if header[j] else 0.0,
             *(cell_width(row[i]) for row in t.cells)])
        for j, i in enumerate(columns)
    ]  # fmt: skip
    for level in header_spans(header)[:-1]:  # a group label wider than its columns widens them
        col = 0
        for text, span in level:
            need = text_width(text) - sum(widths[col : col + span]) - 2 * TABCOLSEP * (span - 1)
            if need > 0:
                widths[col + span - 1] += need
            col += span
    return widths


def tabular_width(t: Table, panels: Sequence[Panel], start: int = 0) -> float:
    """Natural width of one tabular holding ``panels`` (they share its column slots), pt."""
    slots = [_column_widths(t, p.columns, start) for p in panels]
    ncols = max(len(s) for s in slots)
    widths = [max(s[j] for s in slots if j < len(s)) for j in range(ncols)]
    label = max([text_width(t.row_header), *(min(text_width(r), LABEL_MAX) for r in t.rows)])
    return CALIBRATION * (label + sum(widths) + 2 * TABCOLSEP * ncols)


def _groups(t: Table, columns: Sequence[int], level: int) -> list[tuple[str, tuple[int, ...]]]:
    """Consecutive runs of ``columns`` sharing the header's first ``level + 1`` labels."""
    out: list[tuple[str, list[int]]] = []
    for i in columns:
        key = t.header[i][: level + 1]
        if out and t.header[out[-1][1][-1]][: level + 1] == key:
            out[-1][1].append(i)
        else:
            out.append((key[-1], [i]))
    return [(label, tuple(cols)) for label, cols in out]


def _cuts(t: Table, groups: list[tuple[int, ...]], k: int) -> tuple[tuple[int, ...], ...]:
    """``groups`` in ``k`` consecutive runs, the widest run as narrow as possible."""
    best: tuple[float, tuple[tuple[int, ...], ...]] | None = None
    for cut in itertools.combinations(range(1, len(groups)), k - 1):
        bounds = (0, *cut, len(groups))
        runs = tuple(
            tuple(i for g in groups[lo:hi] for i in g) for lo, hi in itertools.pairwise(bounds)
        )
        width = tabular_width(t, [Panel(r) for r in runs])
        if best is None or width < best[0]:
            best = (width, runs)
    assert best is not None
    return best[1]


def _candidates(t: Table) -> list[tuple[list[Panel], bool]]:
    """Whole, one panel per stage, then each stage cut into 2, 3 ... runs of its groups."""
    every = tuple(range(len(t.header)))
    depth = len(t.header[0]) if t.header else 0
    out: list[tuple[list[Panel], bool]] = [([Panel(every)], False)]
    stages = [Panel(cols, label) for label, cols in _groups(t, every, 0)] if depth >= 2 else []
    if len(stages) > 1:
        shared = len({tuple(t.header[i][1:] for i in p.columns) for p in stages}) == 1
        out.append((stages, shared))
    if depth >= 2:
        parts = [[cols for _, cols in _groups(t, p.columns, 1)] for p in stages]
        for k in range(2, max(len(g) for g in parts) + 1):
            cut = [Panel(run, p.title) for p, g in zip(stages, parts, strict=True)
                   for run in _cuts(t, g, min(k, len(g)))]  # fmt: skip
            out.append((cut, False))
    return out


def plan_layout(t: Table) -> Layout:
    """The layout with the fewest panels that fits, in one column rather than across the page.

    Candidates: the whole table, one panel per stage, then each stage cut into 2, 3 ... runs of
    its second-level groups (balanced). When nothing fits, the finest split across the page.
    """
    fits, finest = [], None
    for panels, shared in _candidates(t):
        width = tabular_width(t, panels, 1 if shared else 0)
        for wide, target in ((False, COLUMN_WIDTH), (True, TEXT_WIDTH)):
            layout = Layout(wide, tuple(panels), shared, width)
            if width <= FILL * target:
                fits.append(layout)
            finest = layout
    assert finest is not None
    return min(fits, key=lambda x: (len(x.panels), x.wide)) if fits else finest
