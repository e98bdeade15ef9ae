"""Every table compiles with pdflatex: no error, no overfull box, each at scale >= 0.8.

``tables.tex`` inputs every ``tables/<name>.tex`` unchanged; each writes its natural width and
its line width (``\\columnwidth`` of the reference page, or ``\\textwidth`` for a ``table*``)
to the log. The log is read here with this file's own patterns, not the report's parser, and a
deliberately over-wide table must fail the same checks, which shows they can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_reports import ABLATIONS, UNSEEN, write_sweep
from test_reports_paper import write_rich

from reports.build import build
from reports.latex import MIN_SCALE, parse_log, to_latex
from reports.layout import Layout, Panel, plan_layout

PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(
    PDFLATEX is None,
    reason="pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)",
)
WIDTH = re.compile(r"^COMET-TABLE (\S+) width=([\d.]+)pt line=([\d.]+)pt", re.M)


def _compile(folder: Path, tex: str = "tables.tex") -> str:
    """Compile ``folder/tex`` in a fresh output folder; returns the log."""
    build_dir = folder / "_tex"
    build_dir.mkdir(exist_ok=True)
    env = {**os.environ, "max_print_line": "10000"}  # one log line per message
    res = subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={build_dir}",
         tex], cwd=folder, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    log = (build_dir / Path(tex).with_suffix(".log").name).read_text(encoding="latin-1")
    assert res.returncode == 0, log[-3000:]
    return log


def _problems(log: str) -> list[str]:
    bad = [line for line in log.splitlines() if line.startswith("! ")]
    bad += re.findall(r"^Overfull \\[hv]box.*$", log, re.M)
    bad += re.findall(r"^LaTeX Warning: Float too large.*$", log, re.M)
    return bad


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("latex")
    write_rich(root / "results")
    w = build(root / "results", root / "out", allow_partial=True, log=lambda s: None)
    return root / "out", w, _compile(root / "out")


def test_tables_pdf_has_every_table_without_error_or_overfull_box(compiled) -> None:
    out, w, log = compiled
    assert (out / "tables.pdf").read_bytes()[:5] == b"%PDF-" and w.pdf == "tables.pdf"
    assert _problems(log) == []
    names = sorted(p.stem for p in (out / "tables").glob("*.tex"))
    widths = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in WIDTH.finditer(log)}
    assert sorted(widths) == names and len(names) >= 20  # every table measured
    for name, (width, line) in widths.items():
        assert line / width >= 1.0 > MIN_SCALE, (name, width, line)  # fits, unshrunk
    assert "0 overfull boxes" in w.pdf_note and "smallest scale 1.00" in w.pdf_note


def test_width_estimate_agrees_with_tex(compiled) -> None:
    """The layout is chosen from an estimate: it must track TeX's own widths within 2 %."""
    _, w, log = compiled
    widths = {m.group(1): float(m.group(2)) for m in WIDTH.finditer(log)}
    for ref in w.refs:
        if hasattr(ref, "table"):
            estimate = plan_layout(ref.table).width
            assert abs(estimate / widths[ref.table.name] - 1) < 0.02, ref.table.name


def test_the_check_catches_an_overwide_table(tmp_path: Path) -> None:
    """Table 6 forced into one panel in one column: shrunk far below 0.8, or overfull."""
    write_sweep(tmp_path / "r", "abl", ABLATIONS, keys=UNSEEN)
    w = build(tmp_path / "r", tmp_path / "out", log=lambda s: None)
    t = next(r.table for r in w.refs if hasattr(r, "table") and r.table.name == "table6-abl")
    squeezed = Layout(False, (Panel(tuple(range(len(t.header)))),), False, 0.0)
    tex = to_latex(t, squeezed)
    unguarded = tex.replace(r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else"
                            r"\usebox0\fi", r"\usebox0")  # fmt: skip
    assert unguarded != tex
    out = tmp_path / "out"
    document = (out / "tables.tex").read_text(encoding="utf-8")
    for name, body in (("squeezed", tex), ("unguarded", unguarded)):
        (out / "tables" / f"{name}.tex").write_text(body, encoding="utf-8")
        (out / f"{name}.tex").write_text(
            document.replace("tables/table6-abl.tex", f"tables/{name}.tex"), encoding="utf-8"
        )
    log = _compile(out, "squeezed.tex")
    width, line = next((float(m.group(2)), float(m.group(3))) for m in WIDTH.finditer(log)
                       if m.group(1) == "table6-abl")  # fmt: skip
    assert line / width < MIN_SCALE  # shrunk to fit: too small to read
    assert any("scale" in p for p in parse_log(log).problems(["table6-abl"]))
    log = _compile(out, "unguarded.tex")
    assert any(p.startswith("Overfull \\hbox") for p in _problems(log))
