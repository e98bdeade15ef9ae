"""LaTeX: each table as a booktabs float, and ``tables.pdf`` compiling them all.

A table's ``.tex`` is a ``table`` (one column) or ``table*`` (across the page) float, laid out by
:func:`reports.layout.plan_layout` to fit without shrinking. It needs ``booktabs`` and
``graphicx``: the tabular is set in a box first, and only a box wider than the line (another
class or font than the reference page) is shrunk to fit, never enlarged. One line,
``\\ifdefined\\cometcheck...``, is a no-op in a paper; in ``tables.tex`` it writes the table's
natural width against its line width to the log, where :func:`parse_log` reads it back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reports.cells import Cell
from reports.layout import (
    COLUMN_WIDTH,
    LABEL_MAX,
    PT_PER_IN,
    TABCOLSEP,
    TEXT_WIDTH,
    Layout,
    header_spans,
    plan_layout,
    text_width,
)
from reports.stats import DAGGER, DOUBLE_DAGGER

if TYPE_CHECKING:
    from reports.tables import Table

MIN_SCALE = 0.8  # the smallest scale a table may be set at (natural width <= line / 0.8)
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
_TEX_SYMBOLS = {"--": "-{}-", " - ": " $-$ ", "<->": r"$\leftrightarrow$", "->": r"$\rightarrow$",
                "\u2194": r"$\leftrightarrow$", "\u2192": r"$\rightarrow$", "\u00b1": r"$\pm$",
                DAGGER: r"$^\dagger$", DOUBLE_DAGGER: r"$^\ddagger$", "\u2013": "--",
                "\u2212": "$-$"}  # fmt: skip


def tex_escape(text: str) -> str:
    """Escape LaTeX specials, then typeset arrows, ±, minus signs and the dagger."""
    out = "".join(_TEX.get(ch, ch) for ch in text)
    for sym, tex in _TEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def _signed(text: str) -> str:
    """Numbers with a math-mode sign: ``-0.4`` -> ``$-$0.4`` (a hyphen is not a minus)."""
    return re.sub(r"(?<![\w.])([+-])(?=\d)", r"$\1$", text)


def cell_tex(c: Cell) -> str:
    """``46.8\\,{\\scriptsize$\\pm$4.3}``, ``\\textbf{$+$1.2}\\,{\\scriptsize[$-$0.4, $+$2.9]}``."""
    value = _signed(tex_escape(c.value))
    if c.strong:
        value = rf"\textbf{{\boldmath{value}}}"
    small = ""
    if c.spread:
        small = f"[{_signed(c.spread)}]" if c.interval else rf"$\pm${c.spread}"
    if c.n is not None:
        small += f" (n={c.n})"
    out = value + (rf"\,{{\scriptsize{small}}}" if small else "")
    return out + (r"$^\dagger$" if c.partial else "") + (r"$^\ddagger$" if c.mixed else "")


def label_tex(label: str) -> str:
    """A row label; one wider than :data:`reports.layout.LABEL_MAX` wraps in a ragged box."""
    if text_width(label) <= LABEL_MAX:
        return tex_escape(label)
    box = rf"\raggedright\hangindent=1em\hangafter=1 {tex_escape(label)}\strut"
    return rf"\parbox[t]{{{LABEL_MAX:g}pt}}{{{box}}}"


def _header_rows(headers: list[tuple[str, ...]], row_header: str, ncols: int) -> list[str]:
    """Header rows with ``\\multicolumn`` groups and ``\\cmidrule`` under every group label."""
    levels = header_spans(headers)
    lines = []
    for i, level in enumerate(levels):
        last_level = i == len(levels) - 1
        parts, rules, col = [tex_escape(row_header) if last_level else ""], [], 2
        for label, span in level:
            end = "@{}" if col + span - 1 == ncols + 1 else ""
            parts.append(rf"\multicolumn{{{span}}}{{c{end}}}{{{tex_escape(label)}}}" if label
                         else "")  # fmt: skip
            if label and not last_level:
                trim = "l" if end else "lr"
                rules.append(rf"\cmidrule({trim}){{{col}-{col + span - 1}}}")
            col += span
        lines.append(" & ".join(parts) + r" \\")
        lines += [" ".join(rules)] if rules else []
    return lines


def _tabular(t: Table, layout: Layout) -> list[str]:
    ncols = max(len(p.columns) for p in layout.panels)
    lines = [rf"\begin{{tabular}}{{@{{}}l{'r' * ncols}@{{}}}}", r"\toprule"]
    if layout.shared:
        lines += _header_rows(layout.headers(t, layout.panels[0]), t.row_header, ncols)
    for k, panel in enumerate(layout.panels):
        if layout.shared:
            lines += [r"\midrule", rf"\multicolumn{{{ncols + 1}}}{{@{{}}l@{{}}}}"
                      rf"{{\textit{{{tex_escape(panel.title)}}}}} \\"]  # fmt: skip
        else:
            lines += [r"\midrule"] if k else []
            lines += _header_rows(layout.headers(t, panel), t.row_header, ncols)
            lines.append(r"\midrule")
        for label, cells in zip(t.rows, t.cells, strict=True):
            row = [label_tex(label), *(cell_tex(cells[i]) for i in panel.columns)]
            lines.append(" & ".join(row) + r" \\")
    return [*lines, r"\bottomrule", r"\end{tabular}"]


def to_latex(t: Table, layout: Layout | None = None) -> str:
    """A booktabs float of ``t`` in the layout of :func:`reports.layout.plan_layout`."""
    layout = layout or plan_layout(t)
    env = "table*" if layout.wide else "table"
    caption = " ".join(x for x in (f"{t.title}.", t.stat) if x)
    lines = [
        rf"% {t.name}: needs \usepackage{{booktabs}} and \usepackage{{graphicx}}",
        rf"\begin{{{env}}}[t]", r"\centering", r"\small",
        rf"\setlength{{\tabcolsep}}{{{TABCOLSEP:g}pt}}",
        rf"\caption{{{tex_escape(caption)}}}", rf"\label{{tab:{t.name}}}",
        r"\sbox0{%", *_tabular(t, layout), "}%",
        rf"\ifdefined\cometcheck\cometcheck{{{t.name}}}\fi % width check of tables.pdf; no-op here",
        r"% shrunk only if wider than the line (a class or font other than the reference page)",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi",
    ]  # fmt: skip
    lines += [rf"\par\smallskip{{\raggedright\footnotesize {tex_escape(n)}\par}}" for n in t.notes]
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"


_DOCUMENT = r"""% Every table of this report at the width it takes in a two-column paper (10 pt; a
% table in a 3.25 in column, a table* across 6.75 in), in order rather than floating.
% Built by reports/build.py; compile with: pdflatex tables.tex
\documentclass[10pt]{article}
\usepackage[letterpaper,textwidth=@TEXT@in,textheight=9in]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\newlength{\cometcolumn}\setlength{\cometcolumn}{@COLUMN@in}
\makeatletter
% table and table* set in place at the column and text widths; \caption works as in a float.
\renewenvironment{table}[1][]{\cometfloat\cometcolumn}{\endcometfloat}
\renewenvironment{table*}[1][]{\cometfloat\textwidth}{\endcometfloat}
\newenvironment{cometfloat}[1]{\par\addvspace{2\bigskipamount}\noindent\hfil
  \begin{minipage}[t]{#1}\def\@captype{table}}{\end{minipage}\hfil\par}
\makeatother
% The natural width of each table's box 0 against its line, in the log (1000 = exactly full).
\newcommand{\cometcheck}[1]{\typeout{COMET-TABLE #1 width=\the\wd0 \space
  line=\the\linewidth\space permille=\the\numexpr\wd0*1000/\linewidth\relax}}
\newcommand{\cometfile}[2]{\par\addvspace{2\bigskipamount}\noindent
  {\footnotesize\ttfamily #1.tex, #2}\par\nopagebreak\vspace{-1.5\bigskipamount}}
\begin{document}
\begin{center}\large COMET report: @COUNT@ tables\\ \normalsize from @SOURCE@\end{center}
@INPUTS@
\end{document}
"""


def tables_document(tables: Sequence[tuple[str, bool]], *, source: str) -> str:
    """``tables.tex`` for ``(name, wide)`` pairs: each ``tables/<name>.tex``, with its file name."""
    where = {True: "table* across the page", False: "table in one column"}
    inputs = "\n".join(
        rf"\cometfile{{{tex_escape(name)}}}{{{where[wide]}}}" "\n" rf"\input{{tables/{name}.tex}}"
        for name, wide in tables
    )
    fields = {
        "@TEXT@": f"{TEXT_WIDTH / PT_PER_IN:g}", "@COLUMN@": f"{COLUMN_WIDTH / PT_PER_IN:g}",
        "@COUNT@": str(len(tables)), "@SOURCE@": tex_escape(source), "@INPUTS@": inputs,
    }  # fmt: skip
    out = _DOCUMENT
    for key, value in fields.items():
        out = out.replace(key, value)
    return out


@dataclass
class PdfCheck:
    """What the compiled ``tables.pdf`` shows: widths per table, errors and overfull boxes."""

    widths: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (width, line)
    errors: list[str] = field(default_factory=list)
    overfull: list[str] = field(default_factory=list)
    pages: int = 0

    def scale(self, name: str) -> float:
        """The scale a table is set at (1.0 when it fits its line)."""
        width, line = self.widths[name]
        return min(1.0, line / width) if width > 0 else 1.0

    def problems(self, names: Sequence[str]) -> list[str]:
        """Everything short of: every table measured, at scale >= 0.8, no error or overfull box."""
        out = [*self.errors, *self.overfull]
        out += [f"{n}: not measured" for n in names if n not in self.widths]
        out += [f"{n}: scale {self.scale(n):.2f} < {MIN_SCALE}" for n in names
                if n in self.widths and self.scale(n) < MIN_SCALE]  # fmt: skip
        return out


def parse_log(text: str) -> PdfCheck:
    """Read pdflatex's log: the ``COMET-TABLE`` widths, ``!`` errors, overfull boxes, pages."""
    check = PdfCheck()
    lines = _unwrap(text)
    for m in re.finditer(r"COMET-TABLE (\S+) width=([\d.]+)pt line=([\d.]+)pt", "\n".join(lines)):
        check.widths[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    check.errors = [line for line in lines if line.startswith("! ")]
    check.overfull = [
        line for line in lines if line.startswith("Overfull \\hbox") or "Float too large" in line
    ]
    pages = re.search(r"Output written on \S+ \((\d+) pages?", text)
    check.pages = int(pages.group(1)) if pages else 0
    return check


def _unwrap(text: str, width: int = 79) -> list[str]:
    """Log lines, joining those TeX broke at ``max_print_line`` (79 unless set larger)."""
    lines, buf = [], ""
    for line in text.splitlines():
        buf += line
        if len(line) != width:
            lines.append(buf)
            buf = ""
    return [*lines, buf] if buf else lines


def find_pdflatex() -> str | None:
    """The ``pdflatex`` on PATH, or None."""
    return shutil.which("pdflatex")


def compile_tables(out: Path, pdflatex: str, timeout: float = 180.0) -> tuple[PdfCheck, str]:
    """Compile ``out/tables.tex`` to ``out/tables.pdf``; returns the check and the log text.

    Auxiliary files stay in a temporary folder; on failure the log is kept as ``tables.log``.
    """
    with tempfile.TemporaryDirectory(prefix="comet-tex-") as tmp:
        cmd = [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
               f"-output-directory={tmp}", "tables.tex"]  # fmt: skip
        try:
            env = {**os.environ, "max_print_line": "10000"}  # unwrapped log lines
            subprocess.run(cmd, cwd=out, capture_output=True, timeout=timeout, check=False,
                           env=env)  # fmt: skip
        except subprocess.TimeoutExpired:
            return PdfCheck(errors=[f"! pdflatex ran past {timeout:.0f} s"]), ""
        log_path = Path(tmp) / "tables.log"
        log = log_path.read_text(encoding="latin-1") if log_path.exists() else ""
        check = parse_log(log)
        pdf = Path(tmp) / "tables.pdf"
        if pdf.exists() and not check.errors:
            shutil.move(str(pdf), out / "tables.pdf")
            (out / "tables.log").unlink(missing_ok=True)
        else:
            (out / "tables.pdf").unlink(missing_ok=True)
            (out / "tables.log").write_text(log, encoding="latin-1")
            check.errors = check.errors or ["! pdflatex wrote no PDF"]
    return check, log
