"""Table cells: what one cell shows, and the sentence that states a table's n once.

A cell is the mean over seeds with its spread set small (``46.8 ± 4.3``; LaTeX
``46.8\\,{\\scriptsize$\\pm$4.3}``), or a paired difference with its 95 % interval
(``+1.2 [-0.4, +2.9]``), bold where the interval excludes 0 (a paired t-test at the 5 % level).
The number of seeds is stated once per table, in its caption; a cell names its n only where it
differs from the table's (a partial sweep). Every table rounds to one number of decimals, chosen
from its spreads (:func:`decimals`); the CSV keeps the unrounded numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from reports.stats import DAGGER, DASH, DOUBLE_DAGGER, PairedDiff, Summary


@dataclass(frozen=True)
class Cell:
    """One table cell; the writers (Markdown, LaTeX, HTML) decide how each part is set."""

    value: str  # the number ("46.8", "+1.2"), a dash for no value, or any text
    spread: str = ""  # "4.3" (a std) or "-0.4, +2.9" (an interval), without "±" or brackets
    interval: bool = False  # the spread is an interval [lo, hi]
    n: int | None = None  # seeds behind the cell: shown only where it differs from the table's
    partial: bool = False  # from a partial sweep (dagger)
    strong: bool = False  # the interval excludes 0
    mixed: bool = False  # averages runs of different code or data (double dagger)

    def parts(self) -> tuple[str, str]:
        """Plain ``(value, rest)``: ``("46.8", " ± 4.3 (n=3)†")`` (``‡``: mixed)."""
        rest = ""
        if self.spread:
            rest = f" [{self.spread}]" if self.interval else f" \u00b1 {self.spread}"
        if self.n is not None:
            rest += f" (n={self.n})"
        return self.value, rest + (DAGGER if self.partial else "") + (
            DOUBLE_DAGGER if self.mixed else ""
        )

    def text(self) -> str:
        """The cell as plain text: ``46.8 ± 4.3``, ``+1.2 [-0.4, +2.9]``, ``12.0 (n=1)†``."""
        return "".join(self.parts())


def decimals(spreads: Iterable[float]) -> int:
    """Decimals for a table: two significant digits of its median spread, between 1 and 3."""
    arr = sorted(abs(float(s)) for s in spreads if math.isfinite(s) and s != 0)
    if not arr:
        return 1
    median = arr[len(arr) // 2]
    return 1 if median >= 1 else 2 if median >= 0.1 else 3


def table_n(counts: Iterable[int]) -> int:
    """The table's n: the most common positive count (the larger on ties), 0 if there is none."""
    tally = Counter(int(n) for n in counts if n > 0)
    return max(tally, key=lambda n: (tally[n], n)) if tally else 0


def summary_cell(s: Summary, digits: int, n_table: int, partial: bool = False) -> Cell:
    """Mean with its std (none below two seeds); n only where it differs from ``n_table``."""
    if s.n == 0:
        return Cell(DASH, partial=partial)
    spread = f"{s.std:.{digits}f}" if s.n >= 2 else ""
    return Cell(f"{s.mean:.{digits}f}", spread, n=None if s.n == n_table else s.n,
                partial=partial)  # fmt: skip


def diff_cell(d: PairedDiff, digits: int, n_table: int, partial: bool = False) -> Cell:
    """Paired difference with its interval ("n/a" below two seeds), bold if it excludes 0."""
    if d.n == 0:
        return Cell(DASH, partial=partial)
    n = None if d.n == n_table else d.n
    if d.n < 2:
        return Cell(f"{d.mean:+.{digits}f}", "n/a", interval=True, n=n, partial=partial)
    spread = f"{d.lo:+.{digits}f}, {d.hi:+.{digits}f}"
    return Cell(f"{d.mean:+.{digits}f}", spread, interval=True, n=n, partial=partial,
                strong=excludes_zero(d))  # fmt: skip


def excludes_zero(d: PairedDiff) -> bool:
    """Whether the interval lies on one side of 0 (False when there is no interval)."""
    return d.n >= 2 and (d.lo > 0 or d.hi < 0)


def _seeds(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def summary_caption(n_table: int, per_cell_n: bool) -> str:
    """The caption sentence of a mean-and-std table, stating n once."""
    if n_table == 0:
        return "No values."
    more = " (n per cell where it differs)" if per_cell_n else ""
    if n_table == 1:
        return f"One seed, so no spread{more}."
    return f"Mean \u00b1 std over {n_table} seeds{more}."


def diff_caption(n_table: int, per_cell_n: bool) -> str:
    """The caption sentence of a paired-difference table, stating n and the bold rule once."""
    if n_table == 0:
        return "No values."
    more = " (n per cell where it differs)" if per_cell_n else ""
    if n_table == 1:
        return f"Difference a - b on one seed{more}: no interval (n/a)."
    return (
        f"Paired difference a - b over {_seeds(n_table)}{more} with its 95 % t-interval; "
        "bold: the interval excludes 0."
    )
