"""The report's ``index.html``: every table inline as HTML, every figure as an ``<img>``.

All links are relative (``tables/…``, ``figures/…``) so the folder can be moved, zipped or opened
from disk without a server. A small inline script records, once the page has loaded, whether
every image decoded (``data-report-status="ok:<images>:<tables>"`` on ``<body>``), which is what
the browser test reads.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from reports.cells import Cell
from reports.layout import bottom_aligned, header_spans, pretty
from reports.tables import Table


@dataclass
class TableRef:
    """A table shown inline, with links to its Markdown/LaTeX/CSV files."""

    table: Table
    links: list[str]


@dataclass
class FigureRef:
    """A figure shown as its PNG, with links to the SVG and the PDF."""

    name: str
    title: str
    png: str
    svg: str
    pdf: str


@dataclass
class Block:
    """A short titled list of lines (a sweep's provenance)."""

    title: str
    lines: list[str]


@dataclass
class Section:
    """One sweep's part of the page."""

    title: str
    anchor: str
    items: list[TableRef | FigureRef | Block | str] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
max-width:110em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}
h3{font-size:1.02em;margin-bottom:.3em}
table.report{border-collapse:collapse;font-size:.78em;margin:.4em 0}
table.report th,table.report td{border:1px solid #ddd;padding:.2em .45em;white-space:nowrap}
table.report thead th{background:#f3f3f3;text-align:center}
table.report tbody th{text-align:left;background:#fafafa}
table.report td{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}.note{font-size:.8em;color:#555;margin:.2em 0}
.links{font-size:.8em}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#444}nav li{margin:.15em 0}
.provenance{font-size:.8em;color:#444;background:#f8f8f8;border-left:3px solid #ccc;
padding:.3em .8em;margin:.6em 0}.provenance ul{margin:.2em 0;padding-left:1.2em}
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  var tables = document.querySelectorAll("table.report").length;
  document.body.setAttribute("data-report-status",
    (bad.length ? "broken" : "ok") + ":" + imgs.length + ":" + tables);
  document.body.setAttribute("data-report-broken",
    bad.map(function (im) { return im.getAttribute("src"); }).join(" "));
});
"""


def _e(text: str) -> str:
    return html.escape(pretty(str(text)))


def table_html(t: Table) -> str:
    """The table as an HTML ``<table>`` with grouped multi-level column headers."""
    levels = header_spans([bottom_aligned(h) for h in t.header])
    out = [f'<table class="report" id="{html.escape(t.name)}">', "<thead>"]
    for i, level in enumerate(levels):
        row = ["<tr>"]
        if i == 0:
            row.append(f'<th rowspan="{len(levels)}">{_e(t.row_header)}</th>')
        for label, span in level:
            row.append(
                f'<th colspan="{span}">{_e(label)}</th>' if span > 1 else f"<th>{_e(label)}</th>"
            )
        out.append("".join(row) + "</tr>")
    out.append("</thead><tbody>")
    for label, cells in zip(t.rows, t.cells, strict=True):
        tds = "".join(f"<td>{_cell_html(c)}</td>" for c in cells)
        out.append(f'<tr><th scope="row">{_e(label)}</th>{tds}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _cell_html(c: Cell) -> str:
    value, rest = c.parts()
    value = f"<strong>{_e(value)}</strong>" if c.strong else _e(value)
    return value + (f"<small>{_e(rest)}</small>" if rest else "")


def _item_html(item: TableRef | FigureRef | Block | str) -> str:
    if isinstance(item, str):
        return f'<p class="note">{_e(item)}</p>'
    if isinstance(item, Block):
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in item.lines)
        return f'<div class="provenance"><strong>{_e(item.title)}</strong><ul>{lines}</ul></div>'
    if isinstance(item, FigureRef):
        return (
            f'<figure id="{html.escape(item.name)}"><img src="{html.escape(item.png)}" '
            f'alt="{_e(item.title)}" loading="eager"><figcaption>{_e(item.title)} '
            f'(<a href="{html.escape(item.svg)}">SVG</a>, '
            f'<a href="{html.escape(item.pdf)}">PDF</a>, '
            f'<a href="{html.escape(item.png)}">PNG</a>)</figcaption></figure>'
        )
    t = item.table
    links = " · ".join(
        f'<a href="{html.escape(p)}">{html.escape(Path(p).suffix[1:])}</a>' for p in item.links
    )
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in t.notes)
    stat = f'<p class="note">{_e(t.stat)}</p>' if t.stat else ""
    return (
        f'<h3>{_e(t.title)}</h3>{stat}<div class="scroll">{table_html(t)}</div>{notes}'
        f'<p class="links">{links}</p>'
    )


def _pdf_line(pdf: str | None, note: str) -> str:
    if pdf:
        return (f'<p class="links">Every table at its width in a two-column paper: '
                f'<a href="{html.escape(pdf)}">{html.escape(pdf)}</a></p>')  # fmt: skip
    return f'<p class="note">{_e(note)}</p>' if note else ""


def render_index(
    sections: list[Section],
    out_dir: Path,
    *,
    source: str,
    pdf: str | None = None,
    pdf_note: str = "",
) -> Path:
    """Write ``out_dir/index.html`` showing every section; returns its path.

    ``pdf``: the relative path of the compiled tables (else ``pdf_note`` says why there are none).
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(
        f'<li><a href="#{html.escape(s.anchor)}">{_e(s.title)}</a></li>' for s in sections
    )
    body = []
    for s in sections:
        body.append(f'<section id="{html.escape(s.anchor)}"><h2>{_e(s.title)}</h2>')
        body.extend(_item_html(item) for item in s.items)
        body.append("</section>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>COMET report</title><style>{_CSS}</style></head>\n"
        f'<body data-report-status="pending">\n<h1>COMET report</h1>'
        f'<p class="note">Built {stamp} from <code>{html.escape(source)}</code>. Cells: mean '
        "\u00b1 std over seeds (n in each caption); differences: paired by seed, 95 % t-interval."
        f"</p>{_pdf_line(pdf, pdf_note)}<nav><ul>{nav}</ul></nav>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n"
        "</body></html>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
