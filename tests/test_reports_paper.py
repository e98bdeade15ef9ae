"""Publication-ready output without TeX: compact cells, layouts that fit a two-column paper,
Markdown that follows them, and figures sized and styled for a column or the page.

The records include the extra rows of the grids (``COMET+mEWC``, ``-MoE+linear``, ``TURN+CPC``,
whose table labels are long) and a partial variant, so long labels and per-cell n are laid out.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pandas as pd
import pytest
from test_reports import ABLATIONS, EXPERTS, METHODS, UNSEEN, search_config, write_sweep

from reports import latex, plots
from reports.build import build
from reports.cells import decimals, table_n
from reports.layout import COLUMN_WIDTH, FILL, TEXT_WIDTH, plan_layout, tabular_width

LONG_ABLATIONS = ABLATIONS | {
    "-MoE+linear": {"method": "dcid", "comet": True, "num_experts": 1},
    "COMET+mEWC": {"method": "dcid", "comet": True, "num_experts": 6},
}
LONG_METHODS = METHODS | {"TURN+CPC": {"method": "turn", "comet": False, "num_experts": 6}}
COMPACT = re.compile(r"^(-?\d+\.\d+ \u00b1 \d+\.\d+|-?\d+\.\d+|\u2013)\u2020?$")


def write_rich(res: Path) -> None:
    """Ablation and methods grids with extra rows, an expert curve, a partial sweep, a search."""
    write_sweep(res, "abl", LONG_ABLATIONS, full=True)
    write_sweep(res, "meth", LONG_METHODS)
    write_sweep(res, "exp", EXPERTS, seeds=(0, 1, 2, 3, 4))
    write_sweep(res, "part", ABLATIONS, keys=UNSEEN, skip=(("-EWC", 2),))
    write_sweep(res, "opt", {"search": {}}, seeds=tuple(range(6)), config_fn=search_config)


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    write_rich(root / "results")
    w = build(root / "results", root / "out", allow_partial=True, pdf=False, log=lambda s: None)
    return root / "out", w


def _tables(w):
    return [ref.table for ref in w.refs if hasattr(ref, "table")]


def test_decimals_give_two_significant_digits_of_the_median_spread() -> None:
    assert decimals([4.3, 2.0, 12.5]) == 1
    assert decimals([0.55, 0.3, 0.9]) == 2
    assert decimals([0.04, 0.01, 0.02]) == 3
    assert decimals([0.0, float("nan")]) == decimals([]) == 1  # no spread: one decimal
    assert table_n([5, 5, 3, 0]) == 5 and table_n([2, 3]) == 3 and table_n([0]) == 0


def test_every_table_fits_the_reference_page_without_shrinking(rich) -> None:
    _, w = rich
    tables = _tables(w)
    assert len(tables) >= 20
    for t in tables:
        layout = plan_layout(t)
        target = TEXT_WIDTH if layout.wide else COLUMN_WIDTH
        assert layout.width <= FILL * target, (t.name, layout.width, target)
        cols = [i for p in layout.panels for i in p.columns]
        assert cols == list(range(len(t.header))), t.name  # every column once, in order
        if layout.wide:  # a table* only where the same panels do not fit one column
            assert layout.width > FILL * COLUMN_WIDTH, t.name


def test_wide_tables_are_split_by_stage_then_by_group_not_shrunk(rich) -> None:
    _, w = rich
    by_name = {t.name: t for t in _tables(w)}
    t6 = plan_layout(by_name["table6-abl"])  # 14 data columns: one block per stage, as Table 6
    assert t6.shared and [p.title for p in t6.panels] == ["Stage 2", "Stage 3"]
    whole = tabular_width(by_name["table6-abl"], [type(t6.panels[0])(tuple(range(14)))])
    assert whole > FILL * TEXT_WIDTH  # side by side it would need shrinking below the page
    t = by_name["table6-abl-delta"]  # intervals and long labels: each stage cut into runs
    delta = plan_layout(t)
    titles = [p.title for p in delta.panels]
    assert not delta.shared and len(delta.panels) >= 4 and titles == sorted(titles)
    assert titles.count("Stage 2") == titles.count("Stage 3")
    stage = [i for i, h in enumerate(t.header) if h[0] == "Stage 2"]
    assert tabular_width(t, [type(delta.panels[0])(tuple(stage))]) > FILL * TEXT_WIDTH


def test_cells_are_compact_and_n_is_stated_once(rich) -> None:
    out, w = rich
    for t in _tables(w):
        if t.row_header != "Variant" or re.search(r"-part(-|$)", t.name):
            continue
        assert re.search(r"over \d+ seeds\.$", t.stat), (t.name, t.stat)
        for line in t.cells:
            for c in line:
                assert COMPACT.match(c.text()), (t.name, c.text())
    part = next(t for t in _tables(w) if t.name == "table6-part")
    ewc = part.cells[part.rows.index("-EWC")]
    assert all(c.n == 2 and "(n=2)" in c.text() for c in ewc)  # only where n differs
    assert not any(c.n for v, line in zip(part.rows, part.cells, strict=True) if v != "-EWC"
                   for c in line)  # fmt: skip
    assert "(n per cell where it differs)" in part.stat
    tex = (out / "tables" / "table6-part.tex").read_text(encoding="utf-8")
    assert r"-{}-allow-partial" in tex and "--allow" not in tex  # no en dash in the option


def test_markdown_follows_the_layout_with_short_headers(rich) -> None:
    out, w = rich
    for t in _tables(w):
        md = (out / "tables" / f"{t.name}.md").read_text(encoding="utf-8")
        layout = plan_layout(t)
        heads = [line for line in md.splitlines() if line.startswith(f"| {t.row_header} |")]
        assert len(heads) == len(layout.panels), t.name
        for head, panel in zip(heads, layout.panels, strict=True):
            assert head.count(" | ") == len(panel.columns), t.name
            assert "Stage" not in head  # the stage is the panel's heading, not in every column
        assert t.stat in md


def test_latex_rows_keep_long_labels_and_every_cell(rich) -> None:
    out, w = rich
    t = next(t for t in _tables(w) if t.name == "table6-abl-delta")
    tex = (out / "tables" / f"{t.name}.tex").read_text(encoding="utf-8")
    assert r"-MoE+linear (ours) $-$ COMET (full)" in tex  # the whole label, once per panel
    assert r"\begin{table*}" in tex and r"\resizebox{\linewidth}{!}{\usebox0}" in tex
    body = [line for line in tex.splitlines() if line.startswith(("-", "DCID", r"\parbox"))]
    assert len(body) == len(t.rows) * len(plan_layout(t).panels)
    assert sum(line.count("&") for line in body) == len(t.rows) * len(t.header)
    assert tex.count(r"\textbf") == sum(c.strong for line in t.cells for c in line)


def test_tables_pdf_is_skipped_with_a_note_without_pdflatex(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(latex, "find_pdflatex", lambda: None)
    write_sweep(tmp_path / "r", "abl", ABLATIONS, keys=UNSEEN)
    notes: list[str] = []
    w = build(tmp_path / "r", tmp_path / "out", log=notes.append)
    assert not (tmp_path / "out" / "tables.pdf").exists()
    assert (tmp_path / "out" / "tables.tex").is_file()
    assert w.pdf is None and w.pdf_note.startswith("tables.pdf skipped: no pdflatex")
    assert w.pdf_note in notes and len(w.pdf_note.splitlines()) == 1
    w = build(tmp_path / "r", tmp_path / "out2", pdf=False, log=notes.append)
    assert "--no-pdf" in w.pdf_note and not (tmp_path / "out2" / "tables.pdf").exists()


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_figures_come_as_vector_pdf_sized_for_a_column_or_the_page(rich) -> None:
    out, w = rich
    figures = [ref for ref in w.refs if hasattr(ref, "png")]
    assert len(figures) >= 5
    for ref in figures:
        pdf = (out / ref.pdf).read_bytes()
        assert pdf.startswith(b"%PDF") and b"/Type3" not in pdf, ref.name  # TrueType, no Type 3
        assert b"/Title" in pdf and b"/CreationDate" not in pdf, ref.name  # reproducible
        width_px, _ = _png_size(out / ref.png)  # 150 dpi, no tight bbox: the figure's own width
        assert min(abs(width_px - 150 * w) for w in (plots.COLUMN_IN, plots.TEXT_IN)) < 1, ref.name


def _figures() -> list:
    curve = pd.DataFrame({"num_experts": [1, 2, 4] * 4, "stage": [2] * 6 + [3] * 6,
                          "seed": [0, 0, 0, 1, 1, 1] * 2, "value": range(12)})  # fmt: skip
    usage = pd.DataFrame([{"variant": v, "stage": s, "metric": m, "value": 3.0}
                          for v in ("full", "-PM") for s in (1, 2)
                          for m in ("codes_0", "codes_1", "codes_2", "codes_3plus")])  # fmt: skip
    mat = pd.DataFrame([[1.0, None], [2.0, 3.0]], columns=["v\u2194t", "a\u2194t"],
                       index=pd.MultiIndex.from_tuples([("full", 1), ("full", 2)]))  # fmt: skip
    trials = pd.DataFrame({"objective": [1.0, 2.0, 3.0], "ewc.lam": [0.1, 1.0, 10.0],
                           "replay.k2": [0, 16, 32]})  # fmt: skip
    return [
        plots.curve_figure(curve, x="num_experts", xlabel="experts", ylabel="objective"),
        plots.curve_figure(
            curve.assign(k2=1.0), x="num_experts", xlabel="experts", ylabel="objective", hue="k2"
        ),  # fmt: skip
        plots.usage_figure(usage),
        plots.forgetting_figure(mat, label="retrieval mean (%)"),
        plots.importance_figure({"ewc.lam": 0.7, "replay.k2": 0.3}),
        plots.search_figure(trials, ["ewc.lam", "replay.k2"]),
    ]


def test_figures_share_one_font_readable_at_print_size() -> None:
    for fig in _figures():
        assert fig.get_figwidth() in (plots.COLUMN_IN, plots.TEXT_IN)
        fig.canvas.draw()  # lay out, so every text has its final size
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize")) if t.get_text()]
        assert texts
        assert {t.get_fontfamily()[0] for t in texts} == {plots.STYLE["font.family"]}
        sizes = {t.get_fontsize() for t in texts}
        assert min(sizes) >= plots.SMALL_PT and max(sizes) <= plots.FONT_PT, sizes
        assert not fig._suptitle  # titles belong to the caption
